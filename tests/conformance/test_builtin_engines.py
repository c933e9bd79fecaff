"""rotd's own engines through the conformance kit, as any engine author runs it.

PostgreSQL on the throwaway scram-sha-256 cluster, MariaDB on the machine's server, Redis on
servers each test starts with an ACL file (one node; a primary and its replica listed under
``nodes:``), and the exec engine with the shipped RabbitMQ script against the machine's
RabbitMQ. Each target creates and drops logins as an administrator and checks logins with the
server's own driver or protocol (never through the engine under test). The kit's Secrets
Manager is its plugin's ``kit_aws`` (loaded in ``tests/conftest.py``), exactly as an author's
suite would get it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from rotd.testing import Conformance
from tests.conformance.targets import DatabaseTarget, RabbitmqTarget, RedisTarget
from tests.fixtures.databases import Mariadb, Postgres
from tests.fixtures.redis import RedisServer


class TestPostgres(Conformance):
    @pytest.fixture
    async def target(self, pg_server: Any) -> AsyncIterator[DatabaseTarget]:
        db = Postgres(pg_server)
        yield DatabaseTarget(db)
        await db.cleanup()  # the tables grant_access made


class TestMariadb(Conformance):
    @pytest.fixture
    async def target(self, mysql_server: Any) -> AsyncIterator[DatabaseTarget]:
        db = Mariadb(mysql_server)
        yield DatabaseTarget(db)
        await db.cleanup()


class TestRedis(Conformance):
    @pytest.fixture
    def target(self, redis_servers: Callable[..., RedisServer]) -> RedisTarget:
        return RedisTarget(redis_servers("aclfile"))


class TestRedisReplica(Conformance):
    """A primary and its replica, both under ``nodes:``: Redis does not replicate ACLs."""

    @pytest.fixture
    async def target(self, redis_servers: Callable[..., RedisServer]) -> RedisTarget:
        primary, replica = redis_servers("aclfile"), redis_servers("aclfile")
        await replica.replicate(primary)
        return RedisTarget(primary, replica)


class TestExecRabbitmq(Conformance):
    """The exec engine running config/exec/rabbitmq's set, test and mirror on this host's
    RabbitMQ: single user and alternating users. Each rabbitmqctl run starts an Erlang VM
    (a second or more), so the script's mirror runs it twice, whatever the grants."""

    @pytest.fixture
    async def target(self) -> AsyncIterator[RabbitmqTarget]:
        target = RabbitmqTarget()
        yield target
        await target.cleanup()  # the vhosts grant_access made
