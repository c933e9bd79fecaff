"""The issue's reproduction as an operator meets it: RotateSecret with a rotation function that
does not exist, CancelRotateSecret, then ``rotd status``, ``rotd rotate`` and ``rotd run``."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_daemon import assert_current_logs_in
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess
from tests.fixtures.rotation import make_login, make_master

Start = Callable[..., RotdProcess]
UNWRITTEN = "rotation started elsewhere, pending value never written"


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_status_names_it_and_rotate_takes_it_over(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    user, name = await make_login(db, secrets)
    token = await secrets.start_rotation_without_function(name)
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": name}])

    status = rotd_process("status", "-c", str(path))
    assert status.wait(60) == 0
    (line,) = status.stdout
    assert (
        f"unfinished rotation {token}: {UNWRITTEN}; at the next run rotd runs createSecret" in line
    )

    rotate = rotd_process("rotate", "-c", str(path), name)
    assert rotate.wait(60) == 0, "".join(rotate.lines)
    (line,) = rotate.stdout
    assert line.startswith(f"ok     {name}  single_user  {user} -> {user}  version {token}")
    assert line.rstrip().endswith("(resumed)")
    (recovering,) = rotate.named("rotation.recovering")
    assert recovering["case"].startswith(UNWRITTEN)
    assert await secrets.version(name) == token
    await assert_current_logs_in(db, secrets, name)
    assert not await db.logs_in(user, "Initial-pass-1")


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_the_daemon_takes_it_over_at_once(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    """The secret is not due for 30 days; the unfinished rotation is resumed at start."""
    user, name = await make_login(db, secrets)
    master = await make_master(db, secrets)
    token = await secrets.start_rotation_without_function(name)
    entry = {
        "id": name,
        "strategy": "alternating_users",
        "master_secret": master,
        "schedule": "rate(30 days)",
    }
    path = write_inventory(tmp_path / "inv.yaml", moto, [entry])

    process = rotd_process("run", "-c", str(path))
    (resumed,) = process.wait_for_event("rotation.resumed", 60)
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0

    assert resumed["version_id"] == token
    (planned,) = process.named("schedule.resume")
    assert planned["version_id"] == token
    (recovering,) = process.named("rotation.recovering")
    assert recovering["case"].startswith(UNWRITTEN)
    assert len(process.named("rotation.resuming")) == 1
    assert await secrets.version(name) == token
    assert (await secrets.value(name))["username"] == user + "_clone"
    await assert_current_logs_in(db, secrets, name)
    assert await db.logs_in(user, "Initial-pass-1"), "the previous login must keep working"
