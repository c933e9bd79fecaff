"""Redis and Valkey sessions: a user's passwords, its clone, persistence, tests and checks.

A session is one login on every node of a database (:mod:`rotd.engines.redis.nodes`). Each
change is checked on every node first (the node can persist it, the user exists), made on each
in one ``ACL SETUSER`` per node (atomic there), then persisted on each. Passwords are sent as
SHA-256 hashes (:mod:`rotd.engines.redis.acl`).
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

from rotd.engines import Login, Permission, lock_key
from rotd.engines.builtin import REDIS
from rotd.engines.redis.acl import (
    CLEARED,
    NEEDED,
    Persistence,
    pairs,
    password_hash,
    rules_of,
    unpersisted,
)
from rotd.engines.redis.lock import KeyLock
from rotd.engines.redis.nodes import (
    Moved,
    Node,
    addresses,
    call,
    check_name,
    client,
    translate,
)
from rotd.errors import Category, DatabaseError
from rotd.observability import redactor
from rotd.passwords import PasswordPolicy

__all__ = ["RedisEngine", "RedisSession"]

_T = TypeVar("_T")


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


class RedisSession:
    """One connection per node as one login. Each call runs under its own deadline."""

    def __init__(self, nodes: list[Node], login: Login, *, timeout_s: float) -> None:
        self._nodes = nodes
        self._endpoint = login.endpoint
        self._login_user = login.username
        self._timeout_s = timeout_s
        self._persistence: dict[str, Persistence] = {}
        self._key_locks: dict[str, KeyLock] = {}  # by node address
        self._lock_of: dict[str, KeyLock] = {}  # by lock key, while held

    @classmethod
    async def open(cls, login: Login, *, timeout_s: float) -> RedisSession:
        """Log in on each node; the first that fails closes the others and raises."""
        redactor.add(login.password)
        check_name(login.endpoint, login.username)
        nodes: list[Node] = []
        try:
            for host, port in addresses(login.endpoint):
                node = Node(host, port, client(host, port, login, timeout_s))
                nodes.append(node)
                try:
                    async with asyncio.timeout(timeout_s):
                        # Connects and authenticates (AUTH), which any user may do; PING may
                        # be among the commands a user is not allowed.
                        await node.client.initialize()
                except Exception as exc:
                    raise translate(
                        exc,
                        node,
                        login.endpoint,
                        doing=f"log in as {login.username!r}",
                        user=login.username,
                        timeout_s=timeout_s,
                    ) from None
        except BaseException:
            for node in nodes:
                await node.close()
            raise
        return cls(nodes, login, timeout_s=timeout_s)

    @property
    def username(self) -> str:
        return self._login_user

    @property
    def _primary(self) -> Node:
        return self._nodes[0]

    async def close(self) -> None:
        """Release any lock this session holds and close every connection; never raises."""
        for lock in self._key_locks.values():
            await lock.release_all()
        for node in self._nodes:
            await node.close()

    async def check_username(self, name: str) -> None:
        """Redis has no length limit; a name with blanks or control characters is refused."""
        check_name(self._endpoint, name)

    # Passwords.

    async def set_own_password(self, new_password: str) -> None:
        """Make ``new_password`` the logged-in user's only password, on every node."""
        await self.set_password(self._login_user, new_password)

    async def set_password(self, username: str, new_password: str) -> None:
        """Make ``new_password`` the user's only password, on every node."""
        check_name(self._endpoint, username)
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
        check_name(self._endpoint, username)
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
        check_name(self._endpoint, original)
        check_name(self._endpoint, clone)
        redactor.add(new_password)
        await self._prepare(original)
        for node in self._nodes:
            rules = await self._rules(node, original)
            await self._run(
                node,
                f"mirror {original!r} onto {clone!r}",
                node.client.execute_command(
                    "ACL", "SETUSER", clone, *CLEARED, *rules, "#" + password_hash(new_password)
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
        """Take (or, when this session holds it, renew) the lock key ``key`` names
        (:mod:`rotd.engines.redis.lock`): on the first node, or in a cluster on the node that
        serves the key's slot (the one a ``MOVED`` answer names, which must be listed)."""
        name = lock_key(key)[1]
        lock = self._lock_of.get(name)
        if lock is None:
            # Taking the lock is the first thing a rotation asks of the session that will
            # change the user: refuse here, before createSecret, when a node cannot persist.
            await self._check_persistence()
            lock = self._key_lock(self._primary)
        try:
            taken = await lock.take(name)
        except Moved as moved:
            lock = self._key_lock(self._node_at(moved))
            taken = await lock.take(name)
        if taken:
            self._lock_of[name] = lock
        else:
            self._lock_of.pop(name, None)
        return taken

    async def unlock(self, key: str) -> None:
        """Release the lock ``key`` names, if this session still owns it."""
        name = lock_key(key)[1]
        lock = self._lock_of.pop(name, None)
        if lock is not None:
            await lock.release(name)

    def _key_lock(self, node: Node) -> KeyLock:
        lock = self._key_locks.get(node.address)
        if lock is None:
            lock = self._key_locks[node.address] = KeyLock(
                node.client, lambda doing, awaitable: self._run(node, doing, awaitable)
            )
        return lock

    def _node_at(self, moved: Moved) -> Node:
        for node in self._nodes:
            if (node.host, node.port) == moved.to:
                return node
        host, port = moved.to
        raise DatabaseError(
            moved.host,
            moved.port,
            Category.UNSUPPORTED,
            f"the rotation lock's key lives on cluster node {host}:{port}, which is not among "
            "the database's nodes: list every cluster node under nodes: in the inventory",
        )

    async def ping(self) -> None:
        for node in self._nodes:
            try:
                await self._run(node, "ping the server", node.client.ping())
            except DatabaseError as exc:
                if exc.category is not Category.PERMISSION:  # it answered, as this user
                    raise

    # Read-only checks for doctor.

    async def tls_in_use(self) -> bool:
        return all(node.encrypted for node in self._nodes)

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
            f"ACL SETUSER {me} {NEEDED} on every node (then persist it), or set master_secret "
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
                return unpersisted(node.address)
            for command in (("ACL", "SETUSER", username), mode.save):
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
                refusal = unpersisted(node.address)
                raise DatabaseError(
                    node.host,
                    node.port,
                    Category.UNSUPPORTED,
                    f"{refusal.reason}; {refusal.fix}",
                )

    async def _persistence_of(self, node: Node) -> Persistence:
        known = self._persistence.get(node.address)
        if known is not None:
            return known
        answer = await self._run(
            node,
            "read the aclfile setting",
            node.client.execute_command("CONFIG", "GET", "aclfile"),
        )
        values = pairs(answer)
        if values.get("aclfile"):
            mode = Persistence.ACL_FILE
        else:
            info = await self._run(node, "read INFO server", node.client.info("server"))
            mode = Persistence.CONFIG_FILE if info.get("config_file") else Persistence.NONE
        self._persistence[node.address] = mode
        return mode

    async def _persist(self) -> None:
        for node in self._nodes:
            command = (await self._persistence_of(node)).save
            await self._run(
                node,
                f"persist the ACL change ({' '.join(command)})",
                node.client.execute_command(*command),
            )

    async def _hashes(self, node: Node, username: str) -> list[str]:
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
        return [str(h) for h in pairs(answer).get("passwords", [])]

    async def _rules(self, node: Node, username: str) -> list[str]:
        """The user's rules as ``ACL LIST`` gives them, without its passwords."""
        lines = await self._run(
            node, "list the ACL users", node.client.execute_command("ACL", "LIST")
        )
        rules = rules_of(lines, username)
        if rules is not None:
            return rules
        raise DatabaseError(
            node.host,
            node.port,
            Category.NOT_FOUND,
            f"the user {username!r} does not exist on {node.address}",
        )

    async def _run(
        self,
        node: Node,
        doing: str,
        awaitable: Awaitable[_T],
        *,
        rejected: Category | None = None,
    ) -> _T:
        return await call(
            node,
            self._endpoint,
            awaitable,
            doing=doing,
            user=self._login_user,
            timeout_s=self._timeout_s,
            rejected=rejected,
        )
