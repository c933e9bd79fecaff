"""The engine contract: the public, versioned interface the rotation protocol is written against.

An engine is an object with :attr:`Engine.info` (what it is and can do, as data) and
:meth:`Engine.connect` (a :class:`Session` as one login). rotd finds engines through the
entry-point group ``rotd.engines`` (:mod:`rotd.engines.registry`); the entry point's name is
the ``engine`` of a secret or of an inventory database, and the object it names is called
with no arguments to make the engine. The built-in engines register the same way: ``postgres``
on asyncpg, ``mysql`` on aiomysql (MySQL, MariaDB and their Aurora flavours). An engine's
module is the only place that imports its driver; it translates every driver error into
:class:`rotd.errors.DatabaseError`. The protocol and ``doctor`` ask an engine for a
capability, never for its name. :data:`API_VERSION` changes when this contract does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rotd.errors import EngineError
from rotd.passwords import PasswordPolicy

if TYPE_CHECKING:
    from rotd.engines.registry import EngineRegistry

# The version of this contract. An engine states the version it was written for in
# ``EngineInfo.api_version``; rotd refuses an engine written for another version.
API_VERSION = 1

# The keys of AWS's documented secret JSON for database credentials.
SECRET_KEYS = frozenset(
    ("engine", "host", "port", "username", "password", "dbname", "masterarn", "ssl")
)


class Family(StrEnum):
    """The built-in engines' own names; nothing outside an engine's module switches on them."""

    POSTGRES = "postgres"
    MYSQL = "mysql"


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do. rotd asks for these, and refuses a rotation the engine cannot
    do before anything changes, naming the engine and the capability it lacks.

    ``single_user``: :meth:`Session.set_own_password` and :meth:`Session.set_password`
    (strategy single_user). ``mirror_user``: :meth:`Session.mirror_user` (strategy
    alternating_users, which keeps two logins that act alike). ``rotation_lock``:
    :meth:`Session.try_lock` really excludes other rotd processes (a session lock, or a key
    that expires); without it ``try_lock`` always succeeds and only the version id fences two
    processes, so ``doctor`` warns. ``tls``: the engine can encrypt its connections, and
    :meth:`Session.tls_in_use` tells; without it ``tls`` require, verify-ca and verify-full
    are refused. ``tls_require_verifies_ca``: under ``tls: require`` with a ``ca_file`` the
    certificate is still verified (libpq's rule). ``several_passwords``: a user can hold the
    old and the new password at once (:meth:`Session.set_passwords`), so single_user has no
    window in which one is refused: setSecret adds the pending password, finishSecret then
    drops the one older than the new AWSPREVIOUS.
    ``permission_checks``: the ``may_*`` methods answer without changing anything, for
    ``doctor``; without it ``doctor`` says it cannot check.
    """

    single_user: bool = True
    mirror_user: bool = False
    rotation_lock: bool = False
    tls: bool = False
    tls_require_verifies_ca: bool = False
    several_passwords: bool = False
    permission_checks: bool = False

    def lacking(self, *, alternating: bool, tls: TlsMode) -> str | None:
        """The capability a rotation with this strategy and TLS mode needs and this engine
        lacks, with what it is for; None when it has all it needs."""
        if alternating and not self.mirror_user:
            return "mirror_user, which strategy alternating_users needs (use single_user)"
        if not alternating and not self.single_user:
            return "single_user, which strategy single_user needs (use alternating_users)"
        if tls in _TLS_REQUIRED and not self.tls:
            return f"tls, which tls: {tls} needs (use tls: disable or prefer)"
        return None


@dataclass(frozen=True)
class EngineInfo:
    """What an engine is, as data: its capabilities, the port a secret without ``port``
    means, the database a secret without ``dbname`` means, the longest user name any server
    of the engine accepts (a session's :meth:`Session.check_username` knows its own server's
    limit), the keys a secret of the engine may hold (``None``: any, as the exec engine's
    secrets hold whatever their system needs), which the inventory's derived key templates
    may name, and the contract version it was written for."""

    capabilities: Capabilities
    default_port: int
    default_dbname: str | None = None
    max_username_length: int | None = None
    secret_keys: frozenset[str] | None = SECRET_KEYS
    api_version: int = API_VERSION


class TlsMode(StrEnum):
    DISABLE = "disable"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


_TLS_REQUIRED = (TlsMode.REQUIRE, TlsMode.VERIFY_CA, TlsMode.VERIFY_FULL)


@dataclass(frozen=True)
class Tls:
    mode: TlsMode = TlsMode.PREFER
    ca_file: str | None = None


