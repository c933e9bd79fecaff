"""Faults the kit injects at the engine's and the store's boundary, never inside a driver.

:class:`Cut` names a method and what happens once it has returned: the call did its work on
the server, and then the connection is lost before rotd hears the answer. For an engine the
session really closes (a session lock dies with it) and the method raises ``unreachable``, as
a connection reset right after a statement ran would; for Secrets Manager the call was carried
out and raises ``unreachable``. The next attempt must then resume and converge. A
:class:`Pause` instead holds a rotation right after a method returned, until released, so
that another rotation can be run beside it at a chosen instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rotd.engines import (
    Capabilities,
    Engine,
    EngineInfo,
    Login,
    Permission,
    Session,
    SeveralPasswords,
    capabilities,
)
from rotd.errors import Category, DatabaseError, StoreError
from rotd.passwords import PasswordPolicy
from rotd.secretstore import SecretDescription, SecretStore, SecretValue

T = TypeVar("T")


@dataclass
class Cut:
    """Lose the connection once, right after ``method`` returned (the ``nth`` call, from 1)."""

    method: str
    nth: int = 1
    calls: int = 0
    done: bool = False

    def after(self, method: str) -> bool:
        """Count a call of ``method`` that returned; True when this is the one to cut."""
        if self.done or method != self.method:
            return False
        self.calls += 1
        if self.calls == self.nth:
            self.done = True
        return self.done


@dataclass
class Pause:
    """Hold the rotation right after the first call of ``method`` (or of one of ``also``)
    returned, until released."""

    method: str
    also: tuple[str, ...] = ()
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def after(self, method: str) -> None:
        if method not in (self.method, *self.also) or self.reached.is_set():
            return
        self.reached.set()
        await self.release.wait()


def _lost(host: str, port: int, method: str) -> DatabaseError:
    return DatabaseError(
        host,
        port,
        Category.UNREACHABLE,
        f"connection lost after {method} returned (fault injected by rotd.testing)",
    )


class CuttingSession:
    """A :class:`Session` that loses its connection where the cut says."""

    def __init__(
        self, session: Session, login: Login, cut: Cut | None, pause: Pause | None
    ) -> None:
        self._session = session
        self._host = login.endpoint.host
        self._port = login.endpoint.port
        self._cut = cut
        self._pause = pause
        self._dead = False

    async def _call(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        if self._dead:
            raise _lost(self._host, self._port, method)
        result = await call()
        if self._cut is not None and self._cut.after(method):
            self._dead = True
            await self._session.close()
            raise _lost(self._host, self._port, method)
        if self._pause is not None:
            await self._pause.after(method)
        return result

    @property
    def username(self) -> str:
        return self._session.username

    async def close(self) -> None:
        await self._session.close()

    async def check_username(self, name: str) -> None:
        await self._call("check_username", lambda: self._session.check_username(name))

    async def set_own_password(self, new_password: str) -> None:
        await self._call("set_own_password", lambda: self._session.set_own_password(new_password))

    async def set_password(self, username: str, new_password: str) -> None:
        await self._call("set_password", lambda: self._session.set_password(username, new_password))

    async def set_passwords(self, username: str, passwords: Sequence[str]) -> None:
        inner = self._session
        if not isinstance(inner, SeveralPasswords):
            raise DatabaseError(
                self._host,
                self._port,
                Category.UNSUPPORTED,
                f"{type(inner).__name__} has no set_passwords (capability several_passwords)",
            )
        await self._call("set_passwords", lambda: inner.set_passwords(username, passwords))

    async def mirror_user(self, original: str, clone: str, new_password: str) -> None:
        await self._call(
            "mirror_user", lambda: self._session.mirror_user(original, clone, new_password)
        )

    async def run_test(self, query: str | None) -> None:
        await self._call("run_test", lambda: self._session.run_test(query))

    async def try_lock(self, key: str) -> bool:
        return await self._call("try_lock", lambda: self._session.try_lock(key))

    async def unlock(self, key: str) -> None:
        await self._call("unlock", lambda: self._session.unlock(key))

    async def ping(self) -> None:
        await self._call("ping", self._session.ping)

    async def tls_in_use(self) -> bool:
        return await self._call("tls_in_use", self._session.tls_in_use)

    async def may_set_own_password(self) -> Permission:
        return await self._call("may_set_own_password", self._session.may_set_own_password)

    async def may_set_password(self, username: str) -> Permission:
        return await self._call(
            "may_set_password", lambda: self._session.may_set_password(username)
        )

    async def may_mirror_user(self, original: str, clone: str) -> Permission:
        return await self._call(
            "may_mirror_user", lambda: self._session.may_mirror_user(original, clone)
        )

    async def accepts_passwords(self, policy: PasswordPolicy) -> Permission:
        return await self._call(
            "accepts_passwords", lambda: self._session.accepts_passwords(policy)
        )


class CuttingEngine:
    """The engine under test, whose sessions lose their connection where ``cut`` says and
    hold where ``pause`` says."""

    def __init__(self, engine: Engine, *, cut: Cut | None = None, pause: Pause | None = None):
        self._engine = engine
        self.cut = cut
        self.pause = pause

    @property
    def info(self) -> EngineInfo:
        return self._engine.info

    def capabilities_for(self, settings: Mapping[str, Any]) -> Capabilities:
        """The wrapped engine's, with these settings (exec: mirror_user when configured)."""
        return capabilities(self._engine, settings)

    def connect(self, login: Login, *, timeout_s: float) -> AbstractAsyncContextManager[Session]:
        return self._connect(login, timeout_s)

    @asynccontextmanager
    async def _connect(self, login: Login, timeout_s: float) -> AsyncIterator[Session]:
        async with self._engine.connect(login, timeout_s=timeout_s) as session:
            yield CuttingSession(session, login, self.cut, self.pause)


class CuttingStore:
    """rotd's Secrets Manager store, whose answer to ``cut.method`` is lost once it was
    carried out."""

    def __init__(self, store: SecretStore, cut: Cut) -> None:
        self._store = store
        self.cut = cut

    def _check(self, secret_id: str, method: str) -> None:
        if self.cut.after(method):
            raise StoreError(
                secret_id,
                method,
                Category.UNREACHABLE,
                f"connection lost after {method} was carried out (fault injected by rotd.testing)",
            )

    async def describe(self, secret_id: str) -> SecretDescription:
        found = await self._store.describe(secret_id)
        self._check(secret_id, "describe")
        return found

    async def get_value(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> SecretValue:
        value = await self._store.get_value(secret_id, version_id=version_id, stage=stage)
        self._check(secret_id, "get_value")
        return value

    async def put_pending(self, secret_id: str, token: str, string: str) -> bool:
        written = await self._store.put_pending(secret_id, token, string)
        self._check(secret_id, "put_pending")
        return written

    async def move_current(self, secret_id: str, token: str, from_version: str) -> None:
        await self._store.move_current(secret_id, token, from_version)
        self._check(secret_id, "move_current")

    async def remove_stage(self, secret_id: str, stage: str, version_id: str) -> None:
        await self._store.remove_stage(secret_id, stage, version_id)
        self._check(secret_id, "remove_stage")

    async def move_stage(
        self, secret_id: str, stage: str, to_version: str, from_version: str | None
    ) -> None:
        await self._store.move_stage(secret_id, stage, to_version, from_version)
        self._check(secret_id, "move_stage")

    async def unlabelled_versions(self, secret_id: str) -> list[str]:
        found = await self._store.unlabelled_versions(secret_id)
        self._check(secret_id, "unlabelled_versions")
        return found
