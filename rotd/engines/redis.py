"""The Redis and Valkey engine: sessions on redis-py's asyncio client that manage ACL users.

This module owns everything rotd says to a Redis or Valkey server: logging in on every node
of a database (Redis does not replicate ACLs, so each node is told each change), giving a user
its passwords as SHA-256 hashes (``#<hex>`` adds, ``!<hex>`` removes, so a plain password never
crosses the wire nor reaches ``SLOWLOG`` or ``MONITOR``), mirroring a user's rules onto its
clone, persisting each change the way the node loads its users (``ACL SAVE`` for an ACL file,
``CONFIG REWRITE`` for a config file; neither: refused before anything changes), and a rotation
lock kept as a key. It is the only module that imports redis-py, and it translates its errors
into :class:`DatabaseError` categories. Arguments go to the server as separate bulk strings,
so nothing is ever quoted into a command; user names are still checked (no blanks, no control
characters), since an ACL file could not hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import shlex
import ssl
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from rotd.engines import Endpoint, Login, Permission, TlsMode, lock_key
from rotd.engines.builtin import REDIS
from rotd.errors import Category, DatabaseError
from rotd.observability import redactor
from rotd.passwords import PasswordPolicy

__all__ = ["LOCK_TTL_S", "Persistence", "RedisEngine", "RedisSession", "password_hash"]

_T = TypeVar("_T")

# The rotation lock is a key that expires after LOCK_TTL_S unless its holder renews it, which
# it does every third of that while the session lives.
LOCK_TTL_S = 30.0

# Deletes or renews the lock key only when it still holds this session's token: a lock that
# expired and was taken by another process is never touched by the one that lost it.
_RELEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_RENEW = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
)

# What a clone's rules are cleared with before it is given its original's, in the same
# command. Not ``reset``: that sets ``sanitize-payload``, which an original without either
# payload flag does not have, and no rule takes it away again.
_CLEARED = ("resetpass", "resetkeys", "resetchannels", "clearselectors", "-@all", "off")

# What a login needs to rotate: read and change users, save them, take the lock key.
_NEEDED = (
    "+acl|getuser +acl|setuser +acl|list +acl|save +acl|dryrun +config|get +config|rewrite "
    "+info +get +set +eval ~rotd:*"
)

# A password hash as the server may quote it back in an error ("... modifier '!<hex>' ...").
_HASH = re.compile(r"[0-9a-fA-F]{64}")

# Rules of ``ACL LIST`` that are a user's passwords, not its rights.
_PASSWORD_RULE_PREFIXES = ("#", ">", "<", "!")


def password_hash(password: str) -> str:
    """The SHA-256 hex digest Redis keeps for ``password``."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


class Persistence(StrEnum):
    """How a node keeps its users across a restart, and so how rotd saves an ACL change."""

    ACL_FILE = "aclfile"  # ACL SAVE
    CONFIG_FILE = "config"  # CONFIG REWRITE
    NONE = "none"  # neither: a change would be lost at restart, so none is made


@dataclass(frozen=True)
class _Node:
    host: str
    port: int
    client: Any

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class RedisEngine:
    """Opens :class:`RedisSession` objects; holds no state between sessions."""

    info = REDIS

    @asynccontextmanager
    async def connect(self, login: Login, *, timeout_s: float) -> AsyncIterator[RedisSession]:
        """Log in as ``login`` on every node of the endpoint within ``timeout_s`` each."""
        session = await RedisSession.open(login, timeout_s=timeout_s)
        try:
            yield session
        finally:
            await session.close()


def _addresses(endpoint: Endpoint) -> list[tuple[str, int]]:
    """The endpoint's own address first (the lock and the test query live there), then its
    other nodes."""
    first = (endpoint.host, endpoint.port)
    return [first, *(node for node in endpoint.nodes if node != first)]


def _client(host: str, port: int, login: Login, timeout_s: float) -> Any:
    tls = login.endpoint.tls
    options: dict[str, Any] = {}
    # Redis has no TLS negotiation: prefer and disable connect in the clear.
    if tls.mode in (TlsMode.REQUIRE, TlsMode.VERIFY_CA, TlsMode.VERIFY_FULL):
        verify = tls.mode is not TlsMode.REQUIRE
        options = {
            "ssl": True,
            "ssl_ca_certs": tls.ca_file,
            "ssl_cert_reqs": ssl.CERT_REQUIRED if verify else ssl.CERT_NONE,
            "ssl_check_hostname": tls.mode is TlsMode.VERIFY_FULL,
        }
    return aioredis.Redis(
        host=host,
        port=port,
        username=login.username,
        password=login.password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        single_connection_client=True,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        **options,
    )


