"""The events that tell an operator how an unusual rotation went: ``rotation.recovering`` with
the case it took up, and ``rotation.version_id_taken`` when a rotation's version id was used."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from rotd.protocol import version_token
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.rotation import Rotd, assert_ok, make_login, make_master, one_secret

Event = dict[str, Any]


def named(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e["event"] == name]


async def set_password(db: Database, user: str, password: str) -> None:
    if db.family == "postgres":
        await db.execute(f"ALTER ROLE \"{user}\" PASSWORD '{password}'")
    else:
        await db.execute(f"ALTER USER '{user}'@'%' IDENTIFIED BY '{password}'")


async def test_recovering_says_the_current_login_still_works(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    token = await secrets.put_pending(name, db.secret(user, "Pending-pass-5"))
    with capture_logs() as events:
        outcome = await rotd.rotate_one(one_secret(moto, name, "single_user"))
    assert_ok(outcome)
    (recovering,) = named(events, "rotation.recovering")
    assert recovering["secret_id"] == name
    assert recovering["login"] == "current"
    assert recovering["case"].startswith("the database still accepts AWSCURRENT")
    assert outcome.version_id == token


async def test_recovering_says_the_database_already_holds_the_pending_password(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    await secrets.put_pending(name, db.secret(user, "Pending-pass-5"))
    await set_password(db, user, "Pending-pass-5")  # the earlier run set it, then stopped
    with capture_logs() as events:
        assert_ok(await rotd.rotate_one(one_secret(moto, name, "single_user")))
    (recovering,) = named(events, "rotation.recovering")
    assert recovering["case"] == "the database already holds the pending password: finishing"
    assert recovering["login"] == "pending"


async def test_recovering_says_a_stale_pending_was_removed(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    _, name = await make_login(db, secrets)
    stale = await secrets.put_pending(name, {"engine": db.engine})  # no username: unusable
    with capture_logs() as events:
        assert_ok(await rotd.rotate_one(one_secret(moto, name, "single_user")))
    (recovering,) = named(events, "rotation.recovering")
    assert recovering["case"] == "stale AWSPENDING removed; starting a new rotation"
    assert recovering["stale_version_id"] == stale
    assert "unusable" in recovering["reason"]


async def test_recovering_says_the_master_sets_the_pending_user(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    master = await make_master(db, secrets)
    await secrets.put_pending(name, db.secret(user + "_clone", "Pending-pass-5"))
    with capture_logs() as events:
        outcome = await rotd.rotate_one(one_secret(moto, name, "alternating_users", master))
    assert_ok(outcome)
    (recovering,) = named(events, "rotation.recovering")
    assert recovering["case"] == "the master sets the pending user's password"
    assert recovering["strategy"] == "alternating_users"


async def test_version_id_taken_is_reported_when_current_was_moved_back(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    _, name = await make_login(db, secrets)
    first_current = await secrets.version(name)
    arn = (await secrets.describe(name))["ARN"]
    inv = one_secret(moto, name, "single_user")
    first = await rotd.rotate_one(inv)
    assert_ok(first)
    async with secrets.client() as client:  # the operator's roll-back (labels only)
        await client.update_secret_version_stage(
            SecretId=name,
            VersionStage="AWSCURRENT",
            MoveToVersionId=first_current,
            RemoveFromVersionId=first.version_id,
        )
        await client.update_secret_version_stage(
            SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=first.version_id
        )

    with capture_logs() as events:
        assert_ok(await rotd.rotate_one(inv))

    (taken,) = named(events, "rotation.version_id_taken")
    assert taken["secret_id"] == name
    assert taken["version_id"] == version_token(arn, first_current)
    assert "exists" in taken["reason"]
    assert named(events, "rotation.recovering") == []
