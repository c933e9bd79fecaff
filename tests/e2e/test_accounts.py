"""One rotd for several AWS accounts and regions: each database's own ``aws:`` block."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.accounts import ACCOUNT_A, ACCOUNT_B, Accounts, role
from tests.fixtures.aws import MotoServer
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, injected_env, run

Start = Callable[..., RotdProcess]
OTHER_REGION = "eu-west-1"


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_one_rotate_all_rotates_secrets_in_two_accounts_and_two_regions(
    db: Database, accounts: Accounts, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    role_a, role_b = role(ACCOUNT_A), role(ACCOUNT_B)
    user_a, user_b, decoy_user = db.unique("a"), db.unique("b"), db.unique("d")
    for user in (user_a, user_b, decoy_user):
        await db.create_login(user, "Initial-pass-1")
    arn_a = await accounts.create(role_a, moto.region, "app", db.secret(user_a, "Initial-pass-1"))
    arn_b = await accounts.create(
        role_b, OTHER_REGION, "app-b", db.secret(user_b, "Initial-pass-1")
    )
    # The same name in rotd's own account: not in the inventory, never to be touched.
    decoy = await accounts.create(None, moto.region, "app", db.secret(decoy_user, "Initial-pass-1"))
    decoy_version = await accounts.version(None, moto.region, decoy)
    name_a, name_b = accounts.name("app"), accounts.name("app-b")
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        databases=[
            {"name": "in-a", "aws": {"role_arn": role_a}, "secrets": [{"id": name_a}]},
            {
                "name": "in-b",
                "aws": {"role_arn": role_b, "region": OTHER_REGION, "session_name": "rotd-b"},
                "secrets": [{"id": name_b}],
            },
        ],
    )

    code, out, err = run(rotd_process, "rotate", "-c", str(path), "--all", "--json")

    assert code == 0, err
    results = {r["secret_id"]: r for r in map(json.loads, out.splitlines())}
    assert [results[n]["outcome"] for n in (name_a, name_b)] == ["succeeded", "succeeded"]
    assert results[name_a]["arn"] == arn_a
    assert results[name_b]["arn"] == arn_b
    for role_arn, region, name, user in (
        (role_a, moto.region, name_a, user_a),
        (role_b, OTHER_REGION, name_b, user_b),
    ):
        value = await accounts.value(role_arn, region, name)
        assert value["password"] != "Initial-pass-1"
        assert await db.logs_in(user, value["password"])
    assert await accounts.version(None, moto.region, decoy) == decoy_version
    assert await db.logs_in(decoy_user, "Initial-pass-1")
    assumed = [json.loads(line) for line in err.splitlines() if "credentials_refreshed" in line]
    assert {e["role_arn"] for e in assumed} == {role_a, role_b}


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_status_doctor_and_iam_policy_speak_for_each_account(
    db: Database, accounts: Accounts, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    role_a, role_b = role(ACCOUNT_A), role(ACCOUNT_B)
    user_a, user_b, own_user = db.unique("a"), db.unique("b"), db.unique("o")
    for user in (user_a, user_b, own_user):
        await db.create_login(user, "Initial-pass-1")
    arn_a = await accounts.create(role_a, moto.region, "a", db.secret(user_a, "Initial-pass-1"))
    arn_b = await accounts.create(role_b, OTHER_REGION, "b", db.secret(user_b, "Initial-pass-1"))
    own = await accounts.create(None, moto.region, "own", db.secret(own_user, "Initial-pass-1"))
    name_a, name_b, name_own = (accounts.name(x) for x in ("a", "b", "own"))
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        databases=[
            {"name": "in-a", "aws": {"role_arn": role_a}, "secrets": [{"id": name_a}]},
            {
                "name": "in-b",
                "aws": {"role_arn": role_b, "region": OTHER_REGION},
                "secrets": [{"id": name_b}],
            },
            {"name": "own", "secrets": [{"id": name_own}]},
        ],
    )

    code, out, err = run(rotd_process, "status", "-c", str(path), "--json")
    assert code == 0, err
    reports = {r["secret_id"]: r for r in map(json.loads, out.splitlines())}
    assert [(reports[n]["account"], reports[n]["region"]) for n in (name_a, name_b, name_own)] == [
        (ACCOUNT_A, moto.region),
        (ACCOUNT_B, OTHER_REGION),
        ("base", moto.region),
    ]

    code, out, err = run(rotd_process, "iam-policy", "-c", str(path))
    assert code == 0, err
    policies = json.loads(out)
    assert list(policies) == ["base", role_a, role_b]

    def resources(document: dict[str, Any], sid: str) -> list[str]:
        (statement,) = [s for s in document["Statement"] if s["Sid"] == sid]
        return list(statement["Resource"])

    assert resources(policies["base"], "AssumeRotationRoles") == [role_a, role_b]
    assert resources(policies["base"], "RotateSecrets") == [own]
    assert resources(policies[role_a], "RotateSecrets") == [arn_a]
    assert resources(policies[role_b], "RotateSecrets") == [arn_b]

    code, out, err = run(rotd_process, "doctor", "-c", str(path), "--json")
    checks = [json.loads(line) for line in out.splitlines()]
    roles_checked = [c for c in checks if c["check"] == "aws.role"]
    assert [c["level"] for c in roles_checked] == ["ok", "ok"], roles_checked
    assert (
        f"{role_a} assumed as arn:aws:sts::{ACCOUNT_A}:assumed-role/" in roles_checked[0]["detail"]
    )
    described = {c["secret_id"]: c for c in checks if c["check"] == "secret.describe"}
    assert {n: described[n]["detail"] for n in (name_a, name_b, name_own)} == {
        name_a: arn_a,
        name_b: arn_b,
        name_own: own,
    }


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_replica_is_refused_unchanged_and_a_primary_rotates_and_checks_replication(
    db: Database, accounts: Accounts, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    user = db.unique("r")
    await db.create_login(user, "Initial-pass-1")
    primary = await accounts.create(
        None, moto.region, "multi", db.secret(user, "Initial-pass-1"), replicas=(OTHER_REGION,)
    )
    name = accounts.name("multi")
    before = await accounts.version(None, moto.region, name)
    replica_db = {"name": "replica", "aws": {"region": OTHER_REGION}, "secrets": [{"id": name}]}
    path = write_inventory(tmp_path / "replica.yaml", moto, databases=[replica_db])

    code, out, err = run(rotd_process, "rotate", "-c", str(path), "--all", "--json")
    assert code == 1, err
    (result,) = map(json.loads, out.splitlines())
    assert result["outcome"] == "failed"
    assert result["category"] == "replica"
    assert primary in result["error"]
    assert f"set aws.region: {moto.region}" in result["error"]
    assert await accounts.version(None, moto.region, name) == before
    assert await db.logs_in(user, "Initial-pass-1")

    code, out, err = run(rotd_process, "doctor", "-c", str(path), "--json")
    assert code == 1
    (described,) = [c for c in map(json.loads, out.splitlines()) if c["check"] == "secret.describe"]
    assert described["level"] == "FAIL"
    assert "read-only replica" in described["detail"]

    path = write_inventory(tmp_path / "primary.yaml", moto, [{"id": name}])
    code, out, err = run(rotd_process, "rotate", "-c", str(path), "--all", "--json")
    assert code == 0, err
    assert await accounts.version(None, moto.region, name) != before
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (synced,) = [e for e in events if e["event"] == "replication.in_sync"]
    assert synced["region"] == OTHER_REGION
    assert synced["secret_id"] == name
    assert synced["lag_s"] >= 0

    code, out, err = run(rotd_process, "status", "-c", str(path), "--json")
    assert code == 0, err
    (report,) = map(json.loads, out.splitlines())
    assert report["replicas"] == {OTHER_REGION: "InSync"}


# Every call finds the role's credentials within the margin of their expiry, as a daemon does
# about once an hour: it must assume the role again and go on.
EXPIRING = """
import rotd.roles