class RedisSession:
    """One connection per node as one login. Each call runs under its own deadline."""

    def __init__(self, nodes: list[_Node], login: Login, *, timeout_s: float) -> None:
        self._nodes = nodes
        self._endpoint = login.endpoint
        self._login_user = login.username
        self._timeout_s = timeout_s
        self._locks: dict[str, str] = {}  # lock key -> this session's token
        self._lost: set[str] = set()
        self._renewers: dict[str, asyncio.Task[None]] = {}
        self._persistence: dict[str, Persistence] = {}

    @classmethod
    async def open(cls, login: Login, *, timeout_s: float) -> RedisSession:
        """Log in on each node; the first that fails closes the others and raises."""
        redactor.add(login.password)
        _check_name(login.endpoint, login.username)
        nodes: list[_Node] = []
        try:
            for host, port in _addresses(login.endpoint):
                node = _Node(host, port, _client(host, port, login, timeout_s))
                nodes.append(node)
                try:
                    async with asyncio.timeout(timeout_s):
                        # Connects and authenticates (AUTH), which any user may do; PING may
                        # be among the commands a user is not allowed.
                        await node.client.initialize()
                except Exception as exc:
                    raise _translate(
                        exc,
                        node,
                        login.endpoint,
                        doing=f"log in as {login.username!r}",
                        user=login.username,
                        timeout_s=timeout_s,
                    ) from None
        except BaseException:
            for node in nodes:
                await _close(node)
            raise
        return cls(nodes, login, timeout_s=timeout_s)

    @property
    def username(self) -> str:
        return self._login_user

    @property
    def _primary(self) -> _Node:
        return self._nodes[0]

    async def close(self) -> None:
        """Release any lock this session holds and close every connection; never raises."""
        for key in list(self._locks):
            with contextlib.suppress(DatabaseError):
                await self.unlock_key(key)
        for node in self._nodes:
            await _close(node)

    async def check_username(self, name: str) -> None:
        """Redis has no length limit; a name with blanks or control characters is refused."""
        _check_name(self._endpoint, name)

    # Passwords.

    async def set_own_password(self, new_password: str) -> None:
        """Make ``new_password`` the logged-in user's only password, on every node."""
        await self.set_password(self._login_user, new_password)

    async def set_password(self, username: str, new_password: str) -> None:
        """Make ``new_password`` the user's only password, on every node."""
        _check_name(self._endpoint, username)
        redactor.add(new_password)
        await self._prepare(username)
        for node in self._nodes:
            await self._run(
                node,
                f"set the password of {username!r}",
                node.client.execute_command(
                    "ACL", "SETUSER", username, "resetpass", "#" + password_hash(new_password)
                ),
            )
        await self._persist()

    async def set_passwords(self, username: str, passwords: Sequence[str]) -> None:
        """Make ``passwords`` exactly the passwords ``username`` logs in with, on every node:
        one ``ACL SETUSER`` per node adds the missing hashes and removes the others at once,
        so no password of ``passwords`` is refused at any instant."""
        _check_name(self._endpoint, username)
        redactor.add(*passwords)
        wanted = list(dict.fromkeys(password_hash(p) for p in passwords))
        await self._prepare(username)
        for node in self._nodes:
            held = await self._hashes(node, username)
            rules = ["#" + h for h in wanted if h not in held]
            rules += ["!" + h for h in held if h not in wanted]
            if rules:
                await self._run(
                    node,
                    f"set the passwords of {username!r}",
                    node.client.execute_command("ACL", "SETUSER", username, *rules),
                )
        await self._persist()

    async def mirror_user(self, original: str, clone: str, new_password: str) -> None:
        """Give ``clone`` exactly ``original``'s rules (flags, commands, keys, channels,
        selectors) and ``new_password`` only, on every node. One ``ACL SETUSER clone`` per
        node clears the clone's rules and gives it the original's, atomically: a rule removed
        from the original disappears from the clone, and the clone never has fewer rights
        than the original at any instant. (A ``sanitize-payload`` flag the clone once got
        and the original lacks cannot be taken away by any rule; it only restricts.)"""
        _check_name(self._endpoint, original)
        _check_name(self._endpoint, clone)
        redactor.add(new_password)
        await self._prepare(original)
        for node in self._nodes:
            rules = await self._rules(node, original)
            await self._run(
                node,
                f"mirror {original!r} onto {clone!r}",
                node.client.execute_command(
                    "ACL", "SETUSER", clone, *_CLEARED, *rules, "#" + password_hash(new_password)
                ),
            )
        await self._persist()

    # Tests, lock, ping.

    async def run_test(self, query: str | None) -> None:
        """``PING``, then ``query`` (a command, split as a shell would) on the first node.

        Logging in was the test of the password; a PING the user may not run (``NOPERM``) still
        shows that the server answers it as that user."""
        node = self._primary
        try:
            await self._run(node, "run PING", node.client.ping())
        except DatabaseError as exc:
            if exc.category is not Category.PERMISSION:
                raise
        if query:
            words = shlex.split(query)
            await self._run(
                node,
                "run the test query",
                node.client.execute_command(*words),
                rejected=Category.TEST_FAILED,
            )

    async def try_lock(self, key: str) -> bool:
        """Take (or, when this session holds it, renew) the lock key ``key`` names on the
        first node: ``SET NX`` with an expiry, renewed while the session holds it."""
        return await self.try_lock_key(lock_key(key)[1])

    async def try_lock_key(self, name: str) -> bool:
        node = self._primary
        ttl_ms = str(int(LOCK_TTL_S * 1000))
        token = self._locks.get(name)
        if token is not None:
            renewed = await self._run(
                node,
                "renew the rotation lock",
                node.client.eval(_RENEW, 1, name, token, ttl_ms),
            )
            if renewed and name not in self._lost:
                return True
            await self.unlock_key(name)
            return False
        # Taking the lock is the first thing a rotation asks of the session that will change
        # the user: refuse here, before createSecret, when a node cannot persist a change.
        await self._check_persistence()
        token = secrets.token_hex(16)
        taken = await self._run(
            node,
            "take the rotation lock",
            node.client.set(name, token, nx=True, px=int(ttl_ms)),
        )
        if not taken:
            return False
        self._locks[name] = token
        self._lost.discard(name)
        self._renewers[name] = asyncio.create_task(self._renew(name, token))
        return True

    async def unlock(self, key: str) -> None:
        """Release the lock ``key`` names, if this session still owns it."""
        await self.unlock_key(lock_key(key)[1])

    async def unlock_key(self, name: str) -> None:
        renewer = self._renewers.pop(name, None)
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        token = self._locks.pop(name, None)
        self._lost.discard(name)
        if token is None:
            return
        node = self._primary
        await self._run(
            node, "release the rotation lock", node.client.eval(_RELEASE, 1, name, token)
        )

    async def _renew(self, name: str, token: str) -> None:
        node = self._primary
        ttl_ms = str(int(LOCK_TTL_S * 1000))
        while True:
            await asyncio.sleep(LOCK_TTL_S / 3)
            try:
                renewed = await self._run(
                    node,
                    "renew the rotation lock",
                    node.client.eval(_RENEW, 1, name, token, ttl_ms),
                )
            except DatabaseError:
                renewed = 0
            if not renewed:
                self._lost.add(name)
                return

    async def ping(self) -> None:
        for node in self._nodes:
            try:
                await self._run(node, "ping the server", node.client.ping())
            except DatabaseError as exc:
                if exc.category is not Category.PERMISSION:  # it answered, as this user
                    raise

    # Read-only checks for doctor.

    async def tls_in_use(self) -> bool:
        return all(
            isinstance(node.client.connection, aioredis.SSLConnection) for node in self._nodes
        )

    async def persistence(self) -> dict[str, Persistence]:
        """How each node keeps its users across a restart, by address."""
        return {node.address: await self._persistence_of(node) for node in self._nodes}

    async def may_set_own_password(self) -> Permission:
        return await self.may_set_password(self._login_user)

    async def may_set_password(self, username: str) -> Permission:
        return await self._may_change(username, f"change the passwords of {username!r}")

    async def may_mirror_user(self, original: str, clone: str) -> Permission:
        return await self._may_change(clone, f"mirror {original!r} onto {clone!r}")

    async def accepts_passwords(self, policy: PasswordPolicy) -> Permission:
        return Permission(True, "Redis has no password policy of its own")

    async def _may_change(self, username: str, doing: str) -> Permission:
        me = self._login_user
        fix = (
            f"ACL SETUSER {me} {_NEEDED} on every node (then persist it), or set master_secret "
            "to a login that may"
        )
        for node in self._nodes:
            try:
                mode = await self._persistence_of(node)
            except DatabaseError as exc:
                if exc.category is not Category.PERMISSION:
                    raise
                return Permission(
                    False,
                    f"{me!r} may not read how {node.address} keeps its users "
                    "(CONFIG GET aclfile, INFO server)",
                    fix,
                )
            if mode is Persistence.NONE:
                return _unpersisted(node)
            save = ("ACL", "SAVE") if mode is Persistence.ACL_FILE else ("CONFIG", "REWRITE")
            for command in (("ACL", "SETUSER", username), save):
                try:
                    answer = await self._run(
                        node,
                        "check permissions with ACL DRYRUN",
                        node.client.execute_command("ACL", "DRYRUN", me, *command),
                    )
                except DatabaseError as exc:
                    if exc.category is not Category.PERMISSION:
                        raise
                    answer = "ACL DRYRUN itself is refused"
                if answer != "OK":
                    return Permission(
                        False,
                        f"{me!r} may not run {' '.join(command[:2])} on {node.address} to "
                        f"{doing}: {answer}",
                        fix,
                    )
        return Permission(True, f"{me!r} may {doing} and save it on every node")

    # Internals.

    async def _prepare(self, username: str) -> None:
        """Before any change: every node can persist it, and the user exists on each."""
        await self._check_persistence()
        for node in self._nodes:
            await self._hashes(node, username)

    async def _check_persistence(self) -> None:
        for node in self._nodes:
            if await self._persistence_of(node) is Persistence.NONE:
                refusal = _unpersisted(node)
                raise DatabaseError(
                    node.host,
                    node.port,
                    Category.UNSUPPORTED,
                    f"{refusal.reason}; {refusal.fix}",
                )

    async def _persistence_of(self, node: _Node) -> Persistence:
        known = self._persistence.get(node.address)
        if known is not None:
            return known
        answer = await self._run(
            node,
            "read the aclfile setting",
            node.client.execute_command("CONFIG", "GET", "aclfile"),
        )
        values = _pairs(answer)
        if values.get("aclfile"):
            mode = Persistence.ACL_FILE
        else:
            info = await self._run(node, "read INFO server", node.client.info("server"))
            mode = Persistence.CONFIG_FILE if info.get("config_file") else Persistence.NONE
        self._persistence[node.address] = mode
        return mode

    async def _persist(self) -> None:
        for node in self._nodes:
            mode = await self._persistence_of(node)
            command = ("ACL", "SAVE") if mode is Persistence.ACL_FILE else ("CONFIG", "REWRITE")
            await self._run(
                node,
                f"persist the ACL change ({' '.join(command)})",
                node.client.execute_command(*command),
            )

    async def _hashes(self, node: _Node, username: str) -> list[str]:
        answer = await self._run(
            node,
            f"read the user {username!r}",
            node.client.execute_command("ACL", "GETUSER", username),
        )
        if answer is None:
            raise DatabaseError(
                node.host,
                node.port,
                Category.NOT_FOUND,
                f"the user {username!r} does not exist on {node.address}",
            )
        return [str(h) for h in _pairs(answer).get("passwords", [])]

    async def _rules(self, node: _Node, username: str) -> list[str]:
        """The user's rules as ``ACL LIST`` gives them, without its passwords."""
        lines = await self._run(
            node, "list the ACL users", node.client.execute_command("ACL", "LIST")
        )
        for line in lines:
            words = str(line).split(" ")
            if len(words) >= 2 and words[0] == "user" and words[1] == username:
                return [r for r in _group_selectors(words[2:]) if not _is_password_rule(r)]
        raise DatabaseError(
            node.host,
            node.port,
            Category.NOT_FOUND,
            f"the user {username!r} does not exist on {node.address}",
        )

    async def _run(
        self,
        node: _Node,
        doing: str,
        call: Awaitable[_T],
        *,
        rejected: Category | None = None,
    ) -> _T:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except Exception as exc:
            raise _translate(
                exc,
                node,
                self._endpoint,
                doing=doing,
                user=self._login_user,
                timeout_s=self._timeout_s,
                rejected=rejected,
            ) from None


