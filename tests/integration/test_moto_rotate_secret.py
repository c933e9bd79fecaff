"""RotateSecret in the tests' moto (rotd.testing.secretsmanager) answers like Secrets Manager
before it would invoke the rotation function: settings recorded, AWSPENDING staged, no more."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.fixtures.aws import Secrets
from tests.fixtures.bridge import BridgeFunction

VALUE = {"username": "app", "password": "Moto-rotate-pass-1"}


async def test_rotate_secret_records_the_settings_and_stages_an_empty_pending_version(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    name = await secrets.create("rotate", VALUE)
    current = await secrets.version(name)
    token = str(uuid.uuid4())
    async with secrets.client() as client:
        rotated = await client.rotate_secret(
            SecretId=name,
            ClientRequestToken=token,
            RotationLambdaARN=bridge_function.function_arn,
            RotationRules={"ScheduleExpression": "rate(30 days)"},
        )
        assert rotated["VersionId"] == token
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await client.get_secret_value(SecretId=name, VersionId=token)

    described = await secrets.describe(name)
    assert described["RotationEnabled"] is True
    assert described["RotationLambdaARN"] == bridge_function.function_arn
    assert described["RotationRules"] == {"ScheduleExpression": "rate(30 days)"}
    days_ahead = (described["NextRotationDate"].timestamp() - time.time()) / 86400
    assert 29.9 < days_ahead <= 30
    assert "LastRotatedDate" in described
    # Nothing invoked the function: AWSCURRENT has not moved.
    assert await secrets.stages(name) == {current: ["AWSCURRENT"], token: ["AWSPENDING"]}
    assert await secrets.value(name) == VALUE


async def test_rotate_secret_is_refused_while_a_rotation_is_in_progress_only(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    name = await secrets.create("rotate", VALUE)
    async with secrets.client() as client:
        first = await client.rotate_secret(
            SecretId=name, RotationLambdaARN=bridge_function.function_arn
        )
        with pytest.raises(client.exceptions.InvalidRequestException):
            await client.rotate_secret(SecretId=name)

        # The rotation finished: AWSPENDING left on the version now AWSCURRENT, as AWS's
        # template leaves it. A new rotation may start, with the function recorded.
        await client.put_secret_value(
            SecretId=name,
            ClientRequestToken=first["VersionId"],
            SecretString='{"password": "Moto-rotate-pass-2"}',
            VersionStages=["AWSPENDING"],
        )
        previous = await secrets.version(name)
        await client.update_secret_version_stage(
            SecretId=name,
            VersionStage="AWSCURRENT",
            MoveToVersionId=first["VersionId"],
            RemoveFromVersionId=previous,
        )
        second = await client.rotate_secret(SecretId=name)

    stages = await secrets.stages(name)
    assert stages[first["VersionId"]] == ["AWSCURRENT"]
    assert stages[second["VersionId"]] == ["AWSPENDING"]
    described = await secrets.describe(name)
    assert described["RotationLambdaARN"] == bridge_function.function_arn
    assert described["RotationEnabled"] is True


async def test_rotate_secret_not_immediately_records_the_settings_only(
    bridge_function: BridgeFunction, secrets: Secrets
) -> None:
    name = await secrets.create("rotate", VALUE)
    before = await secrets.stages(name)
    async with secrets.client() as client:
        await client.rotate_secret(
            SecretId=name,
            RotationLambdaARN=bridge_function.function_arn,
            RotationRules={"AutomaticallyAfterDays": 7},
            RotateImmediately=False,
        )

    assert await secrets.stages(name) == before
    described = await secrets.describe(name)
    assert described["RotationEnabled"] is True
    assert described["RotationRules"] == {"AutomaticallyAfterDays": 7}
