"""The daemon's waits after transient failures, on a running daemon with shortened intervals.

docs/operations.md: a retryable error is retried "with capped exponential backoff and jitter
(15 s, 30 s, … up to 15 min)", logged as ``rotation.retry_scheduled``; docs/reliability.md: a
dead host costs "one probe per interval (10 s, doubling to 5 min)", logged as
``host.unreachable`` and ``host.reachable``.
The daemon runs in this process against moto's server and PostgreSQL, with the same waits
made short through its constructor; every event is stamped as it is seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotd.daemon import Daemon, backoff
from rotd.inventory import load
from rotd.notify import Notifier
from tests.faults.proxy import TcpProxy
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.deadlines import until
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import free_tcp_port
from tests.fixtures.rotation import make_login

Event = dict[str, Any]


class Seen:
    """Captured log events, each with the monotonic time the test first saw it."""

    def __init__(self, logs: list[Event]) -> None:
        self._logs = logs
        self.events: list[tuple[float, Event]] = []
        self._stamper: asyncio.Task[None] | None = None

    async def _stamp(self) -> None:
        while True:
            now = time.monotonic()
            self.events += [(now, e) for e in self._logs[len(self.events) :]]
            await asyncio.sleep(0.005)

    def named(self, name: str) -> list[tuple[float, Event]]:
        return [(t, e) for t, e in self.events if e["event"] == name]

    async def until(self, condition: Callable[[], bool], what: str, timeout_s: float) -> None:
        await until(condition, what, timeout_s)


@asynccontextmanager
async def running(path: Path, **timings: Any) -> AsyncIterator[Seen]:
    """A daemon on ``path`` with the given waits, its events seen as they come."""
    daemon = Daemon(load(path), install_signal_handlers=False, notifier=Notifier(None), **timings)
    with capture_logs() as logs:
        seen = Seen(logs)
        stamper = asyncio.create_task(seen._stamp())
        task = asyncio.create_task(daemon.run())
        try:
            yield seen
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, 30) == 0
            stamper.cancel()
            await asyncio.gather(stamper, return_exceptions=True)


async def pending(db: Database, secrets: Secrets) -> str:
    """A login's secret with an unfinished rotation: the daemon takes it up at once."""
    user, name = await make_login(db, secrets)
    await secrets.put_pending(name, db.secret(user, "Pending-pass-5"))
    return name


def routed(tmp_path: Path, moto: MotoServer, port: int, names: list[str]) -> Path:
    """An inventory that reaches the secrets' database at 127.0.0.1:``port``."""
    database = {"name": "testdb", "host": "127.0.0.1", "port": port, "tls": "disable"}
    secrets = [{"id": n} for n in names]
    return write_inventory(tmp_path / "inv.yaml", moto, databases=[database | {"secrets": secrets}])


def test_the_backoff_grows_doubles_to_its_cap_and_is_jittered() -> None:
    base, cap = timedelta(seconds=15), timedelta(minutes=15)
    for failures, ceiling_s in [(1, 15), (2, 30), (3, 60), (6, 480), (7, 900), (30, 900)]:
        delays = {backoff(failures, base=base, cap=cap).total_seconds() for _ in range(200)}
        assert min(delays) >= ceiling_s / 2, failures
        assert max(delays) <= ceiling_s, failures
        assert len(delays) > 100, "the delays are jittered, not one fixed value"


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_transient_failure_is_retried_after_a_growing_capped_delay(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path
) -> None:
    name = await pending(db, secrets)
    path = routed(tmp_path, moto, free_tcp_port(), [name])  # nothing listens there
    base, cap = 0.4, 1.6

    async with running(
        path,
        retry_base=timedelta(seconds=base),
        retry_cap=timedelta(seconds=cap),
        breaker_base_s=0,
    ) as seen:
        await seen.until(
            lambda: len(seen.named("rotation.retry_scheduled")) >= 5, "five retries", 30
        )
        scheduled = seen.named("rotation.retry_scheduled")[:5]
        failed = seen.named("rotation.failed")

    for failures, (_, event) in enumerate(scheduled, start=1):
        ceiling = min(cap, base * 2 ** (failures - 1))
        assert event["secret_id"] == name
        assert event["category"] == "unreachable"
        assert event["failures"] == failures
        assert event["error"]
        # retry_in_s is rounded to 0.1 s
        assert ceiling / 2 - 0.05 <= event["retry_in_s"] <= ceiling + 0.05, event
    # Each retry comes after its delay, not before: attempt n+1 follows retry n's delay.
    attempts = {e["attempt"]: t for t, e in failed}
    for failures, (at, event) in enumerate(scheduled[:4], start=1):
        assert attempts[failures + 1] - at >= event["retry_in_s"] - 0.1, (failures, event)


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_dead_host_costs_one_probe_per_interval_and_is_reported_back(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path
) -> None:
    proxy = TcpProxy(db.host, db.port, "postgres")
    await proxy.start()
    await proxy.stop()  # the host is down; its port is kept for the proxy's return
    names = [await pending(db, secrets) for _ in range(3)]
    path = routed(tmp_path, moto, proxy.port, names)
    interval, cap = 0.5, 1.0
    try:
        async with running(
            path,
            retry_base=timedelta(seconds=0.1),
            retry_cap=timedelta(seconds=0.2),
            breaker_base_s=interval,
            breaker_cap_s=cap,
        ) as seen:
            await seen.until(
                lambda: len(seen.named("host.unreachable")) >= 3, "two failed probes", 30
            )
            await proxy.start()  # the host is back
            await seen.until(
                lambda: len(seen.named("rotation.resumed")) == 3, "the three rotations", 30
            )
    finally:
        await proxy.close()

    host = f"127.0.0.1:{proxy.port}"
    down = seen.named("host.unreachable")
    assert [e["host"] for _, e in down] == [host] * len(down)
    # The first failure opens the breaker for the first interval; each failed probe doubles
    # it up to the cap.
    assert down[0][1]["retry_in_s"] == interval
    assert [e["retry_in_s"] for _, e in down[1:]] == [cap] * (len(down) - 1)
    # The first attempts met the host together; after that only probes (retries that were
    # let through) touched it, one per interval, and each failed one was reported.
    failed = seen.named("rotation.failed")
    probes = [t for t, e in failed if e["attempt"] > 1 and "not tried" not in e["error"]]
    assert len(probes) == len(down) - 1
    for earlier, later in zip([down[0][0], *probes], probes, strict=False):
        assert later - earlier >= interval - 0.1
    assert any("not tried" in e["error"] for _, e in failed), "the others are refused at once"
    (reachable,) = [e for _, e in seen.named("host.reachable")]
    assert reachable["host"] == host
    assert reachable["after_failures"] >= len(down)