def _is_password_rule(rule: str) -> bool:
    return rule == "nopass" or rule.startswith(_PASSWORD_RULE_PREFIXES)


def _group_selectors(words: list[str]) -> list[str]:
    """Join the words of each ``(...)`` selector into one rule."""
    rules: list[str] = []
    selector: list[str] | None = None
    for word in words:
        if selector is None and word.startswith("("):
            selector = [word]
        elif selector is not None:
            selector.append(word)
        else:
            rules.append(word)
        if selector is not None and word.endswith(")"):
            rules.append(" ".join(selector))
            selector = None
    return rules


def _pairs(answer: Any) -> dict[str, Any]:
    if isinstance(answer, dict):
        return {str(k): v for k, v in answer.items()}
    items = list(answer or [])
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _unpersisted(node: _Node) -> Permission:
    return Permission(
        False,
        f"{node.address} loads its users from neither an ACL file nor a config file, so an "
        "ACL change would be lost when it restarts (a lockout); rotd changes nothing there",
        "start the server with an aclfile (then rotd runs ACL SAVE) or from a config file "
        "(then rotd runs CONFIG REWRITE)",
    )


def _check_name(endpoint: Endpoint, name: str) -> None:
    if not name or any(c.isspace() or not c.isprintable() for c in name):
        raise DatabaseError(
            endpoint.host,
            endpoint.port,
            Category.BAD_SECRET,
            "a Redis user name must be non-empty, without blanks or control characters",
        )


