"""``rotd run`` as a real process: schedules, limits, signals, metrics, health, sd_notify."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import (
    HOOK_FAULT,
    NotifySocket,
    RotdProcess,
    free_tcp_port,
    injected_env,
)
from tests.fixtures.rotation import make_login, make_master

Start = Callable[..., RotdProcess]


def flight_peak(events: list[dict[str, Any]]) -> int:
    """The most rotations that overlapped in time, from their end stamps and durations."""
    edges: list[tuple[float, int]] = []
    for event in events:
        end = datetime.fromisoformat(event["timestamp"]).timestamp()
        edges += [(end - event["duration_s"], 1), (end, -1)]
    peak = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        current += step
        peak = max(peak, current)
    return peak


async def pending_secret(
    db: Database, secrets: Secrets, alternating: bool
) -> tuple[str, dict[str, Any]]:
    """A login whose secret holds an unfinished rotation (AWSPENDING on a new version)."""
    user, name = await make_login(db, secrets)
    pending_user = user + "_clone" if alternating else user
    await secrets.put_pending(name, db.secret(pending_user, "Pending-pass-5"))
    return name, {"id": name, "strategy": "alternating_users" if alternating else "single_user"}


async def assert_current_logs_in(db: Database, secrets: Secrets, name: str) -> None:
    current = await secrets.value(name)
    assert await db.logs_in(current["username"], current["password"]), name
    stages = await secrets.stages(name)
    pending = [v for v, s in stages.items() if "AWSPENDING" in s and "AWSCURRENT" not in s]
    assert pending == [], "no AWSPENDING may be left on a version that is not current"


async def test_a_bad_inventory_at_start_exits_78_with_positions(
    tmp_path: Path, rotd_process: Start
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("limits:\n  max_concurrent: 0\ndatabases: oops\n")
    process = rotd_process("run", "-c", str(path))
    assert process.wait(30) == 78
    errors = "".join(process.lines)
    assert f"{path}:2:19: limits.max_concurrent" in errors
    assert f"{path}:3:12: databases" in errors


def caught_signals(pid: int) -> set[signal.Signals]:
    """The signals process ``pid`` has handlers for, from /proc (empty once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return set()
    (mask,) = [int(line.split()[1], 16) for line in status.splitlines() if line[:7] == "SigCgt:"]
    return {sig for sig in signal.Signals if mask >> (sig - 1) & 1}


async def test_a_sigterm_while_starting_up_exits_0(
    secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    """A service stopped as it starts: SIGTERM before the daemon's own handlers are in place
    (they include SIGHUP) must be an orderly exit 0, not death by the signal."""
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": "rotd-test/never-read"}])
    process = rotd_process("run", "-c", str(path))
    deadline = time.monotonic() + 30
    while signal.SIGTERM not in (caught := caught_signals(process.proc.pid)):
        assert process.proc.poll() is None, "".join(process.lines)
        assert time.monotonic() < deadline, "rotd run never handled SIGTERM"
    assert signal.SIGHUP not in caught, "SIGTERM was caught only once the daemon's loop ran"
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0, "".join(process.lines)
    assert process.named("daemon.ready") == []


async def test_unfinished_rotations_resume_promptly_within_the_limits(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    master = await make_master(db, secrets)
    names, entries = [], []
    for i in range(6):
        name, entry = await pending_secret(db, secrets, alternating=bool(i % 2))
        entry["master_secret"] = master
        names.append(name)
        entries.append(entry)
    path = write_inventory(tmp_path / "inv.yaml", moto, entries, limits={"max_concurrent": 2})

    process = rotd_process("run", "-c", str(path))
    done = process.wait_for_event("rotation.resumed", 60, count=6)
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0

    assert flight_peak(done) <= 2
    for name in names:
        await assert_current_logs_in(db, secrets, name)


async def test_sighup_applies_the_difference_and_rejects_a_broken_file(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
    notify_socket: NotifySocket,
) -> None:
    a = await secrets.create("a", db.secret("a", "Pass-a-1"))
    b = await secrets.create("b", db.secret("b", "Pass-b-1"))
    c = await secrets.create("c", db.secret("c", "Pass-c-1"))
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": a}, {"id": b}])
    process = rotd_process("run", "-c", str(path), env={"NOTIFY_SOCKET": notify_socket.path})
    process.wait_for_event("daemon.ready", 30)
    notify_socket.wait_for("READY=1", 10)

    write_inventory(
        path, moto, [{"id": b, "schedule": "rate(7 days)"}, {"id": c}], limits={"max_concurrent": 3}
    )
    process.send(signal.SIGHUP)
    (applied,) = process.wait_for_event("reload.applied", 30)
    assert (applied["added"], applied["removed"], applied["changed"], applied["unchanged"]) == (
        1,
        1,
        1,
        0,
    )
    notify_socket.wait_for("RELOADING=1", 10)
    messages = notify_socket.wait_for("READY=1", 10, count=2)
    reloading = next(i for i, m in enumerate(messages) if "RELOADING=1" in m)
    assert any("READY=1" in m for m in messages[reloading:])

    path.write_text("databases:\n  - name: testdb\n    secrets:\n      - id: [broken\n")
    process.send(signal.SIGHUP)
    (rejected,) = process.wait_for_event("reload.rejected", 30)
    assert rejected["errors"][0].startswith(f"{path}:")
    assert rejected["kept_secrets"] == 2

    process.send(signal.SIGTERM)
    assert process.wait(30) == 0
    notify_socket.wait_for("STOPPING=1", 10)


async def test_sigterm_drains_in_flight_rotations_and_the_next_start_finishes_the_rest(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    names, entries = [], []
    for _ in range(8):
        name, entry = await pending_secret(db, secrets, alternating=False)
        names.append(name)
        entries.append(entry)
    path = write_inventory(tmp_path / "inv.yaml", moto, entries, limits={"max_concurrent": 1})

    first = rotd_process("run", "-c", str(path))
    first.wait_for_event("rotation.resumed", 60)
    first.send(signal.SIGTERM)
    assert first.wait(30) == 0
    (stopped,) = first.named("daemon.stopped")
    assert stopped["cancelled"] == 0, "the grace period lets rotations in flight finish"
    finished_first = len(first.named("rotation.resumed"))
    assert finished_first >= 1

    second = rotd_process("run", "-c", str(path))
    second.wait_for_event("daemon.ready", 30)
    if finished_first < len(names):
        second.wait_for_event("rotation.resumed", 60, count=len(names) - finished_first)
    second.send(signal.SIGTERM)
    assert second.wait(30) == 0
    for name in names:
        await assert_current_logs_in(db, secrets, name)


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_on_time_rotation_with_failing_neighbours_metrics_and_health(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    """rate(1 minute): the good secret rotates when due while a bad one and a dead host fail."""
    user, good = await make_login(db, secrets)
    bad_json = await secrets.create("bad-json", "this is not JSON")
    dead_port = free_tcp_port()
    dead = await secrets.create("dead", {**db.secret("nobody", "Dead-pass-1"), "port": dead_port})
    created = datetime.fromisoformat(await _created(secrets, good))
    listen_port = free_tcp_port()
    minute = {"schedule": "rate(1 minute)", "window": "0"}
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"id": good, **minute}, {"id": bad_json, **minute}, {"id": dead, **minute}],
        daemon={"listen": f"127.0.0.1:{listen_port}"},
    )
    process = rotd_process("run", "-c", str(path))
    process.wait_for_event("daemon.ready", 30)
    assert _get(listen_port, "/healthz") == (200, "ok\n")

    (succeeded,) = process.wait_for_event("rotation.succeeded", 120)
    rotated_at = datetime.fromisoformat(succeeded["timestamp"])
    assert (rotated_at - created).total_seconds() >= 60 - 1
    assert succeeded["secret_id"] == good
    process.wait_for(
        lambda events: (
            {e.get("secret_id") for e in events if e.get("event") == "rotation.parked"}
            >= {bad_json}
        ),
        30,
        "the bad JSON secret parked",
    )
    failed = {e["secret_id"]: e for e in process.named("rotation.failed")}
    assert failed[bad_json]["category"] == "bad_secret"
    process.wait_for(
        lambda events: any(
            e.get("secret_id") == dead and e.get("event") == "rotation.failed" for e in events
        ),
        30,
        "the dead host failing",
    )
    assert {e["secret_id"]: e for e in process.named("rotation.failed")}[dead][
        "category"
    ] == "unreachable"

    status, metrics = _get(listen_port, "/metrics")
    assert status == 200
    assert 'rotd_rotations_total{database="testdb",outcome="succeeded"} 1.0' in metrics
    assert (
        f'rotd_secret_problem{{category="bad_secret",database="testdb",secret_id="{bad_json}"}} 1.0'
        in metrics
    )
    assert (
        f'rotd_secret_next_due_timestamp_seconds{{database="testdb",secret_id="{good}"}}' in metrics
    )
    assert "rotd_rotations_in_flight 0.0" in metrics
    current = await secrets.value(good)
    assert await db.logs_in(user, current["password"])

    process.send(signal.SIGTERM)
    assert process.wait(30) == 0


async def _created(secrets: Secrets, name: str) -> str:
    async with secrets.client() as client:
        got = await client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
    return str(got["CreatedDate"].isoformat())


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_the_grace_period_bounds_the_drain_and_a_second_sigint_exits_at_once(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    """A rotation held up in testSecret (pg_sleep) is cut at the grace period, resumed later."""
    name, entry = await pending_secret(db, secrets, alternating=False)
    slow = {**entry, "test_query": "SELECT pg_sleep(20)"}
    path = write_inventory(tmp_path / "inv.yaml", moto, [slow], daemon={"shutdown_grace": "1s"})

    first = rotd_process("run", "-c", str(path))
    first.wait_for_event("rotation.resuming", 30)
    first.send(signal.SIGTERM)
    assert first.wait(15) == 0
    (stopped,) = first.named("daemon.stopped")
    assert stopped["cancelled"] == 1
    assert first.named("rotation.resumed") == []

    write_inventory(tmp_path / "inv.yaml", moto, [slow], daemon={"shutdown_grace": "60s"})
    second = rotd_process("run", "-c", str(path))
    second.wait_for_event("rotation.resuming", 30)
    second.send(signal.SIGINT)
    second.wait_for_event("daemon.stopping", 10)
    second.send(signal.SIGINT)
    assert second.wait(15) == 130

    write_inventory(tmp_path / "inv.yaml", moto, [entry])
    third = rotd_process("run", "-c", str(path))
    third.wait_for_event("rotation.resumed", 60)
    third.send(signal.SIGTERM)
    assert third.wait(30) == 0
    await assert_current_logs_in(db, secrets, name)


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_hook_that_raises_under_run_leaves_the_secret_scheduled(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    """The review's reproduction under ``rotd run``: a hook raised after the rotation, the task
    died with "Task exception was never retrieved" and the secret was never scheduled again.
    Now the fault is an event and a metric, and the secret is planned for its next due time."""
    user, name = await make_login(db, secrets)
    await secrets.put_pending(name, db.secret(user, "Pending-pass-7"))
    listen_port = free_tcp_port()
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"id": name, "on_rotated": [{"exec": ["/bin/true"]}]}],
        daemon={"listen": f"127.0.0.1:{listen_port}"},
    )
    process = rotd_process("run", "-c", str(path), env=injected_env(tmp_path, HOOK_FAULT))
    process.wait_for_event("rotation.resumed", 60)
    (caught,) = process.wait_for_event("unexpected_error.caught", 30)
    assert (caught["secret_id"], caught["stage"]) == (name, "hooks")
    process.wait_for_event("hook.failed", 30)

    def next_due(metrics: str) -> float:
        prefix = f'rotd_secret_next_due_timestamp_seconds{{database="testdb",secret_id="{name}"}} '
        (line,) = [line for line in metrics.splitlines() if line.startswith(prefix)]
        return float(line.removeprefix(prefix))

    deadline = time.monotonic() + 30
    while next_due(_get(listen_port, "/metrics")[1]) < time.time() + 29 * 86400:
        assert time.monotonic() < deadline, "the secret was not planned for its next due time"
        await asyncio.sleep(0.1)
    _, metrics = _get(listen_port, "/metrics")
    assert 'rotd_unexpected_errors_total{database="testdb",stage="hooks"} 1.0' in metrics
    assert _get(listen_port, "/healthz") == (200, "ok\n")
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0
    assert len(process.events) == len(process.lines), "every line on stderr is a log event"
