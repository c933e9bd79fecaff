"""``rotd rotate`` with rotation events: a bus that cannot be reached costs the rotation nothing,
and the command waits a bounded time for its events before it exits."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rotd.events import FLUSH_S
from tests.fixtures.aws import MotoServer, Secrets, free_port
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, run
from tests.fixtures.rotation import make_login

Start = Callable[..., RotdProcess]


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_rotate_with_a_dead_bus_rotates_as_fast_and_exits_0_saying_so(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    _, name = await make_login(db, secrets)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"id": name}],
        events={"eventbridge": {"bus": "rotations", "endpoint_url": dead}},
    )

    started = time.monotonic()
    code, out, err = run(rotd_process, "rotate", "-c", str(path), name, "--json")
    took_s = time.monotonic() - started

    assert code == 0, err
    (result,) = [json.loads(line) for line in out.splitlines()]
    assert result["outcome"] == "succeeded"
    assert result["version_id"] == await secrets.version(name)
    # The rotation never waited on the bus: its retries alone (1 s, 2 s, 4 s ...) would take
    # longer than the flush; the command waited FLUSH_S for its event, then gave up on it.
    assert result["duration_s"] < FLUSH_S
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    failed = [e for e in events if e["event"] == "events.failed"]
    assert failed
    assert "127.0.0.1" in failed[0]["error"]
    assert [e["count"] for e in events if e["event"] == "events.dropped"] == [1]
    assert took_s < result["duration_s"] + FLUSH_S + 30  # start-up on a busy machine included
    assert (await secrets.value(name))["password"] not in out + err
