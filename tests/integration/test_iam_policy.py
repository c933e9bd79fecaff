"""``rotd iam-policy``: the least-privilege policy for secrets in moto; patterns without AWS."""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aioboto3
import pytest

from rotd.iampolicy import Grant, Scope, build_policy, policy_document, queue_arn
from tests.fixtures.aws import MotoServer, Secrets, free_port
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, run
from tests.fixtures.rotation import inventory

Start = Callable[..., RotdProcess]

ACTIONS = {
    "RotateSecrets": [
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    ],
    "ReadMasterSecrets": ["secretsmanager:GetSecretValue"],
    "UseSecretKmsKeys": ["kms:Decrypt", "kms:GenerateDataKey"],
    "ReadMasterSecretKmsKeys": ["kms:Decrypt"],
}
KMS_SIDS = ("UseSecretKmsKeys", "ReadMasterSecretKmsKeys")


def assert_valid_policy(document: dict[str, Any], *, resolved: bool, region: str) -> None:
    """IAM's structure, rotd's fixed statement order and the exact least-privilege actions."""
    assert json.loads(json.dumps(document)) == document
    assert list(document) == ["Version", "Statement"]
    assert document["Version"] == "2012-10-17"
    statements = document["Statement"]
    sids = [s["Sid"] for s in statements]
    assert sids == [sid for sid in ACTIONS if sid in sids], "fixed statement order"
    assert sids[0] == "RotateSecrets"
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert statement["Action"] == ACTIONS[statement["Sid"]]
        resources = statement["Resource"]
        assert resources, "IAM rejects a statement without resources"
        assert resources == sorted(set(resources))
        assert "*" not in resources
        if resolved:
            assert not any("*" in r or "?" in r for r in resources), resources
        if statement["Sid"] in KMS_SIDS:
            assert all(r.startswith(f"arn:aws:kms:{region}:") for r in resources)
            assert statement["Condition"] == {
                "StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}
            }
        else:
            assert all(r.startswith(f"arn:aws:secretsmanager:{region}:") for r in resources)
            assert "Condition" not in statement


class Keys:
    """Customer-managed KMS keys in moto, with unique aliases, scheduled for deletion after."""

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.keys: list[str] = []
        self.aliases: list[str] = []

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        session = aioboto3.Session(region_name=self.server.region)
        async with session.client("kms", endpoint_url=self.server.endpoint_url) as client:
            yield client

    async def create(self, with_alias: bool = False) -> tuple[str, str, str | None]:
        """A new key: its id, its ARN and, if asked, a new alias naming it."""
        async with self.client() as client:
            metadata = (await client.create_key(Description="rotd test"))["KeyMetadata"]
            self.keys.append(metadata["KeyId"])
            alias = None
            if with_alias:
                alias = f"alias/rotd-test-{uuid.uuid4().hex[:10]}"
                await client.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
                self.aliases.append(alias)
        return metadata["KeyId"], metadata["Arn"], alias

    async def cleanup(self) -> None:
        async with self.client() as client:
            for alias in self.aliases:
                with suppress(client.exceptions.NotFoundException):
                    await client.delete_alias(AliasName=alias)
            for key in self.keys:
                with suppress(client.exceptions.NotFoundException):
                    await client.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)


@pytest.fixture
async def kms(moto: MotoServer) -> AsyncIterator[Keys]:
    keys = Keys(moto)
    yield keys
    await keys.cleanup()


async def create_secret(
    secrets: Secrets, label: str, value: dict[str, Any], kms_key_id: str | None = None
) -> tuple[str, str]:
    """A secret (optionally encrypted with ``kms_key_id``): its name and its ARN."""
    name = secrets.name(label)
    extra = {"KmsKeyId": kms_key_id} if kms_key_id else {}
    async with secrets.client() as client:
        created = await client.create_secret(Name=name, SecretString=json.dumps(value), **extra)
    secrets.created.append(name)
    return name, str(created["ARN"])


def login(username: str, password: str, **extra: str) -> dict[str, Any]:
    return {"engine": "postgres", "host": "db.internal", "username": username,
            "password": password, **extra}  # fmt: skip


PASSWORDS = ("Plain-pw-1", "Kms-pw-2", "Alt-pw-3", "Managed-pw-4", "Master-pw-5", "Master-pw-6")


