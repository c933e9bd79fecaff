"""Rotations that Secrets Manager started and whose function never wrote the pending value.

RotateSecret stages AWSPENDING on a new version id before it invokes the rotation function;
when the function never runs (here: it does not exist, as moto's server and AWS both leave it)
the version has a label and no value. rotd takes the rotation over under that version id.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotd.doctor import Level, diagnose
from rotd.errors import Category
from rotd.protocol import UNWRITTEN
from rotd.secretstore import AwsConnection, AwsSecretStore, connection_for
from rotd.status import survey
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.rotation import Rotd, assert_ok, make_login, make_master, one_secret


async def assert_taken_over(
    db: Database, secrets: Secrets, name: str, token: str, previous: str
) -> dict[str, Any]:
    """The staged version is AWSCURRENT, its login works, and no AWSPENDING is left over."""
    stages = await secrets.stages(name)
    assert sorted(stages[token]) == ["AWSCURRENT", "AWSPENDING"]
    assert stages[previous] == ["AWSPREVIOUS"]
    assert [v for v, s in stages.items() if "AWSPENDING" in s] == [token]
    current = await secrets.value(name)
    assert current["extra_key"] == "kept"
    assert await db.logs_in(current["username"], current["password"])
    return current


def recovering(logs: list[dict[str, Any]]) -> list[str]:
    return [e["case"] for e in logs if e["event"] == "rotation.recovering"]


async def test_single_user_takes_over_the_staged_version(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    previous = await secrets.version(name)
    token = await secrets.start_rotation_without_function(name)
    inv = one_secret(moto, name, "single_user")

    with capture_logs() as logs:
        outcome = await rotd.rotate_one(inv)

    assert_ok(outcome)
    assert outcome.resumed
    assert outcome.version_id == token
    current = await assert_taken_over(db, secrets, name, token, previous)
    assert current["username"] == user
    assert not await db.logs_in(user, "Initial-pass-1")
    (case,) = recovering(logs)
    assert case.startswith(UNWRITTEN)
    assert "createSecret under its version id" in case
    assert [e["event"] for e in logs].count("rotation.resuming") == 1

    # And the secret rotates as any other afterwards.
    again = await rotd.rotate_one(inv)
    assert_ok(again)
    assert not again.resumed
    assert await db.logs_in(user, (await secrets.value(name))["password"])


async def test_alternating_users_take_over_the_staged_version(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    master = await make_master(db, secrets)
    previous = await secrets.version(name)
    token = await secrets.start_rotation_without_function(name)

    with capture_logs() as logs:
        outcome = await rotd.rotate_one(one_secret(moto, name, "alternating_users", master))

    assert_ok(outcome)
    assert outcome.version_id == token
    current = await assert_taken_over(db, secrets, name, token, previous)
    assert current["username"] == user + "_clone"
    assert await db.logs_in(user, "Initial-pass-1"), "the previous login must keep working"
    (case,) = recovering(logs)
    assert case.startswith(UNWRITTEN)


class RivalTakesOverFirst(AwsSecretStore):
    """The real store, except that just before rotd's PutSecretValue another rotd process's
    write of the same staged version lands (it took the rotation over too, then lost its lock)."""

    rival: dict[str, Any] = {}

    async def put_pending(self, secret_id: str, token: str, string: str) -> bool:
        if self.rival:
            rival, self.rival = self.rival, {}
            assert await super().put_pending(secret_id, token, json.dumps(rival))
        return await super().put_pending(secret_id, token, string)


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_two_processes_taking_over_write_one_version_and_the_first_wins(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    previous = await secrets.version(name)
    token = await secrets.start_rotation_without_function(name)
    connection = AwsConnection(region=moto.region, endpoint_url=moto.endpoint_url)

    async with RivalTakesOverFirst(connection) as store:
        store.rival = db.secret(user, "Rival-pass-1", extra_key="kept")
        with capture_logs() as logs:
            outcome = await Rotd(store).rotate_one(one_secret(moto, name, "single_user"))
        # The staged version with another value, later still: refused, the winner kept.
        refused = await store.put_pending(name, token, json.dumps({"x": 1}))

    assert_ok(outcome)
    assert outcome.version_id == token
    current = await assert_taken_over(db, secrets, name, token, previous)
    assert current["password"] == "Rival-pass-1"
    assert refused is False
    cases = recovering(logs)
    assert cases[0].startswith(UNWRITTEN)
    assert cases[1].startswith("another rotd process wrote this rotation's pending version first")


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_status_and_doctor_name_the_unwritten_pending_version(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    _, name = await make_login(db, secrets)
    token = await secrets.start_rotation_without_function(name)
    inv = one_secret(moto, name, "single_user")
    before = await secrets.stages(name)

    async with AwsSecretStore(connection_for(inv)) as store:
        (report,) = await survey(inv, store)
    assert report.problem is None
    assert report.unfinished == token
    assert report.line().endswith(
        f"unfinished rotation {token}: rotation started elsewhere, pending value never "
        "written; at the next run rotd runs createSecret under its version id, then finishes "
        "the rotation"
    )

    checks = await diagnose(inv, inv.secrets, connection_for(inv))
    (found,) = [c for c in checks if c.name == "secret.unfinished"]
    assert found.level is Level.WARN
    assert f"version {token} holds AWSPENDING without a value: {UNWRITTEN}" in found.detail
    assert "the next rotation takes it over" in found.detail
    assert await secrets.stages(name) == before


async def test_two_processes_at_once_take_it_over_once(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    """Two rotd processes find the same staged version at the same moment: the rotation lock
    lets one take it over; the other is refused the lock, or rotates anew after it."""
    user, name = await make_login(db, secrets)
    token = await secrets.start_rotation_without_function(name)
    inv = one_secret(moto, name, "single_user")
    connection = AwsConnection(region=moto.region, endpoint_url=moto.endpoint_url)

    async with AwsSecretStore(connection) as one, AwsSecretStore(connection) as two:
        outcomes = await asyncio.gather(Rotd(one).rotate_one(inv), Rotd(two).rotate_one(inv))

    (took_over,) = [o for o in outcomes if o.ok and o.version_id == token]
    assert took_over.resumed
    (other,) = [o for o in outcomes if o is not took_over]
    if other.error is not None:
        assert other.error.category is Category.LOCKED, other.error
    else:
        assert not other.resumed
        assert other.version_id != token
    stages = await secrets.stages(name)
    assert {"AWSCURRENT", "AWSPREVIOUS"} & set(stages[token])
    assert [v for v, s in stages.items() if "AWSPENDING" in s and "AWSCURRENT" not in s] == []
    current = await secrets.value(name)
    assert current["username"] == user
    assert await db.logs_in(user, current["password"])
