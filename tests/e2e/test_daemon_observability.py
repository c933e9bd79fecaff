"""What an operator sees of a running ``rotd run``: every metric of docs/operations.md's table,
the sd_notify watchdog and status, and readable log lines on a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.accounts import Accounts
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.bridge import BridgeFunction, send_raw, start_rotation
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.metrics import documented_metrics, scraped
from tests.fixtures.process import NotifySocket, RotdProcess, free_tcp_port
from tests.fixtures.rotation import make_login

Start = Callable[..., RotdProcess]
PENDING_PASSWORD = "Pending-pass-5"


async def pending(db: Database, secrets: Secrets) -> tuple[str, str]:
    """A login whose secret holds an unfinished rotation: a daemon takes it up at once."""
    user, name = await make_login(db, secrets)
    await secrets.put_pending(name, db.secret(user, PENDING_PASSWORD))
    return user, name


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_every_documented_metric_is_served_with_its_labels(
    db: Database,
    secrets: Secrets,
    accounts: Accounts,
    moto: MotoServer,
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    _, rotated = await pending(db, secrets)  # succeeds (resumed) and runs a hook
    _, stranded = await pending(db, secrets)  # its host is down: a transient failure
    # A multi-region secret: its replication is checked after its rotation.
    replicated_user = db.unique("r")
    await db.create_login(replicated_user, "Initial-pass-1")
    await accounts.create(
        None,
        moto.region,
        "multi",
        db.secret(replicated_user, "Initial-pass-1"),
        replicas=("eu-west-1",),
    )
    replicated = accounts.name("multi")
    await accounts.put_pending(
        None, moto.region, replicated, db.secret(replicated_user, PENDING_PASSWORD)
    )
    missing = secrets.name("missing")  # not found: a problem no retry fixes
    # A bridged secret: its queue is read (and a message there is dropped).
    _, bridged = await make_login(db, secrets)
    await start_rotation(bridge_function, bridged)
    listen = free_tcp_port()
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        databases=[
            {
                "name": "testdb",
                "secrets": [
                    {"id": rotated, "on_rotated": [{"exec": ["true"]}]},
                    {"id": missing},
                    {"id": replicated},
                ],
            },
            {
                "name": "downdb",
                "host": "127.0.0.1",
                "port": free_tcp_port(),
                "secrets": [{"id": stranded}],
            },
            {
                "name": "bridgeddb",
                "rotation": "bridge",
                "bridge": {
                    "queue_url": bridge_function.queue_url,
                    "function_arn": bridge_function.function_arn,
                },
                "secrets": [{"id": bridged}],
            },
        ],
        daemon={"listen": f"127.0.0.1:{listen}"},
    )
    document = json.loads(path.read_text())
    document["render"] = [{"secret": rotated, "path": str(tmp_path / "rendered.json")}]
    path.write_text(json.dumps(document))
    documented = documented_metrics()
    assert len(documented) >= 11, documented

    process = rotd_process("run", "-c", str(path))
    process.wait_for_event("rotation.resumed", 60, count=2)
    process.wait_for_event("hook.finished", 30)
    process.wait_for_event("replication.in_sync", 30)
    process.wait_for_event("rotation.parked", 30)
    process.wait_for_event("rotation.retry_scheduled", 30)
    process.wait_for_event("bridge.consuming", 30)
    await send_raw(bridge_function, "not a bridge message")
    process.wait_for_event("bridge.message_dropped", 30)
    process.send(signal.SIGHUP)
    process.wait_for_event("reload.applied", 30)
    samples = scraped(listen)
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0

    for name, labels in documented.items():
        sample = name if name in samples else f"{name}_count"  # a histogram's count
        assert sample in samples, f"{name} is not served"
        for served in samples[sample]:
            assert set(served) == labels, (name, served)
    assert {"database": "testdb", "outcome": "resumed"} in samples["rotd_rotations_total"]
    assert {"database": "downdb", "category": "unreachable", "transient": "true"} in samples[
        "rotd_rotation_failures_total"
    ]
    assert {"secret_id": missing, "database": "testdb", "category": "not_found"} in samples[
        "rotd_secret_problem"
    ]
    assert {"result": "applied"} in samples["rotd_reloads_total"]
    assert {"database": "testdb", "kind": "exec", "result": "succeeded"} in samples[
        "rotd_hook_runs_total"
    ]


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_running_daemon_pings_the_watchdog_and_reports_its_status(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
    notify_socket: NotifySocket,
) -> None:
    _, name = await pending(db, secrets)
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": name}])
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "200000"}  # a ping every 0.1 s

    process = rotd_process("run", "-c", str(path), env=env)
    process.wait_for_event("rotation.resumed", 60)
    pings = sum(1 for m in notify_socket.wait_for("WATCHDOG=1", 10) if m == "WATCHDOG=1")
    started = time.monotonic()
    messages = notify_socket.wait_for("WATCHDOG=1", 10, count=pings + 5)
    assert time.monotonic() - started < 5, "the watchdog is pinged about every 0.1 s"
    ready = next(m for m in messages if m.startswith("READY=1"))
    assert re.fullmatch(r"READY=1\nSTATUS=1 secrets; \d+ rotating; .*", ready), ready

    # The status line carries the counts: after a reload it shows the rotation done.
    process.send(signal.SIGHUP)
    process.wait_for_event("reload.applied", 30)
    messages = notify_socket.wait_for("READY=1", 10, count=2)
    status = [m for m in messages if m.startswith("READY=1")][-1]
    counts = r"STATUS=1 secrets; [01] rotating; 0 failing \(0 need attention\); rotated 0, "
    assert re.search(counts + "resumed 1, failed 0$", status), status
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0


def read_until(fd: int, text: str, timeout_s: float, got: list[str]) -> None:
    """Read the terminal into ``got`` until ``text`` shows up; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while text not in "".join(got):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no {text!r} on the terminal; it showed:\n{''.join(got)[-3000:]}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the process is gone and the terminal closed
                chunk = b""
            if not chunk:
                pytest.fail(f"the terminal closed before {text!r}:\n{''.join(got)[-3000:]}")
            got.append(chunk.decode(errors="replace"))


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_on_a_terminal_the_log_lines_are_readable_and_hold_no_secret(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path
) -> None:
    _, name = await pending(db, secrets)
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": name}])
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rotd", "run", "-c", str(path)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    got: list[str] = []
    try:
        read_until(controller, "rotation.resumed", 60, got)
        proc.send_signal(signal.SIGTERM)
        read_until(controller, "daemon.stopped", 30, got)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)

    output = "".join(got)
    lines = [line for line in output.splitlines() if line.strip()]
    assert not any(line.lstrip().startswith("{") for line in lines), "no JSON on a terminal"
    (ready,) = [line for line in lines if "daemon.ready" in line]
    assert re.search(r"\[info\s*\]\s+daemon\.ready\s.*secrets=1", ready), ready
    (resumed,) = [line for line in lines if "rotation.resumed" in line]
    assert f"secret_id={name}" in resumed
    current: dict[str, Any] = await secrets.value(name)
    for secret in (PENDING_PASSWORD, "Initial-pass-1", current["password"]):
        assert secret not in output
