"""The bridge end to end: Secrets Manager's rotation (played in this process, as moto cannot
run a function) invokes the bridge function's handler step by step, and a real ``rotd run``
consumes its queue and does the steps, on every engine and strategy.

moto's Lambda holds the function's configuration (built from ``rotd bridge package``'s
archive); its RotateSecret, through the test shim, stages AWSPENDING and records the rotation
settings as Secrets Manager does, without invoking anything.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from rotd.bridge import wire
from tests.conformance.targets import DatabaseTarget, RabbitmqTarget, RedisTarget
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.bridge import (
    BridgeFunction,
    invoke_rotation,
    invoke_step,
    receive_messages,
    start_rotation,
)
from tests.fixtures.databases import Mariadb, Postgres
from tests.fixtures.deadlines import until
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, injected_env, run

Start = Callable[..., RotdProcess]
Target = DatabaseTarget | RedisTarget | RabbitmqTarget


@pytest.fixture(params=["postgres", "mariadb", "redis", "exec"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    """A system rotd logs in to, through each of its engines."""
    if request.param == "postgres":
        db: Postgres | Mariadb = Postgres(request.getfixturevalue("pg_server"))
    elif request.param == "mariadb":
        db = Mariadb(request.getfixturevalue("mysql_server"))
    elif request.param == "redis":
        yield RedisTarget(request.getfixturevalue("redis_servers")("aclfile"))
        return
    else:
        broker = RabbitmqTarget()
        yield broker
        for user in sorted(broker.users):
            await broker.drop_login(user)
        await broker.cleanup()
        return
    yield DatabaseTarget(db)
    await db.cleanup()


def settings_of(target: Target) -> dict[str, Any]:
    return target.database_settings() if hasattr(target, "database_settings") else {}


async def login(target: Target, secrets: Secrets, label: str, *, master: bool = False) -> str:
    """A new login on ``target`` and its secret; returns the secret's name."""
    user = f"{label}_{uuid.uuid4().hex[:8]}"
    password = f"Pass-{uuid.uuid4().hex}"
    if master:
        await target.create_master(user, password)
    else:
        await target.create_login(user, password)
    return await secrets.create(user, target.secret(user, password))


def bridged(
    tmp_path: Path,
    moto: MotoServer,
    function: BridgeFunction,
    target: Target,
    secrets: list[dict[str, Any]],
    scan_every: str = "1h",
) -> Path:
    return write_inventory(
        tmp_path / "inv.yaml",
        moto,
        databases=[{"name": "bridged", **settings_of(target), "secrets": secrets}],
        defaults={
            "rotation": "bridge",
            "bridge": {
                "queue_url": function.queue_url,
                "function_arn": function.function_arn,
                "scan_every": scan_every,
            },
        },
    )


def started(process: RotdProcess) -> RotdProcess:
    process.wait_for_event("bridge.consuming", 60)
    return process


async def logs_in(target: Target, secrets: Secrets, name: str, stage: str) -> bool:
    value = await secrets.value(name, stage)
    return await target.logs_in(value["username"], value["password"])


