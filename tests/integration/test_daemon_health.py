"""``/healthz`` answers 200 only while the inventory is loaded and the scheduler loop is alive.

The daemon runs in this process with ``daemon.listen`` set and a store that answers planning's
reads when the test lets it; each unhealthy condition is one entry of :data:`UNHEALTHY`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from rotd.daemon import Daemon
from rotd.inventory import load
from rotd.notify import Notifier
from rotd.secretstore import SecretDescription, SecretValue
from tests.fixtures.aws import MotoServer
from tests.fixtures.deadlines import until
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import free_tcp_port

CREATED = datetime.now(UTC) - timedelta(days=3)
STRING = '{"engine": "postgres", "host": "db", "port": 5432, "username": "u", "password": "x"}'


class Store:
    """Answers planning's two reads once ``release`` is set: one version, three days old."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def describe(self, secret_id: str) -> SecretDescription:
        await self.release.wait()
        versions = {"v1": frozenset({"AWSCURRENT"})}
        return SecretDescription(secret_id, secret_id, False, None, None, versions)

    async def get_value(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> SecretValue:
        return SecretValue(secret_id, secret_id, "v1", frozenset({"AWSCURRENT"}), CREATED, STRING)


def _stop_scheduler(daemon: Daemon) -> None:
    assert daemon._scheduler is not None
    daemon._scheduler.shutdown(wait=False)


# How a started daemon becomes unhealthy: add a condition here to have it checked.
UNHEALTHY: dict[str, Callable[[Daemon], None]] = {
    "the scheduler loop stopped": _stop_scheduler,
}


async def health(port: int) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status


@asynccontextmanager
async def listening(tmp_path: Path) -> AsyncIterator[tuple[Daemon, Store, int]]:
    port = free_tcp_port()
    path = write_inventory(
        tmp_path / "inv.yaml",
        MotoServer("http://127.0.0.1:9"),  # never called: the store is the test's
        [{"id": "app/health"}],
        daemon={"listen": f"127.0.0.1:{port}"},
    )
    store = Store()
    daemon = Daemon(
        load(path), install_signal_handlers=False, notifier=Notifier(None), engines={}, store=store
    )
    running = asyncio.create_task(daemon.run())
    try:
        yield daemon, store, port
    finally:
        store.release.set()
        daemon.request_stop()
        assert await asyncio.wait_for(running, 30) == 0


async def answers(port: int, status: int) -> bool:
    try:
        return await health(port) == status
    except aiohttp.ClientConnectionError:
        return False  # not listening yet


async def test_healthz_is_503_until_the_inventory_is_loaded(tmp_path: Path) -> None:
    async with listening(tmp_path) as (daemon, store, port):
        await until(lambda: daemon._scheduler is not None, "the daemon to start serving", 30)
        await until(lambda: answers(port, 503), "503 while planning", 30, interval_s=0.05)
        assert not daemon.started
        store.release.set()
        await until(lambda: daemon.started, "the inventory to be loaded", 30)
        assert await health(port) == 200


@pytest.mark.parametrize("condition", list(UNHEALTHY))
async def test_healthz_is_503_when_the_daemon_stops_working(tmp_path: Path, condition: str) -> None:
    async with listening(tmp_path) as (daemon, store, port):
        store.release.set()
        await until(lambda: daemon.started, "the inventory to be loaded", 30)
        assert await health(port) == 200
        UNHEALTHY[condition](daemon)
        assert await health(port) == 503
