"""The MySQL family's engine: MySQL 5.7/8.0, MariaDB and their Aurora flavours, on aiomysql.

It owns everything rotd says to such a server: connecting with a deadline and the endpoint's
TLS mode, telling the flavour apart (MariaDB or MySQL, and the version), the statements that
change a password (the ``mysql_native_password`` hash where the account's plugin allows it, so
that the plain password never reaches the server's logs) and the ones that keep a clone's
accounts, host parts, grants, roles and ``REQUIRE`` options in line with its original's for
the alternating users strategy. It is the only module that imports aiomysql or PyMySQL: every
driver, socket and TLS failure leaves it as a :class:`rotd.errors.DatabaseError`, and no
server text from a statement that carried a secret is ever quoted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import CLIENT

from rotd.engines import Family, Login, Permission, Session, Tls, TlsMode, lock_key
from rotd.engines.builtin import MYSQL
from rotd.errors import Category, DatabaseError
from rotd.observability import get_logger, redactor
from rotd.passwords import (
    PasswordPolicy,
    generate,
    mysql_holds_password,
    mysql_native_hash,
    shaped_like,
)

log = get_logger(__name__)

# Plugins whose stored password is the mysql_native_password hash; MariaDB leaves the plugin
# empty for accounts made the old way.
NATIVE_PLUGINS = frozenset({"", "mysql_native_password"})
# Plugins that authenticate with a password rotd can give (socket, PAM, GSSAPI, LDAP and IAM
# logins cannot be rotated).
PASSWORD_PLUGINS = NATIVE_PLUGINS | {
    "caching_sha2_password",
    "sha256_password",
    "ed25519",
    "parsec",
}

# What each server error means to an operator. 1045 and the connection codes are handled
# apart because their reason names the login or the address.
_SERVER_ERRORS: dict[int, tuple[Category, str]] = {
    1040: (Category.SERVER, "the server has too many connections"),
    1044: (Category.PERMISSION, "access to the database is denied"),
    1046: (Category.NOT_FOUND, "no database is selected (the endpoint names none)"),
    1049: (Category.NOT_FOUND, "the database does not exist"),
    1053: (Category.SERVER, "the server is shutting down"),
    1064: (Category.UNSUPPORTED, "the server does not understand rotd's statement"),
    1129: (Category.AUTH, "this client host is blocked after connection errors (FLUSH HOSTS)"),
    1130: (Category.AUTH, "this client host may not log in as that user"),
    1132: (Category.PERMISSION, "changing another account's password needs more privileges"),
    1133: (Category.NOT_FOUND, "the account does not exist"),
    1141: (Category.NOT_FOUND, "the grant does not exist"),
    1142: (Category.PERMISSION, "a table privilege is missing"),
    1143: (Category.PERMISSION, "a column privilege is missing"),
    1146: (Category.NOT_FOUND, "a table does not exist"),
    1203: (Category.THROTTLED, "the user has too many connections"),
    1205: (Category.TIMEOUT, "a lock wait timed out"),
    1211: (Category.PERMISSION, "the login may not create users"),
    1213: (Category.SERVER, "a deadlock was detected"),
    1226: (Category.THROTTLED, "the user exceeded a resource limit"),
    1227: (Category.PERMISSION, "a privilege is missing"),
    1235: (Category.UNSUPPORTED, "this server version does not support the statement"),
    1251: (Category.UNSUPPORTED, "the server asks for an authentication plugin rotd lacks"),
    1290: (Category.SERVER, "the server is read-only (a replica?)"),
    1317: (Category.SERVER, "the statement was interrupted"),
    1370: (Category.PERMISSION, "a routine privilege is missing"),
    1396: (Category.NOT_FOUND, "the account does not exist"),
    1410: (Category.PERMISSION, "the login may not create users with GRANT"),
    1470: (Category.NAME_TOO_LONG, "the user name is too long for this server"),
    1524: (Category.UNSUPPORTED, "the authentication plugin is not loaded"),
    1698: (Category.AUTH, "the login was refused"),
    1819: (Category.BAD_SECRET, "the new password does not satisfy the server's policy"),
    1820: (Category.AUTH, "the login's password has expired"),
    1862: (Category.AUTH, "the login's password has expired"),
    1927: (Category.UNREACHABLE, "the connection was killed"),
    1969: (Category.TIMEOUT, "the statement ran past max_statement_time"),
    2026: (Category.TLS, "the TLS handshake failed"),
    2059: (Category.UNSUPPORTED, "the server asks for an authentication plugin rotd lacks"),
    2061: (Category.TLS, "the account's plugin needs a TLS connection"),
    3024: (Category.TIMEOUT, "the statement ran past max_execution_time"),
    3118: (Category.AUTH, "the account is locked"),
    3159: (Category.TLS, "the server accepts only TLS connections"),
    3523: (Category.NOT_FOUND, "a role named in the original's grants does not exist"),
    3530: (
        Category.NOT_FOUND,
        "a role is not granted to the account (its grants changed while rotd copied them? "
        "run again; if it persists, compare the original's roles and default roles)",
    ),
    3638: (
        Category.BAD_SECRET,
        "the account's password history (password_history, password_reuse_interval) refuses "
        "the new password as used before",
    ),
    3891: (
        Category.AUTH,
        "the server refuses the current password given in REPLACE: the login may have been made "
        "with a secondary password kept by RETAIN CURRENT PASSWORD; remove it with ALTER USER "
        "... DISCARD OLD PASSWORD",
    ),
    3892: (
        Category.PERMISSION,
        "the account must give its current password to change it (PASSWORD REQUIRE CURRENT); "
        "set a master login for the secret, or ALTER USER ... PASSWORD REQUIRE CURRENT OPTIONAL",
    ),
    3893: (Category.UNSUPPORTED, "the server refuses a current password for this change"),
    3955: (
        Category.AUTH,
        "the account is blocked after too many failed logins (FAILED_LOGIN_ATTEMPTS, "
        "PASSWORD_LOCK_TIME), and rotd's own tries of older passwords count; unlock it with "
        "ALTER USER ... ACCOUNT UNLOCK",
    ),
    4151: (Category.AUTH, "the account is locked"),
}
# Error 1227 names the missing privilege; a target holding SYSTEM_USER needs it in the changer.
_SYSTEM_USER_MISSING = (
    Category.PERMISSION,
    "the account holds SYSTEM_USER, so only a login with SYSTEM_USER may change it: "
    "GRANT SYSTEM_USER to the master login, or revoke it from the account",
)
# The server refusing a password for what it is (validate_password, password_reuse_check,
# the account's password history): the statement changed nothing.
_PASSWORD_REFUSED = frozenset({1819, 3638})
# Error 1396 ("Operation ... failed for ...") means different things after different statements.
_CREATE_USER_ERRORS = {1396: (Category.CONFLICT, "the account was created by someone else")}
_SET_PASSWORD_ERRORS = {
    1396: (
        Category.UNSUPPORTED,
        "the account's authentication plugin takes no password, or the account was just dropped",
    )
}
# MySQL 8's static privileges; any other privilege name is dynamic (BACKUP_ADMIN, ...), and
# its grant option is its own rather than the level's.
_STATIC_PRIVILEGES = frozenset(
    {
        "ALL PRIVILEGES", "ALTER", "ALTER ROUTINE", "CREATE", "CREATE ROLE", "CREATE ROUTINE",
        "CREATE TABLESPACE", "CREATE TEMPORARY TABLES", "CREATE USER", "CREATE VIEW", "DELETE",
        "DROP", "DROP ROLE", "EVENT", "EXECUTE", "FILE", "GRANT OPTION", "INDEX", "INSERT",
        "LOCK TABLES", "PROCESS", "PROXY", "REFERENCES", "RELOAD", "REPLICATION CLIENT",
        "REPLICATION SLAVE", "SELECT", "SHOW DATABASES", "SHOW VIEW", "SHUTDOWN", "SUPER",
        "TRIGGER", "UPDATE", "USAGE",
    }
)  # fmt: skip
_WITH_OPTION = " WITH GRANT OPTION"
# Client-side codes for a connection that could not be made or was lost.
_CONNECTION_LOST = frozenset({2002, 2003, 2005, 2006, 2013, 2055})
_AUTH_REFUSED = 1045
# A rotation takes its lock once and again before each write: a handful of holds at most.
_UNLOCK_MAX = 32


class _TlsNotOffered(Exception):
    """The server did not offer TLS to a login whose mode requires it."""


class _UnreadableGrant(Exception):
    """A SHOW GRANTS line of a shape rotd does not know; carries only its first word."""

    def __init__(self, first_word: str) -> None:
        super().__init__(first_word)
        self.first_word = first_word


@dataclass(frozen=True)
class Flavour:
    """Which server this is, as far as the statements rotd sends depend on it."""

    mariadb: bool
    version: tuple[int, int, int]

    @classmethod
    def parse(cls, version: str) -> Flavour:
        """From ``SELECT VERSION()``: ``10.11.6-MariaDB-log``, ``8.0.35``, ``8.0.mysql_aurora…``."""
        match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
        numbers = tuple(int(n or 0) for n in match.groups()) if match else (0, 0, 0)
        return cls(
            mariadb="mariadb" in version.lower(), version=(numbers[0], numbers[1], numbers[2])
        )

    def __str__(self) -> str:
        return f"{'MariaDB' if self.mariadb else 'MySQL'} {'.'.join(map(str, self.version))}"

    @property
    def max_username(self) -> int:
        if self.mariadb:
            return 80 if self.version >= (10, 0, 0) else 16
        return 32 if self.version >= (5, 7, 0) else 16

    @property
    def has_alter_user(self) -> bool:
        """ALTER USER with IDENTIFIED and REQUIRE, and CREATE USER with REQUIRE."""
        return self.version >= ((10, 2, 0) if self.mariadb else (5, 7, 6))

    @property
    def dynamic(self) -> bool:
        """MySQL 8's dynamic privileges, each with a grant option of its own."""
        return not self.mariadb and self.version >= (8, 0, 0)

    @property
    def has_roles(self) -> bool:
        return self.version >= ((10, 0, 5) if self.mariadb else (8, 0, 0))

    @property
    def has_dual_passwords(self) -> bool:
        """MySQL 8.0.14's ``RETAIN CURRENT PASSWORD`` and ``DISCARD OLD PASSWORD``: an account
        holds a primary and a secondary password. MariaDB has no such thing."""
        return not self.mariadb and self.version >= (8, 0, 14)


