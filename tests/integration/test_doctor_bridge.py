"""``rotd doctor`` on bridged secrets, against a queue and a function made in moto's server:
the bridge's queue and function, and each secret's rotation settings in Secrets Manager."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import aioboto3
import pytest

from rotd.bridge import package
from rotd.bridgedoctor import check_function, function_connection
from rotd.doctor import Check, Level, diagnose
from rotd.inventory import Inventory
from rotd.secretstore import connection_for
from tests.fixtures.aws import MotoServer, Secrets, free_port
from tests.fixtures.bridge import LAMBDA_TRUST
from tests.fixtures.iam import IamMoto
from tests.fixtures.process import RotdProcess, run
from tests.fixtures.rotation import inventory

Start = Callable[..., RotdProcess]

HANDLER = package.HANDLER
ACCOUNT = "123456789012"  # moto's


@dataclass
class Bridge:
    """A queue, a function and its role in moto, each uniquely named; removed after."""

    server: MotoServer
    queue_url: str = ""
    function_arn: str = ""
    role_arn: str = ""

    def session(self) -> aioboto3.Session:
        return aioboto3.Session(region_name=self.server.region)

    async def create_queue(self, **attributes: str) -> str:
        async with self.session().client("sqs", endpoint_url=self.server.endpoint_url) as sqs:
            name = "rotd-bridge-" + uuid.uuid4().hex[:10]
            self.queue_url = (await sqs.create_queue(QueueName=name, Attributes=attributes))[
                "QueueUrl"
            ]
        return self.queue_url

    def name_function(self) -> str:
        name = "rotd-bridge-" + uuid.uuid4().hex[:10]
        self.function_arn = f"arn:aws:lambda:{self.server.region}:{ACCOUNT}:function:{name}"
        return self.function_arn

    async def create_function(
        self,
        *,
        handler: str = HANDLER,
        queue_url: str | None = None,
        timeout_s: int = 90,
        code: bytes | None = None,
    ) -> None:
        url = self.server.endpoint_url
        async with (
            self.session().client("iam", endpoint_url=url) as iam,
            self.session().client("lambda", endpoint_url=url) as lam,
        ):
            role = await iam.create_role(
                RoleName="rotd-bridge-" + uuid.uuid4().hex[:10],
                AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST),
            )
            self.role_arn = role["Role"]["Arn"]
            await lam.create_function(
                FunctionName=self.function_arn.rsplit(":", 1)[-1],
                Runtime=package.RUNTIME,
                Role=self.role_arn,
                Handler=handler,
                Code={"ZipFile": package.archive_bytes() if code is None else code},
                Timeout=timeout_s,
                Environment={"Variables": {"ROTD_BRIDGE_QUEUE_URL": queue_url or self.queue_url}},
            )

    async def cleanup(self) -> None:
        url = self.server.endpoint_url
        async with (
            self.session().client("iam", endpoint_url=url) as iam,
            self.session().client("lambda", endpoint_url=url) as lam,
            self.session().client("sqs", endpoint_url=url) as sqs,
        ):
            if self.function_arn:
                with suppress(lam.exceptions.ResourceNotFoundException):
                    await lam.delete_function(FunctionName=self.function_arn)
            if self.role_arn:
                with suppress(iam.exceptions.NoSuchEntityException):
                    await iam.delete_role(RoleName=self.role_arn.rsplit("/", 1)[-1])
            if self.queue_url:
                with suppress(sqs.exceptions.QueueDoesNotExist):
                    await sqs.delete_queue(QueueUrl=self.queue_url)


@pytest.fixture
async def bridge(moto: MotoServer) -> AsyncIterator[Bridge]:
    made = Bridge(moto)
    yield made
    await made.cleanup()


def credentials() -> dict[str, str]:
    """A login at an address where nothing listens: the database's checks fail fast, and are
    not what these tests look at."""
    return {"engine": "postgres", "host": "127.0.0.1", "port": str(free_port()),
            "username": "app", "password": "Bridge-pw-1"}  # fmt: skip


async def enable_rotation(secrets: Secrets, name: str, function_arn: str) -> None:
    """RotateSecret with ``function_arn`` before the function exists: moto records the
    settings (and stages AWSPENDING without a value) instead of invoking it."""
    async with secrets.client() as client:
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await client.rotate_secret(
                SecretId=name,
                RotationLambdaARN=function_arn,
                RotationRules={"AutomaticallyAfterDays": 30},
            )


def bridged(moto: MotoServer, queue_url: str, function_arn: str, *secrets: str) -> Inventory:
    lines = "".join(f"      - id: {s}\n        rotation: bridge\n" for s in secrets)
    body = (
        f"bridge:\n  queue_url: {queue_url}\n  function_arn: {function_arn}\n"
        f"databases:\n  - name: orders\n    secrets:\n{lines}"
    )
    return inventory(moto, body)


async def doctor(inv: Inventory) -> list[Check]:
    return await diagnose(inv, inv.secrets, connection_for(inv), db_timeout_s=3.0)


def check(checks: list[Check], subject: str, name: str) -> Check:
    found = [c for c in checks if c.secret_id == subject and c.name == name]
    assert len(found) == 1, f"{name} for {subject}: {[c.line() for c in checks]}"
    return found[0]


async def test_a_working_bridge_is_ok(bridge: Bridge, secrets: Secrets, moto: MotoServer) -> None:
    name = await secrets.create("bridged", credentials())
    queue_url = await bridge.create_queue()
    function_arn = bridge.name_function()
    await enable_rotation(secrets, name, function_arn)
    await bridge.create_function()

    checks = await doctor(bridged(moto, queue_url, function_arn, name))

    queue = check(checks, queue_url, "bridge.queue")
    assert queue.level is Level.OK, queue.line()
    assert f"arn:aws:sqs:{moto.region}:{ACCOUNT}:" in queue.detail
    function = check(checks, function_arn, "bridge.function")
    assert function.level is Level.OK, function.line()
    assert HANDLER in function.detail
    rotation = check(checks, name, "bridge.rotation")
    assert rotation.level is Level.OK, rotation.line()
    assert function_arn in rotation.detail
    # Secrets Manager's rotation is in progress (moto staged AWSPENDING): told, not failed.
    unfinished = check(checks, name, "secret.unfinished")
    assert unfinished.level is Level.WARN
    assert "in progress" in unfinished.detail
    assert not [c for c in checks if c.name == "secret.native_rotation"]
    assert "Bridge-pw-1" not in json.dumps([c.as_dict() for c in checks])


async def test_a_function_with_another_handler_or_queue_fails(
    bridge: Bridge, secrets: Secrets, moto: MotoServer
) -> None:
    name = await secrets.create("bridged", credentials())
    queue_url = await bridge.create_queue()
    function_arn = bridge.name_function()
    await enable_rotation(secrets, name, function_arn)
    other_queue = queue_url + "-other"
    await bridge.create_function(handler="app.handler", queue_url=other_queue, timeout_s=30)

    checks = await doctor(bridged(moto, queue_url, function_arn, name))

    found = [c for c in checks if c.secret_id == function_arn and c.name == "bridge.function"]
    assert [c.level for c in found] == [Level.FAIL, Level.FAIL], [c.line() for c in found]
    handler, queue = found
    assert "'app.handler'" in handler.detail
    assert f"--handler {HANDLER}" in (handler.fix or "")
    assert other_queue in queue.detail
    assert f"ROTD_BRIDGE_QUEUE_URL={queue_url}" in (queue.fix or "")


async def test_a_short_timeout_is_a_warning(
    bridge: Bridge, secrets: Secrets, moto: MotoServer
) -> None:
    name = await secrets.create("bridged", credentials())
    queue_url = await bridge.create_queue(MessageRetentionPeriod="120")
    function_arn = bridge.name_function()
    await enable_rotation(secrets, name, function_arn)
    await bridge.create_function(timeout_s=20)

    checks = await doctor(bridged(moto, queue_url, function_arn, name))

    function = check(checks, function_arn, "bridge.function")
    assert function.level is Level.WARN
    assert "20 s" in function.detail
    queue = check(checks, queue_url, "bridge.queue")
    assert queue.level is Level.WARN
    assert "120 s" in queue.detail


async def test_rotation_not_enabled_fails_with_the_command_that_enables_it(
    bridge: Bridge, secrets: Secrets, moto: MotoServer
) -> None:
    name = await secrets.create("bridged", credentials())
    queue_url = await bridge.create_queue()
    function_arn = bridge.name_function()
    await bridge.create_function()

    checks = await doctor(bridged(moto, queue_url, function_arn, name))

    rotation = check(checks, name, "bridge.rotation")
    assert rotation.level is Level.FAIL
    assert "not enabled" in rotation.detail
    assert rotation.fix == (
        f"aws secretsmanager rotate-secret --secret-id {name} --rotation-lambda-arn "
        f'{function_arn} --rotation-rules \'{{"ScheduleExpression": "rate(30 days)"}}\''
    )
    assert check(checks, function_arn, "bridge.function").level is Level.OK


async def test_a_daemon_secret_rotated_by_the_bridge_function_is_told_to_say_bridge(
    bridge: Bridge, secrets: Secrets, moto: MotoServer
) -> None:
    bridged_name = await secrets.create("bridged", credentials())
    daemon_name = await secrets.create("daemon", credentials())
    queue_url = await bridge.create_queue()
    function_arn = bridge.name_function()
    await enable_rotation(secrets, bridged_name, function_arn)
    await enable_rotation(secrets, daemon_name, function_arn)
    await bridge.create_function()
    body = (
        f"bridge:\n  queue_url: {queue_url}\n  function_arn: {function_arn}\n"
        f"databases:\n  - name: orders\n    secrets:\n"
        f"      - id: {bridged_name}\n        rotation: bridge\n"
        f"      - id: {daemon_name}\n"
    )
    inv = inventory(moto, body)

    checks = await doctor(inv)

    native = check(checks, daemon_name, "secret.native_rotation")
    assert native.level is Level.FAIL
    assert function_arn in native.detail
    assert (native.fix or "").startswith("set rotation: bridge")
    assert check(checks, bridged_name, "bridge.rotation").level is Level.OK


async def test_a_missing_queue_and_function_fail(
    bridge: Bridge, secrets: Secrets, moto: MotoServer
) -> None:
    name = await secrets.create("bridged", credentials())
    function_arn = bridge.name_function()
    await enable_rotation(secrets, name, function_arn)
    queue_url = f"{moto.endpoint_url}/{ACCOUNT}/rotd-bridge-absent-{uuid.uuid4().hex[:8]}"

    checks = await doctor(bridged(moto, queue_url, function_arn, name))

    queue = check(checks, queue_url, "bridge.queue")
    assert queue.level is Level.FAIL
    assert "no such queue" in queue.detail
    assert "create-queue" in (queue.fix or "")
    function = check(checks, function_arn, "bridge.function")
    assert function.level is Level.FAIL
    assert "no such function" in function.detail
    assert not [c for c in checks if c.name == "bridge.permissions"]


@pytest.fixture
async def iam_bridge(iam_moto: IamMoto) -> AsyncIterator[tuple[Bridge, Secrets]]:
    """A bridge and secrets in the moto server that enforces IAM (off outside the test's
    own calls)."""
    iam_moto.enforce(False)
    made, helper = Bridge(iam_moto.server), Secrets(iam_moto.server)
    yield made, helper
    iam_moto.enforce(False)
    await made.cleanup()
    await helper.cleanup()


async def test_rotds_bridge_permissions_are_named_and_a_denied_queue_fails(
    iam_moto: IamMoto, iam_bridge: tuple[Bridge, Secrets], tmp_path: Path, rotd_process: Start
) -> None:
    bridge, secrets = iam_bridge
    server = iam_moto.server
    name = await secrets.create("bridged", credentials())
    queue_url = await bridge.create_queue()
    function_arn = bridge.name_function()
    await enable_rotation(secrets, name, function_arn)
    path = tmp_path / "inv.yaml"
    path.write_text(
        f"aws:\n  endpoint_url: {server.endpoint_url}\n  region: {server.region}\n"
        f"bridge:\n  queue_url: {queue_url}\n  function_arn: {function_arn}\n"
        f"databases:\n  - name: orders\n    secrets:\n"
        f"      - id: {name}\n        rotation: bridge\n"
    )
    reads = ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    reader_arn, reader = await iam_moto.user([*reads, "sqs:GetQueueAttributes"])
    _, no_queue = await iam_moto.user(reads)

    iam_moto.enforce(True)
    results = [
        run(rotd_process, "doctor", "-c", str(path), "--json", env=env)
        for env in (reader, no_queue)
    ]
    iam_moto.enforce(False)

    (_, out, err), (_, denied_out, denied_err) = results
    checks = {(c["secret_id"], c["check"]): c for c in map(json.loads, out.splitlines())}
    assert checks[(queue_url, "bridge.queue")]["level"] == "ok", err
    # moto's server has no SimulatePrincipalPolicy: the actions are named, not checked.
    queue = checks[(queue_url, "bridge.permissions")]
    assert queue["level"] == "warn"
    assert queue["detail"].startswith(
        "not checked (sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility): "
        f"{reader_arn} may not call iam:SimulatePrincipalPolicy"
    )
    secret = checks[(name, "iam.permissions")]
    assert secret["detail"].startswith(
        "not checked (secretsmanager:PutSecretValue, secretsmanager:UpdateSecretVersionStage, "
        "secretsmanager:RotateSecret, secretsmanager:TagResource, secretsmanager:UntagResource)"
    )
    denied = {(c["secret_id"], c["check"]): c for c in map(json.loads, denied_out.splitlines())}
    queue = denied[(queue_url, "bridge.queue")]
    assert queue["level"] == "FAIL", denied_err
    assert "access denied" in queue["detail"]
    assert queue["fix"].startswith("allow sqs:GetQueueAttributes, sqs:ReceiveMessage")
    assert (queue_url, "bridge.permissions") not in denied


class Findings:
    """The checks one bridgedoctor check reports, as (level, detail, fix)."""

    def __init__(self) -> None:
        self.checks: list[tuple[Level, str, str | None]] = []

    def ok(self, name: str, detail: str) -> None:
        self.checks.append((Level.OK, detail, None))

    def warn(self, name: str, detail: str, fix: str | None = None) -> None:
        self.checks.append((Level.WARN, detail, fix))

    def fail(self, name: str, detail: str, fix: str | None = None) -> None:
        self.checks.append((Level.FAIL, detail, fix))


async def test_a_function_running_other_code_than_expected_is_a_warning(
    bridge: Bridge, moto: MotoServer
) -> None:
    """Deployed from another release's archive (or edited by hand): doctor compares the
    function's CodeSha256 with this rotd's archive."""
    queue_url = await bridge.create_queue()
    function_arn = bridge.name_function()
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("rotd/bridge/lambda_function.py", "def lambda_handler(event, context): ...\n")
    await bridge.create_function(code=other.getvalue())
    inv = bridged(moto, queue_url, function_arn, "any-secret")
    (spec,) = inv.secrets
    assert spec.bridge is not None
    found = Findings()

    await check_function(
        function_connection(connection_for(inv), spec.bridge, spec.aws),
        spec.bridge,
        found,
        code_sha256=package.code_sha256(),
    )

    ((level, detail, fix),) = found.checks
    assert level is Level.WARN
    assert f"is not this rotd's bridge function ({package.code_sha256()})" in detail
    assert f"update-function-code --function-name {function_arn}" in (fix or "")
