"""The fault schedule: rotd processes killed and restarted in lanes, and database faults.

A :class:`Lanes` runs real ``rotd`` processes, one after the other in each lane and several
lanes at once, and kills each with SIGKILL at a moment drawn from the seeded generator: early
(often before any rotation began), in the middle of its rotations (a short while after its
first rotation event, which is when the protocol's state is most interesting), or never (the
process finishes, or a daemon runs until its phase ends). :class:`DatabaseFaults` meanwhile
cuts rotd's database connections, from the server side (``pg_terminate_backend`` on rotd's
backends, ``KILL`` on its MariaDB threads) and from the network (a reset of every connection
through a proxy), each aimed at a moment when rotd has connections open (waiting a moment for
one), and makes a database unreachable for a few seconds by stopping its proxy. A phase ends at
a :class:`Deadline`, which the test may push back while its run still lacks some fault (see
``tests.faults.minimums``). What goes wrong in the injection itself (a thread that ended before
its ``KILL``, a SIGTERM that needed a SIGKILL) is counted in ``errors``, never ignored;
anything else it meets ends the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomysql
import asyncpg
import pymysql

from tests.faults.minimums import FLOORS
from tests.faults.proxy import TcpProxy
from tests.fixtures.postgres import PgServer
from tests.fixtures.process import RotdProcess

__all__ = ["DatabaseFaults", "Deadline", "Lanes", "Run"]

# Events that say a rotation is under way in a process.
_ROTATING = frozenset({"rotation.step", "rotation.resuming"})
_READY = frozenset({"daemon.ready"})
# Events that say a rotation ended, one way or another.
_ENDED = frozenset(
    {"rotation.succeeded", "rotation.resumed", "rotation.failed", "rotation.skipped"}
)
_MYSQL_NO_SUCH_THREAD = 1094
_AIM_S = 3.0  # how long a fault waits for rotd's traffic to aim at
# What each kind of connection fault must reach in a run (tests.faults.minimums), as counted.
_EFFECTS = {
    "pg_terminate": ("pg_terminate_backends", FLOORS["PostgreSQL backends terminated"]),
    "mysql_kill": ("mysql_kill_threads", FLOORS["MariaDB threads killed"]),
    "proxy_cut": ("proxy_cut_connections", FLOORS["proxy resets of live connections"]),
}


@dataclass
class Deadline:
    """When a phase ends (monotonic seconds); the test may move it while the phase runs."""

    at: float

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def left_s(self) -> float:
        return self.at - time.monotonic()


@dataclass
class Run:
    """One rotd process of a lane."""

    kind: str  # "rotate" or "run"
    phase: str
    lane: int
    process: RotdProcess
    started: float
    plan: str
    killed: bool = False
    exit_code: int | None = None
    ended: float | None = None

    @property
    def alive(self) -> bool:
        return self.process.proc.poll() is None

    @property
    def killed_mid_rotation(self) -> bool:
        """Killed with SIGKILL while a rotation it had begun had not ended."""
        if not self.killed:
            return False
        open_: set[object] = set()
        for event in list(self.process.events):
            name = event.get("event")
            if name in _ROTATING:
                open_.add(event.get("secret_id"))
            elif name in _ENDED:
                open_.discard(event.get("secret_id"))
        return bool(open_)


@dataclass
class Lanes:
    start: Callable[..., RotdProcess]
    rng: random.Random
    kills: bool = True  # False: no SIGKILL, every process ends on its own or with SIGTERM
    runs: list[Run] = field(default_factory=list)
    concurrency: Counter[int] = field(default_factory=Counter)  # samples of processes alive
    errors: Counter[str] = field(default_factory=Counter)

    def alive(self) -> list[Run]:
        return [r for r in self.runs if r.exit_code is None and r.alive]

    async def sample(self, stop: asyncio.Event) -> None:
        """Count how many processes run at once, five times a second."""
        while not stop.is_set():
            self.concurrency[len(self.alive())] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def lane(
        self,
        number: int,
        kind: str,
        phase: str,
        args: list[str],
        deadline: Deadline,
        *,
        first_delay_s: float = 0.0,
        pause_s: tuple[float, float] = (0.0, 0.4),
        at_deadline: str = "kill",
    ) -> None:
        """Start processes one after the other until ``deadline``; then SIGKILL the last one
        (``at_deadline="kill"``) or stop it with SIGTERM (``"terminate"``)."""
        await self._until(deadline, first_delay_s)
        while not deadline.passed():
            plan, delay_s = self._plan(kind)
            run = Run(kind, phase, number, self.start(*args), time.monotonic(), plan)
            self.runs.append(run)
            await self._watch(run, delay_s, deadline, at_deadline)
            await self._until(deadline, self.rng.uniform(*pause_s))

    def _plan(self, kind: str) -> tuple[str, float]:
        roll = self.rng.random()
        if kind == "rotate":
            if roll < 0.15:
                return "early", self.rng.uniform(0.2, 2.5)
            if roll < 0.7:
                return "mid", self.rng.uniform(0.0, 3.0)
            return "finish", 0.0
        if roll < 0.2:
            return "early", self.rng.uniform(0.3, 3.0)
        if roll < 0.8:
            return "mid", self.rng.uniform(0.0, 5.0)
        return "long", self.rng.uniform(5.0, 15.0)

    async def _watch(self, run: Run, delay_s: float, deadline: Deadline, at_deadline: str) -> None:
        """Let ``run`` go until its planned kill, its exit or the deadline."""
        kill_at: float | None = None
        if run.plan == "early" and self.kills:
            kill_at = run.started + delay_s
        while run.alive and not deadline.passed():
            now = time.monotonic()
            waits_for = _ROTATING if run.kind == "rotate" else _READY
            planned = self.kills and run.plan != "finish"
            if kill_at is None and planned and _has_event(run.process, waits_for):
                kill_at = now + delay_s
            if kill_at is not None and now >= kill_at:
                break
            await asyncio.sleep(0.02)
        if not run.alive:
            self._ended(run)
        elif deadline.passed() and (at_deadline == "terminate" or not self.kills):
            run.plan = "terminated"
            await self.terminate(run, timeout_s=30)
        else:
            await self.kill(run)

    async def kill(self, run: Run) -> None:
        """SIGKILL: no drain, no finally block, sessions dropped by the kernel."""
        run.killed = run.alive
        await asyncio.to_thread(run.process.kill)
        self._ended(run)

    async def terminate(self, run: Run, timeout_s: float) -> None:
        """SIGTERM and wait for the drain; SIGKILL if it overstays."""
        if run.alive:
            run.process.send(signal.SIGTERM)
            try:
                await asyncio.to_thread(run.process.wait, timeout_s)
            except subprocess.TimeoutExpired:
                self.errors["a SIGTERM that needed a SIGKILL"] += 1
        if run.alive:
            run.killed = True
        await asyncio.to_thread(run.process.kill)
        self._ended(run)

    def _ended(self, run: Run) -> None:
        run.exit_code = run.process.proc.poll()
        run.ended = time.monotonic()

    async def _until(self, deadline: Deadline, delay_s: float) -> None:
        # The random pause is part of the fault schedule, not a wait for some state.
        await asyncio.sleep(max(0.0, min(delay_s, deadline.left_s())))


def _has_event(process: RotdProcess, names: set[str] | frozenset[str]) -> bool:
    return any(e.get("event") in names for e in list(process.events))


@dataclass
class DatabaseFaults:
    """Cuts rotd's database connections and takes databases away, at seeded random moments."""

    rng: random.Random
    pg_server: PgServer
    mysql_host: str
    mysql_port: int
    proxies: dict[str, TcpProxy]  # by inventory database name
    enabled: bool = True  # False: no fault at all
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (time.time(), what)
    outage_s: float = 0.0
    weights: dict[str, float] = field(
        default_factory=lambda: {"pg_terminate": 3, "mysql_kill": 3, "proxy_cut": 2, "outage": 1}
    )
    _outages: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, stop: asyncio.Event, interval_s: tuple[float, float] = (0.8, 2.4)) -> None:
        if not self.enabled:
            await stop.wait()
            return
        pg = await self.pg_server.connect()
        mysql = await aiomysql.connect(
            host=self.mysql_host, port=self.mysql_port, user="root", password="", autocommit=True
        )
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.rng.uniform(*interval_s))
                if stop.is_set():
                    break
                kind = self.next_kind()
                if kind == "pg_terminate":
                    await self._traffic(stop, self.proxies["postgres"])
                    await self._pg_terminate(pg, stop)
                elif kind == "mysql_kill":
                    await self._traffic(stop, self.proxies["mariadb"])
                    await self._mysql_kill(mysql)
                elif kind == "proxy_cut":
                    await self._proxy_cut(stop)
                else:
                    self._outage()
        finally:
            await pg.close()
            mysql.close()
            await asyncio.gather(*self._outages, return_exceptions=True)
            for proxy in self.proxies.values():
                if not proxy.running:
                    await proxy.start()

    async def _traffic(self, stop: asyncio.Event, *proxies: TcpProxy) -> TcpProxy:
        """The busiest of ``proxies`` (all of them by default), once one has a connection
        open or ``_AIM_S`` passed. rotd's connections come and go (a rotation opens its own):
        a fault aimed at none of them would test nothing."""
        candidates = list(proxies or self.proxies.values())
        deadline = time.monotonic() + _AIM_S
        busiest = max(candidates, key=lambda p: p.open_connections)
        while not busiest.open_connections and time.monotonic() < deadline:
            if stop.is_set():
                break
            await asyncio.sleep(0.05)  # polling the proxies for traffic
            busiest = max(candidates, key=lambda p: p.open_connections)
        return busiest

    async def _proxy_cut(self, stop: asyncio.Event) -> None:
        """Reset every connection through the busiest proxy."""
        proxy = await self._traffic(stop)
        cut = proxy.cut_all()
        self.counts["proxy_cut"] += 1
        self.counts["proxy_cut_connections"] += cut
        self.timeline.append((time.time(), f"reset {cut} connections to {proxy.name}"))

    async def _pg_terminate(self, pg: asyncpg.Connection, stop: asyncio.Event) -> None:
        """End every backend rotd opened (``application_name`` rotd): mid-statement or idle.

        A connection open at the proxy may still be authenticating, its backend not yet
        listed: aim again until one is, up to ``_AIM_S``."""
        deadline = time.monotonic() + _AIM_S
        while True:
            ended = await pg.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                " FROM pg_stat_activity WHERE application_name = 'rotd'"
            )
            if ended or stop.is_set() or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)  # polling for a backend to aim at
        self.counts["pg_terminate"] += 1
        self.counts["pg_terminate_backends"] += int(ended or 0)
        self.timeline.append((time.time(), f"pg_terminate_backend x{ended}"))

    async def _mysql_kill(self, mysql: aiomysql.Connection) -> None:
        """KILL each MariaDB thread that came through the proxy, that is rotd's."""
        ports = self.proxies["mariadb"].upstream_ports()
        async with mysql.cursor() as cursor:
            await cursor.execute("SELECT ID, HOST FROM information_schema.PROCESSLIST")
            rows = await cursor.fetchall()
            victims = [i for i, host in rows if _port_of(host) in ports]
            for thread in victims:
                try:
                    await cursor.execute(f"KILL {int(thread)}")
                except pymysql.err.MySQLError as exc:
                    if exc.args[:1] != (_MYSQL_NO_SUCH_THREAD,):
                        raise
                    self.errors["a MariaDB thread that ended before its KILL"] += 1
                    continue
                self.counts["mysql_kill_threads"] += 1
        self.counts["mysql_kill"] += 1
        self.timeline.append((time.time(), f"KILL x{len(victims)}"))

    def next_kind(self) -> str:
        """The kind of the next fault: drawn by weight, unless one is owed."""
        kinds = list(self.weights)
        drawn = self.rng.choices(kinds, [self.weights[k] for k in kinds])[0]
        if self._outage_owed():
            return "outage"
        return self._owed() or drawn

    def _owed(self) -> str | None:
        """A kind of connection fault whose effect is still short of its floor and that has
        had less than its share of every fourth fault: every run cuts connections each way,
        whatever the dice say (one seed drew no proxy cut in 29 faults)."""
        injected = sum(self.counts[kind] for kind in self.weights)
        for kind, (effect, floor) in _EFFECTS.items():
            if self.counts[effect] < floor and injected >= 4 * (self.counts[kind] + 1):
                return kind
        return None

    def _outage_owed(self) -> bool:
        """Every run takes each database away: once every fourth fault while one has not been,
        whatever the dice say (a run that drew one outage in a minute tested half of it)."""
        injected = sum(self.counts[kind] for kind in self.weights)
        untouched = any(self.counts[f"outage_{name}"] == 0 for name in self.proxies)
        return untouched and injected >= 4 * (self.counts["outage"] + 1)

    def _outage(self) -> None:
        running = [p for p in self.proxies.values() if p.running]
        if len(running) < len(self.proxies):
            return  # one database away at a time
        # Each database in turn: every run takes both away, however the dice fall.
        proxy = min(running, key=lambda p: (self.counts[f"outage_{p.name}"], self.rng.random()))
        seconds = self.rng.uniform(1.0, 3.0)
        task = asyncio.create_task(self._take_away(proxy, seconds))
        self._outages.add(task)
        task.add_done_callback(self._outages.discard)

    async def _take_away(self, proxy: TcpProxy, seconds: float) -> None:
        self.counts["outage"] += 1
        self.counts[f"outage_{proxy.name}"] += 1
        self.timeline.append((time.time(), f"{proxy.name} away for {seconds:.1f} s"))
        await proxy.stop()
        try:
            await asyncio.sleep(seconds)  # the length of the outage is the fault
        finally:
            self.outage_s += seconds
            await proxy.start()
            self.timeline.append((time.time(), f"{proxy.name} back"))


def _port_of(host: object) -> int | None:
    text = str(host or "")
    _, colon, port = text.rpartition(":")
    return int(port) if colon and port.isdigit() else None
