"""One rotd for several AWS accounts and regions: each database's own ``aws:`` block."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.accounts import ACCOUNT_A, ACCOUNT_B, Accounts, role
from tests.fixtures.aws import MotoServer
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, run

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
