"""No secret drops out of the schedule: an exception rotd never expected, injected into rotd's
own code at each point of one secret's life, is caught at that secret's boundary, logged,
counted, and the secret is planned again; the other secrets carry on; and a daemon that can
no longer plan fails ``/healthz``. The daemon runs in this process against moto's server and a
real PostgreSQL, with a short backoff."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import rotd.daemon
import rotd.hooks
import rotd.protocol
import rotd.runner
from rotd.daemon import Daemon
from rotd.errors import Category, StoreError
from rotd.inventory import Inventory, load
from rotd.notify import Notifier
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.deadlines import until
from tests.fixtures.process import free_tcp_port
from tests.fixtures.rotation import make_login
from tests.integration.test_hooks import Event, events, named  # noqa: F401

pytestmark = pytest.mark.parametrize("db", ["postgres"], indirect=True)

DAYS_29 = timedelta(days=29).total_seconds()


def daemon_inventory(
    path: Path, moto: MotoServer, secrets: list[dict[str, Any]], port: int
) -> Inventory:
    """Write a one-database inventory to ``path`` (JSON is YAML), and load it."""
    body = {
        "aws": {"endpoint_url": moto.endpoint_url, "region": moto.region},
        "daemon": {"listen": f"127.0.0.1:{port}"},
        "databases": [{"name": "testdb", "secrets": secrets}],
    }
    path.write_text(json.dumps(body))
    return load(path)


@asynccontextmanager
async def running(inv: Inventory) -> AsyncIterator[Daemon]:
    """``rotd run`` in this process, retrying after about 0.1 s, 0.2 s ... up to 0.5 s."""
    daemon = Daemon(
        inv,
        install_signal_handlers=False,
        notifier=Notifier(None),
        retry_base=timedelta(milliseconds=100),
        retry_cap=timedelta(milliseconds=500),
    )
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.started or task.done(), "the daemon to start")
        assert not task.done(), task.result()
        yield daemon
    finally:
        daemon.request_stop()
        assert await task == 0


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def pending(db: Database, secrets: Secrets, label: str) -> tuple[str, str]:
    """A login whose secret holds an unfinished rotation, which the daemon resumes at once.
    ``label`` is part of the secret's name, so that a fault can pick it."""
    user, name = await make_login(db, secrets)
    renamed = await secrets.create(label, await secrets.value(name))
    await secrets.put_pending(renamed, db.secret(user, "Pending-pass-5"))
    return user, renamed


def of(captured: list[Event], name: str, secret_id: str) -> list[Event]:
    return [e for e in named(captured, name) if e.get("secret_id") == secret_id]


def once(fault: Callable[..., bool]) -> Callable[..., bool]:
    """``fault``, true at most once: the injected exception is raised the first time only."""
    fired: list[bool] = []

    def check(*args: Any) -> bool:
        if not fired and fault(*args):
            fired.append(True)
            return True
        return False

    return check


def inject_rotation(monkeypatch: pytest.MonkeyPatch, hit: Callable[[str], bool]) -> None:
    run = rotd.protocol._Rotation._run

    async def faulty(self: Any) -> None:
        if hit(self.spec.id):
            raise RuntimeError(f"injected fault in the rotation of {self.spec.id}")
        await run(self)

    monkeypatch.setattr(rotd.protocol._Rotation, "_run", faulty)


def inject_hook(monkeypatch: pytest.MonkeyPatch, hit: Callable[[str], bool]) -> None:
    run_command = rotd.hooks._run_command

    async def faulty(argv: Any, env: Any, stdin: bytes | None, timeout_s: float) -> Any:
        if hit(env["ROTD_SECRET_ID"]):
            # As a careless error message would: quoting the data in hand, the new secret.
            raise RuntimeError(f"injected fault in a hook, given {(stdin or b'').decode()}")
        return await run_command(argv, env, stdin, timeout_s)

    monkeypatch.setattr(rotd.hooks, "_run_command", faulty)


def inject_planning(monkeypatch: pytest.MonkeyPatch, hit: Callable[[str], bool]) -> None:
    plan_start = rotd.daemon.plan_start

    def faulty(secret_id: str, *args: Any) -> Any:
        if hit(secret_id):
            raise RuntimeError(f"injected fault in planning {secret_id}")
        return plan_start(secret_id, *args)

    monkeypatch.setattr(rotd.daemon, "plan_start", faulty)