class Settings(Mapping[str, Any]):
    """An engine's own settings from the inventory's database (the ``exec:`` block for the
    exec engine), frozen and hashable: lists become tuples, mappings become Settings."""

    __slots__ = ("_items",)

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._items = {str(k): _frozen(v) for k, v in (values or {}).items()}

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __repr__(self) -> str:
        return f"Settings({self._items!r})"


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Settings(value)
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class Endpoint:
    """Where a database answers, as reached from this host, and the engine's own settings
    from the inventory's database (empty when it has none)."""

    engine: str  # the name the engine is registered under
    host: str
    port: int
    dbname: str | None
    tls: Tls = Tls()
    settings: Settings = field(default_factory=Settings)
    # Every node that must be told a change, as (host, port), for systems that do not
    # replicate their users (Redis); empty: the one host.
    nodes: tuple[tuple[str, int], ...] = ()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Login:
    """A username and password at an endpoint. The password never appears in a repr.

    ``document`` is the whole secret JSON the login was read from (empty when it was not read
    from a secret), for engines that hand it on (exec); it takes no part in comparisons.
    """

    endpoint: Endpoint
    username: str
    password: str = field(repr=False)
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Rotation:
    """The rotation a session works for, as :data:`rotation` holds it while the protocol runs:
    the secret's id, its strategy, and from setSecret on its whole pending secret JSON. For
    engines that hand the rotation to code outside rotd (exec); others need not look."""

    secret_id: str
    strategy: str
    pending: Mapping[str, Any] | None = field(default=None, repr=False)


# Set by the protocol (and ``doctor``) in the task that runs one secret's rotation.
rotation: ContextVar[Rotation | None] = ContextVar("rotd_rotation", default=None)


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


@runtime_checkable
class SeveralPasswords(Protocol):
    """What the sessions of an engine with the capability ``several_passwords`` add to
    :class:`Session`."""

    async def set_passwords(self, username: str, passwords: Sequence[str]) -> None:
        """Make ``passwords`` (newest first) exactly the passwords ``username`` logs in with
        (single_user calls it instead of ``set_password``).

        Adds the missing ones and removes the others without refusing any of ``passwords`` at
        any instant; idempotent, so a resumed rotation can call it again. An engine that holds
        fewer passwords than given keeps the first ones (at least two). Called on a session as
        the user itself or as a master, which may change ``username``'s passwords.
        """


@runtime_checkable
class SeveralPasswordsHere(Protocol):
    """What the sessions of an engine add whose users hold several passwords on some servers
    only (MySQL 8.0.14 and later, not MariaDB), or for some logins only: a capability known
    once connected, which the static ``several_passwords`` cannot declare. Such sessions
    also have :meth:`SeveralPasswords.set_passwords`."""

    async def may_keep_several_passwords(self, username: str) -> Permission | None:
        """Whether this login, on this server, may give ``username`` a new password while it
        keeps its current one (then single_user has no window); None when the server cannot
        hold several passwords at all. Changes nothing; a refusal names the fix."""


class Engine(Protocol):
    """A kind of database rotd can rotate logins on.

    Errors: every method of a session, and ``connect``, raises
    :class:`rotd.errors.DatabaseError` with the category an operator acts on (UNREACHABLE,
    TIMEOUT, AUTH, PERMISSION, TLS, NOT_FOUND, NAME_TOO_LONG, TEST_FAILED, SERVER, ...);
    transient categories are retried, the others are not. Nothing else escapes an engine.
    """

    @property
    def info(self) -> EngineInfo: ...

    def connect(self, login: Login, *, timeout_s: float) -> AbstractAsyncContextManager[Session]:
        """Open a session as ``login``; raise DatabaseError (AUTH when the login is refused)."""


def capabilities(engine: Engine, settings: Mapping[str, Any]) -> Capabilities:
    """What ``engine`` can do with its database's ``settings``. An engine whose abilities
    depend on them (exec: mirror_user only when its command is configured) defines
    ``capabilities_for(settings) -> Capabilities``; for the others it is ``info.capabilities``.
    """
    ask = getattr(engine, "capabilities_for", None)
    found = ask(settings) if callable(ask) else None
    return found if isinstance(found, Capabilities) else engine.info.capabilities


def lock_key(secret_arn: str) -> tuple[int, str]:
    """The rotation lock of a secret: a signed 64-bit id (PostgreSQL advisory locks) and a
    name under 64 characters (MySQL ``GET_LOCK``), the same in every rotd process."""
    digest = hashlib.blake2b(secret_arn.encode("utf-8"), digest_size=20).digest()
    return int.from_bytes(digest[:8], "big", signed=True), "rotd:" + digest.hex()


def check_fit(
    name: str,
    engine: Engine,
    *,
    alternating: bool,
    tls: TlsMode,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`EngineError` (UNSUPPORTED) when engine ``name`` cannot do this rotation."""
    lacking = capabilities(engine, settings or {}).lacking(alternating=alternating, tls=tls)
    if lacking is not None:
        raise EngineError(name, f"the engine lacks the capability {lacking}")


def all_engines() -> EngineRegistry:
    """The installed engines, keyed by name, loaded when first asked for."""
    from rotd.engines.registry import installed

    return installed()