@pytest.mark.parametrize("strategy", ["single_user", "alternating_users"])
async def test_secrets_managers_rotation_is_done_by_rotd_run(
    target: Target,
    strategy: str,
    secrets: Secrets,
    moto: MotoServer,
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    name = await login(target, secrets, "app")
    entry: dict[str, Any] = {"id": name, "strategy": strategy}
    if strategy == "alternating_users":
        entry["master_secret"] = await login(target, secrets, "adm", master=True)
    before = await secrets.version(name)
    path = bridged(tmp_path, moto, bridge_function, target, [entry])
    process = started(rotd_process("run", "-c", str(path)))

    rotation = await invoke_rotation(bridge_function, name, timeout_s=60)

    assert rotation.ok, rotation.steps
    assert [s.step for s in rotation.steps] == list(wire.STEPS)
    assert await secrets.version(name) == rotation.token
    assert await secrets.version(name, "AWSPREVIOUS") == before
    assert await logs_in(target, secrets, name, "AWSCURRENT")
    if strategy == "alternating_users":
        assert await logs_in(target, secrets, name, "AWSPREVIOUS"), "the old login still works"
    elif not isinstance(target, RedisTarget):  # Redis keeps AWSPREVIOUS's (no window)
        assert not await logs_in(target, secrets, name, "AWSPREVIOUS")
    described = await secrets.describe(name)
    assert described["RotationEnabled"]
    assert wire.TESTED in described["VersionIdsToStages"][rotation.token]
    (succeeded,) = process.wait_for_event("rotation.succeeded", 30)
    assert succeeded["version_id"] == rotation.token
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0
    # createSecret and setSecret were asked; testSecret found the version tested already.
    assert [e["step"] for e in process.named("bridge.step_done")] == ["createSecret", "testSecret"]
    assert [e["step"] for e in process.named("bridge.message_received")] == [
        "createSecret",
        "setSecret",
        "finishSecret",
    ]
    assert not process.named("rotation.failed")


@pytest.mark.parametrize("target", ["postgres"], indirect=True)
async def test_a_failing_set_fails_the_functions_step_within_seconds(
    target: DatabaseTarget,
    secrets: Secrets,
    moto: MotoServer,
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    """The master login may not create roles: setSecret cannot make the clone. The function
    fails setSecret with rotd's reason at once, and nothing applications use changes."""
    name = await login(target, secrets, "app")
    weak_master = await login(target, secrets, "adm")  # logs in, may not manage roles
    entry = {"id": name, "strategy": "alternating_users", "master_secret": weak_master}
    before = await secrets.stages(name)
    path = bridged(tmp_path, moto, bridge_function, target, [entry])
    process = started(rotd_process("run", "-c", str(path)))

    rotation = await invoke_rotation(bridge_function, name, timeout_s=60)

    created, failed = rotation.steps
    assert (created.step, created.ok) == ("createSecret", True)
    assert (failed.step, failed.ok) == ("setSecret", False)
    assert failed.seconds < 10, failed
    assert failed.error is not None
    arn = (await secrets.describe(name))["ARN"]
    assert failed.error.startswith(f"rotd failed setSecret for {arn}: "), failed.error
    assert failed.error.endswith("[permission]"), failed.error
    pending = await secrets.value(name, "AWSPENDING")
    assert pending["password"] not in failed.error
    after = await secrets.stages(name)
    assert {v: s for v, s in after.items() if v != rotation.token} == before
    assert after[rotation.token] == ["AWSPENDING"], "no label of rotd's on a failed set"
    assert await logs_in(target, secrets, name, "AWSCURRENT")
    assert not await target.logs_in(pending["username"], pending["password"])
    (reported,) = process.wait_for_event("bridge.step_failed", 10)
    assert (reported["step"], reported["category"]) == ("setSecret", "permission")
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0


@pytest.mark.parametrize("target", ["mariadb"], indirect=True)
async def test_a_lost_message_is_recovered_by_the_scan(
    target: DatabaseTarget,
    secrets: Secrets,
    moto: MotoServer,
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    """The function's createSecret message is lost and it times out; rotd's scan finishes
    the rotation, and Secrets Manager's next attempt finds every step done."""
    name = await login(target, secrets, "app")
    path = bridged(tmp_path, moto, bridge_function, target, [{"id": name}], scan_every="1s")
    token = await start_rotation(bridge_function, name)
    arn = (await secrets.describe(name))["ARN"]
    timed_out = await invoke_step(bridge_function, arn, token, "createSecret", timeout_s=3)
    assert not timed_out.ok
    assert timed_out.error is not None
    assert "did not complete createSecret" in timed_out.error, timed_out.error
    (lost,) = await receive_messages(bridge_function, wait_s=5)  # nobody will read it
    assert (lost.step, lost.token) == ("createSecret", token)

    process = rotd_process("run", "-c", str(path))
    (stranded,) = process.wait_for_event("bridge.stranded", 60)
    (resumed,) = process.wait_for_event("rotation.resumed", 60)
    assert stranded["version_id"] == resumed["version_id"] == token
    assert await secrets.version(name) == token
    assert await logs_in(target, secrets, name, "AWSCURRENT")

    for step in wire.STEPS:
        retried = await invoke_step(bridge_function, arn, token, step, timeout_s=10)
        assert retried.ok, retried
        assert retried.seconds < 5
    assert await receive_messages(bridge_function) == [], "every step was done: no message"
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0


@pytest.mark.parametrize("target", ["postgres"], indirect=True)
async def test_rotate_starts_secrets_managers_rotation_and_refuses_a_disabled_one(
    target: DatabaseTarget,
    secrets: Secrets,
    moto: MotoServer,
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    name = await login(target, secrets, "app")
    path = bridged(tmp_path, moto, bridge_function, target, [{"id": name}])

    code, out, _ = run(rotd_process, "rotate", "-c", str(path), name)
    assert code == 1
    (line,) = out.splitlines()
    assert "guard: the inventory says rotation: bridge, but its rotation is not enabled" in line
    assert (
        f"aws secretsmanager rotate-secret --secret-id {name} --rotation-lambda-arn "
        f"{bridge_function.function_arn} --rotation-rules "
        """'{"ScheduleExpression": "rate(30 days)"}'"""
    ) in line
    assert list((await secrets.stages(name)).values()) == [["AWSCURRENT"]]

    async with bridge_function.client("secretsmanager") as client:
        await client.rotate_secret(
            SecretId=name,
            RotationLambdaARN=bridge_function.function_arn,
            RotationRules={"ScheduleExpression": "rate(30 days)"},
            RotateImmediately=False,
        )
    process = started(rotd_process("run", "-c", str(path)))
    code, out, err = run(rotd_process, "rotate", "-c", str(path), name)
    assert code == 0, err
    (line,) = out.splitlines()
    assert "rotation started by Secrets Manager: version " in line
    token = line.split("version ")[1].split(";")[0]
    assert (await secrets.stages(name))[token] == ["AWSPENDING"]
    arn = (await secrets.describe(name))["ARN"]
    for step in wire.STEPS:
        result = await invoke_step(bridge_function, arn, token, step, timeout_s=60)
        assert result.ok, result
    assert await secrets.version(name) == token
    assert await logs_in(target, secrets, name, "AWSCURRENT")
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0


# setSecret never returns once the password is set: the process stands as one SIGKILLed there.
HANG_AFTER_SET = """
import asyncio
import rotd.strategies

_set = rotd.strategies.set_single_user

async def set_single_user(*args, **kwargs):
    await _set(*args, **kwargs)
    await asyncio.Event().wait()

rotd.strategies.set_single_user = set_single_user
"""


@pytest.mark.parametrize("target", ["postgres"], indirect=True)
async def test_a_daemon_killed_in_the_middle_of_a_step_strands_nothing(
    target: DatabaseTarget,
    secrets: Secrets,
    moto: MotoServer,
    bridge_function: BridgeFunction,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    """The daemon that received setSecret dies once the database holds the new password; the
    message stays hidden for minutes. Another daemon's scan finishes the rotation, and the
    function, still waiting on setSecret, sees it done."""
    name = await login(target, secrets, "app")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = bridged(tmp_path / "a", moto, bridge_function, target, [{"id": name}])
    second = bridged(tmp_path / "b", moto, bridge_function, target, [{"id": name}], "1s")
    dying = started(
        rotd_process("run", "-c", str(first), env=injected_env(tmp_path, HANG_AFTER_SET))
    )
    rotation = asyncio.create_task(invoke_rotation(bridge_function, name, timeout_s=60))

    async def new_password_set() -> bool:
        async with secrets.client() as client:
            try:
                got = await client.get_secret_value(SecretId=name, VersionStage="AWSPENDING")
            except client.exceptions.ResourceNotFoundException:
                return False  # not staged yet, or createSecret not done yet
        value = json.loads(got["SecretString"])
        return await target.logs_in(value["username"], value["password"])

    await until(new_password_set, "the new password set by the dying daemon", 60, 0.1)
    dying.kill()
    survivor = rotd_process("run", "-c", str(second))
    (stranded,) = survivor.wait_for_event("bridge.stranded", 60)
    done = await asyncio.wait_for(rotation, 60)

    assert done.ok, done.steps
    assert stranded["version_id"] == done.token
    assert await secrets.version(name) == done.token
    assert await logs_in(target, secrets, name, "AWSCURRENT")
    survivor.send(signal.SIGTERM)
    assert survivor.wait(30) == 0
