"""SIGHUP on a real ``rotd run``: new limits apply, a rotation in flight goes on alone, parked
secrets are tried again, and a burst of signals is one or two reloads, not one per signal."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.deadlines import until
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import NotifySocket, RotdProcess
from tests.fixtures.rotation import make_login

Start = Callable[..., RotdProcess]


async def pending(db: Database, secrets: Secrets) -> str:
    """A login's secret with an unfinished rotation: the daemon takes it up at once."""
    user, name = await make_login(db, secrets)
    await secrets.put_pending(name, db.secret(user, "Pending-pass-5"))
    return name


def span(event: dict[str, Any]) -> tuple[float, float]:
    end = datetime.fromisoformat(event["timestamp"]).timestamp()
    return end - event["duration_s"], end


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_reload_applies_new_limits_and_leaves_the_rotation_in_flight_alone(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    slow = await pending(db, secrets)
    others = [await pending(db, secrets) for _ in range(3)]
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"id": slow, "test_query": "SELECT pg_sleep(3)"}],
        limits={"max_concurrent": 1},
    )
    process = rotd_process("run", "-c", str(path))
    process.wait_for(
        lambda events: any(e.get("event") == "rotation.resuming" for e in events),
        30,
        "the slow rotation to start",
    )

    # The rotation in flight changes settings, three more come, and room for three at once.
    write_inventory(
        path,
        moto,
        [
            {"id": slow, "test_query": "SELECT pg_sleep(3)", "schedule": "rate(7 days)"},
            *({"id": n, "test_query": "SELECT pg_sleep(1)"} for n in others),
        ],
        limits={"max_concurrent": 3},
    )
    process.send(signal.SIGHUP)
    (applied,) = process.wait_for_event("reload.applied", 30)
    assert (applied["added"], applied["changed"]) == (3, 1)
    process.wait_for_event("rotation.resumed", 60, count=4)
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0

    done = {e["secret_id"]: e for e in process.named("rotation.resumed")}
    outcomes = ("rotation.resumed", "rotation.succeeded", "rotation.failed", "rotation.parked")
    assert [
        e["event"] for e in process.events if e.get("secret_id") == slow and e["event"] in outcomes
    ] == ["rotation.resumed"], "one rotation of the secret in flight: not a second one"
    assert process.named("rotation.failed") == []
    assert done[slow]["duration_s"] >= 3, "the rotation in flight ran to its end"
    spans = sorted(span(done[n]) for n in others)
    overlapping = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    assert overlapping >= 1, f"the new limit of 3 lets them run together: {spans}"
    for name in [slow, *others]:
        assert len(await secrets.stages(name)) == 2


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_reload_tries_a_parked_secret_again(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    user = db.unique()
    name = secrets.name(user)  # parked: it does not exist yet
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": name}])
    process = rotd_process("run", "-c", str(path))
    (parked,) = process.wait_for_event("rotation.parked", 30)
    assert (parked["secret_id"], parked["category"]) == (name, "not_found")

    # The operator fixes the cause (the secret now exists, mid-rotation) and reloads.
    await db.create_login(user, "Initial-pass-1")
    await secrets.create(user, db.secret(user, "Initial-pass-1"))
    await secrets.put_pending(name, db.secret(user, "Pending-pass-5"))
    process.send(signal.SIGHUP)
    (applied,) = process.wait_for_event("reload.applied", 30)
    assert (applied["retried"], applied["unchanged"]) == (1, 1)
    (resumed,) = process.wait_for_event("rotation.resumed", 60)
    assert resumed["secret_id"] == name
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0
    assert len(process.named("rotation.parked")) == 1


def feed(fifo: Path, text: str, timeout_s: float) -> None:
    """Hand ``text`` to the next reader of ``fifo``; fail if nobody reads within ``timeout_s``."""
    done = threading.Event()

    def write() -> None:
        with fifo.open("w") as pipe:
            pipe.write(text)
        done.set()

    threading.Thread(target=write, daemon=True).start()
    if not done.wait(timeout_s):
        # Unblock the writer thread by reading the pipe ourselves, then fail.
        with fifo.open() as pipe:
            pipe.read()
        pytest.fail(f"rotd did not read {fifo} within {timeout_s}s")


def signal_pending(pid: int, sig: signal.Signals) -> bool:
    """Whether ``sig`` waits to be delivered to process ``pid``, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = [int(line.split()[1], 16) for line in status.splitlines() if line[:7] in PENDING]
    return any(mask >> (sig - 1) & 1 for mask in masks)


PENDING = ("SigPnd:", "ShdPnd:")


async def test_a_burst_of_sighup_during_a_reload_makes_one_more_reload(
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
    notify_socket: NotifySocket,
) -> None:
    """The inventory is a named pipe, so a reload waits, reading it, until the test writes:
    the signals sent meanwhile find a reload in progress."""
    absent = secrets.name("absent")  # any one secret: it is parked, which is harmless here
    text = write_inventory(tmp_path / "inv.json", moto, [{"id": absent}]).read_text()
    fifo = tmp_path / "inv.yaml"
    os.mkfifo(fifo)
    process = rotd_process("run", "-c", str(fifo), env={"NOTIFY_SOCKET": notify_socket.path})
    await asyncio.to_thread(feed, fifo, text, 30)
    process.wait_for_event("daemon.ready", 30)

    process.send(signal.SIGHUP)
    notify_socket.wait_for("RELOADING=1", 30)  # the reload has begun: it waits on the pipe
    for _ in range(5):
        process.send(signal.SIGHUP)
        # One at a time, so that the kernel does not merge them into one before rotd sees them.
        await until(
            lambda: not signal_pending(process.proc.pid, signal.SIGHUP), "SIGHUP delivered", 10
        )
    await asyncio.to_thread(feed, fifo, text, 30)  # the first reload
    # Its reading must be over before the next writer opens the pipe: a writer that opens it
    # while the first reload still reads would add its text to the same read.
    process.wait_for_event("reload.applied", 30)
    await asyncio.to_thread(feed, fifo, text, 30)  # one more for the whole burst
    process.wait_for_event("reload.applied", 30, count=2)
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0, "a third reload would still be waiting on the pipe"
    assert len(process.named("reload.applied")) == 2
    messages = notify_socket.wait_for("RELOADING=1", 10, count=2)
    assert sum(1 for m in messages if "RELOADING=1" in m) == 2
