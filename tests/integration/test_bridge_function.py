"""The bridge rotation function against moto's server, invoked as Secrets Manager would.

The tests play rotd's part: they read the message the function sent and make the step's
effect visible (the pending value, the ROTD_TESTED label, AWSCURRENT) or report a failure in
the secret's tag, from another task while the function waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

import pytest

from rotd.bridge import wire
from rotd.bridge.lambda_function import SettingsError, StepFailed
from tests.fixtures.aws import Secrets
from tests.fixtures.bridge import (
    DEFAULT_RULES,
    BridgeFunction,
    FakeContext,
    invoke_rotation,
    invoke_step,
    receive_messages,
)
from tests.fixtures.deadlines import until

OLD = {"username": "app", "password": "Old-bridge-pass-1"}
NEW = {"username": "app", "password": "New-bridge-pass-2"}


async def rotating_secret(function: BridgeFunction, secrets: Secrets) -> tuple[str, str]:
    """A new secret, its rotation by ``function`` started: its ARN and the pending version.
    ROTD_TESTED sits on the current version, as it would after an earlier rotation."""
    name = await secrets.create("bridge", OLD)
    async with secrets.client() as client:
        current = (await client.get_secret_value(SecretId=name))["VersionId"]
        await client.update_secret_version_stage(
            SecretId=name, VersionStage=wire.TESTED, MoveToVersionId=current
        )
        rotated = await client.rotate_secret(
            SecretId=name, RotationLambdaARN=function.function_arn, RotationRules=DEFAULT_RULES
        )
    return rotated["ARN"], rotated["VersionId"]


async def move_stage(secrets: Secrets, secret_id: str, stage: str, token: str) -> None:
    async with secrets.client() as client:
        described = await client.describe_secret(SecretId=secret_id)
        holders = [v for v, s in described["VersionIdsToStages"].items() if stage in s]
        await client.update_secret_version_stage(
            SecretId=secret_id,
            VersionStage=stage,
            MoveToVersionId=token,
            **({"RemoveFromVersionId": holders[0]} if holders else {}),
        )


async def do_step(secrets: Secrets, secret_id: str, token: str, step: str) -> None:
    """What rotd makes visible when it has done ``step``."""
    if step == "createSecret":
        await secrets.put_pending(secret_id, NEW, token)
    elif step == "finishSecret":
        await move_stage(secrets, secret_id, "AWSCURRENT", token)
    else:
        await move_stage(secrets, secret_id, wire.TESTED, token)


async def report_failure(secrets: Secrets, secret_id: str, failure: wire.Failure) -> None:
    async with secrets.client() as client:
        await client.tag_resource(
            SecretId=secret_id,
            Tags=[{"Key": wire.FAILURE_TAG, "Value": wire.encode_failure(failure)}],
        )


async def play_rotd(function: BridgeFunction, secrets: Secrets, fail: str | None = None) -> None:
    """Consume the function's queue as rotd would, until finishSecret (or ``fail``'s step)."""
    while True:
        for message in await receive_messages(function, wait_s=30):
            if message.step == fail:
                failure = wire.Failure(message.request, message.step, "database", "refused")
                await report_failure(secrets, message.secret_id, failure)
                return
            await do_step(secrets, message.secret_id, message.token, message.step)
            if message.step == "finishSecret":
                return


def outcomes(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "rotd.bridge" and r.levelno == logging.INFO
    ]


@pytest.mark.parametrize("step", wire.STEPS)
async def test_a_step_is_handed_to_rotd_and_returns_once_its_effect_is_visible(
    step: str, bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    arn, token = await rotating_secret(bridge_function, secrets)
    if step != "createSecret":
        await do_step(secrets, arn, token, "createSecret")

    invocation = asyncio.create_task(invoke_step(bridge_function, arn, token, step))
    (message,) = await receive_messages(bridge_function, wait_s=30)
    assert not invocation.done(), invocation.result()  # it waits for rotd
    assert message == wire.Message(
        secret_id=arn,
        token=token,
        step=step,
        request=message.request,
        function_arn=bridge_function.function_arn,
    )
    assert re.fullmatch(r"[0-9a-f]{32}", message.request)

    await do_step(secrets, arn, token, step)
    result = await asyncio.wait_for(invocation, 30)
    assert result.ok, result.error

    # Secrets Manager retries a step: once its effect is visible, nothing is asked again.
    again = await invoke_step(bridge_function, arn, token, step)
    assert again.ok, again.error
    assert await receive_messages(bridge_function) == []


async def test_a_rotation_runs_the_four_steps_and_logs_one_line_each(
    bridge_function: BridgeFunction, secrets: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rotd.bridge")
    name = await secrets.create("bridge", OLD)
    rotd = asyncio.create_task(play_rotd(bridge_function, secrets))

    rotation = await invoke_rotation(bridge_function, name)
    await asyncio.wait_for(rotd, 30)

    assert rotation.ok, rotation.steps
    assert [s.step for s in rotation.steps] == list(wire.STEPS)
    assert await secrets.value(name) == NEW
    assert await secrets.version(name) == rotation.token
    lines = outcomes(caplog)
    # testSecret waits for the label setSecret's effect already put there.
    assert [(line["step"], line["outcome"]) for line in lines] == [
        ("createSecret", "done"),
        ("setSecret", "done"),
        ("testSecret", "already_done"),
        ("finishSecret", "done"),
    ]
    arn = (await secrets.describe(name))["ARN"]
    assert {line["secret"] for line in lines} == {arn}
    assert {line["token"] for line in lines} == {rotation.token}
    assert all(line["seconds"] >= 0 for line in lines)
    assert NEW["password"] not in caplog.text
    assert OLD["password"] not in caplog.text


async def test_a_rotation_stops_at_the_first_step_rotd_fails(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    name = await secrets.create("bridge", OLD)
    rotd = asyncio.create_task(play_rotd(bridge_function, secrets, fail="setSecret"))

    rotation = await invoke_rotation(bridge_function, name)
    await asyncio.wait_for(rotd, 30)

    assert [(s.step, s.ok) for s in rotation.steps] == [
        ("createSecret", True),
        ("setSecret", False),
    ]
    assert isinstance(rotation.steps[-1].exception, StepFailed)
    assert await secrets.value(name) == OLD


async def test_a_failure_reported_for_this_request_fails_the_step_at_once(
    bridge_function: BridgeFunction, secrets: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rotd.bridge")
    arn, token = await rotating_secret(bridge_function, secrets)
    invocation = asyncio.create_task(
        invoke_step(bridge_function, arn, token, "createSecret", timeout_s=60)
    )
    (message,) = await receive_messages(bridge_function, wait_s=30)

    failure = wire.Failure(message.request, "createSecret", "database", "cannot log in as app")
    await report_failure(secrets, arn, failure)
    reported = time.monotonic()
    result = await asyncio.wait_for(invocation, 30)

    # The function looks every 0.05 s; its own wait would last 59 s.
    assert time.monotonic() - reported < 2
    assert isinstance(result.exception, StepFailed)
    assert result.exception.category == "database"
    assert result.exception.reason == "cannot log in as app"
    assert result.error == f"rotd failed createSecret for {arn}: cannot log in as app [database]"
    (line,) = outcomes(caplog)
    assert (line["outcome"], line["error_type"]) == ("failed", "StepFailed")
    assert line["error"] == result.error


async def test_a_failure_reported_for_another_request_is_ignored(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    arn, token = await rotating_secret(bridge_function, secrets)
    # A failure from an earlier invocation of the same step, already on the secret.
    stale = wire.Failure(uuid.uuid4().hex, "setSecret", "database", "an earlier attempt")
    await report_failure(secrets, arn, stale)
    await do_step(secrets, arn, token, "createSecret")

    result = await invoke_step(
        bridge_function,
        arn,
        token,
        "setSecret",
        environment={"ROTD_BRIDGE_STEP_TIMEOUT_S": "0.5"},
    )

    # It waited for its own answer until its time ran out.
    assert isinstance(result.exception, TimeoutError), result.error
    (message,) = await receive_messages(bridge_function)
    assert message.request != stale.request


async def test_the_wait_ends_before_the_function_would_be_stopped(
    bridge_function: BridgeFunction, secrets: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rotd.bridge")
    arn, token = await rotating_secret(bridge_function, secrets)

    # 3 s left, 1 s kept in hand (the fixture's ROTD_BRIDGE_MARGIN_S): it waits 2 s.
    result = await invoke_step(bridge_function, arn, token, "createSecret", timeout_s=3)

    assert isinstance(result.exception, TimeoutError)
    assert 1.5 < result.seconds < 3
    assert result.error is not None
    assert re.search(
        f"rotd did not complete createSecret for {arn} within [12][.0-9]* s", result.error
    )
    assert "`rotd run` with the bridge configured" in result.error
    assert bridge_function.queue_url in result.error
    assert wire.FAILURE_TAG in result.error
    assert len(await receive_messages(bridge_function)) == 1
    (line,) = outcomes(caplog)
    assert (line["outcome"], line["error_type"]) == ("timed_out", "TimeoutError")


async def test_a_step_timeout_caps_the_wait(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    arn, token = await rotating_secret(bridge_function, secrets)

    result = await invoke_step(
        bridge_function,
        arn,
        token,
        "createSecret",
        timeout_s=60,
        environment={"ROTD_BRIDGE_STEP_TIMEOUT_S": "0.5"},
    )

    assert isinstance(result.exception, TimeoutError)
    assert f"rotd did not complete createSecret for {arn} within 0.5 s" in str(result.error)
    assert result.seconds < 10


async def test_awscurrent_on_the_token_means_the_rotation_is_done(
    bridge_function: BridgeFunction, secrets: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rotd.bridge")
    arn, _ = await rotating_secret(bridge_function, secrets)
    async with secrets.client() as client:
        current = (await client.get_secret_value(SecretId=arn))["VersionId"]

    for step in wire.STEPS:
        result = await invoke_step(bridge_function, arn, current, step)
        assert result.ok, result.error

    assert await receive_messages(bridge_function) == []
    assert {line["outcome"] for line in outcomes(caplog)} == {"already_current"}


async def test_a_qualified_function_arn_is_the_same_function(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    arn, token = await rotating_secret(bridge_function, secrets)
    await do_step(secrets, arn, token, "createSecret")
    context = FakeContext(f"{bridge_function.function_arn}:$LATEST")

    result = await invoke_step(bridge_function, arn, token, "createSecret", context=context)

    assert result.ok, result.error


async def refused(function: BridgeFunction, arn: str, token: str, **how: Any) -> str:
    result = await invoke_step(function, arn, token, "createSecret", **how)
    assert isinstance(result.exception, ValueError), result.error
    assert await receive_messages(function) == []
    return str(result.error)


async def test_a_secret_not_rotated_by_this_function_is_refused(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    arn, token = await rotating_secret(bridge_function, secrets)

    other = bridge_function.function_arn.replace(":function:", ":function:someone-else-")
    error = await refused(bridge_function, arn, token, context=FakeContext(other))
    assert error == (
        f"secret {arn} is rotated by {bridge_function.function_arn}, not by this function ({other})"
    )

    async with secrets.client() as client:
        await client.cancel_rotate_secret(SecretId=arn)
    error = await refused(bridge_function, arn, token)
    assert error == f"secret {arn} is not enabled for rotation"


async def test_a_version_not_being_rotated_to_is_refused(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    arn, token = await rotating_secret(bridge_function, secrets)

    unknown = str(uuid.uuid4())
    error = await refused(bridge_function, arn, unknown)
    assert error == f"secret {arn} has no version {unknown} to rotate to"

    await do_step(secrets, arn, token, "createSecret")
    async with secrets.client() as client:
        await client.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSPENDING", RemoveFromVersionId=token
        )
    error = await refused(bridge_function, arn, token)
    assert error == f"version {token} of secret {arn} is not AWSPENDING: it is not being rotated to"


async def test_a_function_without_its_queue_says_which_setting_is_missing(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    arn, token = await rotating_secret(bridge_function, secrets)

    result = await invoke_step(
        bridge_function, arn, token, "createSecret", environment={"ROTD_BRIDGE_QUEUE_URL": ""}
    )

    assert isinstance(result.exception, SettingsError)
    assert str(result.error).startswith("ROTD_BRIDGE_QUEUE_URL is not set")


async def test_the_function_waits_for_the_effect_not_for_the_message_to_be_read(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    # rotd acts on what Secrets Manager shows: a message read but not acted on is not done.
    arn, token = await rotating_secret(bridge_function, secrets)
    invocation = asyncio.create_task(invoke_step(bridge_function, arn, token, "finishSecret"))
    await receive_messages(bridge_function, wait_s=30)
    await do_step(secrets, arn, token, "createSecret")
    await move_stage(secrets, arn, wire.TESTED, token)
    assert not invocation.done()

    await do_step(secrets, arn, token, "finishSecret")
    await until(invocation.done, "the function to return", timeout_s=30)
    assert (await invocation).ok


@pytest.mark.parametrize("step", ["setSecret", "testSecret"])
async def test_a_rotation_finished_while_a_step_waits_ends_the_wait(
    step: str, bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    """rotd's scan finishes a stranded rotation whole, without the label a step waits for:
    AWSCURRENT on the version ends every step's wait."""
    arn, token = await rotating_secret(bridge_function, secrets)
    await do_step(secrets, arn, token, "createSecret")

    invocation = asyncio.create_task(invoke_step(bridge_function, arn, token, step, timeout_s=20))
    await receive_messages(bridge_function, wait_s=30)
    await move_stage(secrets, arn, "AWSCURRENT", token)
    result = await asyncio.wait_for(invocation, 30)
    assert result.ok, result.error
    assert result.seconds < 10
