"""rotd's side of the bridge, with the test sending the function's messages: a real
``rotd run`` consuming the queue on moto's server, messages that are not to be trusted, and
two daemons on one queue."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rotd.bridge import wire
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.bridge_queue import BridgeQueue, enable_bridge
from tests.fixtures.databases import Database
from tests.fixtures.deadlines import until
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess
from tests.fixtures.rotation import make_login

Start = Callable[..., RotdProcess]


def bridged_inventory(
    tmp_path: Path, moto: MotoServer, queue: BridgeQueue, secrets: list[dict[str, Any]]
) -> Path:
    return write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"rotation": "bridge", **s} for s in secrets],
        defaults={
            "bridge": {
                "queue_url": queue.url,
                "function_arn": queue.function_arn,
                "scan_every": "1h",
            }
        },
    )


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_each_message_does_its_step_once_and_is_deleted(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    bridge_queue: BridgeQueue,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    user, name = await make_login(db, secrets)
    token = await enable_bridge(secrets, name, bridge_queue.function_arn)
    path = bridged_inventory(tmp_path, moto, bridge_queue, [{"id": name}])
    process = rotd_process("run", "-c", str(path))
    process.wait_for_event("daemon.ready", 60)

    async def has_value() -> bool:
        async with secrets.client() as client:
            try:
                await client.get_secret_value(SecretId=name, VersionId=token)
            except client.exceptions.ResourceNotFoundException:
                return False
        return True

    await bridge_queue.send(name, token, "createSecret")
    await until(has_value, "the pending version's value", 30, 0.1)
    await until(bridge_queue.empty, "the createSecret message deleted", 30, 0.2)
    assert await db.logs_in(user, "Initial-pass-1"), "createSecret changes no password"

    await bridge_queue.send(name, token, "setSecret")
    await until(
        lambda: _has(secrets, name, token, wire.TESTED), "ROTD_TESTED on the version", 30, 0.1
    )
    pending = await secrets.value(name, "AWSPENDING")
    assert await db.logs_in(user, pending["password"])
    await until(bridge_queue.empty, "the setSecret message deleted", 30, 0.2)

    await bridge_queue.send(name, token, "testSecret")
    (done,) = process.wait_for_event("bridge.step_skipped", 30)
    assert done["step"] == "testSecret"

    await bridge_queue.send(name, token, "finishSecret")
    (finished,) = process.wait_for_event("rotation.succeeded", 30)
    assert finished["version_id"] == token
    assert await secrets.version(name) == token
    await until(bridge_queue.empty, "every message deleted", 30, 0.2)
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0
    steps = [e["step"] for e in process.named("bridge.step_done")]
    assert steps == ["createSecret", "testSecret"], steps
    assert not process.named("rotation.failed")


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_messages_rotd_must_not_act_on_are_dropped(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    bridge_queue: BridgeQueue,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    """A message is a hint: rotd checks Secrets Manager's own state and its inventory."""
    user, bridged = await make_login(db, secrets)
    _, daemon_only = await make_login(db, secrets)
    token = await enable_bridge(secrets, bridged, bridge_queue.function_arn)
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"id": bridged, "rotation": "bridge"}, {"id": daemon_only}],
        defaults={
            "bridge": {"queue_url": bridge_queue.url, "function_arn": bridge_queue.function_arn}
        },
    )
    process = rotd_process("run", "-c", str(path))
    process.wait_for_event("daemon.ready", 60)
    before = await secrets.stages(bridged)

    await bridge_queue.send_raw("not json")
    await bridge_queue.send(secrets.name("not-in-inventory"), token, "createSecret")
    await bridge_queue.send(daemon_only, token, "createSecret")
    await bridge_queue.send(bridged, str(uuid.uuid4()), "createSecret")  # not the pending one
    dropped = process.wait_for_event("bridge.message_dropped", 30, count=3)
    reasons = sorted(e["reason"] for e in dropped)
    assert reasons[0].startswith("no secret of the inventory"), reasons
    assert reasons[1].startswith("not a bridge message"), reasons
    assert reasons[2] == "the inventory says rotation: daemon", reasons
    (stale,) = process.wait_for_event("bridge.step_skipped", 30)
    assert "no longer the pending one" in stale["reason"]
    await until(bridge_queue.empty, "every message deleted", 30, 0.2)
    assert await secrets.stages(bridged) == before, "nothing may change"
    assert await db.logs_in(user, "Initial-pass-1")
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0


async def _has(secrets: Secrets, name: str, token: str, label: str) -> bool:
    return label in (await secrets.stages(name)).get(token, [])
