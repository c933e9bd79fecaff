"""A database's own ``aws:`` block: layering, offline checks, routing and write limiters."""

from __future__ import annotations

from rotd.accounts import Stores, limit_key, routes
from rotd.iampolicy import Grant, policy_document
from rotd.inventory import AwsAccess
from rotd.rolepolicies import build_policies, merge
from tests.fixtures.inventory import errors, parse

ROLE_A = "arn:aws:iam::111111111111:role/rotd"
ROLE_B = "arn:aws:iam::222222222222:role/rotd"
MASTER_B = "arn:aws:secretsmanager:eu-west-1:222222222222:secret:master-AbCdEf"


def test_aws_settings_layer_top_level_then_defaults_then_database() -> None:
    inventory = parse(
        f"""
        aws: {{region: us-east-1, profile: ops}}
        defaults:
          aws: {{role_arn: {ROLE_A}, session_name: rotd-fleet}}
        databases:
          - name: one
            secrets: [{{id: a}}]
          - name: two
            aws: {{region: eu-west-1, role_arn: {ROLE_B}, external_id: ext-123}}
            secrets: [{{id: b}}]
          - name: own
            aws: {{role_arn: null}}
            secrets: [{{id: c}}]
        """
    )
    a, b, c = (inventory.find(x) for x in "abc")
    assert a is not None
    assert b is not None
    assert c is not None
    assert a.aws == AwsAccess("us-east-1", None, "ops", ROLE_A, None, "rotd-fleet")
    assert b.aws == AwsAccess("eu-west-1", None, "ops", ROLE_B, "ext-123", "rotd-fleet")
    assert c.aws.role_arn is None
    assert c.aws.account is None
    assert [x.label for x in inventory.accesses] == [
        "111111111111/us-east-1",
        "222222222222/eu-west-1",
        "base/us-east-1",
    ]
    assert "ext-123" not in repr(b)


def test_role_arns_regions_and_role_options_are_checked_offline() -> None:
    found = errors(
        """
        aws: {region: us-east-1}
        databases:
          - name: one
            aws: {role_arn: "arn:aws:iam::1234:user/rotd", region: Frankfurt}
            secrets: [{id: a}]
          - name: two
            aws: {external_id: x-1}
            secrets: [{id: b}]
        """
    )
    assert len(found) == 3, found
    assert "inv.yaml:4:" in found[0]
    assert "is not an IAM role ARN" in found[0]
    assert "'Frankfurt' is not an AWS region name" in found[1]
    assert "external_id applies only with role_arn" in found[2]


def test_a_secret_arn_outside_its_databases_account_or_region_is_an_error() -> None:
    found = errors(
        f"""
        aws: {{region: us-east-1}}
        databases:
          - name: one
            aws: {{role_arn: {ROLE_A}}}
            secrets:
              - id: arn:aws:secretsmanager:eu-west-1:111111111111:secret:app-AbCdEf
              - id: arn:aws:secretsmanager:us-east-1:333333333333:secret:other-AbCdEf
        """
    )
    assert len(found) == 2, found
    assert "inv.yaml:6:" in found[0]
    assert "set aws.region: eu-west-1 on the database" in found[0]
    assert "set aws.role_arn on the database to a role in 333333333333" in found[1]


def test_masters_resolve_where_their_database_lives_or_are_refused() -> None:
    inventory = parse(
        f"""
        aws: {{region: us-east-1}}
        databases:
          - name: one
            aws: {{role_arn: {ROLE_A}}}
            master_secret: {MASTER_B}
            secrets: [{{id: a, strategy: alternating_users}}]
          - name: two
            aws: {{role_arn: {ROLE_B}, region: eu-west-1}}
            master_secret: master-two
            secrets: [{{id: b, strategy: alternating_users}}]
        """
    )
    found = routes(inventory)
    assert found[MASTER_B] == AwsAccess("eu-west-1", role_arn=ROLE_B)
    assert found["master-two"] == found["b"] == AwsAccess("eu-west-1", role_arn=ROLE_B)
    assert found["a"] == AwsAccess("us-east-1", role_arn=ROLE_A)
    # A masterarn read from a secret at rotation time: the role of its account, in its region.
    masterarn = "arn:aws:secretsmanager:ap-south-1:111111111111:secret:m-AbCdEf"
    assert Stores(inventory).access_of(masterarn) == AwsAccess("ap-south-1", role_arn=ROLE_A)
    elsewhere = "arn:aws:secretsmanager:us-east-2:999999999999:secret:m-AbCdEf"
    assert Stores(inventory).access_of(elsewhere) == AwsAccess("us-east-2")

    refused = errors(
        f"""
        aws: {{region: us-east-1}}
        databases:
          - name: one
            aws: {{role_arn: {ROLE_A}}}
            master_secret: {MASTER_B}
            secrets: [{{id: a}}]
          - name: two
            master_secret: shared-master
            secrets: [{{id: b}}]
          - name: three
            aws: {{role_arn: {ROLE_A}}}
            master_secret: shared-master
            secrets: [{{id: c}}]
        """
    )
    assert len(refused) == 2, refused
    assert "inv.yaml:6:" in refused[0]
    assert "give a database (or this one) an aws.role_arn in account 222222222222" in refused[0]
    assert "name each database's master by its full ARN" in refused[1]


