"""``rotd doctor`` against moto's server and the real databases: what it finds, and that it
changes nothing.

Most tests call :func:`rotd.doctor.diagnose` directly; the healthy inventory, a failing one,
the exit codes and the IAM cases run a real ``rotd doctor`` process. The IAM cases need a moto
server that enforces IAM policies, which the shared one does not: this module starts its own
(``iam_moto``) and switches enforcement on only while doctor runs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from rotd.doctor import Check, Identity, Level, diagnose
from rotd.engines import Tls, TlsMode
from rotd.engines.mysql import MysqlEngine
from rotd.engines.postgres import PostgresEngine
from rotd.errors import DatabaseError
from rotd.inventory import Inventory, every_service_endpoint
from rotd.passwords import mysql_native_hash
from rotd.secretstore import connection_for
from tests.fixtures.aws import REGION, MotoServer, Secrets, free_port
from tests.fixtures.databases import Database
from tests.fixtures.iam import IamMoto
from tests.fixtures.inventory import write_inventory
from tests.fixtures.mariadb import MysqlNames, MysqlServer, MysqlTlsServer
from tests.fixtures.postgres import PgNames, PgServer, quote_ident
from tests.fixtures.process import RotdProcess, run
from tests.fixtures.rotation import (
    Rotd,
    assert_ok,
    inventory,
    make_login,
    make_master,
    one_secret,
)

Start = Callable[..., RotdProcess]
TIMEOUT_S = 10.0
ALL_OK = {Level.OK, Level.WARN}


# --- helpers ------------------------------------------------------------------------------------


async def doctor(inv: Inventory) -> list[Check]:
    return await diagnose(inv, inv.secrets, connection_for(inv))


def check(checks: list[Check], secret_id: str, name: str) -> Check:
    found = [c for c in checks if c.secret_id == secret_id and c.name == name]
    assert len(found) == 1, f"{name} for {secret_id}: {[c.line() for c in checks]}"
    return found[0]


def names(checks: list[Check], secret_id: str) -> dict[str, Level]:
    return {c.name: c.level for c in checks if c.secret_id == secret_id}


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


async def snapshot(secrets: Secrets, *names_: str) -> dict[str, Any]:
    return {name: await secrets.stages(name) for name in names_}


# --- the whole command --------------------------------------------------------------------------


async def test_a_healthy_inventory_is_all_ok_and_nothing_changes(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    master = await make_master(db, secrets)
    master_value = await secrets.value(master)
    alt_user, alternating = await make_login(db, secrets, "Alt-pass-3")
    await db.create_table(alt_user)  # a privilege the master must be able to pass on
    single_user = db.unique()
    await db.create_login(single_user, "Single-pass-4")
    single = await secrets.create(
        single_user, db.secret(single_user, "Single-pass-4", masterarn=master)
    )
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [
            {"id": single},
            {"id": alternating, "strategy": "alternating_users", "master_secret": master},
        ],
    )
    before = await snapshot(secrets, single, alternating, master)
    log_size = db.server.log_file.stat().st_size if db.family == "postgres" else 0

    code, out, err = run(rotd_process, "doctor", "-c", str(path), "--json")

    assert code == 0, out + err
    checks = [json.loads(line) for line in out.splitlines()]
    assert {c["level"] for c in checks} <= {"ok", "warn"}
    warned = {(c["secret_id"], c["check"]) for c in checks if c["level"] == "warn"}
    # TLS is unverified (prefer) or absent, and moto's identity cannot be simulated.
    assert warned <= {(s, n) for s in (single, alternating) for n in ("db.tls", "iam.permissions")}
    by_secret: dict[str, set[str]] = {}
    for c in checks:
        by_secret.setdefault(c["secret_id"], set()).add(c["check"])
    common = {
        "secret.describe",
        "secret.native_rotation",
        "secret.read",
        "secret.format",
        "secret.unfinished",
        "secret.shared_login",
        "master.read",
        "db.reachable",
        "db.login",
        "master.login",
        "db.tls",
        "db.password_policy",
        "iam.permissions",
    }
    assert by_secret[single] == common | {"db.own_password", "master.reset_password"}
    assert by_secret[alternating] == common | {"clone.name", "master.privileges"}
    assert by_secret["-"] == {"inventory", "aws.identity", "aws.region"}
    assert all(c["fix"] is None for c in checks if c["level"] == "ok")

    # Nothing changed: same versions and labels, the same passwords log in, no clone was made.
    assert await snapshot(secrets, single, alternating, master) == before
    assert await db.logs_in(single_user, "Single-pass-4")
    assert await db.logs_in(alt_user, "Alt-pass-3")
    assert await db.logs_in(master_value["username"], master_value["password"])
    assert not await db.user_exists(alt_user + "_clone")
    assert not await db.user_exists(single_user + "_clone")
    if db.family == "postgres":
        with db.server.log_file.open() as log:
            log.seek(log_size)
            ddl = [line for line in log if "statement:" in line]  # log_statement = ddl
        assert ddl == []
    assert_no_secret(
        out + err,
        "Single-pass-4",
        "Alt-pass-3",
        master_value["password"],
        mysql_native_hash(master_value["password"]),
    )


async def test_an_unreachable_host_fails_naming_the_address_and_the_exit_codes(
    secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    port = free_port()  # nothing listens there
    names_ = [
        await secrets.create(
            f"dead{i}",
            {
                "engine": "postgres",
                "host": "127.0.0.1",
                "port": port,
                "username": f"u{i}",
                "password": f"Dead-pass-{i}",
            },
        )
        for i in range(3)
    ]
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": n} for n in names_])

    code, out, err = run(rotd_process, "doctor", "-c", str(path), names_[0], names_[2])

    assert code == 1, err
    lines = [line for line in out.splitlines() if " db.reachable: " in line]
    assert len(lines) == 2
    for name, line in zip((names_[0], names_[2]), lines, strict=True):
        assert line.startswith(f"FAIL  {name}  db.reachable: 127.0.0.1:{port}: ")
        assert "connection refused" in line
        assert f"FIX: 127.0.0.1:{port} must be reachable from this host" in line
    assert names_[1] not in out
    assert_no_secret(out + err, "Dead-pass-0", "Dead-pass-2")

    code, _, err = run(rotd_process, "doctor", "-c", str(path), "prod/not-there")
    assert code == 2
    assert "'prod/not-there'" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text("databases:\n  - name: x\n    secrets: []\n")
    code, _, err = run(rotd_process, "doctor", "-c", str(bad))
    assert code == 78
    assert f"{bad}:" in err


# --- the secret and the master secret -----------------------------------------------------------


async def test_a_missing_master_secret_fails_alternating_and_warns_single_user(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    missing = secrets.name("no-such-master")
    for strategy, level in (("alternating_users", Level.FAIL), ("single_user", Level.WARN)):
        checks = await doctor(one_secret(moto, name, strategy, missing))
        found = check(checks, name, "master.read")
        assert found.level is level
        assert repr(missing) in found.detail
        assert found.fix is not None
        assert "check the name or ARN" in found.fix
        assert REGION in found.fix
        assert check(checks, name, "db.login").level is Level.OK
    assert not await db.user_exists(user + "_clone")


async def test_alternating_users_without_any_master_fails(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    _, name = await make_login(db, secrets)
    checks = await doctor(one_secret(moto, name, "alternating_users"))
    found = check(checks, name, "master.read")
    assert found.level is Level.FAIL
    assert found.fix == "set master_secret in the inventory, or masterarn in the secret"


async def test_a_missing_secret_and_a_bad_secret_fail_with_what_to_do(
    secrets: Secrets, moto: MotoServer
) -> None:
    bad = await secrets.create(
        "bad", {"engine": "oracle", "host": "h", "username": "u", "password": "Bad-pass-1"}
    )
    missing = secrets.name("never-created")
    inv = inventory(
        moto,
        f"databases:\n  - name: d\n    secrets:\n      - id: {bad}\n      - id: {missing}\n",
    )
    checks = await doctor(inv)
    found = check(checks, bad, "secret.format")
    assert found.level is Level.FAIL
    assert "'oracle': no such engine is installed; installed: aurora-mysql" in found.detail
    assert check(checks, missing, "secret.describe").level is Level.FAIL
    assert names(checks, missing) == {"secret.describe": Level.FAIL}
    assert_no_secret("\n".join(c.line() for c in checks), "Bad-pass-1")


async def test_native_rotation_enabled_fails_with_how_to_turn_it_off(
    secrets: Secrets, moto: MotoServer
) -> None:
    port = free_port()
    name = await secrets.create(
        "native",
        {
            "engine": "postgres",
            "host": "127.0.0.1",
            "port": port,
            "username": "u",
            "password": "p-native-1",
        },
    )
    async with secrets.client() as client:
        # moto records the rotation settings before it looks for the Lambda, then fails.
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await client.rotate_secret(
                SecretId=name,
                RotationLambdaARN="arn:aws:lambda:us-east-1:123456789012:function:rotator",
                RotationRules={"AutomaticallyAfterDays": 30},
            )
    checks = await doctor(one_secret(moto, name, "single_user"))
    found = check(checks, name, "secret.native_rotation")
    assert found.level is Level.FAIL
    assert "function:rotator" in found.detail
    assert found.fix is not None
    assert found.fix.startswith("aws secretsmanager cancel-rotate-secret --secret-id arn:")


async def test_an_unfinished_rotation_is_a_warning_or_a_failure_it_cannot_finish(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    master = await make_master(db, secrets)
    token = await secrets.put_pending(name, db.secret(user, "Pending-pass-9"))
    before = await secrets.stages(name)

    checks = await doctor(one_secret(moto, name, "single_user"))
    found = check(checks, name, "secret.unfinished")
    assert found.level is Level.WARN
    assert token in found.detail
    assert not any(c.failed for c in checks), [c.line() for c in checks]

    # The same username in AWSPENDING: alternating users could not finish it.
    checks = await doctor(one_secret(moto, name, "alternating_users", master))
    found = check(checks, name, "secret.unfinished")
    assert found.level is Level.FAIL
    assert found.fix == "finish it with strategy single_user, or remove the AWSPENDING label"
    assert await secrets.stages(name) == before
    assert await db.logs_in(user, "Initial-pass-1")
    assert_no_secret("\n".join(c.line() for c in checks), "Pending-pass-9", "Initial-pass-1")


# --- the database -------------------------------------------------------------------------------


async def test_a_wrong_current_password_fails_naming_the_secret_and_the_user(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    user = db.unique()
    await db.create_login(user, "Right-pass-1")
    name = await secrets.create(user, db.secret(user, "Wrong-pass-2"))
    checks = await doctor(one_secret(moto, name, "single_user"))
    assert check(checks, name, "db.reachable").level is Level.OK
    found = check(checks, name, "db.login")
    assert found.level is Level.FAIL
    assert found.fix is not None
    assert f"secret {name!r}" in found.fix
    assert f"user {user!r}" in found.fix
    assert "db.own_password" not in names(checks, name)
    assert_no_secret("\n".join(c.line() for c in checks), "Right-pass-1", "Wrong-pass-2")


async def test_a_refused_master_login_fails_naming_the_master_secret(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    _, name = await make_login(db, secrets)
    master_user = db.unique("m")
    await db.create_master(master_user, "Master-pass-1")
    master = await secrets.create(master_user, db.secret(master_user, "Not-the-pass-1"))
    checks = await doctor(one_secret(moto, name, "alternating_users", master))
    found = check(checks, name, "master.login")
    assert found.level is Level.FAIL
    assert found.fix is not None
    assert f"secret {master!r}" in found.fix
    assert f"user {master_user!r}" in found.fix
    assert check(checks, name, "db.login").level is Level.OK
    assert "master.privileges" not in names(checks, name)


async def test_a_master_without_privileges_fails_and_its_fixes_make_it_pass(
    db: Database, secrets: Secrets, moto: MotoServer, rotd: Rotd
) -> None:
    user, name = await make_login(db, secrets)
    await db.create_table(user)
    master_user = db.unique("m")
    await db.create_login(master_user, "Weak-master-1")  # logs in, may do nothing else
    master = await secrets.create(master_user, db.secret(master_user, "Weak-master-1"))
    inv = one_secret(moto, name, "alternating_users", master)

    refusals: list[Check] = []
    for _ in range(4):
        found = check(await doctor(inv), name, "master.privileges")
        if found.level is Level.OK:
            break
        assert found.level is Level.FAIL
        assert found.fix is not None
        refusals.append(found)
        for statement in found.fix.split("; "):
            await db.execute(statement)
    assert found.level is Level.OK, [r.line() for r in refusals]
    if db.family == "postgres":
        assert [r.fix for r in refusals] == [f"ALTER ROLE {quote_ident(master_user)} CREATEROLE"]
        assert "neither a superuser nor has CREATEROLE" in refusals[0].detail
    else:
        fixes = [r.fix or "" for r in refusals]
        assert fixes[0] == f"GRANT CREATE USER ON *.* TO '{master_user}'@'%'"
        assert fixes[1] == f"GRANT SELECT ON mysql.* TO '{master_user}'@'%'"
        assert fixes[2].startswith("GRANT SELECT ON `test`.`rt_t_")
        assert fixes[2].endswith(f" TO '{master_user}'@'%' WITH GRANT OPTION")
        assert "lacks GRANT OPTION, SELECT ON `test`.`rt_t_" in refusals[2].detail
    assert not await db.user_exists(user + "_clone")
    # What doctor found sufficient is: the rotation goes through with this master.
    assert_ok(await rotd.rotate_one(inv))


async def test_a_clone_name_too_long_fails_before_anything_changes(
    db: Database, secrets: Secrets, moto: MotoServer
) -> None:
    limit = 63 if db.family == "postgres" else 80
    user = (db.unique() + "x" * limit)[: limit - 2]
    await db.create_login(user, "Initial-pass-1")
    name = await secrets.create(db.unique("s"), db.secret(user, "Initial-pass-1"))
    master = await make_master(db, secrets)
    checks = await doctor(one_secret(moto, name, "alternating_users", master))
    found = check(checks, name, "clone.name")
    assert found.level is Level.FAIL
    assert f"{user}_clone" in found.detail
    assert str(limit) in found.detail
    assert found.fix is not None
    assert "single_user" in found.fix
    assert not await db.user_exists(user + "_clone")


async def test_tls_without_verification_warns_and_verified_tls_is_ok(
    pg_server: PgServer, pg_names: PgNames, secrets: Secrets, moto: MotoServer
) -> None:
    user = await pg_names.create_user("Tls-pass-1")
    value = {
        "engine": "postgres",
        "host": "localhost",
        "port": pg_server.port,
        "username": user,
        "password": "Tls-pass-1",
    }
    name = await secrets.create(user, value)
    ca = pg_server.ca_file
    cases = [
        ("disable", None, Level.WARN, "TLS is off"),
        ("prefer", None, Level.WARN, "not verified"),
        ("require", None, Level.WARN, "not verified"),
        ("require", ca, Level.OK, f"verified against {ca}"),
        ("verify-full", ca, Level.OK, f"verified against {ca}, and the host name"),
    ]
    for mode, ca_file, level, words in cases:
        settings = {"tls": mode} | ({"ca_file": ca_file} if ca_file else {})
        inv = one_secret(moto, name, "single_user", **settings)
        found = check(await doctor(inv), name, "db.tls")
        assert found.level is level, found.line()
        assert words in found.detail

    # The certificate names localhost only: verify-full to 127.0.0.1 fails, and says why.
    value["host"] = "127.0.0.1"
    other = await secrets.create(user + "-ip", value)
    inv = one_secret(moto, other, "single_user", tls="verify-full", ca_file=pg_server.ca_file)
    checks = await doctor(inv)
    found = check(checks, other, "db.tls")
    assert found.level is Level.FAIL
    assert found.fix is not None
    assert "a name the certificate holds" in found.fix
    assert "db.login" not in names(checks, other)


async def test_a_secret_whose_ssl_asks_for_less_than_the_inventory_fails(
    pg_server: PgServer, pg_names: PgNames, secrets: Secrets, moto: MotoServer
) -> None:
    user = await pg_names.create_user("Ssl-pass-1")
    ca = pg_server.ca_file
    cases: list[tuple[object, dict[str, str], Level, str]] = [
        ("required", {"tls": "verify-full", "ca_file": ca}, Level.FAIL, "rotd connects with"),
        (False, {"tls": "prefer"}, Level.FAIL, "less than the inventory's tls: prefer"),
        ("verify-ca", {"tls": "verify-full", "ca_file": ca}, Level.FAIL, "(verify-ca)"),
        (True, {"tls": "verify-full", "ca_file": ca}, Level.OK, "rotd connects with verify-full"),
        ("on", {"tls": "require"}, Level.OK, "rotd connects with require"),
        ("verify-full", {"ca_file": ca}, Level.OK, "sets no tls): rotd connects with verify-full"),
        ("disable", {}, Level.OK, "rotd connects with disable"),
    ]
    for ssl, settings, level, words in cases:
        value = {
            "engine": "postgres",
            "host": "localhost",
            "port": pg_server.port,
            "username": user,
            "password": "Ssl-pass-1",
            "ssl": ssl,
        }
        name = await secrets.create(f"{user}-{ssl}", value)
        checks = await doctor(one_secret(moto, name, "single_user", **settings))
        found = check(checks, name, "secret.ssl")
        assert found.level is level, found.line()
        assert words in found.detail, found.line()
        if level is Level.FAIL:
            assert found.fix is not None
            assert "set ssl in the secret" in found.fix
        # Whatever the secret says, the connection keeps at least the inventory's mode.
        if settings.get("tls") == "verify-full":
            assert check(checks, name, "db.tls").level is Level.OK
    assert "Ssl-pass-1" not in "".join(c.line() for c in checks)


# --- the engines' read-only checks --------------------------------------------------------------


async def test_tls_in_use_tells_encrypted_sessions_apart(
    pg_server: PgServer, mysql_server: MysqlServer, mysql_tls_server: MysqlTlsServer
) -> None:
    cases: list[tuple[Any, Any, bool]] = [
        (
            PostgresEngine(),
            pg_server.login(
                pg_server.superuser, pg_server.superuser_password, tls=Tls(TlsMode.PREFER)
            ),
            True,
        ),
        (
            PostgresEngine(),
            pg_server.login(pg_server.superuser, pg_server.superuser_password),
            False,
        ),
        (
            MysqlEngine(),
            mysql_server.login(
                mysql_server.admin_user, mysql_server.admin_password, tls=Tls(TlsMode.PREFER)
            ),
            False,
        ),
        (
            MysqlEngine(),
            mysql_tls_server.login(
                mysql_tls_server.admin_user,
                mysql_tls_server.admin_password,
                tls=Tls(TlsMode.PREFER),
            ),
            True,
        ),
    ]
    for engine, login, encrypted in cases:
        async with engine.connect(login, timeout_s=TIMEOUT_S) as session:
            assert await session.tls_in_use() is encrypted, login.endpoint


async def test_postgres_read_only_sessions_and_superuser_originals_are_refused(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    engine = PostgresEngine()
    reader = await pg_names.create_user("Read-pass-1")
    master = await pg_names.create_user("Master-pass-1", options="LOGIN CREATEROLE")
    boss = await pg_names.create_user("Boss-pass-1", options="LOGIN SUPERUSER")
    async with pg_server.admin() as conn:
        await conn.execute(
            f"ALTER ROLE {quote_ident(reader)} SET default_transaction_read_only = on"
        )

    async with engine.connect(pg_server.login(reader, "Read-pass-1"), timeout_s=TIMEOUT_S) as s:
        verdict = await s.may_set_own_password()
    assert not verdict.granted
    assert verdict.fix == (
        f"ALTER ROLE {quote_ident(reader)} SET default_transaction_read_only = off"
    )

    login = pg_server.login(master, "Master-pass-1")
    async with engine.connect(login, timeout_s=TIMEOUT_S) as session:
        assert (await session.may_set_own_password()).granted
        refused = await session.may_mirror_user(boss, boss + "_clone")
        assert not refused.granted
        assert "is a superuser" in refused.reason
        assert not (await session.may_set_password(boss)).granted
        assert (await session.may_set_password(reader)).granted
        missing = await session.may_set_password("rotd_no_such_role")
        assert not missing.granted
        assert "does not exist" in missing.reason
        # What doctor says is what happens: mirroring the superuser is refused.
        with pytest.raises(DatabaseError):
            await session.mirror_user(boss, boss + "_clone", "Clone-pass-1")


async def test_mysql_roles_need_the_admin_option_as_the_server_does(
    mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    engine = MysqlEngine()
    role = await mysql_names.create_role()
    original = await mysql_names.create_user("Orig-pass-1")
    master = await mysql_names.create_user("Master-pass-1", label="m")
    await mysql_server.execute(f"GRANT `{role}` TO %s@'%%'", (original,))
    await mysql_server.execute(
        "GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", (master,)
    )
    clone = original + "_clone"
    login = mysql_server.login(master, "Master-pass-1")

    async with engine.connect(login, timeout_s=TIMEOUT_S) as session:
        refused = await session.may_mirror_user(original, clone)
        assert not refused.granted
        assert f"`{role}` WITH ADMIN OPTION" in refused.reason
        assert refused.fix == f"GRANT `{role}` TO '{master}'@'%' WITH ADMIN OPTION"
        with pytest.raises(DatabaseError):
            await session.mirror_user(original, clone, "Clone-pass-1")
    await mysql_server.execute(refused.fix)
    async with engine.connect(login, timeout_s=TIMEOUT_S) as session:
        granted = await session.may_mirror_user(original, clone)
        assert granted.granted, granted.reason
        await session.mirror_user(original, clone, "Clone-pass-1")
        assert (await session.may_set_password(original)).granted
    async with engine.connect(
        mysql_server.login(original, "Orig-pass-1"), timeout_s=TIMEOUT_S
    ) as session:
        verdict = await session.may_set_own_password()
        assert verdict.granted, verdict.reason
        assert not (await session.may_set_password(master)).granted
        assert not (await session.may_mirror_user(master, master + "_clone")).granted


async def test_a_read_only_mysql_server_is_refused(mysql_tls_server: MysqlTlsServer) -> None:
    server = mysql_tls_server
    user = "rt" + uuid.uuid4().hex[:8] + "_ro"
    await server.execute("CREATE USER %s@'%%' IDENTIFIED BY 'Ro-pass-1'", (user,))
    await server.execute("SET GLOBAL read_only = 1")
    try:
        async with MysqlEngine().connect(
            server.login(user, "Ro-pass-1"), timeout_s=TIMEOUT_S
        ) as session:
            verdict = await session.may_set_own_password()
    finally:
        await server.execute("SET GLOBAL read_only = 0")
        await server.execute("DROP USER %s@'%%'", (user,))
    assert not verdict.granted
    assert "read_only is ON" in verdict.reason


# --- AWS: the identity, denied actions and policy simulation ------------------------------------


def test_the_principal_to_simulate_and_the_endpoint_for_sts_and_iam() -> None:
    role = Identity("arn:aws:sts::123456789012:assumed-role/rotd/i-0abc", "123456789012")
    assert role.principal() == "arn:aws:iam::123456789012:role/rotd"
    user = Identity("arn:aws-cn:iam::123456789012:user/ops/rotd", "123456789012")
    assert user.principal() == user.arn
    assert user.secret_arn("prod/app", "cn-north-1") == (
        "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:prod/app-??????"
    )
    assert Identity("arn:aws:iam::123456789012:root", "123456789012").root
    assert Identity("arn:aws:sts::123456789012:federated-user/bob", "1").principal() is None
    assert every_service_endpoint("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    vpce = "https://vpce-1a2b.secretsmanager.eu-west-1.vpce.amazonaws.com"
    assert every_service_endpoint(vpce) is None
    assert every_service_endpoint(None) is None


@pytest.fixture
async def iam_secrets(iam_moto: IamMoto) -> AsyncIterator[Secrets]:
    iam_moto.enforce(False)
    helper = Secrets(iam_moto.server)
    yield helper
    iam_moto.enforce(False)
    await helper.cleanup()


async def test_a_denied_read_fails_naming_the_action_and_the_resource(
    iam_moto: IamMoto, iam_secrets: Secrets, tmp_path: Path, rotd_process: Start
) -> None:
    port = free_port()
    value = {
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": port,
        "username": "u",
        "password": "Denied-pass-1",
    }
    name = await iam_secrets.create("app", value)
    master = await iam_secrets.create("master", {**value, "password": "Denied-master-1"})
    arn = await _arn(iam_secrets, name)
    user_arn, env = await iam_moto.user(["secretsmanager:DescribeSecret"])
    path = write_inventory(
        tmp_path / "inv.yaml",
        iam_moto.server,
        [{"id": name, "strategy": "alternating_users", "master_secret": master}],
    )

    iam_moto.enforce(True)
    code, out, err = run(rotd_process, "doctor", "-c", str(path), "--json", env=env)
    iam_moto.enforce(False)

    assert code == 1, err
    checks = {(c["secret_id"], c["check"]): c for c in map(json.loads, out.splitlines())}
    assert checks[("-", "aws.identity")]["detail"].startswith(user_arn)
    assert checks[(name, "secret.describe")]["level"] == "ok"
    read = checks[(name, "secret.read")]
    assert read["level"] == "FAIL"
    assert read["fix"] == f"allow secretsmanager:GetSecretValue on {arn} for {user_arn}"
    master_read = checks[(name, "master.read")]
    assert master_read["level"] == "FAIL"
    assert master_read["fix"] == (
        f"allow secretsmanager:GetSecretValue on arn:aws:secretsmanager:{REGION}:"
        f"123456789012:secret:{master}-?????? for {user_arn}"
    )
    assert_no_secret(out + err, "Denied-pass-1", "Denied-master-1")


async def test_policy_simulation_not_available_is_a_warning_that_says_why(
    iam_moto: IamMoto,
    iam_secrets: Secrets,
    pg_server: PgServer,
    pg_names: PgNames,
    tmp_path: Path,
    rotd_process: Start,
) -> None:
    login = await pg_names.create_user("Sim-pass-1")
    name = await iam_secrets.create(
        login,
        {
            "engine": "postgres",
            "host": "127.0.0.1",
            "port": pg_server.port,
            "username": login,
            "password": "Sim-pass-1",
        },
    )
    path = write_inventory(tmp_path / "inv.yaml", iam_moto.server, [{"id": name}])
    reads = ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    reader_arn, reader = await iam_moto.user(reads)
    simulator_arn, simulator = await iam_moto.user([*reads, "iam:SimulatePrincipalPolicy"])

    iam_moto.enforce(True)
    results = [
        run(rotd_process, "doctor", "-c", str(path), "--json", env=env)
        for env in (reader, simulator)
    ]
    iam_moto.enforce(False)

    found: list[dict[str, Any]] = []
    for code, out, err in results:
        assert code == 0, out + err
        (permissions,) = [
            c for c in map(json.loads, out.splitlines()) if c["check"] == "iam.permissions"
        ]
        found.append(permissions)
        assert permissions["level"] == "warn"
        assert permissions["detail"].startswith(
            "not checked (secretsmanager:PutSecretValue, secretsmanager:UpdateSecretVersionStage)"
        )
    # Without the permission to simulate: say so, and what to allow.
    assert f"{reader_arn} may not call iam:SimulatePrincipalPolicy" in found[0]["detail"]
    assert found[0]["fix"] == (
        f"allow iam:SimulatePrincipalPolicy on {reader_arn} to let rotd doctor check them"
    )
    # With it, moto's server has no SimulatePrincipalPolicy (it answers 500): not checked.
    assert "iam:SimulatePrincipalPolicy failed" in found[1]["detail"]
    assert simulator_arn not in (found[1]["fix"] or "")


async def _arn(secrets: Secrets, name: str) -> str:
    async with secrets.client() as client:
        return str((await client.describe_secret(SecretId=name))["ARN"])