async def estate(secrets: Secrets, kms: Keys) -> dict[str, str]:
    """Secrets of every kind the policy must tell apart; returns label -> ARN (and key ARNs)."""
    _, rotated_key_arn, alias = await kms.create(with_alias=True)
    master_key_id, master_key_arn, _ = await kms.create()
    _, m1 = await create_secret(secrets, "m1", login("m1", "Master-pw-5"), master_key_id)
    m2_name, m2 = await create_secret(secrets, "m2", login("m2", "Master-pw-6"))
    # A masterarn that must not be in the policy: master_secret in the inventory wins.
    _, unused = await create_secret(secrets, "unused-master", login("x", "Unused-pw-7"))
    plain_name, plain = await create_secret(secrets, "plain", login("p", "Plain-pw-1"))
    kms_name, with_kms = await create_secret(
        secrets, "kms", login("k", "Kms-pw-2", masterarn=m1), alias
    )
    alt_name, alt = await create_secret(secrets, "alt", login("a", "Alt-pw-3", masterarn=unused))
    managed_name, managed = await create_secret(
        secrets, "managed", login("w", "Managed-pw-4"), "alias/aws/secretsmanager"
    )
    return {
        "m1": m1, "m2": m2, "m2_name": m2_name, "unused": unused,
        "plain": plain, "plain_name": plain_name, "kms": with_kms, "kms_name": kms_name,
        "alt": alt, "alt_name": alt_name, "managed": managed, "managed_name": managed_name,
        "rotated_key": rotated_key_arn, "master_key": master_key_arn,
    }  # fmt: skip


def inventory_body(arns: dict[str, str]) -> str:
    return f"""\
        databases:
          - name: orders
            secrets:
              - id: {arns["plain_name"]}
              - id: {arns["kms_name"]}
              - id: {arns["alt_name"]}
                strategy: alternating_users
                master_secret: {arns["m2_name"]}
              - id: {arns["managed_name"]}
        """


async def test_policy_names_exact_arns_masters_and_kms_keys(
    secrets: Secrets, kms: Keys, moto: MotoServer
) -> None:
    arns = await estate(secrets, kms)
    loaded = inventory(moto, inventory_body(arns))

    policy = await build_policy(loaded)

    assert policy.warnings == ()
    assert_valid_policy(policy.document, resolved=True, region=moto.region)
    via = {"StringEquals": {"kms:ViaService": f"secretsmanager.{moto.region}.amazonaws.com"}}
    assert policy.document["Statement"] == [
        {
            "Sid": "RotateSecrets",
            "Effect": "Allow",
            "Action": ACTIONS["RotateSecrets"],
            "Resource": sorted([arns["plain"], arns["kms"], arns["alt"], arns["managed"]]),
        },
        {
            "Sid": "ReadMasterSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            # m1 from the masterarn inside the secret; m2 from master_secret; not `unused`.
            "Resource": sorted([arns["m1"], arns["m2"]]),
        },
        {
            "Sid": "UseSecretKmsKeys",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": [arns["rotated_key"]],  # the alias resolved to its key
            "Condition": via,
        },
        {
            "Sid": "ReadMasterSecretKmsKeys",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": [arns["master_key"]],
            "Condition": via,
        },
    ]
    again = await build_policy(inventory(moto, inventory_body(arns)))
    assert again.text() == policy.text()
    for password in PASSWORDS:
        assert password not in policy.text()


async def test_a_secret_aws_cannot_find_is_named_by_a_pattern_with_a_warning(
    secrets: Secrets, moto: MotoServer
) -> None:
    _, arn = await create_secret(secrets, "present", login("p", "Present-pw-1"))
    missing = secrets.name("never-created")
    account = arn.split(":")[4]
    loaded = inventory(
        moto,
        f"""\
        databases:
          - name: orders
            secrets:
              - id: {secrets.name("present")}
              - id: {missing}
        """,
    )

    policy = await build_policy(loaded)

    (statement,) = policy.document["Statement"]
    pattern = f"arn:aws:secretsmanager:{moto.region}:{account}:secret:{missing}-??????"
    assert statement["Resource"] == sorted([arn, pattern])
    (warning,) = policy.warnings
    assert repr(missing) in warning
    assert "cannot find it" in warning
    assert_valid_policy(policy.document, resolved=False, region=moto.region)


async def test_offline_names_every_secret_by_pattern_and_says_so(moto: MotoServer) -> None:
    full_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/master-AbC123"
    loaded = inventory(
        moto,
        f"""\
        databases:
          - name: orders
            master_secret: {full_arn}
            secrets:
              - id: prod/orders/app
              - id: arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/orders/partial
        """,
    )

    policy = await build_policy(loaded, offline=True)

    prefix = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    assert policy.document["Statement"] == [
        {
            "Sid": "RotateSecrets",
            "Effect": "Allow",
            "Action": ACTIONS["RotateSecrets"],
            # The account comes from the inventory's ARNs; a partial ARN gets the suffix.
            "Resource": [f"{prefix}prod/orders/app-??????", f"{prefix}prod/orders/partial-??????"],
        },
        {
            "Sid": "ReadMasterSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": [full_arn],  # a full ARN is exact already
        },
    ]
    (warning,) = policy.warnings
    assert warning.startswith("--offline: secrets are named by ARN patterns")
    assert "KMS" in warning
    assert_valid_policy(policy.document, resolved=False, region="us-east-1")


