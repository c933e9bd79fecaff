"""The PostgreSQL engine: sessions on asyncpg that change role passwords and mirror a login.

This module owns everything rotd says to a PostgreSQL server (RDS, Aurora or self-managed):
opening a session with the endpoint's TLS mode, quoting names and values into the few utility
statements it runs, sending password verifiers instead of plain passwords, keeping a clone role
acting as its original, and running the test query. It is the only module that imports asyncpg,
and it translates every asyncpg, TLS and socket failure into a :class:`DatabaseError` whose
category and reason an operator can act on, with any server text scrubbed of secrets.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from rotd.engines import Endpoint, Family, Login, Permission, Tls, TlsMode, lock_key
from rotd.engines.builtin import POSTGRES
from rotd.errors import Category, DatabaseError
from rotd.observability import redactor
from rotd.passwords import PasswordPolicy, postgres_md5_verifier, scram_sha256_verifier

__all__ = ["PostgresEngine", "PostgresSession", "quote_ident", "quote_literal"]

# The database AWS's rotation functions connect to when a secret names none.
DEFAULT_DBNAME = "postgres"
APPLICATION_NAME = "rotd"

_T = TypeVar("_T")

# Errors after which the connection cannot be trusted with another statement.
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)


def quote_ident(name: str) -> str:
    """``name`` as a PostgreSQL quoted identifier, exact in case and content."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """``value`` as a string literal; only valid while ``standard_conforming_strings`` is on."""
    return "'" + value.replace("'", "''") + "'"


class PostgresEngine:
    """Opens :class:`PostgresSession` objects; holds no state between sessions."""

    family = Family.POSTGRES
    info = POSTGRES

    @asynccontextmanager
    async def connect(self, login: Login, *, timeout_s: float) -> AsyncIterator[PostgresSession]:
        """Log in as ``login`` within ``timeout_s``; the session is closed on leaving the block.

        The same ``timeout_s`` bounds every later call on the session.
        """
        session = await PostgresSession.open(login, timeout_s=timeout_s)
        try:
            yield session
        finally:
            await session.close()


class PostgresSession:
    """One asyncpg connection as one login. Each call runs under its own ``timeout_s`` deadline."""

    def __init__(
        self,
        conn: Any,
        login: Login,
        *,
        timeout_s: float,
        session_user: str,
        password_encryption: str,
        max_identifier_length: int,
    ) -> None:
        self._conn = conn
        self._endpoint = login.endpoint
        self._login_user = login.username
        self._timeout_s = timeout_s
        self._session_user = session_user
        self._password_encryption = password_encryption
        self._max_identifier_length = max_identifier_length

    @classmethod
    async def open(cls, login: Login, *, timeout_s: float) -> PostgresSession:
        """Connect and read the settings that decide how passwords and names are sent."""
        redactor.add(login.password)
        endpoint = login.endpoint
        try:
            ssl_arg = _ssl_argument(endpoint.tls)
        except OSError as exc:  # ssl.SSLError included
            raise DatabaseError(
                endpoint.host,
                endpoint.port,
                Category.TLS,
                f"cannot load the CA file {endpoint.tls.ca_file!r}: {exc.strerror or exc}",
            ) from None
        conn: Any = None
        try:
            async with asyncio.timeout(timeout_s):
                conn = await asyncpg.connect(
                    host=endpoint.host,
                    port=endpoint.port,
                    user=login.username,
                    password=login.password,
                    database=endpoint.dbname or DEFAULT_DBNAME,
                    ssl=ssl_arg,
                    timeout=timeout_s,
                    command_timeout=timeout_s,
                    # No named prepared statements, so that poolers in transaction mode work.
                    statement_cache_size=0,
                    server_settings={"application_name": APPLICATION_NAME},
                )
                row = await conn.fetchrow(
                    "SELECT session_user::text,"
                    " current_setting('password_encryption'),"
                    " current_setting('max_identifier_length')::int"
                )
        except BaseException as exc:
            if conn is not None:
                conn.terminate()
            if not isinstance(exc, Exception):
                raise
            raise _translate(
                exc,
                endpoint,
                user=login.username,
                doing=f"log in as {quote_ident(login.username)}",
                timeout_s=timeout_s,
            ) from None
        return cls(
            conn,
            login,
            timeout_s=timeout_s,
            session_user=row[0],
            password_encryption=row[1],
            max_identifier_length=row[2],
        )

    @property
    def username(self) -> str:
        return self._login_user

    async def close(self) -> None:
        """Close the connection within the deadline, or drop it; never raises."""
        if self._conn.is_closed():
            return
        try:
            await self._conn.close(timeout=self._timeout_s)
        except asyncio.CancelledError:
            self._conn.terminate()
            raise
        except Exception:
            self._conn.terminate()

    async def check_username(self, name: str) -> None:
        """Raise NAME_TOO_LONG when ``name`` exceeds ``max_identifier_length`` bytes in UTF-8.

        PostgreSQL would otherwise truncate the name silently, and a truncated clone name can
        collide with its original.
        """
        self._ident(name)

    async def set_own_password(self, new_password: str) -> None:
        """Give the session user a new password, sent as a verifier."""
        role = self._ident(self._session_user)
        password = self._verifier(self._session_user, new_password)
        statement = f"ALTER ROLE {role} WITH PASSWORD {password}"

        async def work() -> None:
            async with self._transaction(commit=True):
                # A login whose role setting makes it act as another role (a clone) may change
                # only its own password, and only as itself.
                await self._conn.execute("SET LOCAL ROLE NONE")
                await self._conn.execute(statement)

        await self._run(f"change the password of {role}", work)

    async def set_password(self, username: str, new_password: str) -> None:
        """Give an existing role a new password; NOT_FOUND when the role does not exist."""
        role = self._ident(username)
        password = self._verifier(username, new_password)
        statement = f"ALTER ROLE {role} WITH PASSWORD {password}"

        async def work() -> None:
            async with self._transaction(commit=True):
                await self._conn.execute(statement)

        await self._run(f"change the password of {role}", work)

    async def mirror_user(self, original: str, clone: str, new_password: str) -> None:
        """Make ``clone`` a login that acts as ``original``, with ``new_password``, atomically.

        In one transaction: create the clone when missing (LOGIN, INHERIT), make it a member of
        the original, set ``role`` to the original for its sessions (so that it has the
        original's privileges, current and future, and whatever it creates is owned by the
        original) and set its password. Every step is re-applied at each call.
        """
        original_role = self._ident(original)
        clone_role = self._ident(clone)
        password = self._verifier(clone, new_password)
        role_setting = self._literal(original, what="a role name")

        async def work() -> None:
            async with self._transaction(commit=True):
                rows = await self._conn.fetch(
                    "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[])",
                    [original, clone],
                )
                present = {row[0] for row in rows}
                if original not in present:
                    raise self._error(
                        Category.NOT_FOUND,
                        f"cannot mirror role {original_role}: it does not exist",
                    )
                verb = "ALTER" if clone in present else "CREATE"
                await self._conn.execute(
                    f"{verb} ROLE {clone_role} WITH LOGIN INHERIT PASSWORD {password}"
                )
                await self._conn.execute(f"GRANT {original_role} TO {clone_role}")
                await self._conn.execute(f"ALTER ROLE {clone_role} SET role = {role_setting}")

        await self._run(f"mirror role {original_role} as {clone_role}", work)

    async def run_test(self, query: str | None) -> None:
        """Run ``SELECT 1`` and then ``query`` in a transaction that is always rolled back.

        A statement the server rejects raises TEST_FAILED with the server's message.
        """

        async def work() -> None:
            async with self._transaction(commit=False):
                await self._conn.fetchval("SELECT 1")
                if query:
                    await self._conn.execute(query)

        await self._run("run the test query", work, rejected=Category.TEST_FAILED)

    async def try_lock(self, key: str) -> bool:
        """A session-level advisory lock: held until this session ends, whatever happens."""
        lock_id, _ = lock_key(key)

        async def work() -> bool:
            return bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_id))

        return await self._run("take the rotation lock", work)

    async def unlock(self, key: str) -> None:
        """Advisory locks count how often they were taken: release every one this session has
        (rotd takes no others)."""

        async def work() -> None:
            await self._conn.execute("SELECT pg_advisory_unlock_all()")

        await self._run("release the rotation lock", work)

    async def ping(self) -> None:
        async def work() -> None:
            await self._conn.execute("SELECT 1")

        await self._run("check that the session still works", work)

    # Read-only checks (rotd doctor).

    async def tls_in_use(self) -> bool:
        """Whether the socket to the server (or to a pooler in front of it) is TLS."""
        transport = getattr(self._conn, "_transport", None)
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    async def may_set_own_password(self) -> Permission:
        """Every role may ALTER its own password; what can still stop it is the server's state."""
        refused = await self._refusal_to_write()
        if refused is not None:
            return refused
        encryption = self._password_encryption
        if encryption not in ("scram-sha-256", "md5", "on"):
            return Permission(
                False,
                f"password_encryption is {encryption!r}; rotd sends scram-sha-256 or md5 only",
                "SET password_encryption = 'scram-sha-256' for the role or the server",
            )
        return Permission(
            True,
            "PostgreSQL lets every role change its own password (ALTER ROLE ... PASSWORD); "
            f"the verifier is sent as {'md5' if encryption == 'on' else encryption}",
        )

    async def may_set_password(self, username: str) -> Permission:
        """Superuser, or CREATEROLE on a role that is not a superuser (and, from PostgreSQL
        16, ADMIN OPTION on it)."""
        refused = await self._refusal_to_write()
        if refused is not None:
            return refused
        me, roles = await self._role_powers([username])
        if me.superuser:
            return Permission(True, f"{quote_ident(self._session_user)} is a superuser")
        if username not in roles:
            return Permission(
                False,
                f"role {quote_ident(username)} does not exist",
                "create the role, or fix the username in the secret",
            )
        return me.may_manage(self._session_user, username, roles[username], "change the password")

    async def accepts_passwords(self, policy: PasswordPolicy) -> Permission:
        """PostgreSQL sees only the verifier rotd sends, never the password: no server-side
        check (passwordcheck) can refuse it."""
        return Permission(
            True, "PostgreSQL is sent a verifier, not the password: no password policy applies"
        )

    async def may_mirror_user(self, original: str, clone: str) -> Permission:
        """Create or alter ``clone`` (CREATEROLE) and grant it ``original`` (which, from
        PostgreSQL 16, also needs ADMIN OPTION on both roles)."""
        refused = await self._refusal_to_write()
        if refused is not None:
            return refused
        me, roles = await self._role_powers([original, clone])
        master = quote_ident(self._session_user)
        if me.superuser:
            return Permission(True, f"{master} is a superuser")
        if original not in roles:
            return Permission(
                False,
                f"role {quote_ident(original)} does not exist",
                "create the role, or fix the username in the secret",
            )
        verdict = me.may_manage(self._session_user, original, roles[original], "grant")
        if verdict.granted and clone in roles:
            verdict = me.may_manage(self._session_user, clone, roles[clone], "alter")
        if not verdict.granted:
            return verdict
        admin = " and ADMIN OPTION on it" if me.version >= 160000 else ""
        state = "exists" if clone in roles else "will be created"
        return Permission(
            True,
            f"{master} has CREATEROLE, {quote_ident(original)} is not a superuser{admin}; "
            f"the clone {quote_ident(clone)} {state}",
        )

    async def _refusal_to_write(self) -> Permission | None:
        async def work() -> tuple[bool, str]:
            row = await self._conn.fetchrow(
                "SELECT pg_catalog.pg_is_in_recovery(), current_setting('transaction_read_only')"
            )
            return bool(row[0]), str(row[1])

        standby, read_only = await self._run("read whether the server is writable", work)
        if standby:
            return Permission(
                False,
                "the server is a read-only standby",
                "point the secret or the inventory at the primary (writer) endpoint",
            )
        if read_only == "on":
            return Permission(
                False,
                "sessions of this login are read-only (default_transaction_read_only is on)",
                f"ALTER ROLE {quote_ident(self._session_user)} SET default_transaction_read_only"
                " = off",
            )
        return None

    async def _role_powers(self, names: list[str]) -> tuple[_Powers, dict[str, _Role]]:
        async def work() -> tuple[_Powers, dict[str, _Role]]:
            me = await self._conn.fetchrow(
                "SELECT rolsuper, rolcreaterole, current_setting('server_version_num')::int"
                " FROM pg_catalog.pg_roles WHERE rolname = session_user"
            )
            rows = await self._conn.fetch(
                "SELECT rolname::text, rolsuper,"
                " pg_catalog.pg_has_role(session_user, oid, 'MEMBER WITH ADMIN OPTION')"
                " FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[])",
                names,
            )
            powers = _Powers(bool(me[0]), bool(me[1]), int(me[2]))
            return powers, {row[0]: _Role(bool(row[1]), bool(row[2])) for row in rows}

        return await self._run("read the roles' attributes", work)

    # Building statements.

    def _ident(self, name: str) -> str:
        if "\x00" in name:
            raise self._error(Category.BAD_SECRET, "a role name contains a NUL character")
        if not name:
            raise self._error(Category.BAD_SECRET, "a role name is empty")
        size = len(name.encode("utf-8"))
        if size > self._max_identifier_length:
            raise self._error(
                Category.NAME_TOO_LONG,
                f"role name {quote_ident(name)} is {size} bytes long in UTF-8; this server's"
                f" limit (max_identifier_length) is {self._max_identifier_length} bytes",
            )
        return quote_ident(name)

    def _literal(self, value: str, *, what: str) -> str:
        if "\x00" in value:
            raise self._error(Category.BAD_SECRET, f"{what} contains a NUL character")
        setting = self._conn.get_settings().standard_conforming_strings
        if setting != "on":
            raise self._error(
                Category.UNSUPPORTED,
                f"standard_conforming_strings is {setting!r} for this session; rotd quotes"
                " values only when it is 'on' (check ALTER ROLE/DATABASE settings)",
            )
        return quote_literal(value)

    def _verifier(self, role: str, password: str) -> str:
        """The literal to put after PASSWORD: what the server stores, never the password."""
        if "\x00" in password:
            raise self._error(Category.BAD_SECRET, "the new password contains a NUL character")
        redactor.add(password)
        encryption = self._password_encryption
        if encryption == "scram-sha-256":
            verifier = scram_sha256_verifier(password)
        elif encryption in ("md5", "on"):  # "on" meant md5 before PostgreSQL 14
            verifier = postgres_md5_verifier(role, password)
        else:
            raise self._error(
                Category.UNSUPPORTED,
                f"password_encryption is {encryption!r}; rotd sends scram-sha-256 or md5 only",
            )
        redactor.add(verifier, fragments=False)  # "SCRAM-SHA-256" alone is no secret
        return self._literal(verifier, what="a password verifier")

    # Running statements.

    @asynccontextmanager
    async def _transaction(self, *, commit: bool) -> AsyncIterator[None]:
        """A transaction whose statements the server also cancels at the session's deadline."""
        timeout_ms = max(1, int(self._timeout_s * 1000))
        await self._conn.execute(f"BEGIN; SET LOCAL statement_timeout = {timeout_ms}")
        try:
            yield
        except (DatabaseError, asyncpg.PostgresError) as exc:
            if isinstance(exc, _CONNECTION_LOST):
                self._conn.terminate()
            else:
                await self._rollback()
            raise
        except BaseException:
            # A deadline, a cancellation or a broken socket: the connection's state is unknown.
            self._conn.terminate()
            raise
        if commit:
            await self._conn.execute("COMMIT")
        else:
            await self._rollback()

    async def _rollback(self) -> None:
        try:
            await self._conn.execute("ROLLBACK")
        except asyncio.CancelledError:
            self._conn.terminate()
            raise
        except Exception:
            # The error that led here matters more; a session that cannot roll back is done.
            self._conn.terminate()

    async def _run(
        self,
        doing: str,
        work: Callable[[], Awaitable[_T]],
        *,
        rejected: Category | None = None,
    ) -> _T:
        """Run ``work`` under the session's deadline, translating whatever it raises."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await work()
        except DatabaseError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                self._conn.terminate()
            raise _translate(
                exc,
                self._endpoint,
                user=self._login_user,
                doing=doing,
                timeout_s=self._timeout_s,
                rejected=rejected,
            ) from None

    def _error(self, category: Category, reason: str) -> DatabaseError:
        return DatabaseError(
            self._endpoint.host, self._endpoint.port, category, redactor.scrub(reason)
        )


@dataclass(frozen=True)
class _Role:
    """What decides whether another role may manage this one."""

    superuser: bool
    admin: bool  # the session user holds it WITH ADMIN OPTION


@dataclass(frozen=True)
class _Powers:
    """The session user's role attributes, and the server's version number."""

    superuser: bool
    createrole: bool
    version: int  # server_version_num

    def may_manage(self, me: str, name: str, role: _Role, doing: str) -> Permission:
        """Whether a CREATEROLE role that is not a superuser may ``doing`` role ``name``."""
        if not self.createrole:
            return Permission(
                False,
                f"{quote_ident(me)} is neither a superuser nor has CREATEROLE (a superuser can "
                "give it)",
                f"ALTER ROLE {quote_ident(me)} CREATEROLE",
            )
        if role.superuser:
            return Permission(
                False,
                f"{quote_ident(name)} is a superuser: only a superuser may {doing} it",
                f"use a superuser as the master, or ALTER ROLE {quote_ident(name)} NOSUPERUSER",
            )
        if self.version >= 160000 and not role.admin:
            return Permission(
                False,
                f"from PostgreSQL 16, CREATEROLE may {doing} {quote_ident(name)} only with "
                "ADMIN OPTION on it",
                f"GRANT {quote_ident(name)} TO {quote_ident(me)} WITH ADMIN OPTION",
            )
        return Permission(True, f"{quote_ident(me)} has CREATEROLE")


def _ssl_argument(tls: Tls) -> ssl.SSLContext | str:
    """asyncpg's ``ssl`` argument for ``tls``.

    With a CA file, ``require`` verifies the chain as libpq does when it has a root
    certificate; ``prefer`` and ``disable`` never verify, so they ignore the file.
    """
    verifying = (TlsMode.REQUIRE, TlsMode.VERIFY_CA, TlsMode.VERIFY_FULL)
    if tls.ca_file and tls.mode in verifying:
        context = ssl.create_default_context(cafile=tls.ca_file)
        context.check_hostname = tls.mode is TlsMode.VERIFY_FULL
        context.verify_mode = ssl.CERT_REQUIRED
        return context
    return str(tls.mode)


def _server_text(exc: BaseException) -> str:
    """The server's message with its detail and hint, on one line, scrubbed."""
    if isinstance(exc, asyncpg.PostgresError):
        parts = [str(exc.args[0]) if exc.args else type(exc).__name__]
        for extra in (getattr(exc, "detail", None), getattr(exc, "hint", None)):
            if extra:
                parts.append(str(extra))
        text = "; ".join(parts)
    else:
        text = str(exc) or type(exc).__name__
    return redactor.scrub(" ".join(text.split()))