rotd.roles.REFRESH_MARGIN_S = rotd.roles.DURATION_S + 60
"""


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_rotd_run_assumes_a_role_again_as_its_credentials_expire(
    db: Database, accounts: Accounts, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    role_a = role(ACCOUNT_A)

    async def pending(label: str) -> tuple[str, str]:
        user = db.unique(label)
        await db.create_login(user, "Initial-pass-1")
        await accounts.create(role_a, moto.region, label, db.secret(user, "Initial-pass-1"))
        name = accounts.name(label)
        await accounts.put_pending(role_a, moto.region, name, db.secret(user, "Pending-pass-5"))
        return user, name

    first_user, first = await pending("first")
    database = {"name": "in-a", "aws": {"role_arn": role_a}, "secrets": [{"id": first}]}
    path = write_inventory(tmp_path / "inv.yaml", moto, databases=[database])

    process = rotd_process("run", "-c", str(path), env=injected_env(tmp_path, EXPIRING))
    process.wait_for_event("rotation.resumed", 60)
    refreshed = len(process.named("aws.credentials_refreshed"))
    second_user, second = await pending("second")
    database["secrets"] = [{"id": first}, {"id": second}]
    write_inventory(path, moto, databases=[database])
    process.send(signal.SIGHUP)
    process.wait_for_event("rotation.resumed", 60, count=2)
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0

    assert refreshed > 1
    assert len(process.named("aws.credentials_refreshed")) > refreshed
    assert process.named("rotation.failed") == []
    for user in (first_user, second_user):
        assert await db.logs_in(user, "Pending-pass-5")