async def test_rendered_secrets_that_are_not_rotated_are_read_only(
    secrets: Secrets, moto: MotoServer
) -> None:
    _, rotated = await create_secret(secrets, "rotated", login("r", "Rotated-pw-1"))
    _, api = await create_secret(secrets, "api", login("a", "Api-pw-2"))
    loaded = inventory(
        moto,
        f"""\
        databases:
          - name: orders
            secrets:
              - id: {secrets.name("rotated")}
        render:
          - secret: {secrets.name("rotated")}
            path: /run/rotd/orders.env
          - secret: {secrets.name("api")}
            path: /run/rotd/api.json
        """,
    )

    policy = await build_policy(loaded)

    assert policy.warnings == ()
    assert [s["Sid"] for s in policy.document["Statement"]] == [
        "RotateSecrets",
        "ReadRenderedSecrets",
    ]
    assert policy.document["Statement"][0]["Resource"] == [rotated]
    assert policy.document["Statement"][1] == {
        "Sid": "ReadRenderedSecrets",
        "Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue"],
        "Resource": [api],
    }
    offline = await build_policy(loaded, offline=True)
    (_, read) = offline.document["Statement"]
    assert read["Resource"][0].endswith(f":secret:{secrets.name('api')}-??????")


def test_masters_that_are_rotated_and_shared_keys_are_not_repeated() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/k1"
    other = "arn:aws:kms:us-east-1:123456789012:key/k2"
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    document = policy_document(
        [Grant(arn + "b-222222", key), Grant(arn + "a-111111", key)],
        [Grant(arn + "a-111111", key), Grant(arn + "m-333333", key), Grant(arn + "n-4", other)],
    )
    assert [s["Sid"] for s in document["Statement"]] == [
        "RotateSecrets",
        "ReadMasterSecrets",
        "UseSecretKmsKeys",
        "ReadMasterSecretKmsKeys",
    ]
    assert document["Statement"][0]["Resource"] == [arn + "a-111111", arn + "b-222222"]
    assert document["Statement"][1]["Resource"] == [arn + "m-333333", arn + "n-4"]
    assert document["Statement"][2]["Resource"] == [key]
    assert document["Statement"][3]["Resource"] == [other]


