"""The rotation of one secret against real databases that check passwords and moto's server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotd.errors import Category, StoreError
from rotd.inventory import Inventory
from rotd.protocol import version_token
from rotd.secretstore import AwsConnection, AwsSecretStore
from tests.fixtures.aws import MotoServer, Secrets, free_port
from tests.fixtures.databases import Database
from tests.fixtures.rotation import (
    Rotd,
    assert_ok,
    inventory,
    make_login,
    make_master,
    one_secret,
)

TRICKY_PASSWORD = "p'a\"s s\\w%rd_é€"


async def test_single_user_rotation_changes_the_password_and_moves_labels(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    old_version = await secrets.version(name)

    outcome = await rotd.rotate_one(one_secret(moto, name, "single_user"))

    assert_ok(outcome)
    assert (outcome.old_username, outcome.new_username) == (user, user)
    current = await secrets.value(name)
    assert current["username"] == user
    assert current["password"] != "Initial-pass-1"
    assert current["extra_key"] == "kept"
    assert await db.logs_in(user, current["password"])
    assert not await db.logs_in(user, "Initial-pass-1")
    stages = await secrets.stages(name)
    assert sorted(stages[outcome.version_id]) == ["AWSCURRENT", "AWSPENDING"]
    assert stages[old_version] == ["AWSPREVIOUS"]


async def test_alternating_users_toggle_and_the_previous_login_keeps_working(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    master = await make_master(db, secrets)
    inv = one_secret(moto, name, "alternating_users", master)

    first = await rotd.rotate_one(inv)
    assert_ok(first)
    assert (first.old_username, first.new_username) == (user, user + "_clone")
    current = await secrets.value(name)
    assert current["username"] == user + "_clone"
    assert await db.logs_in(user + "_clone", current["password"])
    assert await db.logs_in(user, "Initial-pass-1"), "the previous login must keep working"

    second = await rotd.rotate_one(inv)
    assert_ok(second)
    assert (second.old_username, second.new_username) == (user + "_clone", user)
    newest = await secrets.value(name)
    assert newest["username"] == user
    assert await db.logs_in(user, newest["password"])
    assert not await db.logs_in(user, "Initial-pass-1")
    assert await db.logs_in(user + "_clone", current["password"])
    stages = await secrets.stages(name)
    assert stages[first.version_id] == ["AWSPREVIOUS"]
    assert "AWSCURRENT" in stages[second.version_id]


async def test_the_clone_mirrors_grants_made_after_it_was_created(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    master = await make_master(db, secrets)
    inv = one_secret(moto, name, "alternating_users", master)
    early = await db.create_table(user)
    assert_ok(await rotd.rotate_one(inv))  # creates the clone
    late = await db.create_table(user)  # granted to the original only, after the clone exists
    assert_ok(await rotd.rotate_one(inv))  # back to the original
    assert_ok(await rotd.rotate_one(inv))  # to the clone again: mirrored anew
    clone = await secrets.value(name)
    assert clone["username"] == user + "_clone"
    schema = "public" if db.family == "postgres" else "test"
    for table in (early, late):
        rows = await db.execute_as(
            clone["username"], clone["password"], f"SELECT id FROM {schema}.{table}"
        )
        assert rows == [(1,)]


@pytest.mark.parametrize("db", ["postgres"], indirect=True)  # MySQL tables have no owner
async def test_objects_created_by_the_clone_belong_to_the_original(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    master = await make_master(db, secrets)
    await db.execute(f'GRANT CREATE ON SCHEMA public TO "{user}"')
    assert_ok(await rotd.rotate_one(one_secret(moto, name, "alternating_users", master)))
    clone = await secrets.value(name)
    table = db.unique("t")
    db.tables.append(table)
    await db.execute_as(
        clone["username"], clone["password"], f"CREATE TABLE public.{table} (id int)"
    )
    rows = await db.execute_as(
        user, "Initial-pass-1", f"SELECT tableowner FROM pg_tables WHERE tablename = '{table}'"
    )
    assert rows == [(user,)]
    assert await db.execute_as(user, "Initial-pass-1", f"SELECT count(*) FROM public.{table}") == [
        (0,)
    ]


@pytest.mark.parametrize("strategy", ["single_user", "alternating_users"])
async def test_quotes_backslashes_spaces_and_non_ascii_in_names_and_passwords(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer, strategy: str
) -> None:
    user = f"rt q'u\"o\\te é {db.unique()}"[:40]
    await db.create_login(user, TRICKY_PASSWORD)
    name = await secrets.create(db.unique("s"), db.secret(user, TRICKY_PASSWORD))
    master = await make_master(db, secrets) if strategy == "alternating_users" else None
    outcome = await rotd.rotate_one(one_secret(moto, name, strategy, master))
    assert_ok(outcome)
    current = await secrets.value(name)
    assert await db.logs_in(current["username"], current["password"])
    if strategy == "single_user":
        assert not await db.logs_in(user, TRICKY_PASSWORD)
    else:
        assert current["username"] == user + "_clone"
        assert await db.logs_in(user, TRICKY_PASSWORD)


async def test_a_clone_name_too_long_is_refused_before_anything_changes(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    limit = 63 if db.family == "postgres" else 80
    user = (db.unique() + "x" * limit)[: limit - 2]
    await db.create_login(user, "Initial-pass-1")
    name = await secrets.create(db.unique("s"), db.secret(user, "Initial-pass-1"))
    master = await make_master(db, secrets)
    before = await secrets.stages(name)

    outcome = await rotd.rotate_one(one_secret(moto, name, "alternating_users", master))

    assert outcome.error is not None
    assert outcome.error.step == "createSecret"
    assert outcome.error.category is Category.NAME_TOO_LONG
    assert f"{user}_clone" in outcome.error.reason
    assert str(limit) in outcome.error.reason
    assert await secrets.stages(name) == before
    assert not await db.user_exists(user + "_clone")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json at all", "not JSON"),
        ('["a", "list"]', "not an object"),
        ({"host": "h", "username": "u", "password": "p"}, "missing key `engine`"),
        ({"engine": "postgres", "username": "u", "password": "p"}, "missing key `host`"),
        ({"engine": "postgres", "host": "h", "password": "p"}, "missing key `username`"),
        ({"engine": "postgres", "host": "h", "username": "u"}, "missing key `password`"),
        (
            {"engine": "oracle", "host": "h", "username": "u", "password": "p"},
            "no such engine is installed; installed: aurora-mysql, aurora-postgresql, exec, "
            "mariadb",
        ),
    ],
)
async def test_bad_secret_json_fails_at_create_and_changes_nothing(
    secrets: Secrets, rotd: Rotd, moto: MotoServer, value: Any, message: str
) -> None:
    name = await secrets.create("bad", value)
    before = await secrets.stages(name)
    outcome = await rotd.rotate_one(one_secret(moto, name, "single_user"))
    assert outcome.error is not None
    assert outcome.error.step == "createSecret"
    assert outcome.error.category is Category.BAD_SECRET
    assert message in outcome.error.reason
    assert await secrets.stages(name) == before


async def test_a_pending_version_left_by_an_earlier_run_is_resumed_with_its_token(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    token = await secrets.put_pending(name, db.secret(user, "Pending-pass-1"))

    with capture_logs() as logs:
        outcome = await rotd.rotate_one(one_secret(moto, name, "single_user"))

    assert_ok(outcome)
    assert outcome.resumed
    assert outcome.version_id == token
    (resuming,) = [e for e in logs if e["event"] == "rotation.resuming"]
    assert resuming["version_id"] == token
    assert "AWSCURRENT" in (await secrets.stages(name))[token]
    assert await db.logs_in(user, "Pending-pass-1")
    assert not await db.logs_in(user, "Initial-pass-1")


async def test_a_pending_password_the_database_already_holds_is_finished(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    """A run that died after setSecret: the current password no longer works."""
    user, name = await make_login(db, secrets)
    token = await secrets.put_pending(name, db.secret(user, "Pending-pass-2"))
    if db.family == "postgres":
        await db.execute(f"ALTER ROLE \"{user}\" PASSWORD 'Pending-pass-2'")
    else:
        await db.execute(f"ALTER USER '{user}'@'%' IDENTIFIED BY 'Pending-pass-2'")

    outcome = await rotd.rotate_one(one_secret(moto, name, "single_user"))

    assert_ok(outcome)
    assert outcome.version_id == token
    assert (await secrets.value(name))["password"] == "Pending-pass-2"
    assert await db.logs_in(user, "Pending-pass-2")


async def test_set_failing_leaves_current_and_pending_and_the_next_run_resumes(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    master_user = db.unique("m")
    await db.create_login(master_user, "Master-pass-1")  # no privilege to create users yet
    master = await secrets.create(master_user, db.secret(master_user, "Master-pass-1"))
    inv = one_secret(moto, name, "alternating_users", master)
    before = await secrets.version(name)

    failed = await rotd.rotate_one(inv)

    assert failed.error is not None
    assert failed.error.step == "setSecret"
    assert failed.error.category is Category.PERMISSION
    assert await secrets.version(name) == before
    assert await db.logs_in(user, "Initial-pass-1")
    stages = await secrets.stages(name)
    assert stages[failed.version_id] == ["AWSPENDING"]

    if db.family == "postgres":
        await db.execute(f'ALTER ROLE "{master_user}" CREATEROLE')
    else:
        await db.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{master_user}'@'%' WITH GRANT OPTION")
    resumed = await rotd.rotate_one(inv)

    assert_ok(resumed)
    assert resumed.resumed
    assert resumed.version_id == failed.version_id
    current = await secrets.value(name)
    assert await db.logs_in(current["username"], current["password"])


async def test_test_failing_leaves_current_and_the_next_run_resumes(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    table = db.unique("t")
    schema = "public" if db.family == "postgres" else "test"
    inv = one_secret(moto, name, "single_user", test_query=f"SELECT id FROM {schema}.{table}")
    before = await secrets.version(name)

    failed = await rotd.rotate_one(inv)

    assert failed.error is not None
    assert failed.error.step == "testSecret"
    assert failed.error.category is Category.TEST_FAILED
    assert await secrets.version(name) == before
    db.tables.append(table)
    if db.family == "postgres":
        await db.execute(
            f'CREATE TABLE public.{table} (id int); GRANT SELECT ON public.{table} TO "{user}"'
        )
    else:
        await db.execute(f"CREATE TABLE test.{table} (id int)")
        await db.execute(f"GRANT SELECT ON test.{table} TO '{user}'@'%'")

    resumed = await rotd.rotate_one(inv)

    assert_ok(resumed)
    assert resumed.version_id == failed.version_id
    current = await secrets.value(name)
    assert await db.logs_in(user, current["password"])


class FailingFinish(AwsSecretStore):
    """The real store, except that moving AWSCURRENT fails once, as a network cut would."""

    failures = 1

    async def move_current(self, secret_id: str, token: str, from_version: str) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreError(secret_id, "update_secret_version_stage", Category.UNREACHABLE, "cut")
        await super().move_current(secret_id, token, from_version)


async def test_finish_failing_leaves_current_and_the_next_run_finishes(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    inv = one_secret(moto, name, "single_user")
    connection = AwsConnection(region=moto.region, endpoint_url=moto.endpoint_url)
    async with FailingFinish(connection) as store:
        rotd = Rotd(store)
        failed = await rotd.rotate_one(inv)
        assert failed.error is not None
        assert failed.error.step == "finishSecret"
        assert (await secrets.value(name))["password"] == "Initial-pass-1"
        resumed = await rotd.rotate_one(inv)
    assert_ok(resumed)
    assert resumed.version_id == failed.version_id
    assert await db.logs_in(user, (await secrets.value(name))["password"])


async def test_native_rotation_enabled_is_refused(
    secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    name = await secrets.create(
        "native", {"engine": "postgres", "host": "h", "username": "u", "password": "p"}
    )
    async with secrets.client() as client:
        # moto records the rotation settings before it looks for the Lambda, then fails.
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await client.rotate_secret(
                SecretId=name,
                RotationLambdaARN="arn:aws:lambda:us-east-1:123456789012:function:rotator",
                RotationRules={"AutomaticallyAfterDays": 30},
            )
    outcome = await rotd.rotate_one(one_secret(moto, name, "single_user"))
    assert outcome.error is not None
    assert outcome.error.step == "guard"
    assert outcome.error.category is Category.CONFLICT
    assert "cancel-rotate-secret" in outcome.error.reason


async def test_an_unknown_secret_is_reported_as_not_found(rotd: Rotd, moto: MotoServer) -> None:
    outcome = await rotd.rotate_one(one_secret(moto, "rotd-test/does-not-exist", "single_user"))
    assert outcome.error is not None
    assert outcome.error.category is Category.NOT_FOUND
    assert "cannot find" in outcome.error.reason


@pytest.mark.parametrize("strategy", ["single_user", "alternating_users"])
async def test_a_secret_locked_by_another_rotd_is_left_alone(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer, strategy: str
) -> None:
    user, name = await make_login(db, secrets)
    master = await make_master(db, secrets) if strategy == "alternating_users" else None
    inv = one_secret(moto, name, strategy, master)
    arn = (await secrets.describe(name))["ARN"]
    before = await secrets.stages(name)

    async with db.hold_lock(arn):
        locked = await rotd.rotate_one(inv)

    assert locked.error is not None
    assert locked.error.category is Category.LOCKED
    assert locked.error.category.transient
    assert await secrets.stages(name) == before, "nothing may change without the lock"
    assert await db.logs_in(user, "Initial-pass-1")
    assert_ok(await rotd.rotate_one(inv))


async def test_a_secret_rotated_elsewhere_since_it_was_found_due_is_skipped(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    """Two daemons found it due; the first rotated it; the second must not rotate it again."""
    _, name = await make_login(db, secrets)
    inv = one_secret(moto, name, "single_user")
    seen_due = await secrets.version(name)
    first = await rotd.rotate_one(inv)
    assert_ok(first)

    second = await rotd.rotate_one(inv, expected_current={name: seen_due})

    assert second.skipped
    assert second.error is None
    assert await secrets.version(name) == first.version_id


async def test_a_stale_unusable_pending_version_is_removed_and_a_new_rotation_runs(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    async with secrets.client() as client:
        stale = "11111111-2222-3333-4444-555555555555"
        await client.put_secret_value(
            SecretId=name,
            ClientRequestToken=stale,
            SecretString="half-written by a hand edit",
            VersionStages=["AWSPENDING"],
        )

    outcome = await rotd.rotate_one(one_secret(moto, name, "single_user"))

    assert_ok(outcome)
    assert not outcome.resumed
    assert outcome.version_id != stale
    stages = await secrets.stages(name)
    assert stale not in stages, "the stale AWSPENDING label is gone"
    assert await db.logs_in(user, (await secrets.value(name))["password"])


async def test_a_stale_pending_is_kept_when_the_database_may_hold_it(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    """Current and previous are refused: the unreadable pending may be what the server holds."""
    user, name = await make_login(db, secrets)
    if db.family == "postgres":
        await db.execute(f"ALTER ROLE \"{user}\" PASSWORD 'Unknown-pass-1'")
    else:
        await db.execute(f"ALTER USER '{user}'@'%' IDENTIFIED BY 'Unknown-pass-1'")
    token = await secrets.put_pending(name, {"engine": db.engine})  # no username: unusable

    outcome = await rotd.rotate_one(one_secret(moto, name, "single_user"))

    assert outcome.error is not None
    assert outcome.error.category is Category.AUTH
    assert (await secrets.stages(name))[token] == ["AWSPENDING"]


async def test_verify_endpoints_are_logged_in_through_before_current_moves(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    dead = free_port()

    def with_endpoints(*endpoints: str) -> Inventory:
        listed = ", ".join(json.dumps(e) for e in endpoints)
        body = (
            f"databases:\n  - name: testdb\n    verify_endpoints: [{listed}]\n"
            f"    secrets:\n      - id: {json.dumps(name)}\n"
        )
        return inventory(moto, body)

    before = await secrets.version(name)
    failed = await rotd.rotate_one(with_endpoints(f"localhost:{db.port}", f"127.0.0.1:{dead}"))
    assert failed.error is not None
    assert failed.error.step == "testSecret"
    assert failed.error.category is Category.UNREACHABLE
    assert f"127.0.0.1:{dead}" in failed.error.reason
    assert await secrets.version(name) == before

    resumed = await rotd.rotate_one(with_endpoints(f"localhost:{db.port}"))
    assert_ok(resumed)
    assert resumed.version_id == failed.version_id
    assert await db.logs_in(user, (await secrets.value(name))["password"])


class RivalWritesFirst(AwsSecretStore):
    """The real store, except that just before rotd's PutSecretValue another process's write
    of the same version lands: a rotd that lost its lock, whose write arrived late."""

    rival: dict[str, Any] = {}

    async def put_pending(self, secret_id: str, token: str, string: str) -> bool:
        if self.rival:
            rival, self.rival = self.rival, {}
            assert await super().put_pending(secret_id, token, json.dumps(rival))
        return await super().put_pending(secret_id, token, string)


async def test_a_rotation_is_one_version_id_whoever_writes_it_first(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    """Every process derives a rotation's version id from AWSCURRENT; when another's write of
    it lands first, Secrets Manager refuses ours and rotd finishes the version that won."""
    user, name = await make_login(db, secrets)
    first_current = await secrets.version(name)
    arn = (await secrets.describe(name))["ARN"]
    connection = AwsConnection(region=moto.region, endpoint_url=moto.endpoint_url)
    async with RivalWritesFirst(connection) as store:
        store.rival = db.secret(user, "Rival-pass-1", extra_key="kept")
        outcome = await Rotd(store).rotate_one(one_secret(moto, name, "single_user"))
        # The same version with another value: refused, and the winner is left alone.
        refused = await store.put_pending(name, outcome.version_id or "", json.dumps({"x": 1}))

    assert_ok(outcome)
    assert outcome.version_id == version_token(arn, first_current)
    assert await secrets.version(name) == outcome.version_id
    assert (await secrets.value(name))["password"] == "Rival-pass-1"
    assert await db.logs_in(user, "Rival-pass-1")
    assert refused is False
    assert (await secrets.value(name))["password"] == "Rival-pass-1"


async def test_a_version_id_already_used_is_passed_over(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    """AWSCURRENT moved back by hand to a version already rotated from: the version id of a
    rotation from it is taken, so rotd takes the next one, the same in every process."""
    user, name = await make_login(db, secrets)
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

    again = await rotd.rotate_one(inv)

    assert_ok(again)
    assert first.version_id == version_token(arn, first_current)
    assert again.version_id == version_token(arn, first_current, 1)
    password = (await secrets.value(name))["password"]
    assert password != "Initial-pass-1"
    assert await db.logs_in(user, password)
