"""Exactly how many Secrets Manager calls and database connections one rotation costs.

Secrets Manager calls are counted by the store's own per-operation counter
(``AwsSecretStore.calls``), snapshotted around one rotation. Database connections are counted
by a TCP relay that the inventory routes the database through (``databases[].host/port``
override the secret's address). Each expectation is named after the step that spends it; a
change to the protocol that adds or saves a call must change these numbers on purpose.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from contextlib import suppress
from types import TracebackType

from rotd.cli import rotate_batch
from rotd.engines import all_engines
from rotd.inventory import Inventory
from rotd.protocol import WRITES_PER_BRIDGED_ROTATION, WRITES_PER_ROTATION, Bridged, Step
from rotd.runner import Runner
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.bridge import BridgeFunction, start_rotation
from tests.fixtures.databases import Database
from tests.fixtures.rotation import Rotd, assert_ok, inventory, make_login, make_master

# Single user: the guard and its second look under the rotation lock, createSecret's read and
# write, finishSecret's label move.
SINGLE_USER_CALLS = {
    "DescribeSecret": 2,  # guard: rotation state and labels; again once the lock is held
    "GetSecretValue": 1,  # createSecret: the AWSCURRENT value
    "PutSecretValue": 1,  # createSecret: the new version as AWSPENDING
    "UpdateSecretVersionStage": 1,  # finishSecret: AWSCURRENT moves to the new version
}
# Alternating users: the same, and the master secret read once per batch.
ALTERNATING_USERS_CALLS = {**SINGLE_USER_CALLS, "GetSecretValue": 2}

# Single user: the current login takes the rotation lock and changes its own password; the
# pending login is tested.
SINGLE_USER_CONNECTIONS = 2
# Alternating users: the master (the rotation lock, the name check and setSecret), the current
# login's check, and the pending login's test.
ALTERNATING_USERS_CONNECTIONS = 3
# Within a batch, the next rotation on the same host slot reuses the master's session.
MASTER_SESSIONS = 1


class ConnectionCounter:
    """A TCP relay on 127.0.0.1 in front of ``host:port`` that counts accepted connections."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.port = 0

    async def __aenter__(self) -> ConnectionCounter:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        # rotd has closed its sessions by now; give the relays a moment to see it.
        if not self._relays:
            return
        _, left = await asyncio.wait(set(self._relays), timeout=5)
        for relay in left:
            relay.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    async def still_open(self, timeout_s: float = 5) -> int:
        """How many relayed connections are open once closes seen by then have gone through."""
        if self._relays:
            await asyncio.wait(set(self._relays), timeout=timeout_s)
        return len(self._relays)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        relay = asyncio.create_task(self._relay(reader, writer))
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers = [writer]
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            writers.append(up_writer)
            pipes = {
                asyncio.ensure_future(_pipe(reader, up_writer)),
                asyncio.ensure_future(_pipe(up_reader, writer)),
            }
            try:
                # Either side closing ends the connection for both.
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            for each in writers:
                each.close()
                with suppress(OSError):
                    await each.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def routed_inventory(
    moto: MotoServer,
    port: int,
    secrets: list[str],
    strategy: str,
    master: str | None,
    per_host: int | None = None,
) -> Inventory:
    """One database reached through the relay on ``port``, holding ``secrets``."""
    lines = [f"limits: {{max_concurrent_per_host: {per_host}}}"] if per_host else []
    lines += [
        "databases:",
        "  - name: counted",
        "    host: 127.0.0.1",
        f"    port: {port}",
        "    secrets:",
    ]
    for secret in secrets:
        lines += [f"      - id: {json.dumps(secret)}", f"        strategy: {strategy}"]
        if master:
            lines.append(f"        master_secret: {json.dumps(master)}")
    return inventory(moto, "\n".join(lines) + "\n")


def calls_since(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}


