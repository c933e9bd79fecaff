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
from tests.fixtures.bridge import (
    BridgeFunction,
    queue_empty,
    send_raw,
    send_step,
    start_rotation,
)
from tests.fixtures.databases import Database, pg_quote_ident
from tests.fixtures.deadlines import until
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess
from tests.fixtures.rotation import make_login

Start = Callable[..., RotdProcess]


def bridged_inventory(
    tmp_path: Path, moto: MotoServer, function: BridgeFunction, secrets: list[dict[str, Any]]
) -> Path:
    return write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"rotation": "bridge", **s} for s in secrets],
        defaults={
            "bridge": {
                "queue_url": function.queue_url,
                "function_arn": function.function_arn,
                "scan_every": "1h",
            }
        },
    )


async def rotating(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    function: BridgeFunction,
    tmp_path: Path,
    start: Start,
) -> tuple[str, str, str, RotdProcess]:
    """A login whose secret Secrets Manager has begun rotating through the bridge, and a
    ready ``rotd run`` consuming the queue: the user, the secret, the pending version, the
    process."""
    user, name = await make_login(db, secrets)
    token = await start_rotation(function, name)
    path = bridged_inventory(tmp_path, moto, function, [{"id": name}])
    process = start("run", "-c", str(path))
    process.wait_for_event("daemon.ready", 60)
    return user, name, token, process


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_each_message_does_its_step_once_and_is_deleted(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    user, name, token, process = await rotating(
        db, secrets, moto, bridge_function, tmp_path, rotd_process
    )

    async def has_value() -> bool:
        async with secrets.client() as client:
            try:
                await client.get_secret_value(SecretId=name, VersionId=token)
            except client.exceptions.ResourceNotFoundException:
                return False
        return True

    await send_step(bridge_function, name, token, "createSecret")
    await until(has_value, "the pending version's value", 30, 0.1)
    await until(lambda: queue_empty(bridge_function), "the createSecret message deleted", 30, 0.2)
    assert await db.logs_in(user, "Initial-pass-1"), "createSecret changes no password"

    await send_step(bridge_function, name, token, "setSecret")
    await until(
        lambda: _has(secrets, name, token, wire.TESTED), "ROTD_TESTED on the version", 30, 0.1
    )
    pending = await secrets.value(name, "AWSPENDING")
    assert await db.logs_in(user, pending["password"])
    await until(lambda: queue_empty(bridge_function), "the setSecret message deleted", 30, 0.2)

    await send_step(bridge_function, name, token, "testSecret")
    (done,) = process.wait_for_event("bridge.step_skipped", 30)
    assert done["step"] == "testSecret"

    await send_step(bridge_function, name, token, "finishSecret")
    (finished,) = process.wait_for_event("rotation.succeeded", 30)
    assert finished["version_id"] == token
    assert await secrets.version(name) == token
    await until(lambda: queue_empty(bridge_function), "every message deleted", 30, 0.2)
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
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    """A message is a hint: rotd checks Secrets Manager's own state and its inventory."""
    user, bridged = await make_login(db, secrets)
    _, daemon_only = await make_login(db, secrets)
    token = await start_rotation(bridge_function, bridged)
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"id": bridged, "rotation": "bridge"}, {"id": daemon_only}],
        defaults={
            "bridge": {
                "queue_url": bridge_function.queue_url,
                "function_arn": bridge_function.function_arn,
            }
        },
    )
    process = rotd_process("run", "-c", str(path))
    process.wait_for_event("daemon.ready", 60)
    before = await secrets.stages(bridged)

    await send_raw(bridge_function, "not json")
    await send_step(bridge_function, secrets.name("not-in-inventory"), token, "createSecret")
    await send_step(bridge_function, daemon_only, token, "createSecret")
    await send_step(
        bridge_function, bridged, str(uuid.uuid4()), "createSecret"
    )  # not the pending one
    dropped = process.wait_for_event("bridge.message_dropped", 30, count=3)
    reasons = sorted(e["reason"] for e in dropped)
    assert reasons[0].startswith("no secret of the inventory"), reasons
    assert reasons[1].startswith("not a bridge message"), reasons
    assert reasons[2] == "the inventory says rotation: daemon", reasons
    (stale,) = process.wait_for_event("bridge.step_skipped", 30)
    assert "no longer the pending one" in stale["reason"]
    await until(lambda: queue_empty(bridge_function), "every message deleted", 30, 0.2)
    assert await secrets.stages(bridged) == before, "nothing may change"
    assert await db.logs_in(user, "Initial-pass-1")
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0