def inject_metrics(monkeypatch: pytest.MonkeyPatch, hit: Callable[[str], bool]) -> None:
    observe = Daemon._observe

    def faulty(self: Daemon, outcome: Any) -> None:
        if hit(outcome.secret_id):
            raise RuntimeError("injected fault in a metrics update")
        observe(self, outcome)

    monkeypatch.setattr(Daemon, "_observe", faulty)


def inject_scheduling(monkeypatch: pytest.MonkeyPatch, hit: Callable[[str], bool]) -> None:
    is_busy = rotd.runner.Runner.is_busy

    def faulty(self: Any, secret_id: str) -> bool:
        if hit(secret_id):
            raise RuntimeError("injected fault in handing the secret to a rotation")
        return is_busy(self, secret_id)

    monkeypatch.setattr(rotd.runner.Runner, "is_busy", faulty)


INJECTIONS = {
    "scheduling": inject_scheduling,
    "rotation": inject_rotation,
    "hooks": inject_hook,
    "planning": inject_planning,
    "metrics": inject_metrics,
}


@pytest.mark.parametrize("stage", list(INJECTIONS))
async def test_an_unexpected_exception_is_caught_counted_and_the_secret_planned_again(
    stage: str,
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    events: list[Event],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    faulty_user, faulty = await pending(db, secrets, "faulty")
    good_user, good = await pending(db, secrets, "good")
    INJECTIONS[stage](monkeypatch, once(lambda secret_id: secret_id == faulty))
    hook = [{"exec": ["/bin/true"], "include_secret": True}]
    port = free_tcp_port()
    entries = [{"id": faulty, "on_rotated": hook}, {"id": good, "on_rotated": hook}]
    inv = daemon_inventory(tmp_path / "inv.yaml", moto, entries, port)
    async with running(inv) as daemon:
        # Both secrets end up rotated and planned for their next due time, 30 days on.
        def planned(secret_id: str) -> bool:
            next_due = daemon.secrets[secret_id].status.next_due
            return next_due is not None and next_due > time.time() + DAYS_29

        await until(lambda: planned(faulty) and planned(good), "both secrets planned again")
        status, metrics = await get(port, "/metrics")
        assert (await get(port, "/healthz"))[0] == 200

    (caught,) = named(events, "unexpected_error.caught")
    assert (caught["secret_id"], caught["database"], caught["stage"]) == (faulty, "testdb", stage)
    assert "RuntimeError: injected fault" in caught["error"]
    assert "Traceback (most recent call last)" in caught["exception"]
    assert status == 200
    assert f'rotd_unexpected_errors_total{{database="testdb",stage="{stage}"}} 1.0' in metrics
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("rotd_unexpected_errors_total{") and not line.endswith(" 0.0")
    ]
    assert len(counted) == 1, counted  # every stage of every database is served, at 0 until hit

    rotated = of(events, "rotation.resumed", faulty)
    if stage == "rotation":
        # The attempt that raised failed alone, and a retry came after the backoff.
        (failed,) = of(events, "rotation.failed", faulty)
        assert (failed["category"], failed["transient"]) == ("internal", True)
        (retry,) = of(events, "rotation.retry_scheduled", faulty)
        assert retry["retry_in_s"] <= 0.5
        assert retry["category"] == "internal"
    else:
        # A fault after the rotation never makes it a failed rotation, nor rotates it again.
        assert of(events, "rotation.failed", faulty) == []
    assert len(rotated) == 1
    if stage == "hooks":
        (hook_failed,) = of(events, "hook.failed", faulty)
        assert "injected fault in a hook" in hook_failed["error"]
        assert 'result="failed"} 1.0' in metrics
    if stage in ("planning", "scheduling"):
        (retry,) = of(events, "schedule.retry_scheduled", faulty)
        assert retry["category"] == "internal"
    for name, user in ((faulty, faulty_user), (good, good_user)):
        current = await secrets.value(name)
        assert await db.logs_in(user, current["password"])
        # The traceback and the messages are scrubbed like every event.
        assert current["password"] not in json.dumps(events, default=str)
    if stage == "hooks":
        assert "[REDACTED]" in caught["error"]
        assert "[REDACTED]" in caught["exception"]
    # The neighbour went through untouched.
    assert len(of(events, "rotation.resumed", good)) == 1
    assert of(events, "rotation.failed", good) == []
    assert of(events, "hook.failed", good) == []


