"""The nodes of one Redis database as one login: a connection to each, and what its failures mean.

The only place that imports redis-py. Every failure becomes a :class:`DatabaseError` whose
category an operator acts on, naming the node when it is not the endpoint's own address, with
passwords and the hashes the server may quote back removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from rotd.engines import Endpoint, Login, TlsMode
from rotd.errors import Category, DatabaseError
from rotd.observability import redactor

_T = TypeVar("_T")

# A password hash as the server may quote it back in an error ("... modifier '!<hex>' ...").
_HASH = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Node:
    host: str
    port: int
    client: Any

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def encrypted(self) -> bool:
        return isinstance(self.client.connection, aioredis.SSLConnection)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()


class Moved(DatabaseError):
    """A cluster node answered ``MOVED``: the key lives on the node at ``to``."""

    def __init__(self, host: str, port: int, reason: str, *, to: tuple[str, int]) -> None:
        super().__init__(host, port, Category.SERVER, reason)
        self.to = to


def addresses(endpoint: Endpoint) -> list[tuple[str, int]]:
    """The endpoint's own address first (the lock and the test query live there), then its
    other nodes."""
    first = (endpoint.host, endpoint.port)
    return [first, *(node for node in endpoint.nodes if node != first)]


def client(host: str, port: int, login: Login, timeout_s: float) -> Any:
    """A client of one connection as ``login``, that never retries on its own."""
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


async def call(
    node: Node,
    endpoint: Endpoint,
    awaitable: Awaitable[_T],
    *,
    doing: str,
    user: str,
    timeout_s: float,
    rejected: Category | None = None,
) -> _T:
    """Await one command on ``node`` within ``timeout_s``; failures become DatabaseError."""
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except Exception as exc:
        raise translate(
            exc, node, endpoint, doing=doing, user=user, timeout_s=timeout_s, rejected=rejected
        ) from None


def check_name(endpoint: Endpoint, name: str) -> None:
    if not name or any(c.isspace() or not c.isprintable() for c in name):
        raise DatabaseError(
            endpoint.host,
            endpoint.port,
            Category.BAD_SECRET,
            "a Redis user name must be non-empty, without blanks or control characters",
        )


def translate(
    exc: Exception,
    node: Node,
    endpoint: Endpoint,
    *,
    doing: str,
    user: str,
    timeout_s: float,
    rejected: Category | None = None,
) -> DatabaseError:
    if isinstance(exc, rexc.MovedError):
        reason = f"could not {doing}: the key lives on cluster node {exc.host}:{exc.port}"
        return Moved(node.host, node.port, reason, to=(str(exc.host), int(exc.port)))
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
