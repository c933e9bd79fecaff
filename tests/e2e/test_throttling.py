"""Secrets Manager throttling: rotd keeps its writes under ``aws.max_write_tps`` and rides out
throttled calls with botocore's adaptive retries, so the rotations still succeed.

A real ``rotd rotate --all`` reaches moto's server through the fault proxy, which answers some
calls with ``ThrottlingException`` and stamps every write request it receives (throttled ones
included: Secrets Manager counts those too).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.faults.proxy import HttpFaultProxy
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess
from tests.fixtures.rotation import make_login

Start = Callable[..., RotdProcess]
WRITES = frozenset({"PutSecretValue", "UpdateSecretVersionStage"})


@dataclass
class WriteStampingProxy(HttpFaultProxy):
    """The fault proxy, noting when each write request arrives."""

    writes: list[float] = field(default_factory=list)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Amz-Target", "").rpartition(".")[2] in WRITES:
            self.writes.append(time.monotonic())
        return await super()._handle(request)


def busiest_second(stamps: list[float], jitter_s: float = 0.05) -> int:
    """The most requests in any one-second window, less ``jitter_s``: requests sent exactly
    ``1 / rate`` apart may arrive a little closer together."""
    stamps = sorted(stamps)
    width = 1.0 - jitter_s
    return max(
        (sum(1 for t in stamps[i:] if t < start + width) for i, start in enumerate(stamps)),
        default=0,
    )


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_writes_stay_under_max_write_tps_and_throttled_calls_are_retried(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    names = [(await make_login(db, secrets))[1] for _ in range(6)]
    proxy = WriteStampingProxy(moto.endpoint_url, random.Random(12))
    await proxy.start()
    # The first calls of each kind are throttled; no call meets more throttles than
    # botocore's attempts, so every rotation must get through.
    for operation in ("GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage"):
        proxy.on(operation, "throttle", times=1)
    tps = 4
    path = write_inventory(
        tmp_path / "inv.yaml",
        MotoServer(proxy.url, moto.region),
        [{"id": n} for n in names],
        aws={"max_write_tps": tps},
        limits={"max_concurrent": 16, "max_concurrent_per_host": 16},
    )
    try:
        process = rotd_process("rotate", "-c", str(path), "--all", "--json")
        code = await asyncio.to_thread(process.wait, 90)
    finally:
        await proxy.close()

    assert code == 0, "".join(process.lines[-20:])
    assert len(process.named("rotation.succeeded")) == len(names)
    assert proxy.counts["throttle"] == 3
    assert len(proxy.writes) >= 2 * len(names)
    assert busiest_second(proxy.writes) <= tps, sorted(proxy.writes)
    for name in names:
        assert len(await secrets.stages(name)) == 2  # AWSCURRENT moved, AWSPREVIOUS kept