async def test_a_daemon_that_cannot_plan_fails_its_health_check_until_it_can(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    events: list[Event],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Planning raises for every secret: /healthz turns 503 while each secret keeps being
    retried with backoff, and back to 200 once planning works again."""
    names = [(await make_login(db, secrets))[1] for _ in range(3)]
    broken = [True]
    inject_planning(monkeypatch, lambda _secret_id: broken[0])
    port = free_tcp_port()
    inv = daemon_inventory(tmp_path / "inv.yaml", moto, [{"id": n} for n in names], port)
    async with running(inv) as daemon:
        assert await get(port, "/healthz") == (503, "unhealthy\n")
        assert daemon.health_problem() is not None
        assert daemon.health_problem().startswith("planning failed")  # type: ignore[union-attr]
        # Each secret is retried, its next due time moving on with each retry.
        await until(
            lambda: all(len(of(events, "unexpected_error.caught", n)) >= 2 for n in names),
            "every secret retried",
        )
        assert (await get(port, "/healthz"))[0] == 503
        broken[0] = False
        await until(
            lambda: all(
                (daemon.secrets[n].status.next_due or 0) > time.time() + DAYS_29 for n in names
            ),
            "every secret planned",
        )
        assert await get(port, "/healthz") == (200, "ok\n")
        _, metrics = await get(port, "/metrics")
    assert {e["stage"] for e in named(events, "unexpected_error.caught")} == {"planning"}
    assert 'rotd_unexpected_errors_total{database="testdb",stage="planning"}' in metrics


def break_scheduling(monkeypatch: pytest.MonkeyPatch, hit: Callable[[str], bool]) -> None:
    """Scheduling the secret raises: its planning fails, and so does the retry's scheduling."""
    schedule = Daemon._schedule

    def faulty(self: Daemon, secret: Any, *args: Any, **kwargs: Any) -> None:
        if hit(secret.spec.id):
            raise RuntimeError("injected fault in scheduling")
        schedule(self, secret, *args, **kwargs)

    monkeypatch.setattr(Daemon, "_schedule", faulty)


def break_the_boundary(monkeypatch: pytest.MonkeyPatch, hit: Callable[[str], bool]) -> None:
    """Planning raises, and so does the boundary that catches it: the planning task dies."""
    inject_planning(monkeypatch, hit)
    log_unexpected = rotd.daemon.log_unexpected

    def faulty(logger: Any, stage: str, exc: BaseException, **fields: Any) -> None:
        if hit(fields["secret_id"]):
            raise RuntimeError("injected fault in the boundary")
        log_unexpected(logger, stage, exc, **fields)

    monkeypatch.setattr(rotd.daemon, "log_unexpected", faulty)


@pytest.mark.parametrize("fault", [break_scheduling, break_the_boundary])
async def test_a_secret_that_cannot_be_scheduled_fails_health_and_a_reload_brings_it_back(
    fault: Callable[[pytest.MonkeyPatch, Callable[[str], bool]], None],
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    events: list[Event],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A fault that even the secret's boundary cannot recover from: the secret is reported
    lost, /healthz fails, the others are planned; once the cause is gone a SIGHUP plans it
    again."""
    (_, lost), (_, good) = [await make_login(db, secrets) for _ in range(2)]
    broken = [True]
    fault(monkeypatch, lambda secret_id: broken[0] and secret_id == lost)
    port = free_tcp_port()
    inv = daemon_inventory(tmp_path / "inv.yaml", moto, [{"id": lost}, {"id": good}], port)
    async with running(inv) as daemon:
        await until(lambda: bool(of(events, "schedule.lost", lost)), "the secret lost")
        assert await get(port, "/healthz") == (503, "unhealthy\n")
        (gone,) = of(events, "schedule.lost", lost)
        assert "RuntimeError: injected fault in" in gone["exception"]
        assert (daemon.secrets[good].status.next_due or 0) > time.time() + DAYS_29

        broken[0] = False
        daemon.request_reload()
        await until(lambda: bool(named(events, "reload.applied")), "the reload")
        (applied,) = named(events, "reload.applied")
        assert applied["retried"] == 1
        await until(
            lambda: (daemon.secrets[lost].status.next_due or 0) > time.time() + DAYS_29,
            "the lost secret planned",
        )
        assert await get(port, "/healthz") == (200, "ok\n")


async def test_a_transient_planning_failure_plans_again_and_rotates_nothing_early(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    events: list[Event],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Secrets Manager throttles the first read of a secret that is not due: the retry reads
    it again and plans it; it does not rotate a secret 30 days early."""
    _, name = await make_login(db, secrets)
    inspect = rotd.daemon.inspect
    hit = once(lambda secret_id: secret_id == name)

    async def throttled(spec: Any, store: Any) -> Any:
        if hit(spec.id):
            raise StoreError(spec.id, "DescribeSecret", Category.THROTTLED, "slow down")
        return await inspect(spec, store)

    monkeypatch.setattr(rotd.daemon, "inspect", throttled)
    inv = daemon_inventory(tmp_path / "inv.yaml", moto, [{"id": name}], free_tcp_port())
    async with running(inv) as daemon:
        await until(
            lambda: (daemon.secrets[name].status.next_due or 0) > time.time() + DAYS_29,
            "the secret planned for its due time",
        )
    (retry,) = of(events, "schedule.retry_scheduled", name)
    assert retry["category"] == "throttled"
    assert of(events, "rotation.succeeded", name) == []
    assert of(events, "rotation.failed", name) == []


async def test_a_reload_that_raises_leaves_the_daemon_running_and_the_next_one_applies(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    events: list[Event],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An exception no code path expected while reloading (not a bad file: that is
    ``reload.rejected``) is logged and counted; the daemon keeps every schedule and answers
    /healthz, and the next SIGHUP reloads."""
    _, name = await make_login(db, secrets)
    load_inventory = rotd.daemon.inventory_module.load
    broken = [True]

    def faulty(path: Path) -> Inventory:
        if broken[0]:
            raise RuntimeError("injected fault in the reload")
        return load_inventory(path)

    monkeypatch.setattr(rotd.daemon.inventory_module, "load", faulty)
    port = free_tcp_port()
    inv = daemon_inventory(tmp_path / "inv.yaml", moto, [{"id": name}], port)
    async with running(inv) as daemon:
        daemon.request_reload()
        await until(lambda: bool(named(events, "unexpected_error.caught")), "the fault caught")
        (caught,) = named(events, "unexpected_error.caught")
        assert caught["stage"] == "reload"
        assert "RuntimeError: injected fault in the reload" in caught["exception"]
        assert await get(port, "/healthz") == (200, "ok\n")
        assert (daemon.secrets[name].status.next_due or 0) > time.time() + DAYS_29

        broken[0] = False
        daemon.request_reload()
        await until(lambda: bool(named(events, "reload.applied")), "the next reload")
        _, metrics = await get(port, "/metrics")
    assert 'rotd_reloads_total{result="failed"} 1.0' in metrics
    assert 'rotd_reloads_total{result="applied"} 1.0' in metrics


async def test_a_fault_inside_a_step_is_reported_at_that_step(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    events: list[Event],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The failed rotation names the step the unexpected exception came from, so the operator
    knows how far it got; the retry then finishes it."""
    user, name = await pending(db, secrets, "step")
    step_of = rotd.protocol._Rotation._step
    hit = once(lambda secret_id: secret_id == name)

    @asynccontextmanager
    async def faulty(self: Any, step: rotd.protocol.Step) -> AsyncIterator[None]:
        async with step_of(self, step):
            if step is rotd.protocol.Step.TEST and hit(self.spec.id):
                raise RuntimeError("injected fault in testSecret")
            yield

    monkeypatch.setattr(rotd.protocol._Rotation, "_step", faulty)
    port = free_tcp_port()
    inv = daemon_inventory(tmp_path / "inv.yaml", moto, [{"id": name}], port)
    async with running(inv):
        await until(lambda: bool(of(events, "rotation.resumed", name)), "the retry's success")
    (failed,) = of(events, "rotation.failed", name)
    assert (failed["step"], failed["category"]) == ("testSecret", "internal")
    assert "injected fault in testSecret" in failed["error"]
    current = await secrets.value(name)
    assert await db.logs_in(user, current["password"])
