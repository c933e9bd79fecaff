"""The witness tells a refused login from an error that says nothing about passwords, since
``test_faults`` tolerates the first and fails on the second."""

from __future__ import annotations

import secrets

import pytest

from tests.faults.fleet import SINGLE
from tests.faults.witness import LoginError, Target, logs_in
from tests.fixtures.mariadb import MysqlServer
from tests.fixtures.postgres import PgServer
from tests.fixtures.process import free_tcp_port


def targets(pg_server: PgServer, mysql_server: MysqlServer) -> list[Target]:
    return [
        Target("pg", "postgres", SINGLE, pg_server.host, pg_server.port, "postgres"),
        Target("maria", "mysql", SINGLE, mysql_server.host, mysql_server.port, None),
    ]


async def test_a_wrong_password_is_a_refused_login(
    pg_server: PgServer, mysql_server: MysqlServer
) -> None:
    for target in targets(pg_server, mysql_server):
        user = f"rotd_nobody_{secrets.token_hex(6)}"
        assert await logs_in(target, user, secrets.token_urlsafe(16)) is False, target.family


async def test_a_closed_port_is_an_unreachable_server(
    pg_server: PgServer, mysql_server: MysqlServer
) -> None:
    closed = free_tcp_port()
    for target in targets(pg_server, mysql_server):
        there = Target(target.secret_id, target.family, SINGLE, "127.0.0.1", closed, None)
        with pytest.raises(LoginError) as caught:
            await logs_in(there, "rotd_nobody", "x")
        assert caught.value.kind == "unreachable", (target.family, str(caught.value))
