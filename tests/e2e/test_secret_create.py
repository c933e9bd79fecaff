"""``rotd secret create`` as an operator runs it: a real process, the password on standard input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aioboto3
import pytest
import yaml

from tests.fixtures.aws import MotoServer, Secrets, free_port
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory

DOCUMENTED_ORDER = ["engine", "host", "port", "username", "password", "dbname", "masterarn", "ssl"]
MASTER_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/orders/master-AbC123"


class Result:
    def __init__(self, argv: list[str], completed: subprocess.CompletedProcess[str]) -> None:
        self.argv = argv
        self.code = completed.returncode
        self.out = completed.stdout
        self.err = completed.stderr

    def assert_never_shows(self, *passwords: str) -> None:
        for password in passwords:
            assert password not in self.out
            assert password not in self.err
            assert not any(password in arg for arg in self.argv)


def create(
    moto: MotoServer,
    *args: str,
    password: str | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    """Run ``rotd secret create`` against moto; ``password`` goes in on standard input.
    ``env`` replaces the process's environment (default: this one's)."""
    argv = [sys.executable, "-m", "rotd", "secret", "create", *args]
    if "-c" not in args and "--endpoint-url" not in args:
        argv += ["--endpoint-url", moto.endpoint_url, "--region", moto.region]
    if password is not None:
        argv.append("--password-stdin")
        stdin = password + "\n"
    completed = subprocess.run(
        argv,
        input=stdin or "",
        capture_output=True,
        text=True,
        env=dict(os.environ) if env is None else env,
        timeout=90,
    )
    return Result(argv, completed)


async def describe(secrets: Secrets, name: str) -> dict[str, Any] | None:
    async with secrets.client() as client:
        try:
            result: dict[str, Any] = await client.describe_secret(SecretId=name)
        except client.exceptions.ResourceNotFoundException:
            return None
    return result


def snippet(out: str) -> Any:
    """The inventory lines printed after the ARN, as YAML."""
    return yaml.safe_load("".join(out.splitlines(keepends=True)[1:]))


async def test_a_login_is_stored_in_the_documented_format(
    secrets: Secrets, moto: MotoServer
) -> None:
    name = secrets.name("app")
    secrets.created.append(name)
    password = "Onboard-pw-1 with 'quotes' \"and\" spaces"

    result = create(
        moto,
        *("--name", name, "--engine", "postgres", "--host", "db.internal", "--port", "6432"),
        *("--username", "app", "--dbname", "orders", "--masterarn", MASTER_ARN, "--ssl"),
        password=password,
    )

    assert result.code == 0, result.err
    described = await describe(secrets, name)
    assert described is not None
    assert result.out.splitlines()[0] == described["ARN"]
    assert snippet(result.out) == [{"id": name, "strategy": "single_user"}]
    async with secrets.client() as client:
        text = (await client.get_secret_value(SecretId=name))["SecretString"]
    value = json.loads(text)
    assert value == {
        "engine": "postgres",
        "host": "db.internal",
        "port": 6432,
        "username": "app",
        "password": password,
        "dbname": "orders",
        "masterarn": MASTER_ARN,
        "ssl": True,
    }
    assert list(value) == DOCUMENTED_ORDER
    result.assert_never_shows(password)

    # Defaults: the engine's port; no dbname, masterarn or ssl key unless given.
    other = secrets.name("mysql-app")
    secrets.created.append(other)
    result = create(
        moto,
        *("--name", other, "--engine", "mariadb", "--host", "db.internal", "--username", "app"),
        *("--strategy", "alternating_users"),
        password="Onboard-pw-2",
    )
    assert result.code == 0, result.err
    assert await secrets.value(other) == {
        "engine": "mariadb",
        "host": "db.internal",
        "port": 3306,
        "username": "app",
        "password": "Onboard-pw-2",
    }
    assert snippet(result.out) == [{"id": other, "strategy": "alternating_users"}]
    assert "needs a master login" in result.out
    result.assert_never_shows("Onboard-pw-2")


async def test_an_existing_secret_is_replaced_only_with_overwrite(
    secrets: Secrets, moto: MotoServer
) -> None:
    name = secrets.name("app")
    secrets.created.append(name)
    base = ("--name", name, "--engine", "postgres", "--host", "db.internal", "--username", "app")
    assert create(moto, *base, password="First-pw-1").code == 0
    first = await secrets.version(name)

    refused = create(moto, *base, password="Second-pw-2")
    assert refused.code == 1
    assert "already exists" in refused.err
    assert "--overwrite" in refused.err
    assert refused.out == ""
    assert (await secrets.value(name))["password"] == "First-pw-1"
    assert list(await secrets.stages(name)) == [first]

    # As a finished rotation leaves it: AWSPENDING on the current version too.
    async with secrets.client() as client:
        await client.update_secret_version_stage(
            SecretId=name, VersionStage="AWSPENDING", MoveToVersionId=first
        )
    replaced = create(moto, *base, "--overwrite", "--host", "db2.internal", password="Second-pw-2")

    assert replaced.code == 0, replaced.err
    value = await secrets.value(name)
    assert (value["host"], value["password"]) == ("db2.internal", "Second-pw-2")
    current = await secrets.version(name)
    assert current != first
    stages = await secrets.stages(name)
    assert stages == {first: ["AWSPREVIOUS"], current: ["AWSCURRENT"]}
    assert (await describe(secrets, name) or {})["ARN"] == replaced.out.splitlines()[0]
    for result in (refused, replaced):
        result.assert_never_shows("First-pw-1", "Second-pw-2")


async def test_overwrite_refuses_while_a_rotation_is_unfinished(
    secrets: Secrets, moto: MotoServer
) -> None:
    name = await secrets.create(
        "app", {"engine": "postgres", "host": "h", "username": "app", "password": "Old-pw-1"}
    )
    current = await secrets.version(name)
    pending = await secrets.put_pending(
        name, {"engine": "postgres", "host": "h", "username": "app", "password": "Pending-pw-2"}
    )

    result = create(
        moto,
        *("--name", name, "--engine", "postgres", "--host", "h", "--username", "app"),
        "--overwrite",
        password="New-pw-3",
    )

    assert result.code == 1
    assert "unfinished" in result.err
    assert pending in result.err
    assert await secrets.version(name) == current
    assert (await secrets.value(name))["password"] == "Old-pw-1"
    result.assert_never_shows("Old-pw-1", "Pending-pw-2", "New-pw-3")


async def test_verify_stores_a_login_that_works_and_refuses_one_that_does_not(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    user = db.unique()
    await db.create_login(user, "Right-pw-1")
    name = secrets.name(user)
    secrets.created.append(name)
    args = ["--name", name, "--engine", db.engine, "--host", db.host, "--port", str(db.port)]
    args += ["--username", user, "--verify"]
    if db.dbname is not None:
        args += ["--dbname", db.dbname]

    wrong = create(moto, *args, password="Wrong-pw-2")

    assert wrong.code == 1
    assert "--verify: cannot log in as" in wrong.err
    assert "nothing was stored" in wrong.err
    assert await describe(secrets, name) is None

    right = create(moto, *args, password="Right-pw-1")

    assert right.code == 0, right.err
    stored = await secrets.value(name)
    assert (stored["username"], stored["password"]) == (user, "Right-pw-1")
    assert await db.logs_in(stored["username"], stored["password"])
    for result in (wrong, right):
        result.assert_never_shows("Right-pw-1", "Wrong-pw-2")


@asynccontextmanager
async def kms_key(moto: MotoServer) -> AsyncIterator[str]:
    session = aioboto3.Session(region_name=moto.region)
    async with session.client("kms", endpoint_url=moto.endpoint_url) as client:
        key = (await client.create_key(Description="rotd test"))["KeyMetadata"]["KeyId"]
        try:
            yield str(key)
        finally:
            await client.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)


async def test_description_tags_and_kms_key_are_applied(
    secrets: Secrets, moto: MotoServer, tmp_path: Path
) -> None:
    name = secrets.name("app")
    secrets.created.append(name)
    # The aws settings come from an inventory this time.
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": name}])
    async with kms_key(moto) as key:
        result = create(
            moto,
            *("-c", str(path), "--name", name, "--engine", "mysql", "--host", "db.internal"),
            *("--username", "app", "--description", "orders app login"),
            *("--kms-key-id", key, "--tags", "team=db", "--tags", "env=test=1"),
            password="Tagged-pw-1",
        )

        assert result.code == 0, result.err
        described = await describe(secrets, name)
    assert described is not None
    assert described["KmsKeyId"] == key
    assert described["Description"] == "orders app login"
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags == {"team": "db", "env": "test=1"}
    result.assert_never_shows("Tagged-pw-1")


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--port", "70000"], "Usage-pw-1\n", "--port"),
        (["--port", "0"], "Usage-pw-1\n", "--port"),
        (["--engine", "oracle"], "Usage-pw-1\n", "--engine"),
        (["--tags", "novalue"], "Usage-pw-1\n", "is not KEY=VALUE"),
        (["--tags", "a=1", "--tags", "a=2"], "Usage-pw-1\n", "a tag key is given twice"),
        (["--name", "bad name!"], "Usage-pw-1\n", "not a valid secret name"),
        (["--host", " "], "Usage-pw-1\n", "--host"),
        ([], "\n", "the password is empty"),
        (["--no-stdin-flag"], "Usage-pw-1\n", "pass --password-stdin"),
    ],
)
async def test_bad_input_is_a_usage_error_and_stores_nothing(
    secrets: Secrets, moto: MotoServer, args: list[str], stdin: str, message: str
) -> None:
    name = secrets.name("usage")
    secrets.created.append(name)
    # click keeps the last value of an option given twice: the bad one, after the good one.
    argv = ["--name", name, "--engine", "postgres", "--host", "h", "--username", "app"]
    argv += [a for a in args if a != "--no-stdin-flag"]
    if "--no-stdin-flag" not in args:
        argv.append("--password-stdin")

    result = create(moto, *argv, stdin=stdin)

    assert result.code == 2, result.err
    assert message in result.err
    assert await describe(secrets, name) is None
    result.assert_never_shows("Usage-pw-1")


async def test_an_unreachable_secrets_manager_exits_1_and_says_so(
    secrets: Secrets, moto: MotoServer
) -> None:
    name = secrets.name("app")
    result = create(
        moto,
        *("--name", name, "--engine", "postgres", "--host", "h", "--username", "app"),
        *("--endpoint-url", f"http://127.0.0.1:{free_port()}", "--region", moto.region),
        password="Down-pw-1",
    )
    assert result.code == 1
    assert "cannot reach Secrets Manager" in result.err
    assert result.out == ""
    result.assert_never_shows("Down-pw-1")


async def test_the_region_comes_from_aws_region_before_aws_default_region(
    secrets: Secrets, moto: MotoServer
) -> None:
    name = secrets.name("region")
    secrets.created.append(name)
    bare = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    login = ("--name", name, "--engine", "postgres", "--host", "h", "--username", "app")

    # No -c and no --region: AWS_REGION decides, over AWS_DEFAULT_REGION.
    other_region = "eu-west-3" if moto.region != "eu-west-3" else "eu-west-1"
    env = bare | {"AWS_REGION": moto.region, "AWS_DEFAULT_REGION": other_region}
    result = create(
        moto, *login, "--endpoint-url", moto.endpoint_url, password="Region-pw-1", env=env
    )
    assert result.code == 0, result.err
    assert f":secretsmanager:{moto.region}:" in result.out.splitlines()[0]
    assert await describe(secrets, name) is not None

    # AWS_REGION alone (botocore by itself reads only AWS_DEFAULT_REGION).
    alone = secrets.name("region-alone")
    secrets.created.append(alone)
    result = create(
        moto,
        *("--name", alone, "--engine", "postgres", "--host", "h", "--username", "app"),
        *("--endpoint-url", moto.endpoint_url),
        password="Region-pw-3",
        env=bare | {"AWS_REGION": moto.region},
    )
    assert result.code == 0, result.err
    assert await describe(secrets, alone) is not None

    # Neither set: the message names both.
    again = secrets.name("no-region")
    result = create(
        moto,
        *("--name", again, "--engine", "postgres", "--host", "h", "--username", "app"),
        *("--endpoint-url", moto.endpoint_url),
        password="Region-pw-2",
        env=bare,
    )
    assert result.code != 0
    assert "AWS_REGION or AWS_DEFAULT_REGION" in result.err
    assert await describe(secrets, again) is None
    result.assert_never_shows("Region-pw-2")


async def test_derived_keys_are_rendered_at_creation_from_derive_and_the_inventory(
    secrets: Secrets, moto: MotoServer, tmp_path: Path
) -> None:
    password = "Deriv/ed@pw:1"
    url = (
        "postgresql://{{ username }}:{{ password | urlencode }}@{{ host }}:{{ port }}/{{ dbname }}"
    )
    name = secrets.name("app")
    secrets.created.append(name)
    base = ("--engine", "postgres", "--host", "db.internal", "--username", "app")

    result = create(moto, "--name", name, *base, "--derive", f"url={url}", password=password)

    assert result.code == 0, result.err
    value = await secrets.value(name)
    assert value["url"] == "postgresql://app:Deriv%2Fed%40pw%3A1@db.internal:5432/postgres"
    result.assert_never_shows(password, value["url"])

    # From the inventory (-c): its defaults' derived keys, and --derive wins key by key.
    config = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        databases=[],
        defaults={"derived_keys": {"url": url, "dsn": "host={{ host }} user={{ username }}"}},
    )
    other = secrets.name("other")
    secrets.created.append(other)
    result = create(
        moto,
        *("--name", other, *base, "-c", str(config), "--derive", "dsn=host={{ host }}"),
        password=password,
    )
    assert result.code == 0, result.err
    value = await secrets.value(other)
    assert value["url"] == "postgresql://app:Deriv%2Fed%40pw%3A1@db.internal:5432/postgres"
    assert value["dsn"] == "host=db.internal"


@pytest.mark.parametrize(
    ("derive", "shown"),
    [
        ("url={{ host }}/{{ dbnam }}", "'dbnam' is not a key a postgres secret has"),
        ("url={{ host | hostify }}", "unknown filter 'hostify'"),
        ("password={{ host }}", "a key of the secret itself"),
        ("no-equals-sign", "KEY=TEMPLATE"),
    ],
)
async def test_a_broken_derive_is_a_usage_error_and_stores_nothing(
    secrets: Secrets, moto: MotoServer, derive: str, shown: str
) -> None:
    name = secrets.name("app")
    base = ("--engine", "postgres", "--host", "db.internal", "--username", "app")

    result = create(moto, "--name", name, *base, "--derive", derive, password="Never-pw-1")

    assert result.code == 2, result.err
    assert shown in result.err
    assert await describe(secrets, name) is None
