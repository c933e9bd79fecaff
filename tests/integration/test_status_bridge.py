"""``rotd status`` on bridged secrets in moto: Secrets Manager's rotation record instead of
rotd's schedule, a rotation in progress and how far it got, and a failure reported to the
bridge function."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from rotd.inventory import Inventory
from rotd.secretstore import AwsSecretStore, connection_for
from rotd.status import SecretReport, survey
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.rotation import inventory

LOGIN = {"engine": "postgres", "host": "db.internal", "username": "app",
         "password": "Status-pw-1"}  # fmt: skip


def function_arn(moto: MotoServer) -> str:
    # No such function in moto: RotateSecret records the settings without invoking it.
    return f"arn:aws:lambda:{moto.region}:123456789012:function:rotd-status-absent"


async def enable_rotation(secrets: Secrets, name: str, arn: str) -> None:
    async with secrets.client() as client:
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await client.rotate_secret(
                SecretId=name, RotationLambdaARN=arn, RotationRules={"AutomaticallyAfterDays": 30}
            )


def bridged(moto: MotoServer, *names: str) -> Inventory:
    lines = "".join(f"      - id: {n}\n        rotation: bridge\n" for n in names)
    return inventory(
        moto,
        f"bridge:\n  queue_url: {moto.endpoint_url}/123456789012/rotd-status\n"
        f"  function_arn: {function_arn(moto)}\n"
        f"databases:\n  - name: orders\n    secrets:\n{lines}",
    )


async def report_of(inv: Inventory) -> SecretReport:
    async with AwsSecretStore(connection_for(inv)) as store:
        (report,) = await survey(inv, store)
    return report


async def test_a_bridged_secret_shows_secrets_managers_schedule_and_the_rotation_under_way(
    secrets: Secrets, moto: MotoServer
) -> None:
    name = await secrets.create("bridged", LOGIN)
    created = (await secrets.describe(name))["CreatedDate"]
    await enable_rotation(secrets, name, function_arn(moto))
    described = await secrets.describe(name)
    (pending,) = [v for v, s in described["VersionIdsToStages"].items() if s == ["AWSPENDING"]]

    report = await report_of(bridged(moto, name))

    assert report.rotation == "bridge"
    assert report.problem is None
    assert report.unfinished == pending
    assert report.progress == "Secrets Manager's; value not yet written (createSecret)"
    assert report.bridge_failure is None
    # Secrets Manager's LastRotatedDate (moto sets it at RotateSecret), else the credential's
    # creation.
    last = described.get("LastRotatedDate") or created
    assert report.last_rotated == last.astimezone(UTC).isoformat(timespec="seconds")
    next_rotation = described.get("NextRotationDate")
    if next_rotation is not None:
        assert report.next_due == next_rotation.astimezone(UTC).isoformat(timespec="seconds")
    else:
        assert report.next_due is None
    line = report.line()
    assert " strategy=single_user rotation=bridge user=app " in line
    assert line.endswith(
        f"rotation in progress {pending}: Secrets Manager's; value not yet written (createSecret)"
    )
    assert json.loads(json.dumps(report.as_dict()))["rotation"] == "bridge"


async def test_a_tested_pending_version_and_a_failure_tag_are_shown(
    secrets: Secrets, moto: MotoServer
) -> None:
    name = await secrets.create("bridged", LOGIN)
    await enable_rotation(secrets, name, function_arn(moto))
    token = await secrets.put_pending(name, {**LOGIN, "password": "Status-pw-2"})
    async with secrets.client() as client:
        await client.update_secret_version_stage(
            SecretId=name, VersionStage="ROTD_TESTED", MoveToVersionId=token
        )
        await client.tag_resource(
            SecretId=name,
            Tags=[
                {
                    "Key": "rotd:bridge:failure",
                    "Value": "req-1 setSecret unreachable db.internal:5432 refused the connection",
                }
            ],
        )

    report = await report_of(bridged(moto, name))

    assert report.unfinished == token
    assert report.progress == "Secrets Manager's; value written, set and tested (ROTD_TESTED)"
    assert report.bridge_failure == (
        "setSecret failed (unreachable): db.internal:5432 refused the connection [request req-1]"
    )
    assert report.line().endswith(
        f"rotation in progress {token}: Secrets Manager's; value written, set and tested "
        "(ROTD_TESTED); BRIDGE FAILURE: setSecret failed (unreachable): db.internal:5432 "
        "refused the connection [request req-1]"
    )
    assert "Status-pw" not in json.dumps(report.as_dict())


async def test_a_bridged_secret_without_rotation_enabled_is_a_problem(
    secrets: Secrets, moto: MotoServer
) -> None:
    name = await secrets.create("bridged", LOGIN)

    report = await report_of(bridged(moto, name))

    assert report.rotation == "bridge"
    assert report.problem is not None
    assert "its rotation is not enabled in Secrets Manager" in report.problem
    assert report.next_due is None
    assert datetime.fromisoformat(report.last_rotated or "") <= datetime.now(UTC)
