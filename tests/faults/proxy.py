"""Proxies that stand between rotd and its servers and break the connection on purpose.

:class:`TcpProxy` forwards a database port. It can cut every connection through it (both
sides see a reset), stop listening for a while (the database is unreachable) and start again
on the same port, and cut a connection right after the server has answered a statement that
matches a pattern (the statement ran, rotd never hears so). It knows the local ports of its
upstream connections, which is how the server's own view of a connection (``client_port`` in
PostgreSQL, the ``Host`` column of MariaDB's process list) is matched to rotd's traffic.

:class:`HttpFaultProxy` forwards Secrets Manager calls to moto's server and, at the rates it
is given, answers instead with throttling or 500 errors, stalls, or cuts the connection before
or after moto has acted on the call. Rules aimed at one operation make a fault happen exactly
where a test needs it. Every decision comes from the seeded ``random.Random`` it is handed.
A call stalled in the proxy still reaches moto after its caller was killed, as a late packet
would: :meth:`HttpFaultProxy.drained` waits until no call is on its way.

Both count what they did in ``counts`` and what failed on their own side (the real server
did not answer the proxy) in ``errors``, so that a test can tell its faults from its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import ClientError, ClientSession, ClientTimeout, web

__all__ = ["FaultRates", "HttpFaultProxy", "OpRule", "TcpProxy"]


class _Link:
    """One client connection and its upstream twin."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.drop_next_answer = False

    @property
    def upstream_port(self) -> int:
        return int(self.upstream.get_extra_info("sockname")[1])

    def cut(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.transport.abort()


@dataclass
class _CutRule:
    pattern: bytes
    times: int


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int, name: str) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.name = name
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._rules: list[_CutRule] = []
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> int:
        """Listen (again, on the same port once one was chosen); return the port."""
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening and cut every connection: the database is unreachable."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        self.cut_all()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def cut_all(self) -> int:
        """Reset every connection through the proxy; return how many there were."""
        links = list(self._links)
        for link in links:
            link.cut()
        return len(links)

    def cut_after(self, pattern: bytes, times: int = 1) -> None:
        """Cut the next ``times`` connections that send ``pattern``, once the server answered."""
        self._rules.append(_CutRule(pattern, times))

    def upstream_ports(self) -> set[int]:
        ports = set()
        for link in list(self._links):
            with contextlib.suppress(Exception):
                ports.add(link.upstream_port)
        return ports

    async def close(self) -> None:
        await self.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError as exc:
                self.errors[f"{self.name} did not answer the proxy: {type(exc).__name__}"] += 1
                writer.transport.abort()
                return
            link = _Link(writer, up_writer)
            self._links.add(link)
            self.counts["connections"] += 1
            try:
                await asyncio.gather(
                    self._pump(reader, link, upstream=True),
                    self._pump(up_reader, link, upstream=False),
                )
            finally:
                self._links.discard(link)
                link.cut()
        finally:
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, link: _Link, *, upstream: bool) -> None:
        """Copy one direction; the first end or error on either side closes both."""
        writer = link.upstream if upstream else link.client
        try:
            while data := await reader.read(65536):
                if not upstream and link.drop_next_answer:
                    # The server has run the statement and answered: rotd never hears it.
                    self.counts["statement_cuts"] += 1
                    link.cut()
                    return
                if upstream:
                    self._match(link, data)  # before the server can answer
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.cut()

    def _match(self, link: _Link, data: bytes) -> None:
        for rule in self._rules:
            if rule.times > 0 and rule.pattern in data:
                rule.times -= 1
                link.drop_next_answer = True
                return


@dataclass(frozen=True)
class FaultRates:
    """The chance that a Secrets Manager call meets each fault (the rest pass untouched)."""

    throttle: float = 0.0  # HTTP 400 ThrottlingException, moto never sees the call
    error_500: float = 0.0  # HTTP 500 InternalServiceError, moto never sees the call
    stall: float = 0.0  # forwarded after a pause of ``stall_s``
    cut_before: float = 0.0  # the connection is cut, moto never sees the call
    cut_after: float = 0.0  # moto acts on the call, then the connection is cut
    stall_s: tuple[float, float] = (0.3, 2.0)

    def pick(self, rng: random.Random) -> str | None:
        roll = rng.random()
        for kind in ("throttle", "error_500", "stall", "cut_before", "cut_after"):
            rate: float = getattr(self, kind)
            if roll < rate:
                return kind
            roll -= rate
        return None


@dataclass
class OpRule:
    """Meet the next ``times`` calls of ``operation`` with ``fault``. A ``hold`` keeps each
    such call waiting until ``release`` is set; ``held`` is set as one starts waiting."""

    operation: str
    fault: str
    times: int
    release: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class HttpFaultProxy:
    """An aiohttp server on 127.0.0.1 that forwards to ``upstream`` and injects faults."""

    upstream: str
    rng: random.Random
    rates: FaultRates = field(default_factory=FaultRates)
    enabled: bool = True
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (time.time(), what)
    _rules: list[OpRule] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _session: ClientSession | None = None
    _in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=30))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        for rule in self._rules:
            rule.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def on(self, operation: str, fault: str, times: int = 1) -> OpRule:
        """Meet the next ``times`` calls of ``operation`` (e.g. ``UpdateSecretVersionStage``)
        with ``fault``: one of :class:`FaultRates`' kinds, or ``hold`` (see :class:`OpRule`)."""
        rule = OpRule(operation, fault, times)
        self._rules.append(rule)
        return rule

    def _choose(self, operation: str) -> tuple[str | None, OpRule | None]:
        for rule in self._rules:
            if rule.operation == operation and rule.times > 0:
                rule.times -= 1
                return rule.fault, rule
        if not self.enabled:
            return None, None
        return self.rates.pick(self.rng), None

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no call is in the proxy (stalled, held or at moto); False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._in_flight:
                    self._idle.clear()
                    await self._idle.wait()
        return not self._in_flight

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # aiohttp does not cancel a handler whose client went away: a stalled call of a
        # killed process is forwarded all the same, and counted until moto has answered.
        self._in_flight += 1
        try:
            return await self._forward(request)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2] or "?"
        self.calls[operation] += 1
        fault, rule = self._choose(operation)
        if fault is not None:
            self.counts[fault] += 1
            self.timeline.append((time.time(), f"{fault} {operation}"))
        if fault == "throttle":
            return _aws_error(400, "ThrottlingException", "Rate exceeded")
        if fault == "error_500":
            return _aws_error(500, "InternalServiceError", "injected by the test's proxy")
        if fault == "cut_before":
            return _cut(request)
        if fault == "stall":
            await asyncio.sleep(self.rng.uniform(*self.rates.stall_s))
        if fault == "hold" and rule is not None:
            rule.held.set()
            await rule.release.wait()
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body
            ) as answer:
                data = await answer.read()
                status = answer.status
                answer_headers = {
                    k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS
                }
        except (ClientError, TimeoutError) as exc:
            self.errors[f"moto did not answer the proxy: {type(exc).__name__}"] += 1
            return _cut(request)
        if fault == "cut_after":
            return _cut(request)
        return web.Response(status=status, body=data, headers=answer_headers)


_HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-encoding", "date"}
)


def _aws_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"__type": code, "message": message}),
        headers={"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code},
    )


def _cut(request: web.Request) -> web.Response:
    """Reset the client's connection; the response returned is never sent."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)