async def test_single_user_costs_five_calls_and_two_connections(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    _, name = await make_login(db, secrets)
    async with ConnectionCounter(db.host, db.port) as counter:
        inv = routed_inventory(moto, counter.port, [name], "single_user", None)
        before = dict(rotd.store.calls)
        assert_ok(await rotd.rotate_one(inv))
        calls = calls_since(before, rotd.store.calls)
    assert calls == SINGLE_USER_CALLS
    assert counter.accepted == SINGLE_USER_CONNECTIONS


async def test_alternating_users_cost_six_calls_and_three_connections(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    _, name = await make_login(db, secrets)
    master = await make_master(db, secrets)
    async with ConnectionCounter(db.host, db.port) as counter:
        inv = routed_inventory(moto, counter.port, [name], "alternating_users", master)
        # The first rotation creates the clone, the second sets the original's password:
        # both cost the same.
        for rotation in ("to the clone", "back to the original"):
            before = dict(rotd.store.calls)
            accepted = counter.accepted
            assert_ok(await rotd.rotate_one(inv))
            calls = calls_since(before, rotd.store.calls)
            assert calls == ALTERNATING_USERS_CALLS, rotation
            assert counter.accepted - accepted == ALTERNATING_USERS_CONNECTIONS, rotation


async def test_a_batch_reads_its_shared_master_secret_once_and_logs_in_as_it_once(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    """Three secrets of one master, one at a time on the host: one master session serves all
    three rotations, each releasing its lock before the next takes its own."""
    names = [(await make_login(db, secrets))[1] for _ in range(3)]
    master = await make_master(db, secrets)
    async with ConnectionCounter(db.host, db.port) as counter:
        inv = routed_inventory(moto, counter.port, names, "alternating_users", master, 1)
        before = dict(rotd.store.calls)
        for outcome in await rotd.rotate(inv):
            assert_ok(outcome)
        calls = calls_since(before, rotd.store.calls)
        assert await counter.still_open() == 0, "the batch left sessions open"
    per_secret = {op: n * 3 for op, n in SINGLE_USER_CALLS.items()}
    assert calls == {**per_secret, "GetSecretValue": 3 + 1}
    own = ALTERNATING_USERS_CONNECTIONS - MASTER_SESSIONS
    assert counter.accepted == MASTER_SESSIONS + 3 * own


async def test_the_rotate_command_finds_shared_logins_without_reading_twice(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    """``rotd rotate`` reads every secret of the inventory before rotating any (to find two
    holding one login); the rotation then takes the version it read from memory."""
    _, name = await make_login(db, secrets)
    _, other = await make_login(db, secrets)  # in the inventory, not rotated
    inv = routed_inventory(moto, db.port, [name, other], "single_user", None)
    before = dict(rotd.store.calls)
    (outcome,) = await rotate_batch(rotd.store, inv, [inv.secrets[0]])
    assert_ok(outcome)
    calls = calls_since(before, rotd.store.calls)
    assert calls == {**SINGLE_USER_CALLS, "GetSecretValue": 1 + 1}  # and the other's survey


# A bridged rotation, step by step as the bridge function asks for them (createSecret, then
# setSecret and testSecret at once, then finishSecret): each step looks at the secret and
# again under the lock and reads AWSCURRENT; the label ROTD_TESTED costs one write.
BRIDGED_CALLS = {
    # Each of the 3 steps: its guard, and again under the lock; createSecret once more, to
    # learn that the version Secrets Manager staged has no value yet.
    "DescribeSecret": 7,
    # Each step: AWSCURRENT and the pending version (createSecret: found without a value);
    # finishSecret reads the pending one twice (its login, then the recovery's check).
    "GetSecretValue": 7,
    "PutSecretValue": 1,  # createSecret
    "UpdateSecretVersionStage": 2,  # testSecret: ROTD_TESTED; finishSecret: AWSCURRENT
}


async def test_a_bridged_rotation_costs_one_more_write_for_its_label(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer, bridge_function: BridgeFunction
) -> None:
    _, name = await make_login(db, secrets)
    token = await start_rotation(bridge_function, name)
    inv = inventory(
        moto,
        f"""
        bridge:
          queue_url: {bridge_function.queue_url}
          function_arn: {bridge_function.function_arn}
        databases:
          - name: testdb
            secrets:
              - id: {json.dumps(name)}
                rotation: bridge
        """,
    )
    runner = Runner(rotd.store, all_engines(), max_concurrent=4, max_concurrent_per_host=4)
    (spec,) = inv.secrets
    before = dict(rotd.store.calls)
    for until in (Step.CREATE, Step.TEST, Step.FINISH):
        outcome = await runner.rotate_one(spec, bridged=Bridged(until, token))
        assert outcome.error is None, outcome.error
        assert outcome.version_id == token
    calls = calls_since(before, rotd.store.calls)
    assert calls == BRIDGED_CALLS
    writes = calls["PutSecretValue"] + calls["UpdateSecretVersionStage"]
    assert writes == WRITES_PER_BRIDGED_ROTATION
    assert (
        SINGLE_USER_CALLS["PutSecretValue"] + SINGLE_USER_CALLS["UpdateSecretVersionStage"]
        == WRITES_PER_ROTATION
    )
    assert await secrets.version(name) == token