async def _close(node: _Node) -> None:
    with contextlib.suppress(Exception):
        await node.client.aclose()


def _translate(
    exc: Exception,
    node: _Node,
    endpoint: Endpoint,
    *,
    doing: str,
    user: str,
    timeout_s: float,
    rejected: Category | None = None,
) -> DatabaseError:
    category, reason = _classify(exc, endpoint, doing=doing, user=user, timeout_s=timeout_s)
    if rejected is not None and isinstance(exc, rexc.ResponseError):
        category = rejected
    where = f"{reason} (node {node.address})" if node.address != endpoint.address else reason
    return DatabaseError(node.host, node.port, category, redactor.scrub(where))


def _classify(
    exc: Exception, endpoint: Endpoint, *, doing: str, user: str, timeout_s: float
) -> tuple[Category, str]:
    text = _HASH.sub("<hash>", redactor.scrub(" ".join(str(exc).split()) or type(exc).__name__))
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, TimeoutError | rexc.TimeoutError):
        return Category.TIMEOUT, f"timed out after {timeout_s:g}s trying to {doing}"
    if isinstance(exc, rexc.AuthenticationError | rexc.AuthenticationWrongNumberOfArgsError):
        return Category.AUTH, f"login refused for user {user!r}: {text}"
    if isinstance(exc, rexc.ResponseError) and text.startswith(("WRONGPASS", "NOAUTH")):
        return Category.AUTH, f"login refused for user {user!r}: {text}"
    if isinstance(exc, rexc.NoPermissionError) or (
        isinstance(exc, rexc.ResponseError) and text.startswith("NOPERM")
    ):
        return Category.PERMISSION, f"permission denied to {doing}: {text}"
    if isinstance(exc, rexc.BusyLoadingError):
        return Category.UNREACHABLE, f"the server is loading its data: {text}"
    if isinstance(exc, rexc.ReadOnlyError):
        return Category.SERVER, f"could not {doing}: the node is a read-only replica: {text}"
    if isinstance(exc, rexc.ResponseError):
        return Category.SERVER, f"could not {doing}: {text}"
    if isinstance(exc, ssl.SSLCertVerificationError) or isinstance(
        cause, ssl.SSLCertVerificationError
    ):
        return Category.TLS, f"TLS certificate verification failed: {text}"
    if isinstance(exc, ssl.SSLError) or isinstance(cause, ssl.SSLError) or "SSL" in text:
        return Category.TLS, f"TLS with mode {endpoint.tls.mode} failed: {text}"
    if isinstance(exc, rexc.ConnectionError | ConnectionError | OSError):
        return Category.UNREACHABLE, f"cannot reach the server to {doing}: {text}"
    return Category.SERVER, f"could not {doing}: {type(exc).__name__}: {text}"