async def test_the_command_prints_the_policy_and_falls_back_to_patterns(
    secrets: Secrets, kms: Keys, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    arns = await estate(secrets, kms)
    specs = [
        {"id": arns["plain_name"]},
        {"id": arns["kms_name"]},
        {"id": arns["alt_name"], "strategy": "alternating_users", "master_secret": arns["m2_name"]},
        {"id": arns["managed_name"]},
    ]
    path = write_inventory(tmp_path / "inv.yaml", moto, specs)
    expected = await build_policy(inventory(moto, inventory_body(arns)))

    code, out, err = run(rotd_process, "iam-policy", "-c", str(path))
    assert code == 0, err
    assert json.loads(out) == expected.document
    assert out == expected.text() + "\n"
    assert "warning" not in err
    for password in PASSWORDS:
        assert password not in out + err

    code, out, err = run(rotd_process, "iam-policy", "-c", str(path), "--offline")
    assert code == 0, err
    document = json.loads(out)
    assert [s["Sid"] for s in document["Statement"]] == ["RotateSecrets", "ReadMasterSecrets"]
    assert f":secret:{arns['plain_name']}-??????" in "".join(document["Statement"][0]["Resource"])
    assert "warning: --offline: secrets are named by ARN patterns" in err

    # Nothing listens here: the policy still comes out, from patterns, with a warning.
    unreachable = MotoServer(endpoint_url=f"http://127.0.0.1:{free_port()}", region=moto.region)
    path = write_inventory(tmp_path / "down.yaml", unreachable, specs)
    code, out, err = run(rotd_process, "iam-policy", "-c", str(path))
    assert code == 0, err
    assert json.loads(out)["Statement"][0]["Resource"] == sorted(
        f"arn:aws:secretsmanager:{moto.region}:*:secret:{spec['id']}-??????" for spec in specs
    )
    assert "warning: AWS cannot be reached (cannot reach Secrets Manager" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text("databases:\n  - name: orders\n    secrets: []\n")
    code, out, err = run(rotd_process, "iam-policy", "-c", str(bad))
    assert code == 78
    assert out == ""
    assert f"{bad}:3:" in err


async def test_events_add_put_events_on_the_bus_or_assume_role_on_the_role(
    secrets: Secrets, moto: MotoServer
) -> None:
    _, arn = await create_secret(secrets, "evented", login("e", "Evented-pw-1"))
    account = arn.split(":")[4]
    body = f"""\
        events:
          eventbridge:
            bus: rotations
        databases:
          - name: orders
            secrets:
              - id: {secrets.name("evented")}
        """

    policy = await build_policy(inventory(moto, body))

    assert policy.warnings == ()
    assert policy.document["Statement"][-1] == {
        "Sid": "PutRotationEvents",
        "Effect": "Allow",
        "Action": ["events:PutEvents"],
        "Resource": [f"arn:aws:events:{moto.region}:{account}:event-bus/rotations"],
    }

    role = "arn:aws:iam::210987654321:role/rotd-events"
    bus = "arn:aws:events:eu-west-1:210987654321:event-bus/central"
    with_role = body.replace("bus: rotations", f"bus: {bus}\n            role_arn: {role}")
    policy = await build_policy(inventory(moto, with_role), offline=True)

    assert policy.document["Statement"][-1] == {
        "Sid": "AssumeEventsRole",
        "Effect": "Allow",
        "Action": ["sts:AssumeRole"],
        "Resource": [role],
    }
    assert "events:PutEvents" not in policy.text()
    assert any(f"{role}; that role needs events:PutEvents on {bus}" in w for w in policy.warnings)

    # Offline, the account is unknown: a pattern, and a warning that says how to avoid it.
    policy = await build_policy(inventory(moto, body), offline=True)
    statement = policy.document["Statement"][-1]
    assert statement["Resource"] == [f"arn:aws:events:{moto.region}:*:event-bus/rotations"]
    assert any("write its ARN as events.eventbridge.bus" in w for w in policy.warnings)


async def test_bridged_secrets_add_rotds_side_and_a_policy_per_bridge_function(
    secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    bridged_name, bridged = await create_secret(secrets, "bridged", login("b", "Bridged-pw-1"))
    plain_name, plain = await create_secret(secrets, "daemon", login("d", "Daemon-pw-2"))
    account = bridged.split(":")[4]
    queue = f"{moto.endpoint_url}/{account}/rotd-bridge-q"
    function = f"arn:aws:lambda:{moto.region}:{account}:function:rotd-bridge"
    body = f"""\
        bridge:
          queue_url: {queue}
          function_arn: {function}:live
        databases:
          - name: orders
            secrets:
              - id: {bridged_name}
                rotation: bridge
              - id: {plain_name}
        """

    policy = await build_policy(inventory(moto, body))

    queue_arn = f"arn:aws:sqs:{moto.region}:{account}:rotd-bridge-q"
    statements = {s["Sid"]: s for s in policy.document["Statement"]}
    assert list(statements) == [
        "RotateSecrets",
        "ReadBridgeQueues",
        "StartBridgedRotations",
        "ReportBridgeFailures",
        "ReadBridgeFunctions",
    ]
    assert statements["RotateSecrets"]["Resource"] == sorted([bridged, plain])
    assert statements["ReadBridgeQueues"]["Resource"] == [queue_arn]
    assert statements["ReadBridgeQueues"]["Action"] == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    assert statements["StartBridgedRotations"]["Resource"] == [bridged]
    assert statements["ReportBridgeFailures"]["Condition"] == {
        "ForAllValues:StringEquals": {"aws:TagKeys": ["rotd:bridge:failure"]}
    }
    assert statements["ReadBridgeFunctions"]["Resource"] == [function]
    assert policy.functions == {
        f"bridge-function:{function}": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ReadBridgedSecrets",
                    "Effect": "Allow",
                    "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
                    "Resource": [bridged],
                },
                {
                    "Sid": "SendBridgeSteps",
                    "Effect": "Allow",
                    "Action": ["sqs:SendMessage"],
                    "Resource": [queue_arn],
                },
            ],
        }
    }

    path = tmp_path / "inv.yaml"
    head = f"aws:\n  endpoint_url: {moto.endpoint_url}\n  region: {moto.region}\n"
    path.write_text(head + textwrap.dedent(body))
    code, out, err = run(rotd_process, "iam-policy", "-c", str(path))
    assert code == 0, err
    assert json.loads(out) == {"base": policy.document, **policy.functions}
    assert "AWSLambdaBasicExecutionRole" in err
    assert "kms:Decrypt" in err
    assert "lambda add-permission" in err


def test_an_aws_queue_url_names_its_own_region_and_account() -> None:
    scope = Scope(region="eu-west-1", account="111111111111")
    assert (
        queue_arn("https://sqs.us-east-2.amazonaws.com/222222222222/q-1", scope)
        == "arn:aws:sqs:us-east-2:222222222222:q-1"
    )
    assert (
        queue_arn("http://localhost:5000/333333333333/q-2", scope)
        == "arn:aws:sqs:eu-west-1:333333333333:q-2"
    )
