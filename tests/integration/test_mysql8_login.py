"""MySQL 8's default login, ``caching_sha2_password`` full authentication without TLS.

No MySQL 8 server runs here: tests/fixtures/mysql8_auth.py speaks the server's side of the
exchange on a real socket and decrypts what the driver sends with ``openssl``. One test runs it
in this environment; the other in a virtual environment made by a plain ``pip install .`` of
the project, which is what a production install has: the RSA step needs ``cryptography``, and
only the runtime dependencies are there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rotd.doctor import Level, diagnose
from rotd.engines import Endpoint, Family, Login, Tls, TlsMode
from rotd.engines.mysql import MysqlEngine
from rotd.errors import Category, DatabaseError
from rotd.secretstore import connection_for
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.mysql8_auth import mysql8_server
from tests.fixtures.rotation import Rotd, assert_ok, one_secret

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "fixtures" / "mysql8_auth.py"


async def test_full_authentication_encrypts_the_password_with_the_servers_key() -> None:
    password = "Zz9#full-auth-secret"
    async with mysql8_server("app_user", password) as server:
        endpoint = Endpoint(Family.MYSQL, "127.0.0.1", server.port, None, Tls(TlsMode.DISABLE))
        engine = MysqlEngine()
        async with engine.connect(Login(endpoint, "app_user", password), timeout_s=10) as session:
            assert str(getattr(session, "flavour", "")) == "MySQL 8.0.36"
        with capture_logs() as logs, pytest.raises(DatabaseError) as refused:
            async with engine.connect(Login(endpoint, "app_user", "wrong"), timeout_s=10):
                pass
        assert server.logins == ["full-auth-ok", "full-auth-refused"]
    assert refused.value.category is Category.AUTH
    assert password not in json.dumps([str(refused.value), logs], default=str)


@pytest.mark.timeout(900)
def test_a_plain_install_logs_in_to_mysql_8_without_tls(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    # Run as a script from outside the source tree: rotd and its dependencies come from the
    # installed environment only.
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {
        "flavour": "MySQL 8.0.36",
        "wrong_password": "auth",
        "logins": ["full-auth-ok", "full-auth-refused"],
    }, result.stderr[-2000:]
    assert result.returncode == 0

    # An install broken by hand (cryptography removed) says what is missing, and is not
    # retried as a passing server fault.
    subprocess.run(
        [str(venv / "bin" / "pip"), "uninstall", "--yes", "--quiet", "cryptography"],
        check=True,
        timeout=120,
    )
    broken = subprocess.run(
        [str(venv / "bin" / "python"), str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    error = json.loads(broken.stdout.strip().splitlines()[-1])["error"]
    assert error["category"] == "unsupported", broken.stderr[-2000:]
    assert "cryptography" in error["reason"]
    assert broken.returncode == 1


def mysql8_login(port: int, password: str) -> Login:
    return Login(
        Endpoint(Family.MYSQL, "127.0.0.1", port, None, Tls(TlsMode.DISABLE)), "app_user", password
    )


async def test_an_account_blocked_after_failed_logins_is_an_auth_failure_with_the_fix() -> None:
    password = "Zz9#blocked-account"
    async with mysql8_server("app_user", password) as server:
        server.login_error = (
            3955,
            "Access denied for user 'app_user'@'localhost'. Account is blocked for 1 day(s) "
            "(1 day(s) remaining) due to 3 consecutive failed logins.",
        )
        with pytest.raises(DatabaseError) as blocked:
            async with MysqlEngine().connect(mysql8_login(server.port, password), timeout_s=10):
                pass
    assert blocked.value.category is Category.AUTH
    assert not blocked.value.transient
    assert "ACCOUNT UNLOCK" in blocked.value.reason


@pytest.mark.parametrize(
    ("code", "message", "category", "names"),
    [
        (3638, "Cannot use these credentials for 'app_user@%' because they contradict the "
         "password history policy", Category.BAD_SECRET, "password_history"),
        (3891, "Incorrect current password. Specify the correct password which has to be "
         "replaced.", Category.AUTH, "DISCARD OLD PASSWORD"),
        (3892, "Current password needs to be specified in the REPLACE clause in order to "
         "change it.", Category.PERMISSION, "PASSWORD REQUIRE CURRENT"),
        (1227, "Access denied; you need (at least one of) the SYSTEM_USER privilege(s) for "
         "this operation", Category.PERMISSION, "GRANT SYSTEM_USER"),
    ],
)  # fmt: skip
async def test_mysql_8_refusals_of_a_password_change_say_what_to_fix(
    code: int, message: str, category: Category, names: str
) -> None:
    password = "Zz9#own-password-old"
    new_password = "Yy8$own-password-new"
    async with mysql8_server("app_user", password) as server:
        server.errors = {"ALTER USER": (code, message)}
        async with MysqlEngine().connect(mysql8_login(server.port, password), timeout_s=10) as s:
            with pytest.raises(DatabaseError) as refused:
                await s.set_own_password(new_password)
        # MySQL 8.0.13+: the form an account without CREATE USER may use on itself, with the
        # current password for PASSWORD REQUIRE CURRENT.
        assert server.queries == [
            f"ALTER USER USER() IDENTIFIED BY '{new_password}' REPLACE '{password}'"
        ]
    assert refused.value.category is category
    assert not refused.value.transient
    assert names in refused.value.reason
    assert password not in str(refused.value)
    assert new_password not in str(refused.value)


@pytest.mark.parametrize("master_has_system_user", [False, True])
async def test_a_target_holding_system_user_needs_a_master_with_system_user(
    master_has_system_user: bool,
) -> None:
    password = "Zz9#master-password"
    master_grants = ["GRANT SELECT, CREATE USER ON *.* TO `admin`@`%`"]
    if master_has_system_user:
        master_grants.append("GRANT SYSTEM_USER ON *.* TO `admin`@`%`")
    async with mysql8_server("admin", password) as server:
        server.results = {
            "SELECT CURRENT_USER()": (["CURRENT_USER()"], [("admin@%",)]),
            "SHOW GRANTS FOR CURRENT_USER()": (["Grants"], [(g,) for g in master_grants]),
            "SELECT @@global.read_only": (["ro", "sro"], [("0", "0")]),
            "SELECT User, Host, plugin": (
                ["User", "Host", "plugin", "a", "b", "c", "d", "e", "f", "g", "h"],
                [("app", "%", "caching_sha2_password", "", "", "", "", "0", "0", "0", "0")],
            ),
            "SHOW GRANTS FOR 'app'@'%'": (
                ["Grants"],
                [("GRANT USAGE ON *.* TO `app`@`%`",), ("GRANT SYSTEM_USER ON *.* TO `app`@`%`",)],
            ),
            "SELECT DEFAULT_ROLE_USER": (["u", "h"], []),
        }
        login = Login(
            Endpoint(Family.MYSQL, "127.0.0.1", server.port, None, Tls(TlsMode.DISABLE)),
            "admin",
            password,
        )
        async with MysqlEngine().connect(login, timeout_s=10) as session:
            verdict = await session.may_set_password("app")
            mirror = await session.may_mirror_user("app", "app_clone")
    if master_has_system_user:
        assert verdict.granted, verdict.reason
        # Granting SYSTEM_USER to the clone needs that privilege's own grant option.
        assert not mirror.granted
        assert mirror.fix == "GRANT SYSTEM_USER ON *.* TO 'admin'@'%' WITH GRANT OPTION"
    else:
        for refused in (verdict, mirror):
            assert not refused.granted
            assert "holds SYSTEM_USER" in refused.reason
            assert refused.fix == "GRANT SYSTEM_USER ON *.* TO 'admin'@'%'"


RETAINING = [
    "GRANT USAGE ON *.* TO `app_user`@`%`",
    "GRANT APPLICATION_PASSWORD_ADMIN ON *.* TO `app_user`@`%`",
]


async def logs_in(port: int, password: str) -> bool:
    try:
        async with MysqlEngine().connect(mysql8_login(port, password), timeout_s=10):
            return True
    except DatabaseError as exc:
        if exc.category is not Category.AUTH:
            raise
        return False


async def mysql8_secret(secrets: Secrets, port: int, password: str) -> str:
    value = {"engine": "mysql", "host": "127.0.0.1", "port": port}
    return await secrets.create("mysql8", {**value, "username": "app_user", "password": password})


@pytest.mark.parametrize("retaining", [True, False], ids=["privileged", "unprivileged"])
async def test_single_user_on_mysql_8_keeps_the_current_password_when_the_login_may(
    retaining: bool, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    initial = "Zz9#dual-initial"
    async with mysql8_server("app_user", initial) as server:
        server.grants = RETAINING if retaining else []
        name = await mysql8_secret(secrets, server.port, initial)
        inv = one_secret(moto, name, "single_user", tls="disable")

        assert_ok(await rotd.rotate_one(inv))
        # No login was refused on the way (each counts towards FAILED_LOGIN_ATTEMPTS).
        assert "full-auth-refused" not in server.logins
        first = (await secrets.value(name))["password"]
        assert (await secrets.value(name, "AWSPREVIOUS"))["password"] == initial
        assert await logs_in(server.port, first)
        # With APPLICATION_PASSWORD_ADMIN, AWSPREVIOUS still logs in: no application that
        # holds it is refused while it reads the new one. Without, the window stays.
        assert await logs_in(server.port, initial) is retaining
        retained = [q for q in server.queries if "RETAIN CURRENT PASSWORD" in q]
        assert len(retained) == (1 if retaining else 0)

        assert_ok(await rotd.rotate_one(inv))
        second = (await secrets.value(name))["password"]
        assert await logs_in(server.port, second)
        assert await logs_in(server.port, first) is retaining
        # MySQL holds two: the password older than AWSPREVIOUS is gone.
        assert not await logs_in(server.port, initial)
        assert (server.password, server.secondary) == (second, first if retaining else None)


async def test_a_resumed_mysql_8_rotation_does_not_retain_the_pending_password_over_itself(
    secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    initial, pending = "Zz9#dual-initial", "Yy8$dual-pending"
    async with mysql8_server("app_user", initial) as server:
        server.grants = RETAINING
        name = await mysql8_secret(secrets, server.port, initial)
        token = await secrets.put_pending(name, {**await secrets.value(name), "password": pending})
        # A rotation cut after setSecret: the server holds the pending password beside AWSCURRENT's.
        server.password, server.secondary = pending, initial

        outcome = await rotd.rotate_one(one_secret(moto, name, "single_user", tls="disable"))

        assert_ok(outcome)
        assert outcome.version_id == token
        assert outcome.resumed
        assert (await secrets.value(name))["password"] == pending
        # The REPLACE of AWSCURRENT's password was refused (the primary is the pending one),
        # and nothing else was sent: AWSCURRENT's is still held.
        assert (server.password, server.secondary) == (pending, initial)
        assert len([q for q in server.queries if q.startswith("ALTER USER")]) <= 1
        assert await logs_in(server.port, initial)
        assert await logs_in(server.port, pending)


@pytest.mark.parametrize("retaining", [True, False], ids=["privileged", "unprivileged"])
async def test_doctor_says_whether_single_user_on_mysql_8_keeps_a_window(
    retaining: bool, secrets: Secrets, moto: MotoServer
) -> None:
    initial = "Zz9#dual-initial"
    async with mysql8_server("app_user", initial) as server:
        server.grants = RETAINING if retaining else []
        server.results = {
            "SELECT @@global.read_only": (["ro", "sro"], [("0", "0")]),
            "SHOW CREATE USER": (
                ["CREATE USER"],
                [("CREATE USER `app_user`@`%` IDENTIFIED WITH 'caching_sha2_password'",)],
            ),
        }
        name = await mysql8_secret(secrets, server.port, initial)
        inv = one_secret(moto, name, "single_user", tls="disable")

        checks = await diagnose(inv, inv.secrets, connection_for(inv))

        (found,) = [c for c in checks if c.secret_id == name and c.name == "db.several_passwords"]
        assert not [q for q in server.queries if q.startswith("ALTER USER")]
    assert found.level is (Level.OK if retaining else Level.WARN)
    if not retaining:
        assert found.fix == "GRANT APPLICATION_PASSWORD_ADMIN ON *.* TO 'app_user'@'%'"
