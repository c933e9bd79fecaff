"""``rotd demo`` as the README's first command: it starts, rotates its logins once a minute, and
removes what it made when stopped with Ctrl-C (SIGINT).

The demo works on this machine's own PostgreSQL (5432) and MariaDB (3306) with fixed login
names (``rotd_demo_*``), so this test waits for the demo's first rotations (about a minute).
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiomysql
import asyncpg
import pytest

from tests.fixtures.process import RotdProcess, free_tcp_port

Start = Callable[..., RotdProcess]


async def demo_logins() -> set[str]:
    """The demo's logins that exist now in the local PostgreSQL and MariaDB."""
    pg = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    try:
        rows = await pg.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE 'rotd\\_demo\\_%'")
    finally:
        await pg.close()
    found = {r["rolname"] for r in rows}
    my = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    try:
        async with my.cursor() as cursor:
            await cursor.execute("SELECT user FROM mysql.user WHERE user LIKE 'rotd\\_demo\\_%'")
            found |= {row[0] for row in await cursor.fetchall()}
    finally:
        my.close()
    return found


def listening(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.timeout(180)
async def test_the_demo_rotates_and_cleans_up_after_ctrl_c(rotd_process: Start) -> None:
    process = rotd_process("demo", "--listen-port", str(free_tcp_port()))
    (ready,) = process.wait_for_event("daemon.ready", 60)
    assert ready["secrets"] == 4  # single and alternating users, on each engine
    said = "".join(process.lines)
    endpoint = re.search(r"Secrets Manager at (http://\S+)", said)
    inventory = re.search(r"inventory: (\S+)", said)
    assert endpoint is not None, said
    assert inventory is not None, said
    workdir = Path(inventory.group(1)).parent
    assert workdir.is_dir()
    made = await demo_logins()
    assert {"rotd_demo_pg_app", "rotd_demo_my_app"} <= made

    # rate(1 minute) from the secrets' creation: the first rotations come within about 60 s.
    rotated = process.wait_for_event("rotation.succeeded", 100, count=4)
    assert {e["database"] for e in rotated} == {"demo"}
    assert process.named("rotation.failed") == []
    assert "rotd_demo_pg_alt_clone" in await demo_logins()

    process.send(signal.SIGINT)
    assert process.wait(60) == 0
    assert "rotd demo: stopping and cleaning up" in "".join(process.lines)
    assert process.named("demo.cleanup_failed") == []
    assert await demo_logins() == set()
    assert not workdir.exists()
    assert not listening(endpoint.group(1)), "the demo's Secrets Manager is stopped"
