"""PostgresEngine against a real cluster that checks passwords (``pg_server``), no mocks.

Every test makes its own roles and databases through ``pg_names``, which drops them afterwards.
Where a test needs a server that misbehaves (silent, or refusing TLS), it runs a few lines of
real TCP server in the test's loop.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from rotd.engines import Endpoint, Family, Login, Tls, TlsMode
from rotd.engines.postgres import PostgresEngine, PostgresSession
from rotd.errors import Category, DatabaseError
from rotd.passwords import postgres_md5_verifier
from tests.fixtures.postgres import PgNames, PgServer, quote_ident, quote_literal, write_ca

ENGINE = PostgresEngine()
TIMEOUT_S = 10.0
# Quotes of both kinds, a backslash, spaces and non-ASCII (two- to four-byte UTF-8).
ODD = "o'd\"d \\ é€😀 "
ODD_PASSWORD = "p'a\"s\\s wörd ∑ 😀 '' \"\" \\\\ end"


def assert_clean(error: DatabaseError, *secrets: str) -> None:
    """The error names no secret, carries no driver exception, and its category is set."""
    for text in (str(error), repr(error), error.reason):
        for secret in secrets:
            assert secret not in text
        assert "SCRAM-SHA-256$" not in text
        assert "asyncpg" not in text
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@asynccontextmanager
async def superuser_session(
    pg_server: PgServer, *, timeout_s: float = TIMEOUT_S, dbname: str = "postgres"
) -> AsyncIterator[PostgresSession]:
    login = pg_server.login(pg_server.superuser, pg_server.superuser_password, dbname=dbname)
    async with ENGINE.connect(login, timeout_s=timeout_s) as session:
        yield session


@asynccontextmanager
async def fake_server(reply: bytes | None) -> AsyncIterator[int]:
    """A TCP server on a free port that answers each connection's first bytes with ``reply``
    (or never answers), then holds the connection until the client drops it."""
    handlers: list[asyncio.Task[Any]] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        writers.append(writer)
        await reader.read(8)
        if reply is not None:
            writer.write(reply)
            await writer.drain()
        await reader.read()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
        await asyncio.gather(*handlers, return_exceptions=True)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_backend(pg_server: PgServer, user: str, *, active: bool) -> int | None:
    """Poll until ``user`` has a backend running a statement (``active``) or none at all."""
    deadline = time.monotonic() + 10
    async with pg_server.admin() as conn:
        while time.monotonic() < deadline:
            pid = await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE usename = $1"
                " AND (NOT $2 OR (state = 'active' AND query LIKE '%pg_sleep%'))",
                user,
                active,
            )
            if (pid is not None) == active:
                return pid  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)
    pytest.fail(f"no backend of {user!r} reached active={active} within 10s")


async def stored_password(pg_server: PgServer, role: str) -> str | None:
    async with pg_server.admin() as conn:
        return await conn.fetchval(  # type: ignore[no-any-return]
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role
        )


# Logging in.


async def test_wrong_password_is_refused_as_auth(pg_server: PgServer, pg_names: PgNames) -> None:
    user = await pg_names.create_user("right-password-1")

    with pytest.raises(DatabaseError) as caught:
        async with ENGINE.connect(pg_server.login(user, "wrong-password-2"), timeout_s=TIMEOUT_S):
            pytest.fail("logged in with a wrong password")

    assert caught.value.category is Category.AUTH
    assert caught.value.reason.startswith(f"login refused for user {quote_ident(user)}")
    assert (caught.value.host, caught.value.port) == (pg_server.host, pg_server.port)
    assert_clean(caught.value, "wrong-password-2", "right-password-1")


async def test_missing_database_is_not_found(pg_server: PgServer, pg_names: PgNames) -> None:
    user = await pg_names.create_user("user-password-1")
    missing = pg_names.database()

    with pytest.raises(DatabaseError) as caught:
        async with ENGINE.connect(
            pg_server.login(user, "user-password-1", dbname=missing), timeout_s=TIMEOUT_S
        ):
            pass

    assert caught.value.category is Category.NOT_FOUND
    assert f'database "{missing}" does not exist' in caught.value.reason
    assert_clean(caught.value, "user-password-1")


async def test_closed_port_is_unreachable_at_once(pg_server: PgServer) -> None:
    login = Login(Endpoint(Family.POSTGRES, "127.0.0.1", closed_port(), None), "u", "pw-xyz-1")
    started = time.monotonic()

    with pytest.raises(DatabaseError) as caught:
        async with ENGINE.connect(login, timeout_s=TIMEOUT_S):
            pass

    assert time.monotonic() - started < 2
    assert caught.value.category is Category.UNREACHABLE
    assert "connection refused" in caught.value.reason
    assert_clean(caught.value, "pw-xyz-1")


async def test_unknown_host_name_is_unreachable() -> None:
    login = Login(Endpoint(Family.POSTGRES, "rotd-test.invalid", 5432, None), "u", "pw-xyz-1")

    with pytest.raises(DatabaseError) as caught:
        async with ENGINE.connect(login, timeout_s=TIMEOUT_S):
            pass

    assert caught.value.category is Category.UNREACHABLE
    assert "'rotd-test.invalid' does not resolve" in caught.value.reason


async def test_silent_server_times_out() -> None:
    async with fake_server(reply=None) as port:
        login = Login(Endpoint(Family.POSTGRES, "127.0.0.1", port, None), "u", "pw-xyz-1")
        started = time.monotonic()
        with pytest.raises(DatabaseError) as caught:
            async with ENGINE.connect(login, timeout_s=0.3):
                pass

    assert time.monotonic() - started < 2
    assert caught.value.category is Category.TIMEOUT
    assert 'timed out after 0.3s trying to log in as "u"' in caught.value.reason


# TLS.


async def test_tls_required_but_not_offered() -> None:
    async with fake_server(reply=b"N") as port:
        tls = Tls(mode=TlsMode.REQUIRE)
        login = Login(Endpoint(Family.POSTGRES, "127.0.0.1", port, None, tls), "u", "pw-xyz-1")
        with pytest.raises(DatabaseError) as caught:
            async with ENGINE.connect(login, timeout_s=TIMEOUT_S):
                pass

    assert caught.value.category is Category.TLS
    assert "does not offer TLS" in caught.value.reason


@pytest.mark.parametrize(
    ("mode", "with_ca", "host", "encrypted"),
    [
        (TlsMode.DISABLE, False, "127.0.0.1", False),
        (TlsMode.PREFER, False, "127.0.0.1", True),
        (TlsMode.REQUIRE, False, "127.0.0.1", True),
        (TlsMode.VERIFY_CA, True, "127.0.0.1", True),
        (TlsMode.VERIFY_FULL, True, "localhost", True),
    ],
)
async def test_tls_modes_that_connect(
    pg_server: PgServer,
    pg_names: PgNames,
    mode: TlsMode,
    with_ca: bool,
    host: str,
    encrypted: bool,
) -> None:
    user = await pg_names.create_user("pw-tls-123")
    tls = Tls(mode=mode, ca_file=pg_server.ca_file if with_ca else None)
    login = Login(
        Endpoint(Family.POSTGRES, host, pg_server.port, "postgres", tls), user, "pw-tls-123"
    )

    async with ENGINE.connect(login, timeout_s=TIMEOUT_S) as session:
        await session.run_test(None)
        async with pg_server.admin() as conn:
            ssl_in_use = await conn.fetchval(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                " WHERE a.usename = $1",
                user,
            )

    assert ssl_in_use is encrypted


async def test_verify_full_checks_the_host_name(pg_server: PgServer) -> None:
    tls = Tls(mode=TlsMode.VERIFY_FULL, ca_file=pg_server.ca_file)
    login = pg_server.login(pg_server.superuser, pg_server.superuser_password, tls=tls)

    with pytest.raises(DatabaseError) as caught:
        async with ENGINE.connect(login, timeout_s=TIMEOUT_S):
            pass

    assert caught.value.category is Category.TLS
    assert "certificate verification failed" in caught.value.reason
    assert "127.0.0.1" in caught.value.reason
    assert_clean(caught.value, pg_server.superuser_password)


@pytest.mark.parametrize("mode", [TlsMode.REQUIRE, TlsMode.VERIFY_CA, TlsMode.VERIFY_FULL])
async def test_an_unrelated_ca_is_refused(
    pg_server: PgServer, tmp_path: Any, mode: TlsMode
) -> None:
    other_ca, _, _ = write_ca(tmp_path, "other")
    tls = Tls(mode=mode, ca_file=str(other_ca))
    login = Login(
        Endpoint(Family.POSTGRES, "localhost", pg_server.port, None, tls),
        pg_server.superuser,
        pg_server.superuser_password,
    )

    with pytest.raises(DatabaseError) as caught:
        async with ENGINE.connect(login, timeout_s=TIMEOUT_S):
            pass

    assert caught.value.category is Category.TLS
    assert "certificate verification failed" in caught.value.reason


async def test_missing_ca_file_is_a_tls_error(pg_server: PgServer, tmp_path: Any) -> None:
    tls = Tls(mode=TlsMode.VERIFY_FULL, ca_file=str(tmp_path / "absent.crt"))
    login = pg_server.login(pg_server.superuser, pg_server.superuser_password, tls=tls)

    with pytest.raises(DatabaseError) as caught:
        async with ENGINE.connect(login, timeout_s=TIMEOUT_S):
            pass

    assert caught.value.category is Category.TLS
    assert "cannot load the CA file" in caught.value.reason


# Passwords.


async def test_set_own_password_leaves_only_the_new_one(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    user = await pg_names.create_user("old-password-1")

    async with ENGINE.connect(pg_server.login(user, "old-password-1"), timeout_s=TIMEOUT_S) as s:
        assert s.username == user
        await s.set_own_password("new-password-2")

    assert await pg_server.can_login(user, "new-password-2")
    assert not await pg_server.can_login(user, "old-password-1")


async def test_passwords_reach_the_server_only_as_verifiers(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    user = await pg_names.create_user("old-password-1")
    new_password = "never-in-the-log-" + user

    async with superuser_session(pg_server) as session:
        await session.set_password(user, new_password)

    stored = await stored_password(pg_server, user)
    assert stored is not None
    assert stored.startswith("SCRAM-SHA-256$4096:")
    log = pg_server.log_file.read_text(errors="replace")
    assert f"ALTER ROLE {quote_ident(user)} WITH PASSWORD 'SCRAM-SHA-256$" in log
    assert new_password not in log
    assert await pg_server.can_login(user, new_password)


async def test_md5_servers_get_md5_verifiers(pg_server: PgServer, pg_names: PgNames) -> None:
    user = await pg_names.create_user("old-password-1")
    async with pg_server.admin() as conn:
        await conn.execute(f"ALTER ROLE {quote_ident(user)} SET password_encryption = 'md5'")

    async with ENGINE.connect(pg_server.login(user, "old-password-1"), timeout_s=TIMEOUT_S) as s:
        await s.set_own_password("new-password-2")

    assert await stored_password(pg_server, user) == postgres_md5_verifier(user, "new-password-2")


async def test_set_password_as_superuser(pg_server: PgServer, pg_names: PgNames) -> None:
    user = await pg_names.create_user("old-password-1")

    async with superuser_session(pg_server) as session:
        await session.set_password(user, "new-password-2")

    assert await pg_server.can_login(user, "new-password-2")
    assert not await pg_server.can_login(user, "old-password-1")


async def test_set_password_of_a_missing_role_is_not_found(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    missing = pg_names.role()

    async with superuser_session(pg_server) as session:
        with pytest.raises(DatabaseError) as caught:
            await session.set_password(missing, "new-password-2")
        await session.run_test(None)  # the session survives the failure

    assert caught.value.category is Category.NOT_FOUND
    assert f'role "{missing}" does not exist' in caught.value.reason
    assert_clean(caught.value, "new-password-2", pg_server.superuser_password)


async def test_set_password_without_the_privilege_is_permission(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    user = await pg_names.create_user("user-password-1")
    other = await pg_names.create_user("other-password-1")

    async with ENGINE.connect(pg_server.login(user, "user-password-1"), timeout_s=TIMEOUT_S) as s:
        with pytest.raises(DatabaseError) as caught:
            await s.set_password(other, "new-password-2")

    assert caught.value.category is Category.PERMISSION
    assert caught.value.reason.startswith(
        f"permission denied to change the password of {quote_ident(other)}"
    )
    assert_clean(caught.value, "new-password-2", "user-password-1")
    assert await pg_server.can_login(other, "other-password-1")


async def test_values_are_refused_without_standard_conforming_strings(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    user = await pg_names.create_user("old-password-1")
    async with pg_server.admin() as conn:
        await conn.execute(f"ALTER ROLE {quote_ident(user)} SET standard_conforming_strings = off")

    async with ENGINE.connect(pg_server.login(user, "old-password-1"), timeout_s=TIMEOUT_S) as s:
        with pytest.raises(DatabaseError) as caught:
            await s.set_own_password("new-password-2")

    assert caught.value.category is Category.UNSUPPORTED
    assert "standard_conforming_strings" in caught.value.reason
    assert_clean(caught.value, "new-password-2", "old-password-1")
    assert await pg_server.can_login(user, "old-password-1")


async def test_nul_characters_are_refused(pg_server: PgServer, pg_names: PgNames) -> None:
    user = await pg_names.create_user("old-password-1")

    async with superuser_session(pg_server) as session:
        with pytest.raises(DatabaseError) as in_password:
            await session.set_password(user, "new\x00password")
        with pytest.raises(DatabaseError) as in_name:
            await session.set_password(user + "\x00", "new-password-2")

    assert in_password.value.category is Category.BAD_SECRET
    assert in_name.value.category is Category.BAD_SECRET
    assert_clean(in_password.value, "new\x00password")
    assert await pg_server.can_login(user, "old-password-1")


async def test_odd_names_and_passwords_survive_quoting(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    user = await pg_names.create_user("old-password-1", prefix=ODD)
    clone = user + "_clone"

    async with superuser_session(pg_server) as session:
        await session.set_password(user, ODD_PASSWORD)
        await session.mirror_user(user, clone, ODD_PASSWORD + "2")

    assert await pg_server.can_login(user, ODD_PASSWORD)
    assert await pg_server.can_login(clone, ODD_PASSWORD + "2")
    async with ENGINE.connect(pg_server.login(user, ODD_PASSWORD), timeout_s=TIMEOUT_S) as s:
        await s.set_own_password(ODD_PASSWORD + "3")
    assert await pg_server.can_login(user, ODD_PASSWORD + "3")
    conn = await pg_server.connect(clone, ODD_PASSWORD + "2")
    try:
        assert await conn.fetchval("SELECT current_user::text") == user
    finally:
        await conn.close()


# Mirroring a login.


async def test_mirror_user_acts_as_the_original(pg_server: PgServer, pg_names: PgNames) -> None:
    owner = await pg_names.create_user(options="NOLOGIN", prefix="rotd_owner_")
    original = await pg_names.create_user("original-password-1")
    clone = original + "_clone"
    db = await pg_names.create_database(owner=original)
    async with pg_server.admin(db) as conn:
        for table in ("before", "after", "withheld"):
            await conn.execute(f"CREATE TABLE {table} (x int); INSERT INTO {table} VALUES (1)")
            await conn.execute(f"ALTER TABLE {table} OWNER TO {quote_ident(owner)}")
        await conn.execute(f"GRANT SELECT ON before TO {quote_ident(original)}")

    async with superuser_session(pg_server) as session:
        await session.mirror_user(original, clone, "clone-password-1")

    async with pg_server.admin(db) as conn:  # granted after the clone exists
        await conn.execute(f"GRANT SELECT ON after TO {quote_ident(original)}")
    conn = await pg_server.connect(clone, "clone-password-1", database=db)
    try:
        who = await conn.fetchrow("SELECT session_user::text, current_user::text")
        assert tuple(who) == (clone, original)
        assert await conn.fetchval("SELECT x FROM before") == 1
        assert await conn.fetchval("SELECT x FROM after") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT x FROM withheld")
        await conn.execute(
            "CREATE TABLE made_by_clone (x int); INSERT INTO made_by_clone VALUES (2)"
        )
    finally:
        await conn.close()

    async with pg_server.admin(db) as conn:
        table_owner = await conn.fetchval(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'made_by_clone'"
        )
    assert table_owner == original
    conn = await pg_server.connect(original, "original-password-1", database=db)
    try:
        assert await conn.fetchval("SELECT x FROM made_by_clone") == 2
    finally:
        await conn.close()


async def test_mirror_user_again_repairs_and_changes_only_the_password(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    original = await pg_names.create_user("original-password-1")
    clone = original + "_clone"
    async with superuser_session(pg_server) as session:
        await session.mirror_user(original, clone, "clone-password-1")
    # Someone undoes part of it between rotations.
    async with pg_server.admin() as conn:
        await conn.execute(f"REVOKE {quote_ident(original)} FROM {quote_ident(clone)}")
        await conn.execute(f"ALTER ROLE {quote_ident(clone)} NOLOGIN")
        await conn.execute(f"ALTER ROLE {quote_ident(clone)} RESET role")

    async with superuser_session(pg_server) as session:
        await session.mirror_user(original, clone, "clone-password-2")
        await session.mirror_user(original, clone, "clone-password-3")

    assert await pg_server.can_login(clone, "clone-password-3")
    assert not await pg_server.can_login(clone, "clone-password-2")
    assert await pg_server.can_login(original, "original-password-1")
    async with pg_server.admin() as conn:
        memberships = await conn.fetchval(
            "SELECT count(*) FROM pg_auth_members m"
            " WHERE m.roleid = $1::regrole AND m.member = $2::regrole",
            quote_ident(original),
            quote_ident(clone),
        )
        settings = await conn.fetchval(
            "SELECT setconfig FROM pg_db_role_setting"
            " WHERE setrole = $1::regrole AND setdatabase = 0",
            quote_ident(clone),
        )
    assert memberships == 1
    assert settings == [f"role={original}"]


async def test_mirror_user_of_a_missing_original_creates_nothing(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    original = pg_names.role()
    clone = original + "_clone"

    async with superuser_session(pg_server) as session:
        with pytest.raises(DatabaseError) as caught:
            await session.mirror_user(original, clone, "clone-password-1")

    assert caught.value.category is Category.NOT_FOUND
    assert quote_ident(original) in caught.value.reason
    assert_clean(caught.value, "clone-password-1")
    async with pg_server.admin() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", clone) == 0


async def test_a_clone_can_set_its_own_password(pg_server: PgServer, pg_names: PgNames) -> None:
    original = await pg_names.create_user("original-password-1")
    clone = original + "_clone"
    async with superuser_session(pg_server) as session:
        await session.mirror_user(original, clone, "clone-password-1")

    login = pg_server.login(clone, "clone-password-1")
    async with ENGINE.connect(login, timeout_s=TIMEOUT_S) as s:
        await s.set_own_password("clone-password-2")

    assert await pg_server.can_login(clone, "clone-password-2")
    assert await pg_server.can_login(original, "original-password-1")


# Names.


async def test_check_username_counts_utf8_bytes(pg_server: PgServer, pg_names: PgNames) -> None:
    original = await pg_names.create_user("original-password-1")
    fits = pg_names.role(prefix="é" * 23 + "x")  # 47 + 16 = 63 bytes
    too_long = pg_names.role(prefix="é" * 24)  # 48 + 16 = 64 bytes, 40 characters
    assert (len(fits.encode()), len(too_long.encode()), len(too_long)) == (63, 64, 40)

    async with superuser_session(pg_server) as session:
        await session.check_username(fits)
        with pytest.raises(DatabaseError) as caught:
            await session.check_username(too_long)
        await session.mirror_user(original, fits, "clone-password-1")
        with pytest.raises(DatabaseError) as mirrored:
            await session.mirror_user(original, too_long, "clone-password-1")

    assert caught.value.category is Category.NAME_TOO_LONG
    assert quote_ident(too_long) in caught.value.reason
    assert "64 bytes" in caught.value.reason
    assert "63 bytes" in caught.value.reason
    assert mirrored.value.category is Category.NAME_TOO_LONG
    assert await pg_server.can_login(fits, "clone-password-1")  # stored whole, not truncated
    async with pg_server.admin() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, $1)", too_long[:40]
            )
            == 0
        )


# The test query.


async def test_run_test_passes_and_rolls_back(pg_server: PgServer, pg_names: PgNames) -> None:
    owner = await pg_names.create_user("owner-password-1")
    db = await pg_names.create_database(owner=owner)
    login = pg_server.login(owner, "owner-password-1", dbname=db)

    async with ENGINE.connect(login, timeout_s=TIMEOUT_S) as session:
        await session.run_test(None)
        await session.run_test("SELECT count(*) FROM pg_class")
        await session.run_test("CREATE TABLE probe (x int)")

    async with pg_server.admin(db) as conn:
        assert await conn.fetchval("SELECT to_regclass('probe')") is None


async def test_run_test_failure_is_test_failed(pg_server: PgServer, pg_names: PgNames) -> None:
    user = await pg_names.create_user("user-password-1")

    async with ENGINE.connect(pg_server.login(user, "user-password-1"), timeout_s=TIMEOUT_S) as s:
        with pytest.raises(DatabaseError) as caught:
            await s.run_test("SELECT x FROM no_such_table")
        await s.run_test(None)  # the session is still usable

    assert caught.value.category is Category.TEST_FAILED
    assert 'relation "no_such_table" does not exist' in caught.value.reason


async def test_server_text_is_scrubbed(pg_server: PgServer, pg_names: PgNames) -> None:
    password = "echoed-by-the-server-" + pg_names.role()
    user = await pg_names.create_user(password)

    async with ENGINE.connect(pg_server.login(user, password), timeout_s=TIMEOUT_S) as s:
        with pytest.raises(DatabaseError) as caught:
            # The server quotes the bad input back in its message.
            await s.run_test(f"SELECT {quote_literal(password)}::int")

    assert caught.value.category is Category.TEST_FAILED
    assert "[REDACTED]" in caught.value.reason
    assert_clean(caught.value, password)


async def test_run_test_past_the_deadline_is_timeout(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    user = await pg_names.create_user("user-password-1")
    login = pg_server.login(user, "user-password-1")

    async with ENGINE.connect(login, timeout_s=0.5) as session:
        started = time.monotonic()
        with pytest.raises(DatabaseError) as caught:
            await session.run_test("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 2

    assert caught.value.category is Category.TIMEOUT
    assert "timed out after 0.5s" in caught.value.reason
    # The server gives up on the statement too (statement_timeout), so the backend goes away.
    assert await wait_for_backend(pg_server, user, active=False) is None


async def test_connection_lost_mid_statement_is_unreachable(
    pg_server: PgServer, pg_names: PgNames
) -> None:
    user = await pg_names.create_user("user-password-1")

    async with ENGINE.connect(pg_server.login(user, "user-password-1"), timeout_s=TIMEOUT_S) as s:
        running = asyncio.create_task(s.run_test("SELECT pg_sleep(30)"))
        pid = await wait_for_backend(pg_server, user, active=True)
        async with pg_server.admin() as conn:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(DatabaseError) as caught:
            await running
        with pytest.raises(DatabaseError) as afterwards:
            await s.run_test(None)

    assert caught.value.category is Category.UNREACHABLE
    assert "connection lost" in caught.value.reason
    assert afterwards.value.category is Category.UNREACHABLE
    assert_clean(caught.value, "user-password-1")


async def test_cancellation_is_not_swallowed(pg_server: PgServer, pg_names: PgNames) -> None:
    user = await pg_names.create_user("user-password-1")

    # The deadline also bounds how long the server runs the abandoned statement.
    async with ENGINE.connect(pg_server.login(user, "user-password-1"), timeout_s=2) as s:
        running = asyncio.create_task(s.run_test("SELECT pg_sleep(30)"))
        await wait_for_backend(pg_server, user, active=True)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    assert await wait_for_backend(pg_server, user, active=False) is None
