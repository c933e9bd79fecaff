"""The function's archive as ``rotd bridge package`` builds it: what Lambda reports of it, and
that it runs with the standard library and boto3 alone, as in Lambda's Python runtime."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from rotd.bridge import package, wire
from tests.fixtures.aws import Secrets
from tests.fixtures.bridge import DEFAULT_RULES, TEST_SETTINGS, BridgeFunction, receive_messages
from tests.fixtures.deadlines import until

# What Lambda's Python runtime provides besides the standard library: boto3 and its imports.
RUNTIME_LIBRARIES = ("boto3", "botocore", "jmespath", "s3transfer", "dateutil", "urllib3", "six.py")

# Run with `python -I -S` (no site-packages, no current directory): argv is the archive, the
# directory of runtime libraries, the event (JSON) and the function's ARN.
IN_LAMBDA = """
import importlib, json, logging, sys
logging.basicConfig(stream=sys.stderr, format="%(message)s")
sys.path[:0] = [sys.argv[1], sys.argv[2]]
missing = []
for name in ("pydantic", "structlog", "aioboto3", "rotd.inventory"):
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
import rotd.bridge.lambda_function as function

class Context:
    invoked_function_arn = sys.argv[4]
    aws_request_id = "request-1"
    def get_remaining_time_in_millis(self):
        return 60000

function.lambda_handler(json.loads(sys.argv[3]), Context())
print(json.dumps({"missing": missing, "loaded_from": function.__file__}))
"""


def build(path: Path) -> dict[str, str]:
    """Run ``rotd bridge package -o path``; its report, by field."""
    ran = subprocess.run(
        [sys.executable, "-m", "rotd", "bridge", "package", "-o", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(line.split(None, 1) for line in ran.stdout.splitlines())


async def test_the_archive_is_what_lambda_reports_and_the_same_every_time(
    bridge_function: BridgeFunction, tmp_path: Path
) -> None:
    report = build(tmp_path / "first.zip")
    build(tmp_path / "second.zip")

    data = (tmp_path / "first.zip").read_bytes()
    assert data == (tmp_path / "second.zip").read_bytes()
    assert report["archive"] == str((tmp_path / "first.zip").resolve())
    assert report["size"] == f"{len(data)} bytes"
    assert report["CodeSha256"] == package.code_sha256() == package.code_sha256(data)
    assert report["handler"] == "rotd.bridge.lambda_function.lambda_handler"
    async with bridge_function.client("lambda") as lambda_:
        deployed = await lambda_.get_function_configuration(
            FunctionName=bridge_function.function_arn
        )
    assert deployed["CodeSha256"] == report["CodeSha256"]
    assert deployed["Handler"] == report["handler"]


def test_an_archive_that_cannot_be_written_exits_73(tmp_path: Path) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "rotd", "bridge", "package", "-o", str(tmp_path / "no" / "x.zip")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 73
    assert f"cannot write {tmp_path / 'no' / 'x.zip'}" in ran.stderr


@pytest.fixture
def runtime_libraries(tmp_path: Path) -> Path:
    """A directory holding only boto3 and what it imports (links to this environment's)."""
    site = Path(boto3.__file__).parents[1]
    libraries = tmp_path / "runtime"
    libraries.mkdir()
    for name in RUNTIME_LIBRARIES:
        (libraries / name).symlink_to(site / name)
    return libraries


async def test_the_archive_runs_a_step_with_boto3_alone(
    bridge_function: BridgeFunction, secrets: Secrets, runtime_libraries: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "function.zip"
    build(archive)
    name = await secrets.create("packaged", {"username": "app", "password": "Packaged-pass-1"})
    async with secrets.client() as client:
        rotated = await client.rotate_secret(
            SecretId=name,
            RotationLambdaARN=bridge_function.function_arn,
            RotationRules=DEFAULT_RULES,
        )
    event = {
        "SecretId": rotated["ARN"],
        "ClientRequestToken": rotated["VersionId"],
        "Step": "createSecret",
    }
    environment = {
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        # Lambda sets both.
        "AWS_REGION": bridge_function.server.region,
        "AWS_DEFAULT_REGION": bridge_function.server.region,
        "AWS_ENDPOINT_URL": bridge_function.server.endpoint_url,
        "ROTD_BRIDGE_QUEUE_URL": bridge_function.queue_url,
        **TEST_SETTINGS,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-S",
        "-c",
        IN_LAMBDA,
        str(archive),
        str(runtime_libraries),
        json.dumps(event),
        bridge_function.function_arn,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    exited = asyncio.create_task(process.wait())
    try:
        # The function sends its message from there; rotd's part is played here.
        messages: list[wire.Message] = []

        async def sent_or_exited() -> bool:
            messages.extend(await receive_messages(bridge_function))
            return bool(messages) or exited.done()

        await until(sent_or_exited, "the function's message", timeout_s=60)
        assert [m.step for m in messages] == ["createSecret"], await process.stderr.read()
        (message,) = messages
        async with secrets.client() as client:
            await client.put_secret_value(
                SecretId=name,
                ClientRequestToken=message.token,
                SecretString='{"username": "app", "password": "Packaged-pass-2"}',
                VersionStages=["AWSPENDING"],
            )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
        await exited

    assert process.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert result["missing"] == ["pydantic", "structlog", "aioboto3", "rotd.inventory"]
    assert result["loaded_from"] == str(archive / "rotd" / "bridge" / "lambda_function.py")
    (line,) = [json.loads(x) for x in stderr.decode().splitlines() if x.startswith("{")]
    assert (line["step"], line["outcome"]) == ("createSecret", "done")
