"""The MySQL engine against the machine's MariaDB: logins, passwords, clones, errors.

Every account is made through ``mysql_names``, so it has a unique name and is dropped after
the test. A test that proves a password works, or does not, logs in with it: the server has
no anonymous accounts (``mysql_server`` checks), so it really checks passwords.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pymysql
import pytest
from structlog.testing import capture_logs

from rotd.engines import Login, Tls, TlsMode
from rotd.engines.mysql import Flavour, MysqlEngine, MysqlSession, _parse_grants
from rotd.errors import Category, DatabaseError
from rotd.observability import REDACTED
from rotd.passwords import mysql_native_hash
from tests.fixtures.mariadb import MysqlNames, MysqlServer, MysqlTlsServer, quote_ident

TIMEOUT_S = 10.0
# Quotes of all three kinds, a backslash, a space, a percent sign and non-ASCII text.
AWKWARD = "o'b\"r\\ `%é€"


@pytest.fixture
def engine() -> MysqlEngine:
    return MysqlEngine()


@pytest.fixture
async def admin(engine: MysqlEngine, mysql_server: MysqlServer) -> AsyncIterator[MysqlSession]:
    """A session as root, the master of the alternating users strategy."""
    login = mysql_server.login(mysql_server.admin_user, mysql_server.admin_password)
    async with engine.connect(login, timeout_s=TIMEOUT_S) as session:
        assert isinstance(session, MysqlSession)
        yield session


async def raises(awaitable: Awaitable[Any], category: Category) -> DatabaseError:
    with pytest.raises(DatabaseError) as caught:
        await awaitable
    assert caught.value.category is category, caught.value
    return caught.value


async def connect_fails(
    engine: MysqlEngine, login: Login, category: Category, timeout_s: float = TIMEOUT_S
) -> DatabaseError:
    async def attempt() -> None:
        async with engine.connect(login, timeout_s=timeout_s):
            pytest.fail("the connection was made")

    return await raises(attempt(), category)


def assert_no_secret(error: DatabaseError, *secrets: str) -> None:
    for secret in secrets:
        for text in (str(error), repr(error), error.reason):
            assert secret not in text, text


async def stored_hash(server: MysqlServer, user: str, host: str) -> str:
    rows = await server.execute(
        "SELECT authentication_string FROM mysql.user WHERE User = %s AND Host = %s", (user, host)
    )
    return str(rows[0][0])


async def account_options(server: MysqlServer, user: str, host: str) -> tuple[Any, ...]:
    rows = await server.execute(
        "SELECT plugin, ssl_type, ssl_cipher, x509_issuer, x509_subject, max_questions,"
        " max_updates, max_connections, max_user_connections, max_statement_time"
        " FROM mysql.user WHERE User = %s AND Host = %s",
        (user, host),
    )
    return rows[0]


def comparable(lines: list[str], user: str) -> list[str]:
    """SHOW GRANTS lines with the account's name blanked and any password hash cut off."""
    kept = []
    for line in lines:
        line = line.replace(quote_ident(user) + "@", "`ACCOUNT`@")
        kept.append(line.split(" IDENTIFIED BY PASSWORD ")[0])
    return sorted(kept)


async def assert_same_grants(server: MysqlServer, original: str, clone: str, host: str) -> None:
    assert comparable(await server.grants(clone, host), clone) == comparable(
        await server.grants(original, host), original
    )


# -- connecting ---------------------------------------------------------------------------


async def test_connects_and_knows_it_is_mariadb(admin: MysqlSession) -> None:
    assert admin.flavour.mariadb
    assert admin.flavour.max_username == 80
    assert admin.username == "root"