async def test_stores_of_one_account_and_region_share_one_write_limiter() -> None:
    inventory = parse(
        f"""
        aws: {{region: us-east-1}}
        databases:
          - name: one
            aws: {{role_arn: {ROLE_A}}}
            secrets: [{{id: a}}]
          - name: two
            aws: {{role_arn: {ROLE_A}, session_name: other}}
            secrets: [{{id: b}}]
          - name: three
            aws: {{role_arn: {ROLE_B}}}
            secrets: [{{id: c}}]
        """
    )
    one, two, three = (spec.aws for spec in inventory.secrets)
    assert limit_key(one) == limit_key(two) != limit_key(three)
    assert limit_key(one) != limit_key(one.in_region("eu-west-1"))
    async with Stores(inventory) as stores:
        a, b, c = [await stores.store_for(access) for access in (one, two, three)]
        assert a is not b
        assert a._writes is b._writes
        assert a._writes is not c._writes


async def test_offline_policies_name_each_roles_secrets_in_its_account() -> None:
    inventory = parse(
        f"""
        aws: {{region: us-east-1}}
        databases:
          - name: one
            aws: {{role_arn: {ROLE_A}}}
            secrets: [{{id: app-a}}]
          - name: two
            aws: {{role_arn: {ROLE_A}, region: eu-west-1}}
            secrets: [{{id: app-a2}}]
          - name: three
            aws: {{role_arn: {ROLE_B}}}
            secrets: [{{id: app-b}}]
        """
    )
    policies = await build_policies(inventory, offline=True)
    assert list(policies.documents) == ["base", ROLE_A, ROLE_B]
    (assume,) = policies.documents["base"]["Statement"]
    assert assume["Action"] == "sts:AssumeRole"
    assert assume["Resource"] == [ROLE_A, ROLE_B]
    (rotate_a,) = policies.documents[ROLE_A]["Statement"]
    assert rotate_a["Resource"] == [
        "arn:aws:secretsmanager:eu-west-1:111111111111:secret:app-a2-??????",
        "arn:aws:secretsmanager:us-east-1:111111111111:secret:app-a-??????",
    ]
    (rotate_b,) = policies.documents[ROLE_B]["Statement"]
    assert rotate_b["Resource"] == [
        "arn:aws:secretsmanager:us-east-1:222222222222:secret:app-b-??????"
    ]
    assert all("--offline" in w for w in policies.warnings)


def test_merged_policies_join_resources_and_kms_conditions() -> None:
    eu = "arn:aws:secretsmanager:eu-west-1:111111111111:secret:a-AbCdEf"
    us = "arn:aws:secretsmanager:us-east-1:111111111111:secret:b-AbCdEf"
    key_eu = "arn:aws:kms:eu-west-1:111111111111:key/k1"
    key_us = "arn:aws:kms:us-east-1:111111111111:key/k2"
    one = policy_document([Grant(eu, key_eu)], [])
    two = policy_document([Grant(us, key_us)], [])
    rotate, keys = merge([one, two])["Statement"]
    assert rotate["Resource"] == [eu, us]
    assert keys["Resource"] == [key_eu, key_us]
    assert keys["Condition"] == {
        "StringEquals": {
            "kms:ViaService": [
                "secretsmanager.eu-west-1.amazonaws.com",
                "secretsmanager.us-east-1.amazonaws.com",
            ]
        }
    }


async def test_offline_policies_give_each_identity_its_bridge_part_and_the_function_one() -> None:
    function = "arn:aws:lambda:us-east-1:111111111111:function:rotd-bridge"
    queue = "https://sqs.us-east-1.amazonaws.com/111111111111/rotd-bridge"
    inventory = parse(
        f"""
        aws: {{region: us-east-1}}
        bridge: {{queue_url: "{queue}", function_arn: "{function}"}}
        defaults: {{rotation: bridge}}
        databases:
          - name: one
            aws: {{role_arn: {ROLE_A}}}
            secrets: [{{id: app-a}}]
          - name: two
            aws: {{role_arn: {ROLE_A}}}
            secrets: [{{id: app-a2}}]
          - name: three
            aws: {{role_arn: {ROLE_B}}}
            secrets: [{{id: app-b}}]
        """
    )
    policies = await build_policies(inventory, offline=True)
    label = f"bridge-function:{function}"
    assert list(policies.documents) == ["base", ROLE_A, ROLE_B, label]
    role_a = {s["Sid"]: s for s in policies.documents[ROLE_A]["Statement"]}
    assert role_a["ReadBridgeQueues"]["Resource"] == [
        "arn:aws:sqs:us-east-1:111111111111:rotd-bridge"
    ]
    assert role_a["ReportBridgeFailures"]["Resource"] == [
        "arn:aws:secretsmanager:us-east-1:111111111111:secret:app-a-??????",
        "arn:aws:secretsmanager:us-east-1:111111111111:secret:app-a2-??????",
    ]
    assert role_a["ReportBridgeFailures"]["Condition"] == {
        "ForAllValues:StringEquals": {"aws:TagKeys": ["rotd:bridge:failure"]}
    }
    read, send = policies.documents[label]["Statement"]
    assert read["Resource"] == [
        "arn:aws:secretsmanager:us-east-1:111111111111:secret:app-a-??????",
        "arn:aws:secretsmanager:us-east-1:111111111111:secret:app-a2-??????",
        "arn:aws:secretsmanager:us-east-1:222222222222:secret:app-b-??????",
    ]
    assert send["Action"] == ["sqs:SendMessage"]
    assert any("AWSLambdaBasicExecutionRole" in n for n in policies.notes)
