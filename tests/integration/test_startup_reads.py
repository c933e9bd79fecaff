"""Start-up and reload read the secrets in batches: ListSecrets and BatchGetSecretValue.

docs/performance.md: at start and on reload rotd reads its secrets' state with at most one
Secrets Manager call per 10 secrets where its identity may make batch reads, and reads each
secret alone (two calls) where it may not, saying so once. The daemon runs in this process
against moto's server; Secrets Manager calls are counted by its stores' per-operation counter
(``Stores.calls``), the way tests/integration/test_call_counts.py counts a rotation's.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotd.accounts import Stores
from rotd.daemon import Daemon
from rotd.inventory import load
from rotd.notify import Notifier
from rotd.protocol import inspect, inspection_of
from rotd.survey import Survey
from tests.faults.proxy import HttpFaultProxy
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.deadlines import until
from tests.fixtures.iam import IamMoto
from tests.fixtures.inventory import write_inventory

Event = dict[str, Any]
BATCH_READS = ("secretsmanager:ListSecrets", "secretsmanager:BatchGetSecretValue")
SINGLE_READS = ("secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue")


def value(user: str) -> str:
    return json.dumps(
        {"engine": "postgres", "host": "127.0.0.1", "port": 5432, "username": user, "password": "x"}
    )


class Made(Secrets):
    """Many secrets made at once in one moto server, removed at the end."""

    async def create_many(self, n: int) -> list[str]:
        names = [self.name(f"s{len(self.created) + k:04d}") for k in range(n)]
        slots = asyncio.Semaphore(16)
        async with self.client() as client:

            async def one(name: str) -> None:
                async with slots:
                    await client.create_secret(Name=name, SecretString=value(name[-5:]))

            await asyncio.gather(*(one(name) for name in names))
        self.created += names
        return names


@pytest.fixture
async def made(moto: MotoServer) -> AsyncIterator[Made]:
    helper = Made(moto)
    yield helper
    await helper.cleanup()


@pytest.fixture
async def iam_made(iam_moto: IamMoto) -> AsyncIterator[Made]:
    iam_moto.enforce(False)
    helper = Made(iam_moto.server)
    yield helper
    iam_moto.enforce(False)
    await helper.cleanup()


@asynccontextmanager
async def ready(path: Path) -> AsyncIterator[tuple[Daemon, list[Event]]]:
    """A daemon on ``path`` once it has planned every secret, and its events so far."""
    daemon = Daemon(load(path), install_signal_handlers=False, notifier=Notifier(None))
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: daemon.started or task.done(), "the daemon to be ready", 90)
            assert not task.done(), task
            yield daemon, logs
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, 30) == 0


def calls_of(daemon: Daemon) -> Mapping[str, int]:
    assert isinstance(daemon.store, Stores)
    return daemon.store.calls


def named(logs: list[Event], name: str) -> list[Event]:
    return [e for e in logs if e["event"] == name]


async def test_start_reads_200_secrets_with_at_most_one_call_per_10_secrets(
    made: Made, moto: MotoServer, tmp_path: Path
) -> None:
    names = await made.create_many(200)
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": n} for n in names])

    async with ready(path) as (daemon, logs):
        calls = dict(calls_of(daemon))
        planned = {i: s.status.next_due for i, s in daemon.secrets.items()}

    assert sum(calls.values()) <= len(names) / 10, calls
    assert set(calls) == {"ListSecrets", "BatchGetSecretValue"}, calls
    assert calls["BatchGetSecretValue"] == len(names) // 20
    assert all(planned[n] is not None for n in names)
    assert [e["with_value"] for e in named(logs, "startup.batch_read")] == [len(names)]
    assert not named(logs, "startup.batch_reads_denied")


async def test_a_batch_read_plans_each_secret_as_reading_it_alone_does(
    made: Made, moto: MotoServer, tmp_path: Path
) -> None:
    """The two ways to read a secret build the same Inspection, including for what the batch
    cannot settle: AWSCURRENT moved off the first version (moto's BatchGetSecretValue still
    returns the first), and an unfinished rotation whose pending version needs its own read."""
    names = await made.create_many(12)
    moved, unfinished = names[0], names[1]
    async with made.client() as client:
        first = (await client.describe_secret(SecretId=moved))["VersionIdsToStages"]
        (old,) = list(first)
        new = str(uuid.uuid4())
        # As a rotation does: the new version as AWSPENDING, then AWSCURRENT moves to it.
        await client.put_secret_value(
            SecretId=moved,
            ClientRequestToken=new,
            SecretString=value("moved"),
            VersionStages=["AWSPENDING"],
        )
        await client.update_secret_version_stage(
            SecretId=moved, VersionStage="AWSCURRENT", MoveToVersionId=new, RemoveFromVersionId=old
        )
        await client.update_secret_version_stage(
            SecretId=moved, VersionStage="AWSPENDING", RemoveFromVersionId=new
        )
        await client.put_secret_value(
            SecretId=unfinished,
            ClientRequestToken=str(uuid.uuid4()),
            SecretString=value("pending"),
            VersionStages=["AWSPENDING"],
        )
        # A secret named by its ARN is found by its ARN.
        by_arn = (await client.describe_secret(SecretId=names[2]))["ARN"]
    ids = [by_arn if n == names[2] else n for n in names]
    inventory = load(write_inventory(tmp_path / "inv.yaml", moto, [{"id": i} for i in ids]))

    async with Stores(inventory) as stores:
        known = await Survey(stores).read(inventory.secrets)
        assert set(known) == set(ids)
        assert known[moved].value is not None
        assert known[moved].value.version_id == old
        before = dict(stores.calls)
        batch = {
            s.id: await inspection_of(s, stores, known[s.id].description, known[s.id].value)
            for s in inventory.secrets
        }
        extra = {op: n - before.get(op, 0) for op, n in stores.calls.items()}
        alone = {s.id: await inspect(s, stores) for s in inventory.secrets}

    assert batch == alone
    assert batch[moved].version_id == new
    assert batch[moved].username == "moved"
    assert batch[unfinished].unfinished is not None
    # One read each: the moved secret's AWSCURRENT value, the unfinished one's pending value.
    assert {op: n for op, n in extra.items() if n} == {"GetSecretValue": 2}


async def test_without_batch_permissions_each_secret_is_read_alone_and_it_is_said_once(
    iam_moto: IamMoto, iam_made: Made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = await iam_made.create_many(10)
    path = write_inventory(tmp_path / "inv.yaml", iam_moto.server, [{"id": n} for n in names])
    _, env = await iam_moto.user([*SINGLE_READS])
    for key, val in env.items():
        monkeypatch.setenv(key, val)

    iam_moto.enforce(True)
    try:
        async with ready(path) as (daemon, logs):
            calls = dict(calls_of(daemon))
            planned = {i: s.status.next_due for i, s in daemon.secrets.items()}
            # A reload that reads them all again (each parked secret plans again): not said twice.
            for secret in daemon.secrets.values():
                secret.parked = True
            await daemon.reload()
            again = dict(calls_of(daemon))
    finally:
        iam_moto.enforce(False)

    assert all(planned[n] is not None for n in names)
    assert calls == {"ListSecrets": 1, "DescribeSecret": 10, "GetSecretValue": 10}
    assert again["DescribeSecret"] == 20
    assert again["ListSecrets"] == 2
    (denied,) = named(logs, "startup.batch_reads_denied")
    assert denied["permission"] == "secretsmanager:ListSecrets"
    assert "secretsmanager:ListSecrets" in denied["action"]


async def test_with_listing_allowed_but_not_batch_values_each_value_is_read_alone(
    iam_moto: IamMoto, iam_made: Made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = await iam_made.create_many(10)
    path = write_inventory(tmp_path / "inv.yaml", iam_moto.server, [{"id": n} for n in names])
    _, env = await iam_moto.user([*SINGLE_READS, BATCH_READS[0]])
    for key, val in env.items():
        monkeypatch.setenv(key, val)

    iam_moto.enforce(True)
    try:
        async with ready(path) as (daemon, logs):
            calls = dict(calls_of(daemon))
            planned = {i: s.status.next_due for i, s in daemon.secrets.items()}
    finally:
        iam_moto.enforce(False)

    assert all(planned[n] is not None for n in names)
    # The listing stands in for DescribeSecret; the one refused batch call costs a read each.
    assert calls == {"ListSecrets": 1, "BatchGetSecretValue": 1, "GetSecretValue": 10}
    (denied,) = named(logs, "startup.batch_reads_denied")
    assert denied["permission"] == "secretsmanager:BatchGetSecretValue"


async def test_throttled_batch_reads_are_retried_and_still_read_in_batches(
    made: Made, moto: MotoServer, tmp_path: Path
) -> None:
    names = await made.create_many(40)
    proxy = HttpFaultProxy(moto.endpoint_url, rng=random.Random(0), enabled=False)
    await proxy.start()
    try:
        proxy.on("ListSecrets", "throttle", times=1)
        proxy.on("BatchGetSecretValue", "throttle", times=2)
        through = MotoServer(proxy.url, moto.region)
        path = write_inventory(tmp_path / "inv.yaml", through, [{"id": n} for n in names])
        async with ready(path) as (daemon, logs):
            calls = dict(calls_of(daemon))
            planned = {i: s.status.next_due for i, s in daemon.secrets.items()}
    finally:
        await proxy.close()

    assert proxy.counts["throttle"] == 3
    # Retried by botocore (each counted once by the store, again at the proxy), never read alone.
    assert calls == {"ListSecrets": 1, "BatchGetSecretValue": 2}
    assert proxy.calls["BatchGetSecretValue"] == 2 + 2
    assert all(planned[n] is not None for n in names)
    assert not named(logs, "startup.batch_reads_failed")
