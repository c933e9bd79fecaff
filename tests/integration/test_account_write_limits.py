"""``aws.max_write_tps`` is per account and region: two accounts never wait on each other."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from rotd.accounts import Stores
from rotd.inventory import load
from tests.fixtures.accounts import ACCOUNT_A, ACCOUNT_B, Accounts, role
from tests.fixtures.aws import MotoServer
from tests.fixtures.inventory import write_inventory

TPS = 2.0  # one write every 0.5 s in each account and region
WRITES = 3


async def test_each_account_is_paced_alone(
    accounts: Accounts, moto: MotoServer, tmp_path: Path
) -> None:
    role_a, role_b = role(ACCOUNT_A), role(ACCOUNT_B)
    value = {"engine": "postgres", "host": "h", "username": "u", "password": "Initial-pass-1"}
    for role_arn, label in ((role_a, "a"), (role_b, "b")):
        await accounts.create(role_arn, moto.region, label, value)
    name_a, name_b = accounts.name("a"), accounts.name("b")
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        aws={"max_write_tps": TPS},
        databases=[
            {"name": "in-a", "aws": {"role_arn": role_a}, "secrets": [{"id": name_a}]},
            {"name": "in-b", "aws": {"role_arn": role_b}, "secrets": [{"id": name_b}]},
        ],
    )
    done: dict[str, list[float]] = {name_a: [], name_b: []}
    async with Stores(load(path)) as stores:
        for name in done:  # assume both roles before the clock starts
            await stores.describe(name)
        started = time.monotonic()

        async def write(name: str) -> None:
            for _ in range(WRITES):
                await stores.put_pending(name, str(uuid.uuid4()), '{"password": "P-1"}')
                done[name].append(time.monotonic() - started)

        await asyncio.gather(write(name_a), write(name_b))

    for stamps in done.values():  # paced: no two writes of one account closer than 1/TPS
        assert stamps[-1] >= (WRITES - 1) / TPS - 0.05, stamps
    # Not waiting on each other: both finish about when one alone would (one shared limiter
    # would need 2 * WRITES - 1 intervals, 2.5 s).
    total = max(s[-1] for s in done.values())
    assert total < (2 * WRITES - 1) / TPS - 0.3, done
