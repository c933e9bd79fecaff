"""The rotation lock where Redis has no session lock: a key set with ``NX`` and an expiry.

The holder renews the expiry every third of it while it holds the key, and only the holder
releases it (compare-and-delete). Weaker than a session lock: a holder stalled past the expiry,
or a failover to a replica that never got the key, loses it without knowing until it next
checks (:meth:`KeyLock.take` again). The version-id fence of the rotation protocol covers that.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from rotd.errors import DatabaseError

# How long the key lives unless renewed; read at each use, so that tests may shorten it.
LOCK_TTL_S = 30.0

# Renew or delete the key only while it still holds this holder's token: a lock that expired
# and was taken by another process is never touched by the one that lost it.
_RELEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_RENEW = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
)

Run = Callable[[str, Awaitable[Any]], Awaitable[Any]]


class KeyLock:
    """The lock keys one session holds on one node. ``run(doing, awaitable)`` runs a command
    with the session's deadline and error translation; ``client`` is the node's client."""

    def __init__(self, client: Any, run: Run) -> None:
        self._client = client
        self._run = run
        self._tokens: dict[str, str] = {}
        self._lost: set[str] = set()
        self._renewers: dict[str, asyncio.Task[None]] = {}

    def holds(self, name: str) -> bool:
        return name in self._tokens

    async def take(self, name: str) -> bool:
        """Take the key ``name``, or renew it when held; False when another holds it, or
        when this holder lost it (it is then given up)."""
        ttl_ms = int(LOCK_TTL_S * 1000)
        token = self._tokens.get(name)
        if token is not None:
            renewed = await self._run(
                "renew the rotation lock", self._client.eval(_RENEW, 1, name, token, ttl_ms)
            )
            if renewed and name not in self._lost:
                return True
            await self.release(name)
            return False
        token = secrets.token_hex(16)
        taken = await self._run(
            "take the rotation lock", self._client.set(name, token, nx=True, px=ttl_ms)
        )
        if not taken:
            return False
        self._tokens[name] = token
        self._lost.discard(name)
        self._renewers[name] = asyncio.create_task(self._renew(name, token))
        return True

    async def release(self, name: str) -> None:
        """Stop renewing ``name`` and delete it if it is still this holder's."""
        renewer = self._renewers.pop(name, None)
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        token = self._tokens.pop(name, None)
        self._lost.discard(name)
        if token is not None:
            await self._run(
                "release the rotation lock", self._client.eval(_RELEASE, 1, name, token)
            )

    async def release_all(self) -> None:
        """Release every key held; never raises a DatabaseError."""
        for name in list(self._tokens):
            with contextlib.suppress(DatabaseError):
                await self.release(name)

    async def _renew(self, name: str, token: str) -> None:
        while True:
            await asyncio.sleep(LOCK_TTL_S / 3)
            try:
                renewed = await self._run(
                    "renew the rotation lock",
                    self._client.eval(_RENEW, 1, name, token, int(LOCK_TTL_S * 1000)),
                )
            except DatabaseError:
                renewed = 0
            if not renewed:
                self._lost.add(name)
                return
