"""The benchmark's counting proxies: one in front of Secrets Manager, one per database.

:class:`SecretsManagerProxy` is an aiohttp reverse proxy on 127.0.0.1 that forwards every
request to moto's server, counts calls by operation (the ``X-Amz-Target`` header) and secret
(the body's ``SecretId``), and can add a fixed delay to each call. :class:`TcpProxy` relays
TCP connections to a database, counts the connections accepted, tracks how many are open at
once, and can delay every chunk it forwards, in each direction, to add latency per round trip.
Both run in the benchmark's own event loop; what passes through them is the same for rotd and
for the floor script, so their own cost is part of both measurements.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from contextlib import suppress
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

# Headers that describe one hop, not the message; aiohttp sets its own.
_HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
)


class SecretsManagerProxy:
    """Forwards to ``upstream`` (moto's URL); counts calls; delays each by ``delay_s``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay_s = 0.0
        self.calls: Counter[tuple[str, str]] = Counter()  # (operation, SecretId) -> calls
        self.failures: Counter[tuple[str, int]] = Counter()  # (operation, status) -> calls
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None

    def reset(self) -> None:
        self.calls.clear()
        self.failures.clear()

    async def start(self) -> str:
        self._client = ClientSession(
            connector=TCPConnector(limit=128),
            auto_decompress=False,
            timeout=ClientTimeout(total=120),
        )
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server  # aiohttp exposes the bound port only here
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        body = await request.read()
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2] or "-"
        secret_id = "-"
        if body:
            with suppress(ValueError, AttributeError):
                secret_id = str(json.loads(body).get("SecretId", "-"))
        self.calls[(operation, secret_id)] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._client.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as upstream:
            data = await upstream.read()
            status = upstream.status
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        if status >= 400:
            self.failures[(operation, status)] += 1
        return web.Response(status=status, body=data, headers=out)


class TcpProxy:
    """Relays connections to ``host:port``; ``delay_s`` is added to each direction's chunks."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self.upstream = (host, port)
        self.delay_s = 0.0
        self.accepted = 0
        self.open = 0
        self.peak_open = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        self.accepted = 0
        self.peak_open = self.open

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        relay = asyncio.create_task(self._relay(reader, writer))
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers = [writer]
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            writers.append(up_writer)
            pipes = {
                asyncio.ensure_future(self._pipe(reader, up_writer)),
                asyncio.ensure_future(self._pipe(up_reader, writer)),
            }
            try:
                # Either side closing ends the connection for both.
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except OSError:
            pass
        finally:
            self.open -= 1
            for each in writers:
                each.close()
                with suppress(OSError):
                    await each.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        delay = self.delay_s
        if not delay:
            with suppress(OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            return
        # Each chunk leaves ``delay`` after it arrived, in order: latency without a bandwidth cap.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        delivery = asyncio.ensure_future(deliver())
        try:
            with suppress(OSError):
                while data := await reader.read(65536):
                    queue.put_nowait((loop.time() + delay, data))
            queue.put_nowait((0.0, b""))
            with suppress(OSError):
                await delivery
        finally:
            delivery.cancel()
            await asyncio.gather(delivery, return_exceptions=True)
