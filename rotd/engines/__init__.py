"""The database engine interface that the rotation protocol is written against.

One module per database family implements it: ``postgres`` on asyncpg, ``mysql`` on aiomysql
(MySQL, MariaDB and their Aurora flavours). A family's module is the only place that imports
its driver; it translates every driver error into :class:`rotd.errors.DatabaseError`.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from rotd.passwords import PasswordPolicy


class Family(StrEnum):
    POSTGRES = "postgres"
    MYSQL = "mysql"


# The engine names of AWS's documented secret format, and the family that serves each.
ENGINE_FAMILIES: dict[str, Family] = {
    "postgres": Family.POSTGRES,
    "aurora-postgresql": Family.POSTGRES,
    "mysql": Family.MYSQL,
    "aurora-mysql": Family.MYSQL,
    "mariadb": Family.MYSQL,
}

DEFAULT_PORTS: dict[Family, int] = {Family.POSTGRES: 5432, Family.MYSQL: 3306}


class TlsMode(StrEnum):
    DISABLE = "disable"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


@dataclass(frozen=True)
class Tls:
    mode: TlsMode = TlsMode.PREFER
    ca_file: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where a database answers, as reached from this host."""

    family: Family
    host: str
    port: int
    dbname: str | None
    tls: Tls = Tls()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Login:
    """A username and password at an endpoint. The password never appears in a repr."""

    endpoint: Endpoint
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Permission:
    """Whether a login may do something a rotation needs, found out without doing it.

    ``reason`` says why in the server's own terms; ``fix``, when refused, is what an
    administrator runs or changes to allow it.
    """

    granted: bool
    reason: str
    fix: str | None = None


class Session(Protocol):
    """An open connection to a database as one login.

    Every method has a deadline and raises :class:`rotd.errors.DatabaseError` on failure,
    with a category an operator can act on and no secret in its message.
    """

    @property
    def username(self) -> str: ...

    async def close(self) -> None:
        """Close the connection; never raises."""

    async def check_username(self, name: str) -> None:
        """Raise a NAME_TOO_LONG error when ``name`` does not fit this server's limit."""

    async def set_own_password(self, new_password: str) -> None:
        """Change the password of the logged-in user (single user strategy)."""

    async def set_password(self, username: str, new_password: str) -> None:
        """Change another existing user's password, as an administrator."""

    async def mirror_user(self, original: str, clone: str, new_password: str) -> None:
        """Make ``clone`` a login that acts exactly as ``original`` and give it ``new_password``.

        Creates the clone when missing and brings its privileges in line with the original's
        at every call, since grants change between rotations. Never leaves the clone with
        fewer privileges than the original at any instant.
        """

    async def run_test(self, query: str | None) -> None:
        """Run ``SELECT 1`` and then ``query`` when given; raise TEST_FAILED if either fails."""

    async def try_lock(self, key: str) -> bool:
        """Take the rotation lock named ``key`` without waiting; False if another session has it.

        The lock lives in the database being rotated and belongs to this session: it is
        released when the session closes or its process dies, so a crash never leaves it held.
        """

    async def unlock(self, key: str) -> None:
        """Release the rotation lock named ``key``, however many times this session took it,
        so that the session can serve another rotation."""

    async def ping(self) -> None:
        """One round trip to the server: raise DatabaseError if the session no longer works."""

    # Read-only checks for ``rotd doctor``: they change nothing on the server.

    async def tls_in_use(self) -> bool:
        """Whether this session's connection is encrypted."""

    async def may_set_own_password(self) -> Permission:
        """Whether the logged-in user may change its own password (single user strategy)."""

    async def may_set_password(self, username: str) -> Permission:
        """Whether this login may change ``username``'s password, as an administrator."""

    async def may_mirror_user(self, original: str, clone: str) -> Permission:
        """Whether this login may create or update ``clone`` and give it all ``original`` has."""

    async def accepts_passwords(self, policy: PasswordPolicy) -> Permission:
        """Whether the server's own password policy takes the passwords made with ``policy``."""


class Engine(Protocol):
    family: Family

    def connect(self, login: Login, *, timeout_s: float) -> AbstractAsyncContextManager[Session]:
        """Open a session as ``login``; raise DatabaseError (AUTH when the login is refused)."""


def lock_key(secret_arn: str) -> tuple[int, str]:
    """The rotation lock of a secret: a signed 64-bit id (PostgreSQL advisory locks) and a
    name under 64 characters (MySQL ``GET_LOCK``), the same in every rotd process."""
    digest = hashlib.blake2b(secret_arn.encode("utf-8"), digest_size=20).digest()
    return int.from_bytes(digest[:8], "big", signed=True), "rotd:" + digest.hex()


def all_engines() -> dict[str, Engine]:
    """One engine per family, keyed by family name."""
    from rotd.engines.mysql import MysqlEngine
    from rotd.engines.postgres import PostgresEngine

    return {Family.POSTGRES: PostgresEngine(), Family.MYSQL: MysqlEngine()}
