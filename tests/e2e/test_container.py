"""``rotd run`` started as the container image starts it: PID 1 of its own PID namespace.

The command is the Dockerfile's own ENTRYPOINT and CMD, with the image's paths mapped to this
host's (``/opt/rotd/bin/rotd`` is ``python -m rotd`` here; the init is the same Debian
package), run under ``unshare --pid --fork --mount-proc`` as a container runtime would. What
is checked is what an operator of a sidecar sees: processes orphaned by hooks do not pile up as
zombies, and SIGHUP and SIGTERM sent to the container's PID 1 reload and stop rotd.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_daemon import caught_signals, pending_secret
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess
from tests.unit.test_packaging import final_stage, only

Start = Callable[..., RotdProcess]
IMAGE_ROTD = "/opt/rotd/bin/rotd"
ROTATIONS = 3


def image_command() -> tuple[list[str], list[str]]:
    """The image's ENTRYPOINT as this host runs it, and its CMD."""
    stage = final_stage()
    entrypoint = json.loads(only(stage, "ENTRYPOINT"))
    cmd = json.loads(only(stage, "CMD"))
    assert IMAGE_ROTD in entrypoint, f"the entrypoint {entrypoint} does not run {IMAGE_ROTD}"
    at = entrypoint.index(IMAGE_ROTD)
    command = [*entrypoint[:at], sys.executable, "-m", "rotd", *entrypoint[at + 1 :]]
    for program in ("unshare", *entrypoint[:1]):
        if program != IMAGE_ROTD and shutil.which(program) is None:
            pytest.fail(
                f"{program} is needed to run rotd as the image does: "
                "apt-get install -y tini util-linux"
            )
    return command, cmd


def status_fields(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def descendants(root: int) -> dict[int, dict[str, str]]:
    """Every process under ``root`` (host pids), with its /proc status fields."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = status_fields(int(entry))
            if fields:
                table[int(entry)] = fields
    found: dict[int, dict[str, str]] = {}
    parents = {root}
    while parents:
        children = {
            pid for pid, f in table.items() if int(f.get("PPid", "0")) in parents
        } - found.keys()
        found.update({pid: table[pid] for pid in children})
        parents = children
    return found


def namespace_pid(fields: dict[str, str]) -> int:
    """The pid a process has inside the innermost PID namespace it belongs to."""
    return int(fields["NSpid"].split()[-1])


def container_init(unshare_pid: int, deadline_s: float = 30) -> int:
    """The host pid of the namespace's PID 1 (the child ``unshare --fork`` started)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for pid, fields in descendants(unshare_pid).items():
            if fields.get("NSpid", "").split()[-1:] == ["1"]:
                return pid
        time.sleep(0.05)
    pytest.fail("unshare started no process as PID 1 of a new PID namespace")


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_as_the_images_pid_1_orphans_are_reaped_and_signals_reach_rotd(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    entrypoint, cmd = image_command()
    # Each hook leaves a background process behind and prints its pid (in the namespace): it
    # is orphaned when the shell exits, and PID 1 inherits it.
    hook = {"exec": ["sh", "-c", "sleep 1 >/dev/null 2>&1 & echo $!"]}
    entries = []
    for _ in range(ROTATIONS):
        _, entry = await pending_secret(db, secrets, alternating=False)
        entries.append({**entry, "on_rotated": [hook]})
    path = write_inventory(tmp_path / "inv.yaml", moto, entries)
    args = [str(path) if arg == "/etc/rotd/inventory.yaml" else arg for arg in cmd]

    process = rotd_process(
        *args, command=["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *entrypoint]
    )
    init = container_init(process.proc.pid)
    finished = process.wait_for_event("hook.finished", 60, count=ROTATIONS)
    orphans = {int(event["stdout"].strip()) for event in finished}
    assert len(orphans) == ROTATIONS

    # Poll until every orphan is gone from the namespace: exited and reaped.
    deadline = time.monotonic() + 20
    while True:
        left = {
            namespace_pid(fields): fields.get("State", "?")
            for fields in descendants(init).values()
            if namespace_pid(fields) in orphans
        }
        if not left:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"orphaned hook processes never reaped (pid in namespace: state): {left}")
        time.sleep(0.1)

    # A container runtime signals the namespace's PID 1; rotd must get them.
    os.kill(init, signal.SIGHUP)
    process.wait_for_event("reload.applied", 30)
    os.kill(init, signal.SIGTERM)
    assert process.wait(60) == 0, "".join(process.lines[-30:])
    process.wait_for_event("daemon.stopped", 5)


async def test_a_sighup_while_starting_up_is_not_fatal(
    moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    """Under an init, rotd is not PID 1, so a signal it does not handle yet acts by default:
    a reload asked for while it imports its modules must not kill it (the file is read as it
    starts anyway)."""
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": "rotd-test/never-read"}])
    process = rotd_process("run", "-c", str(path))
    deadline = time.monotonic() + 30
    while signal.SIGTERM not in (caught := caught_signals(process.proc.pid)):
        assert process.proc.poll() is None, "".join(process.lines)
        assert time.monotonic() < deadline, "rotd run never handled SIGTERM"
    assert signal.SIGHUP not in caught, "the window before the daemon's own handlers was missed"
    process.send(signal.SIGHUP)
    process.wait_for_event("daemon.ready", 30)
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0, "".join(process.lines[-30:])