@dataclass(frozen=True)
class _Account:
    """One ``'user'@'host'`` row of ``mysql.user``, with what a clone must copy from it."""

    user: str
    host: str
    plugin: str
    # ssl_type, ssl_cipher, x509_issuer, x509_subject
    require: tuple[str, str, str, str]
    # max_questions, max_updates, max_connections, max_user_connections[, max_statement_time]
    limits: tuple[str, ...]


@dataclass
class _Privileges:
    """What SHOW GRANTS says one account holds, keyed so that two accounts can be compared.

    Privilege items are the server's own text (``SELECT``, ``UPDATE (`col`)``, ``GRANT OPTION``)
    under the server's own text for the object (``*.*``, ```db`.*``, ``PROCEDURE `db`.`p```).
    """

    on: dict[str, set[str]] = field(default_factory=dict)
    revoked: dict[str, set[str]] = field(default_factory=dict)  # MySQL 8 partial revokes
    roles: dict[str, bool] = field(default_factory=dict)  # role -> WITH ADMIN OPTION
    default_roles: frozenset[str] = frozenset()


class _Connection(aiomysql.Connection):  # type: ignore[misc]
    """aiomysql's connection, refusing to authenticate in clear when TLS is required.

    aiomysql starts TLS only when the server offers it and otherwise goes on in clear, so the
    check has to sit between the server's greeting and the login packet.
    """

    def __init__(self, *, tls_required: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tls_required = tls_required

    async def _request_authentication(self) -> None:
        if self._tls_required and not self.server_capabilities & CLIENT.SSL:
            raise _TlsNotOffered
        await super()._request_authentication()


class _Cursor(aiomysql.Cursor):  # type: ignore[misc]
    """A cursor that logs server warnings, scrubbed, instead of raising Python warnings.

    aiomysql passes each server note to ``warnings.warn`` as raw text, which would bypass the
    redactor and turn into an exception wherever warnings are errors.
    """

    async def _show_warnings(self, conn: Any) -> None:
        if self._result and self._result.has_next:
            return
        for level, code, message in await conn.show_warnings() or ():
            log.debug("mysql.warned", level=level, code=code, message=redactor.scrub(str(message)))


class MysqlEngine:
    """Opens sessions on MySQL-family servers."""

    family = Family.MYSQL
    info = MYSQL

    def connect(self, login: Login, *, timeout_s: float) -> AbstractAsyncContextManager[Session]:
        return self._session(login, timeout_s)

    @asynccontextmanager
    async def _session(self, login: Login, timeout_s: float) -> AsyncIterator[MysqlSession]:
        session = await MysqlSession.open(login, timeout_s=timeout_s)
        try:
            yield session
        finally:
            await session.close()


class MysqlSession:
    """One connection as one login. Every statement has the session's deadline."""

    def __init__(self, login: Login, conn: Any, flavour: Flavour, timeout_s: float) -> None:
        self._login = login
        self._conn = conn
        self._timeout_s = timeout_s
        self.flavour = flavour

    @classmethod
    async def open(cls, login: Login, *, timeout_s: float) -> MysqlSession:
        """Connect as ``login`` and learn the server's flavour; raise DatabaseError on failure."""
        redactor.add(login.password, mysql_native_hash(login.password))
        endpoint = login.endpoint
        tls = _ssl_context(login)
        conn = _Connection(
            tls_required=endpoint.tls.mode not in (TlsMode.DISABLE, TlsMode.PREFER),
            host=endpoint.host,
            port=endpoint.port,
            user=login.username,
            password=_wire_password(login.password),
            db=endpoint.dbname,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=timeout_s,
            ssl=tls,
            cursorclass=_Cursor,
        )
        error: DatabaseError
        try:
            async with asyncio.timeout(timeout_s):
                await conn._connect()
        except BaseException as exc:
            conn.close()
            if not isinstance(exc, Exception):
                raise
            error = _connect_error(login, exc, timeout_s)
        else:
            session = cls(login, conn, Flavour(mariadb=False, version=(0, 0, 0)), timeout_s)
            try:
                rows = await session._run("SELECT VERSION()", doing="reading the server version")
            except BaseException:
                await session.close()
                raise
            session.flavour = Flavour.parse(str(rows[0][0]))
            return session
        raise error

    @property
    def username(self) -> str:
        return self._login.username

    async def close(self) -> None:
        conn = self._conn
        if conn.closed:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await conn.ensure_closed()
        except Exception as exc:  # the server is going away anyway; say so and move on
            log.debug("mysql.close_failed", error=type(exc).__name__)
        finally:
            conn.close()

    async def check_username(self, name: str) -> None:
        limit = self.flavour.max_username
        if len(name) > limit:
            raise self._error(
                Category.NAME_TOO_LONG,
                f"user name {name!r} is {len(name)} characters long; "
                f"{self.flavour} allows at most {limit}",
            )

    async def set_own_password(self, new_password: str) -> None:
        hashed = mysql_native_hash(new_password)
        redactor.add(new_password, hashed)
        lit = self._conn.escape
        doing = f"changing the password of {self.username!r} (the logged-in user)"
        if self.flavour.mariadb:
            # SET PASSWORD without FOR needs no privilege; ALTER USER would need CREATE USER.
            if await self._own_plugin() in NATIVE_PLUGINS:
                sql = f"SET PASSWORD = {lit(hashed)}"
            else:
                sql = f"SET PASSWORD = PASSWORD({lit(new_password)})"
        elif self.flavour.has_alter_user:
            # The one form MySQL lets an account without CREATE USER use on itself; MySQL masks
            # the password in its logs. REPLACE satisfies password_require_current.
            sql = f"ALTER USER USER() IDENTIFIED BY {lit(new_password)}"
            if self.flavour.version >= (8, 0, 13):
                sql += f" REPLACE {lit(self._login.password)}"
        else:
            sql = f"SET PASSWORD = {lit(hashed)}"
        await self._run(sql, doing=doing, secret=True)
        # A later REPLACE clause must name the password the account has now.
        self._login = dataclasses.replace(self._login, password=new_password)

    async def set_password(self, username: str, new_password: str) -> None:
        hashed = mysql_native_hash(new_password)
        redactor.add(new_password, hashed)
        accounts = await self._accounts(username)
        if not accounts:
            raise self._error(Category.NOT_FOUND, f"user {username!r} has no account here")
        for account in accounts:
            if not await self._holds_password(account.user, account.host, new_password):
                await self._set_account_password(
                    account.user, account.host, account.plugin, new_password
                )

    async def may_keep_several_passwords(self, username: str) -> Permission | None:
        """MySQL 8.0.14+: RETAIN CURRENT PASSWORD needs APPLICATION_PASSWORD_ADMIN on one's
        own account and CREATE USER on another's; None on servers without dual passwords."""
        if not self.flavour.has_dual_passwords:
            return None
        user, host, own = await self._own_grants()
        return _retain_verdict(
            own, user, host, self._account_sql(user, host), own_account=username == self.username
        )

    async def set_passwords(self, username: str, passwords: Sequence[str]) -> None:
        """MySQL keeps two: ``passwords[0]`` becomes the primary with the one the account has
        now kept as secondary (AWSCURRENT's, the session logged in with it), in one statement,
        so no login is refused at any instant. One password only: the secondary is dropped.

        A resumed rotation must not set the newest again: that would retain it over itself and
        drop AWSCURRENT's. Only that statement gives the account its newest password, so an
        account that already takes it has had it done. On one's own account the statement's
        REPLACE clause tells: the server refuses it (3891) once the primary is no longer the
        password the session logged in with; only then does rotd try a login with the newest,
        since a refused login counts towards FAILED_LOGIN_ATTEMPTS."""
        newest = passwords[0]
        redactor.add(newest, mysql_native_hash(newest))
        if username == self.username:
            if newest != self._login.password:
                await self._retain_own(newest)
            if len(passwords) == 1:
                await self._run(
                    _discard_sql(self.flavour, "USER()"),
                    doing=f"dropping the old password of {username!r} (the logged-in user)",
                )
            return
        accounts = await self._accounts(username)
        if not accounts:
            raise self._error(Category.NOT_FOUND, f"user {username!r} has no account here")
        lit = self._conn.escape
        for account in accounts:
            target = self._account_sql(account.user, account.host)
            doing = f"changing the password of {_show(account.user, account.host)}"
            if not await self._holds_password(account.user, account.host, newest):
                await self._run(
                    _retain_sql(self.flavour, target, lit(newest), None),
                    doing=doing + " (keeping the current one)",
                    secret=True,
                    meanings=_SET_PASSWORD_ERRORS,
                )
            if len(passwords) == 1:
                await self._run(
                    _discard_sql(self.flavour, target), doing=f"dropping the old password ({doing})"
                )

    async def _retain_own(self, new_password: str) -> None:
        lit = self._conn.escape
        sql = _retain_sql(self.flavour, "USER()", lit(new_password), lit(self._login.password))
        try:
            await self._run(
                sql,
                doing=f"adding a password to {self.username!r} (the logged-in user), "
                "keeping its own",
                secret=True,
                meanings=_SET_PASSWORD_ERRORS,
            )
        except DatabaseError as exc:
            # REPLACE refused: the primary changed since this session logged in, to the new
            # password if a rotation cut after this statement is being resumed.
            if exc.category is not Category.AUTH or not await self._logs_in_with(new_password):
                raise
        # A later REPLACE clause must name the account's primary password.
        self._login = dataclasses.replace(self._login, password=new_password)

    async def _logs_in_with(self, password: str) -> bool:
        """Whether the logged-in user's account takes ``password`` (one more login)."""
        login = dataclasses.replace(self._login, password=password)
        try:
            other = await MysqlSession.open(login, timeout_s=self._timeout_s)
        except DatabaseError as exc:
            if exc.category is Category.AUTH:
                return False
            raise
        await other.close()
        log.info("mysql_password.already_set", user=self.username)
        return True

    async def mirror_user(self, original: str, clone: str, new_password: str) -> None:
        hashed = mysql_native_hash(new_password)
        redactor.add(new_password, hashed)
        await self.check_username(clone)
        originals = await self._accounts(original)
        if not originals:
            raise self._error(Category.NOT_FOUND, f"user {original!r} has no account here")
        clones = {account.host: account for account in await self._accounts(clone)}
        for source in originals:
            target = clones.pop(source.host, None)
            if target is None:
                # The new clone must not accept the pending password before it holds every
                # grant: a cut in between would leave a working login without privileges.
                placeholder = _placeholder(new_password)
                redactor.add(placeholder, mysql_native_hash(placeholder))
                await self._create_clone(source, clone, placeholder)
            elif (target.require, target.limits) != (source.require, source.limits):
                await self._copy_options(source, clone)
            await self._copy_password_options(source, clone, created=target is None)
            await self._sync_privileges(source.user, clone, source.host)
            if target is None or not await self._holds_password(clone, source.host, new_password):
                await self._set_account_password(clone, source.host, source.plugin, new_password)
        for host in clones:
            # A host part the original no longer has: rotd does not drop accounts, and leaves
            # this one's password and grants alone, so an operator should look at it.
            log.warning("mysql_clone.extra_host_left", clone=clone, host=host, original=original)

    async def run_test(self, query: str | None) -> None:
        await self._test("SELECT 1")
        if not query:
            return
        await self._run("START TRANSACTION", doing="starting the test transaction")
        try:
            await self._test(query)
        except DatabaseError:
            await self._rollback_quietly()
            raise
        await self._run("ROLLBACK", doing="rolling back the test transaction")

    async def try_lock(self, key: str) -> bool:
        """A named lock (``GET_LOCK``), held by this connection until it closes or dies."""
        _, name = lock_key(key)
        rows = await self._run(
            f"SELECT GET_LOCK({self._conn.escape(name)}, 0)", doing="taking the rotation lock"
        )
        return bool(rows and rows[0][0] == 1)

    async def unlock(self, key: str) -> None:
        """``GET_LOCK`` counts how often this session took the lock (MySQL 5.7 and later,
        MariaDB 10.0.2 and later): release it until the server says it is no longer ours."""
        _, name = lock_key(key)
        for _ in range(_UNLOCK_MAX):
            rows = await self._run(
                f"SELECT RELEASE_LOCK({self._conn.escape(name)})",
                doing="releasing the rotation lock",
            )
            if not rows or rows[0][0] != 1:
                return
        raise self._error(
            Category.SERVER, f"the rotation lock was still held after {_UNLOCK_MAX} releases"
        )

    async def ping(self) -> None:
        await self._run("SELECT 1", doing="checking that the session still works")

    # -- read-only checks (rotd doctor) --------------------------------------------------

    async def tls_in_use(self) -> bool:
        rows = await self._run(
            "SHOW SESSION STATUS LIKE 'Ssl_cipher'", doing="reading whether the connection uses TLS"
        )
        return bool(rows and _text(rows[0][1]))

    async def may_set_own_password(self) -> Permission:
        """No privilege is needed; the account's plugin must take a password it can be given."""
        user, host, own = await self._own_grants()
        refused = await self._refusal_to_write(user, host, own)
        if refused is not None:
            return refused
        plugin = await self._own_plugin()
        if plugin not in PASSWORD_PLUGINS:
            return Permission(
                False,
                f"{_show(user, host)} authenticates with {plugin!r}, which takes no password "
                "that rotd can set",
                "make it an account that logs in with a password (mysql_native_password, "
                "caching_sha2_password, ed25519)",
            )
        how = "ALTER USER USER()" if self.flavour.has_alter_user else "SET PASSWORD"
        if self.flavour.mariadb:
            how = "SET PASSWORD"
        return Permission(
            True,
            f"{self.flavour} lets every account change its own password ({how}) without a "
            f"privilege; {_show(user, host)} uses {plugin or 'mysql_native_password'}",
        )

    async def may_set_password(self, username: str) -> Permission:
        """CREATE USER (or UPDATE on the mysql database), and reading ``username``'s accounts."""
        user, host, own = await self._own_grants()
        refused = await self._refusal_to_write(user, host, own)
        if refused is not None:
            return refused
        master = self._account_sql(user, host)
        global_ = own.on.get("*.*", set())
        system = own.on.get("`mysql`.*", set())
        if not (
            global_ & {"ALL PRIVILEGES", "CREATE USER"} or system & {"ALL PRIVILEGES", "UPDATE"}
        ):
            return Permission(
                False,
                f"{_show(user, host)} has neither CREATE USER nor UPDATE on the mysql database",
                f"GRANT CREATE USER ON *.* TO {master}",
            )
        accounts = await self._readable_accounts(username, user, host)
        if isinstance(accounts, Permission):
            return accounts
        guarded = await self._system_user_refusal(accounts, user, host, own)
        if guarded is not None:
            return guarded
        hosts = ", ".join(repr(a.host) for a in accounts)
        return Permission(
            True, f"{_show(user, host)} may change the password of {username!r} (hosts {hosts})"
        )

    async def _system_user_refusal(
        self, accounts: Sequence[_Account], user: str, host: str, own: _Privileges
    ) -> Permission | None:
        """MySQL 8.0.16+: an account holding SYSTEM_USER may be changed only by a login that
        has SYSTEM_USER too (error 1227 otherwise)."""
        if self.flavour.mariadb or self.flavour.version < (8, 0, 16):
            return None
        if _holds(own, "*.*", "SYSTEM_USER"):
            return None
        for account in accounts:
            try:
                theirs = await self._privileges(account.user, account.host)
            except DatabaseError as exc:
                if exc.category is not Category.PERMISSION:
                    raise
                return _cannot_read_accounts(
                    account.user, user, host, self._account_sql(user, host)
                )
            if _holds(theirs, "*.*", "SYSTEM_USER"):
                return Permission(
                    False,
                    f"{_show(account.user, account.host)} holds SYSTEM_USER, so only a login "
                    f"with SYSTEM_USER may change it, and {_show(user, host)} lacks it",
                    f"GRANT SYSTEM_USER ON *.* TO {self._account_sql(user, host)}",
                )
        return None

    async def accepts_passwords(self, policy: PasswordPolicy) -> Permission:
        """Whether the server's password policy (MySQL's validate_password, MariaDB's
        simple_password_check) takes every password rotd makes with ``policy``."""
        rows = await self._run(
            "SHOW GLOBAL VARIABLES WHERE Variable_name LIKE 'validate\\_password%' "
            "OR Variable_name LIKE 'simple\\_password\\_check%'",
            doing="reading the server's password policy",
        )
        settings = {_text(name).replace(".", "_"): _text(value) for name, value in rows}
        return _policy_verdict(settings, policy)

    async def may_mirror_user(self, original: str, clone: str) -> Permission:
        """CREATE USER, and every privilege and role of ``original`` held with GRANT (ADMIN)
        OPTION at the same or an enclosing level, which is what GRANT asks of the grantor."""
        user, host, own = await self._own_grants()
        refused = await self._refusal_to_write(user, host, own)
        if refused is not None:
            return refused
        master = self._account_sql(user, host)
        me = _show(user, host)
        global_ = own.on.get("*.*", set())
        if not global_ & {"ALL PRIVILEGES", "CREATE USER"}:
            return Permission(
                False,
                f"{me} lacks CREATE USER, needed to create and alter {clone!r}",
                f"GRANT CREATE USER ON *.* TO {master}",
            )
        accounts = await self._readable_accounts(original, user, host)
        if isinstance(accounts, Permission):
            return accounts
        # Both users of the pair have their passwords changed in turn.
        guarded = await self._system_user_refusal(
            [*accounts, *await self._accounts(clone)], user, host, own
        )
        if guarded is not None:
            return guarded
        # MySQL lets ROLE_ADMIN (or SUPER) grant any role; MariaDB asks for the ADMIN OPTION.
        any_role = not self.flavour.mariadb and bool(
            global_ & {"ALL PRIVILEGES", "SUPER", "ROLE_ADMIN"}
        )
        missing: dict[str, set[str]] = {}
        roles: list[str] = []
        for account in accounts:
            try:
                theirs = await self._privileges(account.user, account.host)
            except DatabaseError as exc:
                if exc.category is not Category.PERMISSION:
                    raise
                return _cannot_read_accounts(original, user, host, master)
            for target, items in theirs.on.items():
                for item in _needed_to_grant(items, dynamic=self.flavour.dynamic):
                    if not _holds(own, target, item):
                        missing.setdefault(target, set()).add(item)
            roles += [r for r in theirs.roles if not (any_role or own.roles.get(r))]
        if missing or roles:
            lacks = [f"{', '.join(sorted(items))} ON {t}" for t, items in sorted(missing.items())]
            lacks += [f"{role} WITH ADMIN OPTION" for role in dict.fromkeys(roles)]
            fixes = [
                statement
                for target, items in sorted(missing.items())
                for statement in _grant_statements(
                    items | ({"GRANT OPTION"} if items - _grantable(items) else set()),
                    target,
                    master,
                    dynamic=self.flavour.dynamic,
                )
            ]
            fixes += [
                f"GRANT {role} TO {master} WITH ADMIN OPTION" for role in dict.fromkeys(roles)
            ]
            through_roles = (
                " (privileges held through its roles are not counted)" if own.roles else ""
            )
            return Permission(
                False,
                f"{me} cannot grant {clone!r} everything {original!r} holds: it lacks "
                + "; ".join(lacks)
                + through_roles,
                "; ".join(fixes),
            )
        hosts = ", ".join(repr(a.host) for a in accounts)
        unmirrored: list[str] = []
        if self.flavour.has_alter_user:
            for account in accounts:
                rows = await self._run(
                    f"SHOW CREATE USER {self._account_sql(account.user, account.host)}",
                    doing=f"reading the account options of {_show(account.user, account.host)}",
                )
                unmirrored += _unmirrored_options(_text(rows[0][0])) if rows else []
        not_copied = (
            f"; {original!r} has {', '.join(dict.fromkeys(unmirrored))}, which {clone!r} does "
            "not get (rotd copies password expiry, history, reuse and failed-login options only)"
            if unmirrored
            else ""
        )
        return Permission(
            True,
            f"{me} has CREATE USER and holds every privilege and role of {original!r} "
            f"(hosts {hosts}) with the option to grant it{not_copied}",
        )

    async def _own_grants(self) -> tuple[str, str, _Privileges]:
        """The logged-in account and its own grants (SHOW GRANTS needs no privilege for it)."""
        doing = "reading the grants of the logged-in account"
        rows = await self._run("SELECT CURRENT_USER()", doing=doing)
        user, _, host = _text(rows[0][0]).rpartition("@")
        rows = await self._run("SHOW GRANTS FOR CURRENT_USER()", doing=doing)
        try:
            lines = [_text(row[0]) for row in rows]
            return user, host, _parse_grants(lines, user, host, dynamic=self.flavour.dynamic)
        except _UnreadableGrant as exc:
            raise self._error(
                Category.UNSUPPORTED,
                f"{doing}: cannot read a SHOW GRANTS line starting {exc.first_word!r}",
            ) from None

    async def _refusal_to_write(self, user: str, host: str, own: _Privileges) -> Permission | None:
        """Why this login cannot change accounts on a read-only server, if it cannot."""
        mariadb = self.flavour.mariadb
        sql = "SELECT @@global.read_only" + ("" if mariadb else ", @@global.super_read_only")
        rows = await self._run(sql, doing="reading whether the server is writable")
        flags = [_text(value) not in ("0", "OFF", "") for value in rows[0]]
        exempt = own.on.get("*.*", set()) & {
            "ALL PRIVILEGES",
            "SUPER",
            "READ_ONLY ADMIN",
            "CONNECTION_ADMIN",
        }
        if any(flags[1:]) or (flags[0] and not exempt):
            setting = "super_read_only" if any(flags[1:]) else "read_only"
            return Permission(
                False,
                f"the server is read-only ({setting} is ON) for {_show(user, host)}: a replica?",
                "point the secret or the inventory at the primary (writer) endpoint",
            )
        return None

    async def _readable_accounts(
        self, username: str, user: str, host: str
    ) -> list[_Account] | Permission:
        try:
            accounts = await self._accounts(username)
        except DatabaseError as exc:
            if exc.category is not Category.PERMISSION:
                raise
            return _cannot_read_accounts(username, user, host, self._account_sql(user, host))
        if not accounts:
            return Permission(
                False,
                f"user {username!r} has no account here",
                "create it, or fix the username in the secret",
            )
        return accounts

    # -- statements ----------------------------------------------------------------------

    async def _run(
        self,
        sql: str,
        *,
        doing: str,
        secret: bool = False,
        meanings: Mapping[int, tuple[Category, str]] | None = None,
        all_results: bool = False,
    ) -> list[tuple[Any, ...]]:
        """Run one statement within the deadline; return the rows of its first result.

        ``secret`` marks a statement that carries a password or hash: its failure is reported
        by error code only, never with the server's text, which may quote the statement.
        """
        error: DatabaseError
        try:
            async with asyncio.timeout(self._timeout_s):
                cursor = await self._conn.cursor()
                await cursor.execute(sql)
                rows = [tuple(row) for row in await cursor.fetchall()]
                if all_results:
                    while await cursor.nextset():
                        pass
                await cursor.close()
            return rows
        except Exception as exc:
            error = self._statement_error(exc, doing=doing, secret=secret, meanings=meanings)
        # Raised outside the handler so that the driver's exception, whose text may quote the
        # statement, is not kept as this error's context.
        raise error

    async def _test(self, query: str) -> None:
        try:
            await self._run(query, doing="running the test query", all_results=True)
        except DatabaseError as exc:
            if exc.category in (Category.UNREACHABLE, Category.TIMEOUT):
                raise
            raise self._error(Category.TEST_FAILED, exc.reason) from None

    async def _rollback_quietly(self) -> None:
        try:
            await self._run("ROLLBACK", doing="rolling back the test transaction")
        except DatabaseError as exc:
            log.debug("mysql.rollback_failed", reason=exc.reason)

    def _error(self, category: Category, reason: str) -> DatabaseError:
        endpoint = self._login.endpoint
        return DatabaseError(endpoint.host, endpoint.port, category, redactor.scrub(reason))

    def _statement_error(
        self,
        exc: Exception,
        *,
        doing: str,
        secret: bool,
        meanings: Mapping[int, tuple[Category, str]] | None = None,
    ) -> DatabaseError:
        if isinstance(exc, DatabaseError):
            return exc
        if isinstance(exc, TimeoutError):
            return self._error(Category.TIMEOUT, f"{doing}: no answer within {self._timeout_s:g} s")
        if isinstance(exc, pymysql.err.InterfaceError):
            # aiomysql closes the connection when a statement is cancelled or times out.
            return self._error(Category.UNREACHABLE, f"{doing}: the connection is closed")
        if isinstance(exc, OSError):
            return self._error(Category.UNREACHABLE, f"{doing}: lost the connection")
        if not isinstance(exc, pymysql.err.Error):
            return self._error(Category.SERVER, f"{doing}: unexpected {type(exc).__name__}")
        code, text = _code_and_text(exc)
        if code in _CONNECTION_LOST:
            return self._error(Category.UNREACHABLE, f"{doing}: lost the connection ({text})")
        if code == _AUTH_REFUSED:
            category, meaning = Category.AUTH, "access denied"
        elif code == 1227 and "SYSTEM_USER" in text:
            category, meaning = _SYSTEM_USER_MISSING
        else:
            known = {**_SERVER_ERRORS, **(meanings or {})}
            category, meaning = known.get(code, (Category.SERVER, "the server refused"))
        # The server's text may quote the statement, and so the secret it carried.
        detail = f"MySQL error {code}" if secret else f"MySQL error {code}: {text}"
        error = self._error(category, f"{doing}: {meaning} ({detail})")
        error.password_refused = secret and code in _PASSWORD_REFUSED
        return error

    def _account_sql(self, user: str, host: str) -> str:
        lit = self._conn.escape
        return f"{lit(user)}@{lit(host)}"

    # -- accounts and passwords ------------------------------------------------------------

    async def _accounts(self, user: str) -> list[_Account]:
        """Every account (host part) of ``user``, read from ``mysql.user`` (roles excluded)."""
        mariadb = self.flavour.mariadb
        columns = [
            "User",
            "Host",
            "plugin",
            "ssl_type",
            "ssl_cipher",
            "x509_issuer",
            "x509_subject",
            "max_questions",
            "max_updates",
            "max_connections",
            "max_user_connections",
        ]
        if mariadb and self.flavour.version >= (10, 1, 1):
            columns.append("max_statement_time")
        sql = f"SELECT {', '.join(columns)} FROM mysql.user WHERE User = {self._conn.escape(user)}"
        if mariadb and self.flavour.has_roles:
            sql += " AND is_role <> 'Y'"
        rows = await self._run(sql + " ORDER BY Host", doing=f"looking up the accounts of {user!r}")
        accounts = []
        for row in rows:
            values = [_text(v) for v in row]
            # The column compares with PAD SPACE and, on old servers, case-insensitively.
            if values[0] != user:
                continue
            accounts.append(
                _Account(
                    user=values[0],
                    host=values[1],
                    plugin=values[2],
                    require=(values[3], values[4], values[5], values[6]),
                    limits=tuple(values[7:]),
                )
            )
        return accounts

    async def _own_plugin(self) -> str:
        """The logged-in account's plugin, from SHOW CREATE USER (which needs no privilege)."""
        if not self.flavour.has_alter_user:
            return ""
        rows = await self._run("SELECT CURRENT_USER()", doing="reading the logged-in account")
        user, _, host = str(rows[0][0]).rpartition("@")
        rows = await self._run(
            "SHOW CREATE USER CURRENT_USER()", doing="reading the logged-in account"
        )
        return _plugin_of(str(rows[0][0]), user, host)

    async def _holds_password(self, user: str, host: str, password: str) -> bool:
        """Whether ``'user'@'host'`` already has ``password`` (a resumed rotation set it).

        Setting it again would be refused where the account keeps a password history
        (MySQL's password_history, password_reuse_interval: error 3638), so a resumed
        rotation must not. False when the stored form cannot be checked (ed25519, parsec).
        """
        lit = self._conn.escape
        rows = await self._run(
            "SELECT HEX(authentication_string) FROM mysql.user "
            f"WHERE User = {lit(user)} AND Host = {lit(host)}",
            doing=f"reading whether {_show(user, host)} has the pending password",
        )
        if not rows or rows[0][0] is None:
            return False
        held = mysql_holds_password(bytes.fromhex(_text(rows[0][0])), password)
        if held:
            log.info("mysql_password.already_set", user=user, host=host)
        return bool(held)

    def _identified(self, plugin: str, password: str) -> str:
        """The IDENTIFIED clause giving ``password`` to an account that uses ``plugin``."""
        lit = self._conn.escape
        if plugin in NATIVE_PLUGINS:
            hashed = lit(mysql_native_hash(password))
            if self.flavour.mariadb or not self.flavour.has_alter_user:
                return f"IDENTIFIED BY PASSWORD {hashed}"
            return f"IDENTIFIED WITH mysql_native_password AS {hashed}"
        # Only the server can hash for these plugins (caching_sha2_password, ed25519, ...).
        if self.flavour.mariadb:
            return f"IDENTIFIED VIA {lit(plugin)} USING PASSWORD({lit(password)})"
        if self.flavour.has_alter_user:
            return f"IDENTIFIED WITH {lit(plugin)} BY {lit(password)}"
        raise self._error(
            Category.UNSUPPORTED, f"rotd sets {plugin!r} passwords only on MySQL 5.7.6 and later"
        )

    async def _set_account_password(self, user: str, host: str, plugin: str, password: str) -> None:
        account = self._account_sql(user, host)
        doing = f"changing the password of {_show(user, host)}"
        if self.flavour.has_alter_user:
            sql = f"ALTER USER {account} {self._identified(plugin, password)}"
        elif plugin in NATIVE_PLUGINS:
            sql = f"SET PASSWORD FOR {account} = {self._conn.escape(mysql_native_hash(password))}"
        else:
            sql = f"SET PASSWORD FOR {account} = PASSWORD({self._conn.escape(password)})"
        await self._run(sql, doing=doing, secret=True, meanings=_SET_PASSWORD_ERRORS)

    async def _create_clone(self, source: _Account, clone: str, password: str) -> None:
        account = self._account_sql(clone, source.host)
        sql = f"CREATE USER {account} {self._identified(source.plugin, password)}"
        if self.flavour.has_alter_user:
            sql += " " + self._options(source)
        doing = f"creating {_show(clone, source.host)}"
        await self._run(sql, doing=doing, secret=True, meanings=_CREATE_USER_ERRORS)
        if not self.flavour.has_alter_user:
            await self._copy_options(source, clone)

    async def _copy_options(self, source: _Account, clone: str) -> None:
        """Give the clone the original's REQUIRE options and resource limits."""
        account = self._account_sql(clone, source.host)
        if self.flavour.has_alter_user:
            sql = f"ALTER USER {account} {self._options(source)}"
        else:
            sql = f"GRANT USAGE ON *.* TO {account} {self._options(source)}"
        await self._run(sql, doing=f"copying the TLS options of {_show(source.user, source.host)}")

    async def _copy_password_options(self, source: _Account, clone: str, *, created: bool) -> None:
        """Give the clone the original's password expiry, history, reuse interval, current
        password requirement and failed-login limits, as SHOW CREATE USER prints them."""
        if not self.flavour.has_alter_user:
            return
        want = await self._password_options(source.user, source.host)
        have = () if created else await self._password_options(clone, source.host)
        clauses = _option_clauses(want, have)
        if clauses:
            account = self._account_sql(clone, source.host)
            await self._run(
                f"ALTER USER {account} {' '.join(clauses)}",
                doing=f"copying the password options of {_show(source.user, source.host)}",
            )

    async def _password_options(self, user: str, host: str) -> tuple[str, ...]:
        rows = await self._run(
            f"SHOW CREATE USER {self._account_sql(user, host)}",
            doing=f"reading the account options of {_show(user, host)}",
        )
        return _password_options_of(_text(rows[0][0])) if rows else ()

    def _options(self, source: _Account) -> str:
        lit = self._conn.escape
        ssl_type, cipher, issuer, subject = source.require
        if ssl_type == "ANY":
            require = "REQUIRE SSL"
        elif ssl_type == "X509":
            require = "REQUIRE X509"
        elif ssl_type == "SPECIFIED":
            parts = [
                f"{word} {lit(value)}"
                for word, value in (("ISSUER", issuer), ("SUBJECT", subject), ("CIPHER", cipher))
                if value
            ]
            require = "REQUIRE " + (" AND ".join(parts) or "SSL")
        else:
            require = "REQUIRE NONE"
        words = [
            "MAX_QUERIES_PER_HOUR",
            "MAX_UPDATES_PER_HOUR",
            "MAX_CONNECTIONS_PER_HOUR",
            "MAX_USER_CONNECTIONS",
            "MAX_STATEMENT_TIME",
        ]
        for value in source.limits:
            # Pasted into the statement, so only plain numbers may pass.
            if not re.fullmatch(r"-?\d+(\.\d+)?", value):
                raise self._error(
                    Category.UNSUPPORTED,
                    f"unexpected resource limit {value!r} on {_show(source.user, source.host)}",
                )
        limits = " ".join(
            f"{word} {value}" for word, value in zip(words, source.limits, strict=False)
        )
        return f"{require} WITH {limits}"

    # -- privileges ----------------------------------------------------------------------

    async def _privileges(self, user: str, host: str) -> _Privileges:
        account = self._account_sql(user, host)
        doing = f"reading the grants of {_show(user, host)}"
        rows = await self._run(f"SHOW GRANTS FOR {account}", doing=doing)
        try:
            lines = [str(row[0]) for row in rows]
            privileges = _parse_grants(lines, user, host, dynamic=self.flavour.dynamic)
        except _UnreadableGrant as exc:
            # Only the first word: the rest of an unreadable line may hold a password hash.
            raise self._error(
                Category.UNSUPPORTED,
                f"{doing}: cannot read a SHOW GRANTS line starting {exc.first_word!r}",
            ) from None
        if not self.flavour.mariadb and self.flavour.has_roles:
            lit = self._conn.escape
            rows = await self._run(
                "SELECT DEFAULT_ROLE_USER, DEFAULT_ROLE_HOST FROM mysql.default_roles "
                f"WHERE USER = {lit(user)} AND HOST = {lit(host)}",
                doing=doing,
            )
            privileges.default_roles = frozenset(
                self._account_sql(_text(role_user), _text(role_host))
                for role_user, role_host in rows
            )
        return privileges

    async def _sync_privileges(self, original: str, clone: str, host: str) -> None:
        """Grant the clone whatever the original has and it lacks; then revoke the surplus.

        The order keeps the clone at least as privileged as the original at every instant.
        """
        source = await self._privileges(original, host)
        account = self._account_sql(clone, host)
        doing = f"copying the grants of {_show(original, host)} to {_show(clone, host)}"
        have = await self._privileges(clone, host)
        grants: list[str] = []
        for target, items in source.on.items():
            held = have.on.get(target, set())
            # A privilege the clone holds with its grant option needs no plain grant.
            lacking = {i for i in items - held if i + _WITH_OPTION not in held}
            grants += _grant_statements(lacking, target, account, dynamic=self.flavour.dynamic)
        for target, items in have.revoked.items():
            grants += _grant_statements(
                items - source.revoked.get(target, set()),
                target,
                account,
                dynamic=self.flavour.dynamic,
            )
        for role, admin in source.roles.items():
            if role not in have.roles or (admin and not have.roles[role]):
                grants.append(
                    f"GRANT {role} TO {account}" + (" WITH ADMIN OPTION" if admin else "")
                )
        if source.default_roles and source.default_roles != have.default_roles:
            grants.append(self._default_role_statement(source.default_roles, account))
        for sql in grants:
            await self._run(sql, doing=doing)

        have = await self._privileges(clone, host) if grants else have
        revokes: list[str] = []
        for target, items in have.on.items():
            revokes += await self._revoke_statements(
                target, items, source.on.get(target, set()), clone, host
            )
        for target, items in source.revoked.items():
            missing = items - have.revoked.get(target, set())
            if missing:
                revokes.append(f"REVOKE {', '.join(sorted(missing))} ON {target} FROM {account}")
        for role, admin in have.roles.items():
            if role not in source.roles:
                revokes.append(f"REVOKE {role} FROM {account}")
            elif admin and not source.roles[role]:
                if self.flavour.mariadb:
                    revokes.append(f"REVOKE ADMIN OPTION FOR {role} FROM {account}")
                else:  # MySQL has no statement that takes back only the admin option.
                    revokes += [f"REVOKE {role} FROM {account}", f"GRANT {role} TO {account}"]
        if have.default_roles and not source.default_roles:
            revokes.append(self._default_role_statement(frozenset(), account))
        for sql in revokes:
            await self._run(sql, doing=doing)

    async def _revoke_statements(
        self, target: str, have: set[str], want: set[str], clone: str, host: str
    ) -> list[str]:
        account = self._account_sql(clone, host)
        extra = have - want
        options = _option_revokes(extra, want, target, account)
        extra = {i for i in extra if not i.endswith(_WITH_OPTION)}
        if not extra:
            return options
        if "PROXY" in have | want:
            # A proxy grant is one unit: take it back whole, then give back what is due.
            revoke = f"REVOKE PROXY ON {target} FROM {account}"
            return [revoke, *_grant_statements(want, target, account, dynamic=self.flavour.dynamic)]
        if "ALL PRIVILEGES" in extra:
            # Revoking ALL would leave the clone without what the original has for a moment:
            # revoke the individual privileges that ALL stands for, less the original's.
            expanded = await self._expand_all(target, clone, host)
            if not expanded:
                revoke = f"REVOKE ALL PRIVILEGES ON {target} FROM {account}"
                return [
                    revoke,
                    *_grant_statements(want, target, account, dynamic=self.flavour.dynamic),
                ]
            held = want | {item.removesuffix(_WITH_OPTION) for item in want}
            extra = (extra - {"ALL PRIVILEGES"}) | (expanded - held)
        return [f"REVOKE {', '.join(sorted(extra))} ON {target} FROM {account}", *options]

    async def _expand_all(self, target: str, user: str, host: str) -> set[str]:
        """The privileges that ALL PRIVILEGES on ``target`` gives ``'user'@'host'``, or none."""
        if target.split(" ", 1)[0] in ("PROCEDURE", "FUNCTION", "PACKAGE"):
            return {"EXECUTE", "ALTER ROUTINE"}
        lit = self._conn.escape
        # information_schema spells grantees by pasting the names between quotes.
        grantee = lit(f"'{user}'@'{host}'")
        parts = [_unquote(part) for part in _split_top(target, ".")]
        if parts == ["*", "*"]:
            sql = (
                "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES "
                f"WHERE GRANTEE = {grantee}"
            )
        elif len(parts) == 2 and parts[1] == "*":
            sql = (
                "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES "
                f"WHERE GRANTEE = {grantee} AND TABLE_SCHEMA = {lit(parts[0])}"
            )
        elif len(parts) == 2:
            sql = (
                "SELECT PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
                f"WHERE GRANTEE = {grantee} AND TABLE_SCHEMA = {lit(parts[0])} "
                f"AND TABLE_NAME = {lit(parts[1])}"
            )
        else:
            return set()
        rows = await self._run(sql, doing=f"reading the privileges of {_show(user, host)}")
        return {_text(row[0]) for row in rows} - {"USAGE"}

    def _default_role_statement(self, roles: frozenset[str], account: str) -> str:
        listed = ", ".join(sorted(roles)) or "NONE"
        if self.flavour.mariadb:
            return f"SET DEFAULT ROLE {listed} FOR {account}"
        return f"ALTER USER {account} DEFAULT ROLE {listed}"


def _retain_sql(flavour: Flavour, account: str, new: str, replace: str | None) -> str:
    """``ALTER USER`` giving ``account`` the password literal ``new`` as primary and keeping its
    primary as secondary; ``replace``, the current password's literal, for one's own account
    (password_require_current). Raises on servers without dual passwords."""
    if not flavour.has_dual_passwords:
        raise ValueError(f"{flavour} holds one password per account")
    sql = f"ALTER USER {account} IDENTIFIED BY {new}"
    if replace is not None:
        sql += f" REPLACE {replace}"
    return sql + " RETAIN CURRENT PASSWORD"


def _discard_sql(flavour: Flavour, account: str) -> str:
    """``ALTER USER`` dropping ``account``'s secondary password."""
    if not flavour.has_dual_passwords:
        raise ValueError(f"{flavour} holds one password per account")
    return f"ALTER USER {account} DISCARD OLD PASSWORD"


def _retain_verdict(
    own: _Privileges, user: str, host: str, master: str, *, own_account: bool
) -> Permission:
    """Whether ``user``@``host``, holding ``own``, may use RETAIN CURRENT PASSWORD on its own
    account (``own_account``) or on another's."""
    global_ = own.on.get("*.*", set())
    needed = "APPLICATION_PASSWORD_ADMIN" if own_account else "CREATE USER"
    whose = "its own account" if own_account else "another account"
    if global_ & {"ALL PRIVILEGES", needed}:
        return Permission(
            True,
            f"{_show(user, host)} holds {needed}: single user keeps the current password "
            "beside the new one (RETAIN CURRENT PASSWORD), so no application is refused",
        )
    return Permission(
        False,
        f"{_show(user, host)} lacks {needed}, which RETAIN CURRENT PASSWORD needs on {whose}: "
        "single user replaces the password, and applications that still hold the old one are "
        "refused until they read the new one",
        f"GRANT {needed} ON *.* TO {master}",
    )


def _placeholder(new_password: str) -> str:
    """A throwaway password for a new clone, as long and as varied as ``new_password``, so that
    a password policy (``validate_password``) that takes the real one takes it too."""
    policy = shaped_like(new_password)
    return generate(PasswordPolicy() if policy.problem() else policy)


# -- connecting ------------------------------------------------------------------------------


def _wire_password(password: str) -> str:
    """The password as aiomysql must be given it for the server to see its UTF-8 bytes.

    aiomysql encodes passwords as Latin-1, which fails on most non-ASCII text and disagrees
    with the UTF-8 that servers (and :func:`mysql_native_hash`) use. Handing it the UTF-8
    bytes spelled as Latin-1 characters makes its encoding step produce exactly those bytes.
    """
    return password.encode("utf-8").decode("latin-1")


def _ssl_context(login: Login) -> ssl.SSLContext | None:
    tls: Tls = login.endpoint.tls
    if tls.mode is TlsMode.DISABLE:
        return None
    if tls.mode in (TlsMode.PREFER, TlsMode.REQUIRE):
        # Encryption without authentication of the server, as libpq's modes of those names.
        # No CA bundle: nothing is verified, and loading the system's costs ~50 ms of CPU.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        endpoint = login.endpoint
        raise DatabaseError(
            endpoint.host,
            endpoint.port,
            Category.TLS,
            f"cannot load CA file {tls.ca_file!r}: {exc.strerror or exc}",
        ) from None
    context.check_hostname = tls.mode is TlsMode.VERIFY_FULL
    return context


def _connect_error(login: Login, exc: Exception, timeout_s: float) -> DatabaseError:
    endpoint = login.endpoint
    address = endpoint.address

    def error(category: Category, reason: str) -> DatabaseError:
        return DatabaseError(endpoint.host, endpoint.port, category, redactor.scrub(reason))

    if isinstance(exc, _TlsNotOffered):
        return error(
            Category.TLS,
            f"the server does not offer TLS, which tls mode {endpoint.tls.mode.value!r} requires",
        )
    cause: BaseException = exc
    if isinstance(exc, pymysql.err.OperationalError) and exc.__cause__ is not None:
        # aiomysql wraps socket, TLS and timeout failures of the handshake as error 2003.
        cause = exc.__cause__
    if isinstance(cause, TimeoutError):
        return error(Category.TIMEOUT, f"connecting: no answer within {timeout_s:g} s")
    if isinstance(cause, ssl.SSLCertVerificationError):
        return error(Category.TLS, f"the server's certificate is refused: {cause.verify_message}")
    if isinstance(cause, ssl.SSLError):
        return error(Category.TLS, f"the TLS handshake failed: {cause.reason}")
    if isinstance(cause, socket.gaierror):
        return error(Category.UNREACHABLE, f"cannot reach {address}: the name does not resolve")
    if isinstance(cause, ConnectionRefusedError):
        return error(Category.UNREACHABLE, f"cannot reach {address}: connection refused")
    if isinstance(cause, OSError):
        return error(Category.UNREACHABLE, f"cannot reach {address}: {cause.strerror or cause}")
    if isinstance(cause, pymysql.err.Error):
        code, text = _code_and_text(cause)
        if code in (_AUTH_REFUSED, 1698):
            return error(Category.AUTH, f"login refused for user {login.username!r} ({text})")
        if code in _CONNECTION_LOST:
            return error(Category.UNREACHABLE, f"cannot reach {address}: {text}")
        category, meaning = _SERVER_ERRORS.get(code, (Category.SERVER, "the server refused"))
        return error(
            category, f"connecting as {login.username!r}: {meaning} (MySQL error {code}: {text})"
        )
    if isinstance(exc, RuntimeError) and "cryptography" in str(exc):
        # PyMySQL's RSA step of caching_sha2_password / sha256_password without TLS.
        return error(
            Category.UNSUPPORTED,
            f"connecting as {login.username!r}: the server asks for the password encrypted "
            "with its RSA key (caching_sha2_password or sha256_password without TLS), which "
            "needs the Python package cryptography: reinstall rotd with its dependencies, or "
            "use TLS",
        )
    return error(Category.SERVER, f"connecting: unexpected {type(exc).__name__}")


def _code_and_text(exc: pymysql.err.Error) -> tuple[int, str]:
    """The server's error code and scrubbed message; code 0 for driver-side errors."""
    args = exc.args
    if len(args) >= 2 and isinstance(args[0], int):
        return args[0], redactor.scrub(str(args[1]))
    return 0, redactor.scrub(" ".join(str(a) for a in args))


# -- reading what the server prints ----------------------------------------------------------


def _text(value: Any) -> str:
    """A column value as text: MySQL returns some of mysql.user's columns as BLOBs."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _show(user: str, host: str) -> str:
    """An account for a human reader (not for SQL)."""
    return f"'{user}'@'{host}'"


def _outside_quotes(text: str) -> Iterator[tuple[int, str, int]]:
    """Index, character and parenthesis depth of each character of ``text`` outside quotes."""
    quote = ""
    depth = 0
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if (char == "\\" and quote != "`") or (char == quote and text[i + 1 : i + 2] == quote):
                i += 1
            elif char == quote:
                quote = ""
        elif char in "`'\"":
            quote = char
        else:
            depth += (char == "(") - (char == ")")
            yield i, char, depth
        i += 1


def _split_top(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` that is outside quotes and parentheses."""
    parts: list[str] = []
    start = 0
    for i, _char, depth in _outside_quotes(text):
        if depth == 0 and i >= start and text.startswith(separator, i):
            parts.append(text[start:i])
            start = i + len(separator)
    parts.append(text[start:])
    return parts


def _unquote(identifier: str) -> str:
    identifier = identifier.strip()
    if len(identifier) >= 2 and identifier[0] == identifier[-1] == "`":
        return identifier[1:-1].replace("``", "`")
    return identifier


def _account_forms(user: str, host: str) -> list[str]:
    """The ways a server may print ``'user'@'host'`` in SHOW GRANTS and SHOW CREATE USER."""

    def quoted(text: str, quote: str) -> str:
        return quote + text.replace(quote, quote * 2) + quote

    def backslashed(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    forms = [
        quoted(user, "`") + "@" + quoted(host, "`"),  # MariaDB, MySQL 8
        f"'{user}'@'{host}'",  # MySQL 5.7 pastes the names in quotes
        quoted(user, "'") + "@" + quoted(host, "'"),
        backslashed(user) + "@" + backslashed(host),
        quoted(user, '"') + "@" + quoted(host, '"'),  # sql_mode ANSI_QUOTES
    ]
    return list(dict.fromkeys(forms))


def _split_at_account(line: str, keyword: str, forms: Sequence[str]) -> tuple[str, str] | None:
    """``line`` cut around the first `` KEYWORD account`` that ends a word: (before, after)."""
    best: tuple[int, int] | None = None
    for form in forms:
        needle = f" {keyword} {form}"
        start = 0
        while (i := line.find(needle, start)) >= 0:
            end = i + len(needle)
            if end == len(line) or line[end] == " ":
                if best is None or i < best[0]:
                    best = (i, end)
                break
            start = i + 1
    if best is None:
        return None
    return line[: best[0]], line[best[1] :]


def _unquoted_words(text: str) -> str:
    """``text`` with its quoted strings removed, for looking at keywords only."""
    return "".join(char for _i, char, _depth in _outside_quotes(text))


def _parse_grants(
    lines: Iterable[str], user: str, host: str, *, dynamic: bool = False
) -> _Privileges:
    """Read SHOW GRANTS output for ``'user'@'host'``.

    Whatever follows the account on a line (``IDENTIFIED BY PASSWORD '*…'``, ``REQUIRE``,
    resource limits) is dropped except the grant or admin option: a clone never gets its
    original's password hash, and its TLS options and limits are copied from mysql.user.

    ``dynamic``: the server has MySQL 8's dynamic privileges (``BACKUP_ADMIN``…), each with a
    grant option of its own; one held with it is the item ``BACKUP_ADMIN WITH GRANT OPTION``,
    and the level's ``GRANT OPTION`` item speaks for the static privileges only.
    """
    forms = _account_forms(user, host)
    privileges = _Privileges()
    default_roles: set[str] = set()
    for line in lines:
        for verb, keyword in (("GRANT", "TO"), ("REVOKE", "FROM"), ("SET DEFAULT ROLE", "FOR")):
            if line.startswith(verb + " "):
                split = _split_at_account(line, keyword, forms)
                break
        else:
            split = None
        if split is None:
            raise _UnreadableGrant(line.split(" ", 1)[0])
        head, tail = split
        body = head[len(verb) + 1 :]
        if verb == "SET DEFAULT ROLE":
            default_roles.add(body)
            continue
        option = re.search(r"\b(GRANT|ADMIN) OPTION\b", _unquoted_words(tail)) is not None
        on = _split_top(body, " ON ")
        if len(on) == 1:
            for role in _split_top(body, ","):
                privileges.roles[role.strip()] = option
            continue
        target = " ON ".join(on[1:]).strip()
        items = _privilege_items(on[0])
        if option and dynamic:
            grantable = {item for item in items if _is_dynamic(item)}
            items = (items - grantable) | {item + _WITH_OPTION for item in grantable}
            if items - {item + _WITH_OPTION for item in grantable} or not grantable:
                items.add("GRANT OPTION")
        elif option:
            items.add("GRANT OPTION")
        if items:
            into = privileges.on if verb == "GRANT" else privileges.revoked
            into.setdefault(target, set()).update(items)
    privileges.default_roles = frozenset(default_roles)
    return privileges


def _is_dynamic(item: str) -> bool:
    """Whether a SHOW GRANTS privilege item is one of MySQL 8's dynamic privileges."""
    return item.removesuffix(_WITH_OPTION) not in _STATIC_PRIVILEGES and "(" not in item


def _privilege_items(text: str) -> set[str]:
    """``SELECT, UPDATE (`a`, `b`)`` as {``SELECT``, ``UPDATE (`a`)``, ``UPDATE (`b`)``}."""
    items: set[str] = set()
    for item in _split_top(text, ","):
        item = item.strip()
        name, paren, columns = item.partition("(")
        name = name.strip()
        if paren:
            for column in _split_top(columns.rstrip().removesuffix(")"), ","):
                items.add(f"{name} ({column.strip()})")
        elif item and item != "USAGE":
            items.add(item)
    return items


def _enclosing(target: str) -> list[str]:
    """``target`` and the levels above it, as SHOW GRANTS prints them: a table or routine,
    its database's ```db`.*``, and ``*.*``."""
    kind, _, rest = target.partition(" ")
    name = rest.removeprefix("BODY ") if kind in ("PROCEDURE", "FUNCTION", "PACKAGE") else target
    levels = [target]
    parts = _split_top(name, ".")
    if len(parts) == 2 and parts[1].strip() != "*":
        levels.append(f"{parts[0].strip()}.*")
    if name.strip() != "*.*":
        levels.append("*.*")
    return levels


def _needed_to_grant(items: set[str], *, dynamic: bool) -> set[str]:
    """What a grantor must hold to grant ``items``: each of them and the grant option, which
    for a MySQL 8 dynamic privilege is that privilege's own."""
    plain = {i.removesuffix(_WITH_OPTION) for i in items} - {"GRANT OPTION"}
    if not dynamic:
        return plain | {"GRANT OPTION"}
    static = {i for i in plain if not _is_dynamic(i)}
    option = {"GRANT OPTION"} if static else set()
    return static | option | {i + _WITH_OPTION for i in plain - static}


def _holds(own: _Privileges, target: str, item: str) -> bool:
    """Whether ``own`` has ``item`` (``SELECT``, ``UPDATE (`c`)``, ``GRANT OPTION``,
    ``BACKUP_ADMIN WITH GRANT OPTION``) on ``target``, directly or at an enclosing level."""
    name = item.split(" (", 1)[0]
    for level in _enclosing(target):
        have = own.on.get(level, set())
        if item in have or name in have or item + _WITH_OPTION in have:
            return True
        grantable = item.endswith(_WITH_OPTION)
        if "ALL PRIVILEGES" in have and name not in ("GRANT OPTION", "PROXY") and not grantable:
            return True
    return False


def _policy_verdict(settings: Mapping[str, str], policy: PasswordPolicy) -> Permission:
    """Compare the server's password policy settings (``SHOW VARIABLES``, with MySQL 8's
    ``validate_password.x`` spelled ``validate_password_x``) with rotd's ``policy``.

    rotd puts at least one character of each type it uses in a password (with
    ``require_each_included_type``); a server that asks for more than one of a type may refuse
    a rare password, which rotd then replaces at the next attempt.
    """

    def number(name: str, default: int = 0) -> int:
        value = settings.get(name, "")
        return int(value) if value.isdigit() else default

    classes = policy.classes()
    has = {
        "lowercase": any(c.islower() for c in "".join(classes)),
        "uppercase": any(c.isupper() for c in "".join(classes)),
        "digits": any(c.isdigit() for c in "".join(classes)),
        "special characters": any(not c.isalnum() for c in "".join(classes)),
    }
    if "validate_password_length" in settings:
        name = "validate_password"
        strength = settings.get("validate_password_policy", "MEDIUM").upper()
        minimum = number("validate_password_length", 8)
        if strength in ("0", "LOW"):
            wanted = {}
        else:
            mixed = number("validate_password_mixed_case_count", 1)
            wanted = {
                "lowercase": mixed,
                "uppercase": mixed,
                "digits": number("validate_password_number_count", 1),
                "special characters": number("validate_password_special_char_count", 1),
            }
    elif "simple_password_check_minimal_length" in settings:
        name = "simple_password_check"
        minimum = number("simple_password_check_minimal_length", 8)
        same_case = number("simple_password_check_letters_same_case", 1)
        wanted = {
            "lowercase": same_case,
            "uppercase": same_case,
            "digits": number("simple_password_check_digits", 1),
            "special characters": number("simple_password_check_other_characters", 1),
        }
    else:
        return Permission(True, "the server has no password policy loaded (validate_password)")
    problems = []
    if policy.length < minimum:
        problems.append(f"it wants at least {minimum} characters, the secret's length is "
                        f"{policy.length}")  # fmt: skip
    problems += [
        f"it wants {count} {kind}, which the secret's password settings exclude"
        for kind, count in wanted.items()
        if count and not has[kind]
    ]
    if problems:
        return Permission(
            False,
            f"the server's {name} refuses the passwords rotd would make: " + "; ".join(problems),
            "change the secret's password settings in the inventory (length, exclude_*) to "
            f"match {name}",
        )
    several = sorted(kind for kind, count in wanted.items() if count > 1)
    if several or not policy.require_each_included_type:
        return Permission(
            True,
            f"the server's {name} takes rotd's passwords, though not always: it asks for "
            + (f"more than one of {', '.join(several)}" if several else "each type")
            + ", and rotd guarantees "
            + ("one of each" if policy.require_each_included_type else "none")
            + "; a refused password is replaced at the next attempt",
        )
    return Permission(True, f"the server's {name} takes the passwords rotd makes")


def _cannot_read_accounts(username: str, user: str, host: str, master: str) -> Permission:
    return Permission(
        False,
        f"{_show(user, host)} may not read the accounts and grants of {username!r} "
        "(mysql.user, SHOW GRANTS), which rotd compares",
        f"GRANT SELECT ON mysql.* TO {master}",
    )


def _grant_statements(
    items: set[str], target: str, account: str, *, dynamic: bool = False
) -> list[str]:
    """GRANT statements giving ``items``. With MySQL 8's ``dynamic`` privileges, those held
    without a grant option and those held with their own get statements apart, so that no
    grant option reaches a privilege that did not have it."""
    grantable = sorted(i.removesuffix(_WITH_OPTION) for i in items if i.endswith(_WITH_OPTION))
    items = {i for i in items if not i.endswith(_WITH_OPTION)}
    option = "GRANT OPTION" in items
    plain = sorted(i for i in items if dynamic and option and _is_dynamic(i))
    items -= set(plain)
    statements = []
    if items:
        privileges = sorted(items - {"GRANT OPTION"}) or ["USAGE"]
        statements.append(
            f"GRANT {', '.join(privileges)} ON {target} TO {account}"
            + (_WITH_OPTION if option else "")
        )
    if plain:
        statements.append(f"GRANT {', '.join(plain)} ON {target} TO {account}")
    if grantable:
        statements.append(f"GRANT {', '.join(grantable)} ON {target} TO {account}{_WITH_OPTION}")
    return statements


def _grantable(items: set[str]) -> set[str]:
    """The items that are dynamic privileges held with their own grant option."""
    return {item for item in items if item.endswith(_WITH_OPTION)}


def _option_revokes(extra: set[str], want: set[str], target: str, account: str) -> list[str]:
    """Take back dynamic privileges held with a grant option the original lacks.

    MySQL has no statement that takes back only a dynamic privilege's grant option (REVOKE
    GRANT OPTION is the static privileges'): the privilege is revoked and, when the original
    holds it plainly, granted again without the option.
    """
    statements = []
    for item in sorted(i for i in extra if i.endswith(_WITH_OPTION)):
        name = item.removesuffix(_WITH_OPTION)
        statements.append(f"REVOKE {name} ON {target} FROM {account}")
        if name in want:
            statements.append(f"GRANT {name} ON {target} TO {account}")
    return statements


# The account options rotd copies to a clone, as SHOW CREATE USER prints them (MySQL 5.7+, 8.0,
# MariaDB 10.4+), each with the clause that puts it back to the server's default. Not copied:
# ACCOUNT LOCK (a locked clone could not be tested), a password expired now (the clone's is
# new), and ATTRIBUTE or COMMENT (metadata, which ALTER USER merges rather than replaces).
_PASSWORD_OPTION_DEFAULTS = {
    "PASSWORD EXPIRE": "PASSWORD EXPIRE DEFAULT",
    "PASSWORD HISTORY": "PASSWORD HISTORY DEFAULT",
    "PASSWORD REUSE INTERVAL": "PASSWORD REUSE INTERVAL DEFAULT",
    "PASSWORD REQUIRE CURRENT": "PASSWORD REQUIRE CURRENT DEFAULT",
    "FAILED_LOGIN_ATTEMPTS": "FAILED_LOGIN_ATTEMPTS 0",
    "PASSWORD_LOCK_TIME": "PASSWORD_LOCK_TIME 0",
}
_PASSWORD_OPTIONS = re.compile(
    r"\b(PASSWORD EXPIRE (?:DEFAULT|NEVER|INTERVAL \d+ DAY)"
    r"|PASSWORD HISTORY (?:DEFAULT|\d+)"
    r"|PASSWORD REUSE INTERVAL (?:DEFAULT|\d+ DAY)"
    r"|PASSWORD REQUIRE CURRENT(?: DEFAULT| OPTIONAL)?"
    r"|FAILED_LOGIN_ATTEMPTS \d+"
    r"|PASSWORD_LOCK_TIME (?:\d+|UNBOUNDED))\b"
)


def _password_options_of(create_user: str) -> tuple[str, ...]:
    """The password and failed-login options of a SHOW CREATE USER statement; quoted text
    (names, the password hash, attributes, comments) is left out before looking."""
    return tuple(m.group(1) for m in _PASSWORD_OPTIONS.finditer(_unquoted_words(create_user)))


def _option_kind(clause: str) -> str:
    return next(kind for kind in _PASSWORD_OPTION_DEFAULTS if clause.startswith(kind))


def _option_clauses(want: Sequence[str], have: Sequence[str]) -> list[str]:
    """The ALTER USER clauses that give an account with options ``have`` the options ``want``;
    an option the original does not show is put back to the server's default."""
    wanted_kinds = {_option_kind(clause) for clause in want}
    clauses = [clause for clause in want if clause not in have]
    clauses += [
        _PASSWORD_OPTION_DEFAULTS[kind]
        for kind in dict.fromkeys(_option_kind(clause) for clause in have)
        if kind not in wanted_kinds and _PASSWORD_OPTION_DEFAULTS[kind] not in have
    ]
    return clauses


def _unmirrored_options(create_user: str) -> list[str]:
    """The options of an original that a clone does not get, for ``doctor`` to name."""
    words = _unquoted_words(create_user)
    found = []
    if re.search(r"\bACCOUNT LOCK\b", words):
        found.append("ACCOUNT LOCK")
    found += [word for word in ("ATTRIBUTE", "COMMENT") if re.search(rf"\b{word}\b", words)]
    return found


def _plugin_of(create_user: str, user: str, host: str) -> str:
    """The (first) authentication plugin named in a SHOW CREATE USER statement."""
    split = _split_at_account(create_user, "USER", _account_forms(user, host))
    tail = split[1] if split else create_user
    match = re.match(r"\s*IDENTIFIED (?:VIA|WITH) [`'\"]?([A-Za-z0-9_]+)", tail)
    return match.group(1) if match else ""