async def _has(secrets: Secrets, name: str, token: str, label: str) -> bool:
    return label in (await secrets.stages(name)).get(token, [])


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_failed_step_is_reported_on_the_secret_for_its_message(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    """The password was changed by hand behind rotd's back: setSecret cannot log in."""
    user, name, token, process = await rotating(
        db, secrets, moto, bridge_function, tmp_path, rotd_process
    )
    await send_step(bridge_function, name, token, "createSecret")
    process.wait_for_event("bridge.step_done", 30)
    await db.execute(f"ALTER ROLE {pg_quote_ident(user)} PASSWORD 'Changed-by-hand-1'")
    before = await secrets.stages(name)

    request = await send_step(bridge_function, name, token, "setSecret")
    (failed,) = process.wait_for_event("bridge.step_failed", 30)
    tags = {t["Key"]: t["Value"] for t in (await secrets.describe(name)).get("Tags", [])}
    failure = wire.decode_failure(tags[wire.FAILURE_TAG])
    assert failure is not None
    assert (failure.request, failure.step, failure.category) == (request, "setSecret", "auth")
    assert f"login refused for user {user} with every password rotd knows" in failure.reason
    assert failed["request"] == request
    assert await secrets.stages(name) == before, "a failed step changes no label"
    await until(lambda: queue_empty(bridge_function), "the failed step's message deleted", 30, 0.2)
    pending = await secrets.value(name, "AWSPENDING")
    assert "Changed-by-hand-1" not in tags[wire.FAILURE_TAG]
    assert pending["password"] not in tags[wire.FAILURE_TAG]

    # Put right by hand, the next attempt succeeds and the report goes.
    await db.execute(f"ALTER ROLE {pg_quote_ident(user)} PASSWORD 'Initial-pass-1'")
    await send_step(bridge_function, name, token, "setSecret")
    await until(lambda: _has(secrets, name, token, wire.TESTED), "ROTD_TESTED", 30, 0.1)
    await send_step(bridge_function, name, token, "finishSecret")
    process.wait_for_event("rotation.succeeded", 30)
    described = await secrets.describe(name)
    assert wire.FAILURE_TAG not in {t["Key"] for t in described.get("Tags", [])}
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0


@pytest.mark.parametrize("db", ["mariadb"], indirect=True)
async def test_two_daemons_on_one_queue_do_each_step_once(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    """SQS delivers at least once: every message is sent twice, to two daemons."""
    names = [(await make_login(db, secrets))[1] for _ in range(3)]
    tokens = {name: await start_rotation(bridge_function, name) for name in names}
    path = bridged_inventory(tmp_path, moto, bridge_function, [{"id": n} for n in names])
    processes = [rotd_process("run", "-c", str(path)) for _ in range(2)]
    for process in processes:
        process.wait_for_event("daemon.ready", 60)

    for step, label in (("createSecret", None), ("setSecret", wire.TESTED), ("finishSecret", None)):
        for name, token in tokens.items():
            for _ in range(2):
                await send_step(bridge_function, name, token, step)
        await until(lambda: queue_empty(bridge_function), f"every {step} message answered", 60, 0.2)
        if label is not None:
            for name, token in tokens.items():
                assert await _has(secrets, name, token, label)
    for name, token in tokens.items():
        assert await secrets.version(name) == token
        current = await secrets.value(name)
        assert await db.logs_in(current["username"], current["password"])
    for process in processes:
        process.send(signal.SIGTERM)
    for process in processes:
        assert process.wait(30) == 0
    done = [(e["secret_id"], e["step"]) for p in processes for e in p.named("bridge.step_done")]
    assert sorted(done) == sorted((n, s) for n in names for s in ("createSecret", "testSecret"))
    finished = [e["secret_id"] for p in processes for e in p.named("rotation.succeeded")]
    assert sorted(finished) == sorted(names), "each rotation finished once"
    # A duplicate that found the secret being rotated (by the other daemon: its lock, or by
    # this one) was shown again later, never reported to the function as a failure.
    failed = [e for p in processes for e in p.named("rotation.failed")]
    assert all(e["category"] == "locked" for e in failed), failed
    postponed = [e for p in processes for e in p.named("bridge.step_postponed")]
    assert len(postponed) >= len(failed), (postponed, failed)
    assert not [e for p in processes for e in p.named("bridge.step_failed")]


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_the_scan_finishes_a_rotation_whose_messages_were_lost(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    user, name = await make_login(db, secrets)
    token = await start_rotation(bridge_function, name)
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"id": name, "rotation": "bridge"}],
        defaults={
            "bridge": {
                "queue_url": bridge_function.queue_url,
                "function_arn": bridge_function.function_arn,
                "scan_every": "1s",
            }
        },
    )
    process = rotd_process("run", "-c", str(path))
    (stranded,) = process.wait_for_event("bridge.stranded", 60)
    (resumed,) = process.wait_for_event("rotation.resumed", 60)
    assert stranded["version_id"] == resumed["version_id"] == token
    assert await secrets.version(name) == token
    current = await secrets.value(name)
    assert await db.logs_in(user, current["password"])
    assert not await db.logs_in(user, "Initial-pass-1")
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0