def _translate(
    exc: Exception,
    endpoint: Endpoint,
    *,
    user: str,
    doing: str,
    timeout_s: float,
    rejected: Category | None = None,
) -> DatabaseError:
    """The :class:`DatabaseError` an operator needs for ``exc``, raised while trying ``doing``."""
    category, reason = _classify(exc, endpoint, user=user, doing=doing, timeout_s=timeout_s)
    if (
        rejected is not None
        and isinstance(exc, asyncpg.PostgresError)
        and category not in (Category.UNREACHABLE, Category.TIMEOUT)
    ):
        category, reason = rejected, f"could not {doing}: {_server_text(exc)}"
    return DatabaseError(endpoint.host, endpoint.port, category, redactor.scrub(reason))


def _classify(
    exc: Exception, endpoint: Endpoint, *, user: str, doing: str, timeout_s: float
) -> tuple[Category, str]:
    text = _server_text(exc)
    # Deadlines first: socket timeouts are OSErrors too.
    if isinstance(exc, TimeoutError):
        return Category.TIMEOUT, f"timed out after {timeout_s:g}s trying to {doing}"
    if isinstance(exc, asyncpg.QueryCanceledError):
        return Category.TIMEOUT, f"the server cancelled the statement trying to {doing}: {text}"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return Category.AUTH, f"login refused for user {quote_ident(user)}: {text}"
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return Category.PERMISSION, f"permission denied to {doing}: {text}"
    if isinstance(exc, asyncpg.UndefinedObjectError | asyncpg.InvalidCatalogNameError):
        return Category.NOT_FOUND, f"could not {doing}: {text}"
    if isinstance(exc, asyncpg.CannotConnectNowError):
        return Category.UNREACHABLE, f"the server is not accepting connections: {text}"
    if isinstance(exc, _CONNECTION_LOST):
        return Category.UNREACHABLE, f"connection lost trying to {doing}: {text}"
    if isinstance(exc, asyncpg.PostgresError):
        code = getattr(exc, "sqlstate", None) or "?????"
        return Category.SERVER, f"could not {doing}: server error {code}: {text}"
    if isinstance(exc, asyncpg.ClientConfigurationError):
        return Category.TLS, f"cannot set up TLS mode {endpoint.tls.mode}: {text}"
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in text:
        return Category.UNREACHABLE, f"connection lost before trying to {doing}: {text}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or text
        return Category.TLS, f"TLS certificate verification failed: {why}"
    if isinstance(exc, ssl.SSLError):
        return Category.TLS, f"TLS handshake failed: {exc.reason or text}"
    if isinstance(exc, ConnectionError) and "rejected SSL upgrade" in text:
        return (
            Category.TLS,
            f"the server does not offer TLS, which TLS mode {endpoint.tls.mode} requires",
        )
    if isinstance(exc, socket.gaierror):
        return (
            Category.UNREACHABLE,
            f"cannot reach the server: the name {endpoint.host!r} does not resolve"
            f" ({exc.strerror})",
        )
    if isinstance(exc, ConnectionRefusedError):
        return Category.UNREACHABLE, "cannot reach the server: connection refused"
    if isinstance(exc, ConnectionError):
        return Category.UNREACHABLE, f"connection lost trying to {doing}: {text}"
    if isinstance(exc, OSError):
        return Category.UNREACHABLE, f"cannot reach the server: {exc.strerror or text}"
    return Category.SERVER, f"could not {doing}: {type(exc).__name__}: {text}"
