"""Faults placed exactly, where the random schedule of ``test_faults`` only sometimes lands.

Each test puts one fault at one point of a rotation, with the TCP proxy (cut a connection
right after the server answered a given statement: the statement ran, rotd never heard) or
the HTTP proxy (hold a Secrets Manager call, or cut its connection after moto acted on it),
and then checks what the next attempt does: it must resume with the same token and finish,
and the bugs these tests once found (see ``tests.faults.known``) must not come back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.fleet import ALTERNATING, SINGLE, Fleet, Member
from tests.faults.known import CLONE_BUG, FENCE_BUG, FINISH_BUG, RACE_BUG
from tests.faults.proxy import HttpFaultProxy, TcpProxy
from tests.faults.witness import SecretsReader, Version, logs_in
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.deadlines import until
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess


@dataclass
class Scene:
    """One database behind a TCP proxy, Secrets Manager behind an HTTP proxy, real rotd."""

    db: Database
    tcp: TcpProxy
    http: HttpFaultProxy
    reader: SecretsReader
    moto: MotoServer
    fleet: Fleet
    tmp_path: Path
    start: Callable[..., RotdProcess]

    async def add(self, strategy: str) -> Member:
        if not self.fleet.masters:
            await self.fleet.add_masters()
        return await self.fleet.add(self.db.engine, strategy, "cut")

    def inventory(self, member: Member, *, via_http: bool = False, name: str = "inv") -> str:
        aws = MotoServer(self.http.url, self.moto.region) if via_http else self.moto
        routes = {self.db.engine: ("127.0.0.1", self.tcp.port)}
        path = write_inventory(
            self.tmp_path / f"{name}.yaml", aws, databases=self.fleet.routed(routes, [member])
        )
        return str(path)

    def rotate(self, inventory: str) -> RotdProcess:
        return self.start("rotate", "-c", inventory, "--all", "--json", "--log-level", "debug")

    async def rotated(self, inventory: str) -> RotdProcess:
        """A ``rotd rotate`` run to its end (waited for in a thread: the proxies need the loop)."""
        process = self.rotate(inventory)
        await asyncio.to_thread(process.wait, 90)
        return process

    async def current(self, member: Member) -> Version:
        version = await self.reader.get(member.secret_id, stage="AWSCURRENT")
        assert version is not None
        return version

    async def logs_in(self, member: Member, version: Version) -> bool:
        return await logs_in(member.target, version.value["username"], version.value["password"])

    async def unfinished(self, member: Member) -> list[str]:
        described = await self.reader.call("DescribeSecret", SecretId=member.secret_id)
        assert described is not None
        return [
            version_id
            for version_id, stages in (described.get("VersionIdsToStages") or {}).items()
            if "AWSPENDING" in stages and "AWSCURRENT" not in stages
        ]

    async def reads_table(self, member: Member, version: Version) -> bool:
        schema = "public" if self.db.family == "postgres" else "test"
        try:
            await self.db.execute_as(
                version.value["username"],
                version.value["password"],
                f"SELECT count(*) FROM {schema}.{member.table}",
            )
        except Exception:
            return False
        return True


@pytest.fixture
async def scene(
    db: Database,
    moto: MotoServer,
    secrets: Secrets,
    tmp_path: Path,
    rotd_process: Callable[..., RotdProcess],
) -> AsyncIterator[Scene]:
    tcp = TcpProxy(db.host, db.port, db.engine)
    await tcp.start()
    http = HttpFaultProxy(moto.endpoint_url, rng=random.Random(0), enabled=False)
    await http.start()
    reader = SecretsReader(moto.endpoint_url)
    try:
        yield Scene(
            db, tcp, http, reader, moto, Fleet({db.engine: db}, secrets), tmp_path, rotd_process
        )
    finally:
        await reader.close()
        await http.close()
        await tcp.close()


def outcome(process: RotdProcess) -> dict[str, Any]:
    (event,) = [
        e
        for e in process.events
        if e.get("event")
        in ("rotation.succeeded", "rotation.resumed", "rotation.skipped", "rotation.failed")
    ]
    return event


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("db", "strategy", "statement"),
    [
        pytest.param("postgres", SINGLE, b"COMMIT", id="postgres-single_user-COMMIT"),
        pytest.param("postgres", ALTERNATING, b"COMMIT", id="postgres-alternating_users-COMMIT"),
        pytest.param("mariadb", SINGLE, b"SET PASSWORD", id="mariadb-single_user-SET_PASSWORD"),
        pytest.param(
            "mariadb", ALTERNATING, b"CREATE USER", id="mariadb-alternating_users-CREATE_USER"
        ),
    ],
    indirect=["db"],
)
async def test_a_statement_cut_off_after_it_ran_is_resumed_with_the_same_token(
    scene: Scene, strategy: str, statement: bytes
) -> None:
    """setSecret's statement runs, its answer is lost with the connection: the database may
    hold the pending password. The next attempt must finish that version, not start anew."""
    member = await scene.add(strategy)
    inventory = scene.inventory(member)
    first_current = await scene.current(member)
    scene.tcp.cut_after(statement)

    first = await scene.rotated(inventory)
    failed = outcome(first)
    assert (first.proc.returncode, failed["event"], failed["step"]) == (
        1,
        "rotation.failed",
        "setSecret",
    ), failed
    assert failed["transient"], failed
    assert scene.tcp.counts["statement_cuts"] == 1
    token = failed["version_id"]
    assert await scene.unfinished(member) == [token]
    pending = await scene.reader.get(member.secret_id, version_id=token)
    assert pending is not None
    if strategy == SINGLE:
        # The statement ran: the database holds the pending password, AWSCURRENT is refused.
        assert await scene.logs_in(member, pending)
        assert not await scene.logs_in(member, first_current)
    else:
        # Whatever the master did to the clone, the login applications use is untouched.
        assert await scene.logs_in(member, first_current)

    second = await scene.rotated(inventory)
    resumed = outcome(second)
    assert (second.proc.returncode, resumed["event"], resumed["version_id"]) == (
        0,
        "rotation.resumed",
        token,
    ), resumed
    history = await scene.reader.history(member.secret_id)
    assert [v.version_id for v in history] == [first_current.version_id, token], (
        "restarted with a new token"
    )
    current = await scene.current(member)
    assert current.version_id == token
    assert await scene.logs_in(member, current)
    assert await scene.unfinished(member) == []
    if not await scene.reads_table(member, current):
        if (scene.db.family, strategy) == ("mysql", ALTERNATING):
            pytest.fail(CLONE_BUG)
        pytest.fail(f"{current.value['username']} lost the privileges of {member.user}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_finish_whose_answer_is_lost_is_not_reported_as_failed(scene: Scene) -> None:
    """Moto moves AWSCURRENT, the connection is cut before rotd hears it."""
    member = await scene.add(SINGLE)
    inventory = scene.inventory(member, via_http=True)
    scene.http.on("UpdateSecretVersionStage", "cut_after")

    process = await scene.rotated(inventory)
    result = outcome(process)
    assert scene.http.counts["cut_after"] == 1
    current = await scene.current(member)
    assert current.version_id == result["version_id"], "the rotation is complete"
    assert await scene.logs_in(member, current)
    assert await scene.unfinished(member) == []
    if process.proc.returncode != 0 and result.get("category") == "conflict":
        pytest.fail(f"{FINISH_BUG}; rotd said: {result['error']}")
    assert (process.proc.returncode, result["event"]) == (0, "rotation.succeeded"), result


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_finish_overtaken_after_the_lock_was_lost_is_reported_once(
    scene: Scene,
) -> None:
    """A has set and tested its password and sent finishSecret, which is delayed; meanwhile
    A's session (and lock) ends, B resumes the rotation and finishes it; then A's move lands
    and is refused. One rotation, so one success (and one run of its hooks): B's."""
    member = await scene.add(SINGLE)
    inventory = scene.inventory(member, via_http=True)
    late_finish = scene.http.on("UpdateSecretVersionStage", "hold")

    a = scene.rotate(inventory)
    await until(late_finish.held, "A's finishSecret")
    await _end_rotd_sessions(scene.db, member.user)
    b = await scene.rotated(inventory)
    late_finish.release.set()
    await asyncio.to_thread(a.wait, 60)

    by_b, by_a = outcome(b), outcome(a)
    assert (b.proc.returncode, by_b["event"]) == (0, "rotation.resumed"), by_b
    assert by_a["event"] == "rotation.skipped", by_a
    assert "lost its rotation lock" in by_a["reason"]
    assert by_a["version_id"] == by_b["version_id"]
    current = await scene.current(member)
    assert current.version_id == by_b["version_id"]
    assert await scene.logs_in(member, current)
    assert await scene.unfinished(member) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_delayed_finish_met_by_a_retried_one_is_reported_as_ambiguous(
    scene: Scene,
) -> None:
    """As above, but B's move is sent twice (its first attempt's connection was cut) and A's
    lands between the two: B cannot tell A's move from its own first attempt. Secrets Manager
    records no author, so both report the rotation, and B says that its report may be a
    second one (hooks run at least once, here twice)."""
    member = await scene.add(SINGLE)
    inventory = scene.inventory(member, via_http=True)
    late_finish = scene.http.on("UpdateSecretVersionStage", "hold")
    scene.http.on("UpdateSecretVersionStage", "cut_before")
    retried_finish = scene.http.on("UpdateSecretVersionStage", "hold")

    a = scene.rotate(inventory)
    await until(late_finish.held, "A's finishSecret")
    await _end_rotd_sessions(scene.db, member.user)
    b = scene.rotate(inventory)
    await until(retried_finish.held, "B's finishSecret, sent again after a cut")
    late_finish.release.set()
    await asyncio.to_thread(a.wait, 60)
    retried_finish.release.set()
    await asyncio.to_thread(b.wait, 60)

    by_a, by_b = outcome(a), outcome(b)
    assert (a.proc.returncode, by_a["event"]) == (0, "rotation.succeeded"), by_a
    assert (b.proc.returncode, by_b["event"]) == (0, "rotation.resumed"), by_b
    (ambiguous,) = b.named("rotation.finish_ambiguous")
    assert ambiguous["version_id"] == by_a["version_id"] == by_b["version_id"]
    assert a.named("rotation.finish_ambiguous") == []
    current = await scene.current(member)
    assert current.version_id == by_a["version_id"]
    assert await scene.logs_in(member, current)
    assert await scene.unfinished(member) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_finish_that_lands_after_the_next_rotation_is_not_a_failure(
    scene: Scene,
) -> None:
    """As above, and before A's delayed move lands the secret is rotated once more: A's
    version was current and has been followed, which is no failure to park the secret for."""
    member = await scene.add(SINGLE)
    inventory = scene.inventory(member, via_http=True)
    late_finish = scene.http.on("UpdateSecretVersionStage", "hold")

    a = scene.rotate(inventory)
    await until(late_finish.held, "A's finishSecret")
    await _end_rotd_sessions(scene.db, member.user)
    b = await scene.rotated(inventory)
    c = await scene.rotated(inventory)
    late_finish.release.set()
    await asyncio.to_thread(a.wait, 60)

    by_a, by_b, by_c = outcome(a), outcome(b), outcome(c)
    assert (by_b["event"], by_c["event"]) == ("rotation.resumed", "rotation.succeeded")
    assert by_a["event"] == "rotation.skipped", by_a
    assert "another rotation has followed" in by_a["reason"]
    assert a.proc.returncode == 0
    current = await scene.current(member)
    assert current.version_id == by_c["version_id"]
    assert await scene.logs_in(member, current)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_rotation_overtaken_by_another_process_is_not_a_refused_login(
    scene: Scene,
) -> None:
    """A reads AWSCURRENT, B rotates the secret completely, then A logs in with what it read."""
    member = await scene.add(SINGLE)
    slow = scene.inventory(member, via_http=True, name="slow")
    fast = scene.inventory(member, name="fast")
    hold = scene.http.on("GetSecretValue", "hold")

    overtaken = scene.rotate(slow)
    await until(hold.held, "the first rotation to read AWSCURRENT")
    other = await scene.rotated(fast)
    assert (other.proc.returncode, outcome(other)["event"]) == (0, "rotation.succeeded")
    hold.release.set()
    await asyncio.to_thread(overtaken.wait, 90)

    current = await scene.current(member)
    assert await scene.logs_in(member, current)
    assert await scene.unfinished(member) == []
    result = outcome(overtaken)
    if result["event"] == "rotation.failed" and result["category"] == "auth":
        pytest.fail(f"{RACE_BUG}; rotd said: {result['error']}")
    assert result["event"] != "rotation.failed" or result["transient"], result


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_write_delivered_after_the_lock_was_lost_leaves_a_login_that_works(
    scene: Scene,
) -> None:
    """A's PutSecretValue is delayed in the network; meanwhile A's database session (and so
    its lock) ends, B takes the lock and sets its own pending password; A's write lands; then
    B dies before finishSecret. A label must log in throughout, and the next attempt must
    finish B's rotation."""
    member = await scene.add(SINGLE)
    inventory = scene.inventory(member, via_http=True)
    late_put = scene.http.on("PutSecretValue", "hold")
    finish = scene.http.on("UpdateSecretVersionStage", "hold")

    a = scene.rotate(inventory)
    await until(late_put.held, "A's PutSecretValue")
    await _end_rotd_sessions(scene.db, member.user)
    b = scene.rotate(inventory)
    await until(finish.held, "B's finishSecret (B has set and tested its password)")
    b_pending = await scene.reader.get(member.secret_id, stage="AWSPENDING")
    late_put.release.set()
    await asyncio.to_thread(a.wait, 60)
    assert outcome(a)["event"] == "rotation.failed"
    current = await scene.current(member)
    pending = await scene.reader.get(member.secret_id, stage="AWSPENDING")
    works = {
        "AWSCURRENT": await scene.logs_in(member, current),
        "AWSPENDING": pending is not None and await scene.logs_in(member, pending),
    }
    # Both rotations started from the same AWSCURRENT, so both wrote the same version id, and
    # Secrets Manager refused A's late write instead of moving AWSPENDING off B's password.
    kept = _same(pending, b_pending)
    assert kept, f"{FENCE_BUG}; labels that log in: {works}"
    assert any(works.values()), f"{FENCE_BUG}; labels that log in: {works}"
    await asyncio.to_thread(b.kill)  # SIGKILL before its finishSecret got through

    last = await scene.rotated(inventory)
    assert last.proc.returncode == 0, outcome(last)
    finished_b = _same(await scene.current(member), b_pending)
    assert finished_b, "the next attempt did not finish the rotation B had set"
    assert await scene.logs_in(member, await scene.current(member))
    assert await scene.unfinished(member) == []


def _same(a: Version | None, b: Version | None) -> bool:
    """The same version with the same value, whatever labels each carries (a bool, so that
    a failed assertion never prints a password)."""
    if a is None or b is None:
        return a is b
    return (a.version_id, a.value) == (b.version_id, b.value)


async def _end_rotd_sessions(db: Database, user: str) -> None:
    """pg_terminate_backend on rotd's sessions as ``user``, and wait until they are gone."""
    deadline = time.monotonic() + 30
    async with db.server.admin() as conn:  # type: ignore[attr-defined]
        query = "SELECT pid FROM pg_stat_activity WHERE application_name = 'rotd' AND usename = $1"
        while pids := [r[0] for r in await conn.fetch(query, user)]:
            for pid in pids:
                await conn.execute("SELECT pg_terminate_backend($1)", pid)
            assert time.monotonic() < deadline, "rotd's session does not end"
            await asyncio.sleep(0.05)  # polling pg_stat_activity