async def test_wrong_password_is_refused_as_auth(
    engine: MysqlEngine, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    user = await mysql_names.create_user("right-password")
    error = await connect_fails(engine, mysql_server.login(user, "wrong-password"), Category.AUTH)
    assert f"login refused for user {user!r}" in error.reason
    assert_no_secret(error, "wrong-password", mysql_native_hash("wrong-password"))


async def test_unreachable_port_fails_fast(engine: MysqlEngine, mysql_server: MysqlServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = dataclasses.replace(mysql_server.endpoint(), port=port)
    started = time.monotonic()
    error = await connect_fails(engine, Login(endpoint, "root", ""), Category.UNREACHABLE)
    assert time.monotonic() - started < 2
    assert f"cannot reach 127.0.0.1:{port}" in error.reason


async def test_unknown_host_is_unreachable(engine: MysqlEngine, mysql_server: MysqlServer) -> None:
    endpoint = dataclasses.replace(mysql_server.endpoint(), host="no-such-host.invalid")
    error = await connect_fails(engine, Login(endpoint, "root", ""), Category.UNREACHABLE, 5)
    assert "cannot reach no-such-host.invalid:3306" in error.reason


async def test_silent_server_times_out(engine: MysqlEngine, mysql_server: MysqlServer) -> None:
    """A listener that accepts and never greets: the handshake must hit the deadline."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        endpoint = dataclasses.replace(mysql_server.endpoint(), port=port)
        started = time.monotonic()
        error = await connect_fails(engine, Login(endpoint, "root", ""), Category.TIMEOUT, 0.5)
        assert time.monotonic() - started < 3
        assert "no answer within 0.5 s" in error.reason
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_unknown_database_is_not_found(
    engine: MysqlEngine, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    login = mysql_server.login("root", "", dbname=mysql_names.database())
    await connect_fails(engine, login, Category.NOT_FOUND)


async def test_database_without_access_is_permission(
    engine: MysqlEngine, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    database = await mysql_names.create_database()
    user = await mysql_names.create_user("pw-1234")
    await connect_fails(
        engine, mysql_server.login(user, "pw-1234", dbname=database), Category.PERMISSION
    )


@pytest.mark.parametrize("mode", [TlsMode.REQUIRE, TlsMode.VERIFY_CA, TlsMode.VERIFY_FULL])
async def test_tls_required_but_not_offered(
    engine: MysqlEngine, mysql_server: MysqlServer, mode: TlsMode
) -> None:
    """This server offers no TLS, so every mode that requires it must refuse to log in."""
    login = mysql_server.login("root", "", tls=Tls(mode))
    error = await connect_fails(engine, login, Category.TLS)
    assert "does not offer TLS" in error.reason


@pytest.mark.parametrize("mode", [TlsMode.DISABLE, TlsMode.PREFER])
async def test_tls_optional_modes_connect_in_clear(
    engine: MysqlEngine, mysql_server: MysqlServer, mode: TlsMode
) -> None:
    async with engine.connect(mysql_server.login("root", "", tls=Tls(mode)), timeout_s=TIMEOUT_S):
        pass


async def test_missing_ca_file_is_a_tls_error(
    engine: MysqlEngine, mysql_server: MysqlServer, tmp_path: Any
) -> None:
    tls = Tls(TlsMode.VERIFY_CA, ca_file=str(tmp_path / "missing.pem"))
    error = await connect_fails(engine, mysql_server.login("root", "", tls=tls), Category.TLS)
    assert "missing.pem" in error.reason


async def cipher(session: MysqlSession) -> str:
    rows = await session._run("SHOW SESSION STATUS LIKE 'Ssl_cipher'", doing="reading the cipher")
    return str(rows[0][1])


@pytest.mark.parametrize(
    ("mode", "host", "with_ca", "encrypted"),
    [
        (TlsMode.DISABLE, "127.0.0.1", False, False),
        (TlsMode.PREFER, "127.0.0.1", False, True),
        (TlsMode.REQUIRE, "127.0.0.1", False, True),
        (TlsMode.VERIFY_CA, "127.0.0.1", True, True),
        (TlsMode.VERIFY_FULL, "localhost", True, True),
    ],
)
async def test_tls_modes_against_a_server_with_tls(
    engine: MysqlEngine,
    mysql_tls_server: MysqlTlsServer,
    mode: TlsMode,
    host: str,
    with_ca: bool,
    encrypted: bool,
) -> None:
    tls = Tls(mode, ca_file=mysql_tls_server.ca_file if with_ca else None)
    endpoint = dataclasses.replace(mysql_tls_server.endpoint(tls=tls), host=host)
    async with engine.connect(Login(endpoint, "root", ""), timeout_s=TIMEOUT_S) as session:
        assert isinstance(session, MysqlSession)
        assert bool(await cipher(session)) is encrypted


async def test_tls_certificate_from_an_unknown_ca_is_refused(
    engine: MysqlEngine, mysql_tls_server: MysqlTlsServer
) -> None:
    """verify-ca without ca_file trusts the system's CAs, which did not sign this server."""
    login = mysql_tls_server.login("root", "", tls=Tls(TlsMode.VERIFY_CA))
    error = await connect_fails(engine, login, Category.TLS)
    assert "certificate is refused" in error.reason


async def test_tls_verify_full_checks_the_name(
    engine: MysqlEngine, mysql_tls_server: MysqlTlsServer
) -> None:
    """The certificate names localhost only; 127.0.0.1 is the right server by another name."""
    tls = Tls(TlsMode.VERIFY_FULL, ca_file=mysql_tls_server.ca_file)
    error = await connect_fails(engine, mysql_tls_server.login("root", "", tls=tls), Category.TLS)
    assert "127.0.0.1" in error.reason
    # verify-ca with the same CA does not look at the name.
    tls = Tls(TlsMode.VERIFY_CA, ca_file=mysql_tls_server.ca_file)
    async with engine.connect(mysql_tls_server.login("root", "", tls=tls), timeout_s=TIMEOUT_S):
        pass


# -- passwords ----------------------------------------------------------------------------


async def test_set_own_password_replaces_the_old_one(
    engine: MysqlEngine, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    """The user has no privilege at all, as a single user strategy's login often has none."""
    user = await mysql_names.create_user("old-password")
    async with engine.connect(mysql_server.login(user, "old-password"), timeout_s=TIMEOUT_S) as s:
        assert s.username == user
        await s.set_own_password("new-password")
    assert await mysql_server.can_login(user, "new-password")
    assert not await mysql_server.can_login(user, "old-password")
    # The hash was sent, and is what the server keeps.
    assert await stored_hash(mysql_server, user, "%") == mysql_native_hash("new-password")


async def test_set_password_changes_every_host_part(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    user = await mysql_names.create_user("old-password", hosts=("%", "localhost"))
    await admin.set_password(user, "new-password")
    for host in ("%", "localhost"):
        assert await stored_hash(mysql_server, user, host) == mysql_native_hash("new-password")
    assert await mysql_server.can_login(user, "new-password")
    assert not await mysql_server.can_login(user, "old-password")


async def test_set_password_of_a_missing_user_is_not_found(
    admin: MysqlSession, mysql_names: MysqlNames
) -> None:
    user = mysql_names.user()
    error = await raises(admin.set_password(user, "new-password"), Category.NOT_FOUND)
    assert user in error.reason
    assert_no_secret(error, "new-password", mysql_native_hash("new-password"))


async def test_set_password_refused_by_the_plugin_quotes_no_secret(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    """unix_socket takes no password: the statement that carried one fails, and is not quoted."""
    user = mysql_names.user()
    await mysql_server.execute("CREATE USER %s@'%%' IDENTIFIED VIA unix_socket", (user,))
    error = await raises(admin.set_password(user, "pw-for-socket"), Category.UNSUPPORTED)
    assert "MySQL error 1396" in error.reason
    assert_no_secret(error, "pw-for-socket", mysql_native_hash("pw-for-socket"))
    # The driver's exception, with the server's text, is not kept either.
    assert error.__cause__ is None
    assert error.__context__ is None


async def test_awkward_names_and_passwords(
    engine: MysqlEngine, mysql_server: MysqlServer, mysql_names: MysqlNames, admin: MysqlSession
) -> None:
    user = await mysql_names.create_user("first " + AWKWARD, label=AWKWARD)
    login = mysql_server.login(user, "first " + AWKWARD)
    async with engine.connect(login, timeout_s=TIMEOUT_S) as session:
        await session.set_own_password("second " + AWKWARD)
    assert await mysql_server.can_login(user, "second " + AWKWARD)

    await admin.set_password(user, "third " + AWKWARD)
    assert await mysql_server.can_login(user, "third " + AWKWARD)
    assert not await mysql_server.can_login(user, "second " + AWKWARD)

    clone = user + "_clone"
    await mysql_server.execute(
        f"GRANT SELECT ON {quote_ident(mysql_server.dbname)}.* TO %s@'%%'", (user,)
    )
    await admin.mirror_user(user, clone, "fourth " + AWKWARD)
    assert await mysql_server.can_login(clone, "fourth " + AWKWARD)
    await assert_same_grants(mysql_server, user, clone, "%")


async def test_check_username_limits_mariadb_to_80(admin: MysqlSession) -> None:
    await admin.check_username("u" * 80)
    error = await raises(admin.check_username("u" * 81), Category.NAME_TOO_LONG)
    assert "u" * 81 in error.reason
    assert "81 characters" in error.reason
    assert "at most 80" in error.reason


# -- clones -------------------------------------------------------------------------------


async def test_mirror_user_copies_host_parts_grants_roles_and_tls_options(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    run = mysql_server.execute
    database = await mysql_names.create_database()
    role = await mysql_names.create_role()
    original = await mysql_names.create_user("original-pw", hosts=("%", "localhost"))
    clone = original + "_clone"
    db = quote_ident(database)
    await run(f"CREATE TABLE {db}.t (a int, b int)")
    await run(f"GRANT SELECT, INSERT ON {db}.* TO %s@'%%' WITH GRANT OPTION", (original,))
    await run(f"GRANT SELECT (a), UPDATE (b) ON {db}.t TO %s@'%%'", (original,))
    await run("GRANT PROCESS ON *.* TO %s@'%%'", (original,))
    await run(f"GRANT {quote_ident(role)} TO %s@'%%' WITH ADMIN OPTION", (original,))
    await run(f"SET DEFAULT ROLE {quote_ident(role)} FOR %s@'%%'", (original,))
    await run(f"GRANT DELETE ON {db}.* TO %s@'localhost'", (original,))
    await run(
        "ALTER USER %s@'localhost' REQUIRE ISSUER '/CN=rotd CA' AND SUBJECT '/CN=o''b'"
        " AND CIPHER 'ECDHE-RSA-AES256-GCM-SHA384'"
        " WITH MAX_QUERIES_PER_HOUR 10 MAX_USER_CONNECTIONS 3 MAX_STATEMENT_TIME 2.5",
        (original,),
    )

    await admin.mirror_user(original, clone, "clone-pw")

    assert await mysql_server.hosts(clone) == ["%", "localhost"]
    for host in ("%", "localhost"):
        await assert_same_grants(mysql_server, original, clone, host)
        assert await account_options(mysql_server, clone, host) == await account_options(
            mysql_server, original, host
        )
    grants = "\n".join(await mysql_server.grants(clone, "%"))
    assert "WITH GRANT OPTION" in grants
    assert "WITH ADMIN OPTION" in grants
    assert f"SET DEFAULT ROLE `{role}`" in grants
    assert await mysql_server.can_login(clone, "clone-pw")


async def test_mirror_user_never_gives_the_clone_the_originals_password(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    original = await mysql_names.create_user("original-pw", hosts=("%", "localhost"))
    clone = original + "_clone"
    await admin.mirror_user(original, clone, "clone-pw")
    for host in ("%", "localhost"):
        assert await stored_hash(mysql_server, clone, host) == mysql_native_hash("clone-pw")
        assert await stored_hash(mysql_server, original, host) == mysql_native_hash("original-pw")
    assert not await mysql_server.can_login(clone, "original-pw")
    assert await mysql_server.can_login(original, "original-pw")

    # At the next rotation the existing clone gets the next password, and only it.
    await admin.mirror_user(original, clone, "clone-pw-2")
    assert await mysql_server.can_login(clone, "clone-pw-2")
    assert not await mysql_server.can_login(clone, "clone-pw")
    assert await mysql_server.can_login(original, "original-pw")


async def test_a_resumed_rotation_does_not_set_a_password_the_account_already_has(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    # Setting it again is refused where MySQL keeps a password history (error 3638), so a
    # resumed setSecret, for the clone and for an original that takes its turn, must not.
    original = await mysql_names.create_user("original-pw", hosts=("%", "localhost"))
    clone = original + "_clone"
    await admin.mirror_user(original, clone, "clone-pw")

    statements: list[str] = []
    real_run = admin._run

    async def spy(sql: str, **kwargs: Any) -> list[tuple[Any, ...]]:
        statements.append(sql)
        return await real_run(sql, **kwargs)

    admin._run = spy  # type: ignore[method-assign]
    try:
        with capture_logs() as logs:
            await admin.mirror_user(original, clone, "clone-pw")
            await admin.set_password(original, "original-pw")
        unchanged = list(statements)
        await admin.mirror_user(original, clone, "clone-pw-2")
        await admin.set_password(original, "original-pw-2")
    finally:
        del admin._run

    def password_changes(sqls: list[str]) -> list[str]:
        return [s for s in sqls if " IDENTIFIED " in s or s.startswith("SET PASSWORD")]

    assert password_changes(unchanged) == []
    kept = [(e["user"], e["host"]) for e in logs if e["event"] == "mysql_password.already_set"]
    assert sorted(kept) == sorted(
        (user, host) for user in (clone, original) for host in ("%", "localhost")
    )
    # A different password is set as before, on every host part.
    assert len(password_changes(statements)) == 4
    assert await mysql_server.can_login(clone, "clone-pw-2")
    assert await mysql_server.can_login(original, "original-pw-2")


async def test_mirror_user_copies_password_options_and_names_those_it_does_not(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    run = mysql_server.execute
    original = await mysql_names.create_user("original-pw")
    clone = original + "_clone"

    async def show_create(user: str) -> str:
        return str((await run("SHOW CREATE USER %s@'%%'", (user,)))[0][0])

    await run("ALTER USER %s@'%%' PASSWORD EXPIRE INTERVAL 30 DAY", (original,))
    await admin.mirror_user(original, clone, "clone-pw")
    assert "PASSWORD EXPIRE INTERVAL 30 DAY" in await show_create(clone)
    assert await mysql_server.can_login(clone, "clone-pw")

    # The original's option changes back to the server's default: so does the clone's.
    await run("ALTER USER %s@'%%' PASSWORD EXPIRE DEFAULT", (original,))
    await admin.mirror_user(original, clone, "clone-pw-2")
    assert "PASSWORD EXPIRE" not in await show_create(clone)
    assert await mysql_server.can_login(clone, "clone-pw-2")

    # A lock is not copied (the clone must log in to be tested), and doctor says so.
    await run("ALTER USER %s@'%%' ACCOUNT LOCK", (original,))
    verdict = await admin.may_mirror_user(original, clone)
    assert verdict.granted
    assert "ACCOUNT LOCK" in verdict.reason


async def test_mirror_user_follows_grants_made_after_the_clone(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    database = await mysql_names.create_database()
    db = quote_ident(database)
    original = await mysql_names.create_user("original-pw")
    clone = original + "_clone"
    await mysql_server.execute(f"GRANT SELECT ON {db}.* TO %s@'%%'", (original,))
    await admin.mirror_user(original, clone, "clone-pw")

    role = await mysql_names.create_role()
    await mysql_server.execute(f"GRANT INSERT, UPDATE ON {db}.* TO %s@'%%'", (original,))
    await mysql_server.execute(f"GRANT {quote_ident(role)} TO %s@'%%'", (original,))
    await mysql_server.execute("GRANT USAGE ON *.* TO %s@'%%' WITH GRANT OPTION", (original,))
    await mysql_server.execute(
        "ALTER USER %s@'%%' REQUIRE X509 WITH MAX_UPDATES_PER_HOUR 5", (original,)
    )
    await admin.mirror_user(original, clone, "clone-pw-2")

    await assert_same_grants(mysql_server, original, clone, "%")
    assert await account_options(mysql_server, clone, "%") == await account_options(
        mysql_server, original, "%"
    )
    assert await stored_hash(mysql_server, clone, "%") == mysql_native_hash("clone-pw-2")
    assert f"GRANT `{role}` TO `{clone}`@`%`" in await mysql_server.grants(clone, "%")


async def test_mirror_user_revokes_what_only_the_clone_has(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    run = mysql_server.execute
    database = await mysql_names.create_database()
    db = quote_ident(database)
    role = await mysql_names.create_role()
    extra_role = await mysql_names.create_role()
    original = await mysql_names.create_user("original-pw")
    clone = original + "_clone"
    await run(f"CREATE TABLE {db}.t (a int, b int)")
    await run(f"GRANT SELECT ON {db}.* TO %s@'%%'", (original,))
    await run(f"GRANT SELECT (a) ON {db}.t TO %s@'%%'", (original,))
    await run(f"GRANT {quote_ident(role)} TO %s@'%%'", (original,))
    await admin.mirror_user(original, clone, "clone-pw")

    # Someone gives the clone more than the original has, in every way there is.
    await run(f"GRANT ALL PRIVILEGES ON {db}.* TO %s@'%%' WITH GRANT OPTION", (clone,))
    await run(f"GRANT INSERT (b), SELECT (b) ON {db}.t TO %s@'%%'", (clone,))
    await run("GRANT PROCESS ON *.* TO %s@'%%'", (clone,))
    await run(f"GRANT {quote_ident(role)} TO %s@'%%' WITH ADMIN OPTION", (clone,))
    await run(f"GRANT {quote_ident(extra_role)} TO %s@'%%'", (clone,))
    await run(f"SET DEFAULT ROLE {quote_ident(role)} FOR %s@'%%'", (clone,))

    statements: list[str] = []
    real_run = admin._run

    async def spy(sql: str, **kwargs: Any) -> list[tuple[Any, ...]]:
        statements.append(sql)
        return await real_run(sql, **kwargs)

    admin._run = spy  # type: ignore[method-assign]
    try:
        await admin.mirror_user(original, clone, "clone-pw-2")
    finally:
        del admin._run

    await assert_same_grants(mysql_server, original, clone, "%")
    # Never fewer privileges than the original: SELECT stays, ALL is taken apart, not revoked.
    changes = [s.split(" ", 1)[0] for s in statements if s.startswith(("GRANT", "REVOKE"))]
    assert changes == sorted(changes, key=lambda verb: verb == "REVOKE")
    for statement in statements:
        if statement.startswith("REVOKE"):
            revoked = statement.removeprefix("REVOKE ").split(" ON ")[0].split(", ")
            assert "ALL PRIVILEGES" not in revoked
            assert "SELECT" not in revoked


async def test_mirror_user_of_a_missing_user_is_not_found(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    original = mysql_names.user()
    await raises(admin.mirror_user(original, original + "_clone", "pw-1234"), Category.NOT_FOUND)
    assert await mysql_server.hosts(original + "_clone") == []


async def test_mirror_user_refuses_a_clone_name_too_long(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    original = await mysql_names.create_user("original-pw")
    clone = original + "_" * (81 - len(original))
    await raises(admin.mirror_user(original, clone, "pw-1234"), Category.NAME_TOO_LONG)


# -- test queries -------------------------------------------------------------------------


async def test_run_test_passes_and_rolls_back(
    admin: MysqlSession, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    database = await mysql_names.create_database()
    table = f"{quote_ident(database)}.t"
    await mysql_server.execute(f"CREATE TABLE {table} (a int) ENGINE=InnoDB")
    await admin.run_test(None)
    await admin.run_test(f"INSERT INTO {table} VALUES (1)")
    # A server warning (division by zero) is logged, not raised as a Python warning.
    await admin.run_test(f"SELECT 1/0 FROM {table}")
    assert await mysql_server.execute(f"SELECT COUNT(*) FROM {table}") == [(0,)]


async def test_run_test_failure_is_test_failed_and_scrubbed(
    admin: MysqlSession, mysql_names: MysqlNames
) -> None:
    user = await mysql_names.create_user("pw-1234")
    await admin.set_password(user, "s3cret-in-a-query")  # registers it with the redactor
    error = await raises(admin.run_test("SELEC 's3cret-in-a-query'"), Category.TEST_FAILED)
    assert "MySQL error 1064" in error.reason
    assert REDACTED in error.reason
    assert_no_secret(error, "s3cret-in-a-query")

    error = await raises(admin.run_test("SELECT * FROM test.no_such_table"), Category.TEST_FAILED)
    assert "no_such_table" in error.reason
    await admin.run_test("SELECT 1")  # the session is still usable


async def test_statement_past_the_deadline_times_out(
    engine: MysqlEngine, mysql_server: MysqlServer
) -> None:
    async with engine.connect(mysql_server.login("root", ""), timeout_s=0.5) as session:
        error = await raises(session.run_test("SELECT SLEEP(5)"), Category.TIMEOUT)
        assert "no answer within 0.5 s" in error.reason


async def test_cancellation_is_not_swallowed(
    engine: MysqlEngine, mysql_server: MysqlServer, mysql_names: MysqlNames
) -> None:
    marker = f"rotd_cancel_{mysql_names.prefix}"
    async with engine.connect(mysql_server.login("root", ""), timeout_s=TIMEOUT_S) as session:
        task = asyncio.create_task(session.run_test(f"SELECT SLEEP(5) AS {marker}"))
        # Wait until the statement runs on the server, then cancel it.
        while not await mysql_server.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE %s",
            (f"%AS {marker}",),
        ):
            assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- errors never carry a secret ----------------------------------------------------------


async def test_errors_from_secret_statements_quote_no_server_text(admin: MysqlSession) -> None:
    """A syntax error echoes the statement; for one that carried a hash, none of it is kept."""
    hashed = mysql_native_hash("hash-me")
    echo = pymysql.err.ProgrammingError(1064, f"syntax error near '{hashed}' at line 1")
    error = admin._statement_error(echo, doing="changing a password", secret=True)
    assert error.category is Category.UNSUPPORTED
    assert "MySQL error 1064" in error.reason
    assert_no_secret(error, hashed, "syntax error near")


# -- what other servers print -------------------------------------------------------------


def test_flavours_and_their_name_limits() -> None:
    assert Flavour.parse("10.11.6-MariaDB-log").max_username == 80
    assert Flavour.parse("8.0.35").max_username == 32
    assert Flavour.parse("5.7.44-log").max_username == 32
    assert Flavour.parse("5.6.51").max_username == 16
    assert Flavour.parse("8.0.mysql_aurora.3.05.2").version == (8, 0, 0)


def test_reads_mysql_57_grants_without_the_hash() -> None:
    lines = [
        "GRANT USAGE ON *.* TO 'app'@'%' IDENTIFIED BY PASSWORD '*0123456789ABCDEF'",
        "GRANT SELECT, INSERT ON `shop`.* TO 'app'@'%' WITH GRANT OPTION",
        "GRANT SELECT (`id`, `name`) ON `shop`.`items` TO 'app'@'%'",
    ]
    privileges = _parse_grants(lines, "app", "%")
    assert privileges.on == {
        "`shop`.*": {"SELECT", "INSERT", "GRANT OPTION"},
        "`shop`.`items`": {"SELECT (`id`)", "SELECT (`name`)"},
    }


def test_reads_mysql_8_roles_and_partial_revokes() -> None:
    lines = [
        "GRANT SELECT, INSERT ON *.* TO `app`@`%`",
        "GRANT BACKUP_ADMIN,SYSTEM_USER ON *.* TO `app`@`%`",
        "REVOKE INSERT ON `mysql`.* FROM `app`@`%`",
        "GRANT `reader`@`%`,`writer`@`%` TO `app`@`%` WITH ADMIN OPTION",
    ]
    privileges = _parse_grants(lines, "app", "%")
    assert privileges.on == {"*.*": {"SELECT", "INSERT", "BACKUP_ADMIN", "SYSTEM_USER"}}
    assert privileges.revoked == {"`mysql`.*": {"INSERT"}}
    assert privileges.roles == {"`reader`@`%`": True, "`writer`@`%`": True}
