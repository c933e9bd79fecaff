"""Fault injection: real rotd processes rotate 16 secrets while everything around them fails.

Real PostgreSQL (``pg_server``, which checks passwords), the machine's MariaDB and moto's
server; rotd reaches the databases through TCP proxies (the inventory's ``databases[].host``
and ``port``) and Secrets Manager through an HTTP proxy, both of which the test breaks. A
witness per secret logs in with AWSCURRENT all along (see ``tests.faults.witness``). The fault
schedule comes from one seeded ``random.Random``; the seed is printed, and
``ROTD_FAULTS_SEED=<seed>`` replays the schedule (not the operating system's timing).

Which process kind meets which fault:

========  ============================================  =======================================
phase     processes                                     faults
========  ============================================  =======================================
1 rotate  ``rotd rotate --all`` on group A (12          SIGKILL at random moments (early, or
          secrets), in 3 lanes: 2 or 3 at once, each    during its rotations), restarted; DB
          restarted after it exits or is killed         connections cut (``pg_terminate_backend``
                                                        on rotd's backends, ``KILL`` on its
                                                        MariaDB threads, proxy resets); a DB
                                                        unreachable for seconds (proxy stopped);
                                                        Secrets Manager throttling, 500s, stalls,
                                                        connections cut before and after moto
                                                        acted on the call
2 run     ``rotd run`` on all 16 secrets with           the same, and SIGKILL/restart of the
          ``rate(1 minute)``, window 0, in 3 lanes: 2   daemons. Each daemon starts by resuming
          or 3 daemons at once; ``rotd status`` and     what phase 1 left unfinished; group D (4
          ``/metrics`` read meanwhile                   secrets phase 1 never touched) falls due
                                                        during the phase, in every daemon at the
                                                        same instant. SIGTERM at the end
3 clean   one ``rotd run``, stopped with SIGTERM once   none
          nothing is left unfinished
========  ============================================  =======================================

Then the test checks the invariants from the logs of every process, the version histories and
the witnesses (see :func:`judge`), and prints its totals, which the terminal summary and the
test's report (``record_property``) repeat. Every broken invariant fails the test; there is
no expected failure: a rotd bug this test once found (``tests.faults.known``) that came back
is a failure like any other.

Invariants that held over a run that broke nothing would prove nothing, so the test also
fails unless the run did what ``tests.faults.minimums`` requires: SIGKILLs in both phases and
in the middle of rotations, each kind of database and Secrets Manager fault, two and three
processes at once and rotations that met a rival's lock or work, logins accepted by every
witness, successful and resumed rotations; and
unless the witnesses met no error but refused logins (they go around every proxy, so no fault
explains one) and the injection's own errors stayed few. Phase 2 goes on past its planned end,
up to ``PHASE_2_LIMIT_S``, while a floor that more faults can reach is still short.

That these checks bite is itself checked by mutation: ``ROTD_FAULTS_MUTATION`` breaks the
test's own machinery, and each value must make the test fail.

- ``no-injection``: no database fault, no Secrets Manager fault, no SIGKILL (processes end on
  their own or with SIGTERM). Fails on the fault floors.
- ``closed-witness``: every witness logs in to a closed port instead of its database. Fails on
  the witnesses' unexplained errors and on their accepted logins.

Run them by hand after changing this suite, e.g.
``ROTD_FAULTS_MUTATION=no-injection timeout 900 .venv/bin/pytest tests/faults/test_faults.py``;
``test_minimums`` checks the same verdicts on made-up totals in every run of the suite.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientError, ClientSession, ClientTimeout

from tests.faults import evidence, minimums, report
from tests.faults.chaos import DatabaseFaults, Deadline, Lanes, Run
from tests.faults.fleet import ALTERNATING, SINGLE, Fleet, Member
from tests.faults.known import CLONE_BUG, FENCE_BUG
from tests.faults.proxy import FaultRates, HttpFaultProxy, TcpProxy
from tests.faults.witness import SecretsReader, Version, Witness, logs_in
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Mariadb, Postgres
from tests.fixtures.inventory import write_inventory
from tests.fixtures.mariadb import MysqlServer
from tests.fixtures.postgres import PgServer
from tests.fixtures.process import RotdProcess, free_tcp_port

SEED = int(os.environ.get("ROTD_FAULTS_SEED") or random.SystemRandom().randrange(2**32))
MUTATIONS = ("no-injection", "closed-witness")
MUTATION = os.environ.get("ROTD_FAULTS_MUTATION", "")
assert MUTATION in ("", *MUTATIONS), f"ROTD_FAULTS_MUTATION is one of {MUTATIONS}"

# Moderate: most calls pass, botocore's retries absorb most faults, some still reach rotd.
SECRETS_MANAGER_FAULTS = FaultRates(
    throttle=0.04, error_500=0.03, stall=0.03, cut_before=0.03, cut_after=0.03
)
RATE_S = 60.0  # rate(1 minute), the daemons' schedule
CALLS_LAND_S = 40.0  # the longest a call can stay in the proxy: stall, then moto (30 s)
PHASE_1_S = 40.0
PHASE_2_S = 30.0
# Phase 2 may go on this long while the run lacks faults; under a minute, so that a daemon
# cannot rotate one secret twice in it on time.
PHASE_2_LIMIT_S = 50.0
DUE_AFTER_PHASE_2_STARTS_S = 12.0  # every daemon has planned group D when it falls due
AFTER_DUE_S = 15.0  # and has time to rotate it, and to retry once
# A rotation's steps are logged a moment after moto answered (see evidence.overlaps).
LOG_SLACK_S = 1.0
# Moto's CreatedDate is whole seconds: a version made at 12:00:00.9 says 12:00:00.
CREATED_SLACK_S = 1.0


@pytest.mark.timeout(420)  # about 3 minutes; phase 2 may go on longer on a busy machine
async def test_rotations_survive_kills_cuts_outages_and_rivals(
    pg_server: PgServer,
    mysql_server: MysqlServer,
    moto: MotoServer,
    secrets: Secrets,
    tmp_path: Path,
    rotd_process: Callable[..., RotdProcess],
    record_property: Callable[[str, object], None],
) -> None:
    print(f"fault schedule seed {SEED}; replay with ROTD_FAULTS_SEED={SEED}")
    if MUTATION:
        print(f"mutation {MUTATION}: this run must fail")
    async with AsyncExitStack() as stack:
        campaign = await Campaign.set_up(
            stack, pg_server, mysql_server, moto, secrets, tmp_path, rotd_process
        )
        await campaign.rotate_processes()
        await campaign.daemons()
        clean_exit = await campaign.finish_cleanly()
        verdict = await judge(campaign)

    heading = f"test_rotations_survive_kills_cuts_outages_and_rivals (seed {SEED})"
    report.add(heading, verdict.lines)
    record_property("fault_totals", "\n".join(verdict.lines))
    print("\n".join(verdict.lines))
    failures = [f"invariant {k}: {v}" for k, v in verdict.violations.items() if v]
    if clean_exit != 0:
        failures.append(f"the clean daemon exited with {clean_exit} on SIGTERM, not 0")
    if verdict.group_d_rotated < 1:
        failures.append("no daemon rotated group D when it fell due")
    # Invariants that held prove something only if the run did what it must.
    failures += [f"too little tested: {short}" for short in minimums.shortfalls(verdict.measured)]
    if failures and verdict.witness_errors:  # what they were, timeouts (tolerated) included
        failures.append(f"witness errors: {dict(verdict.witness_errors.most_common(5))}")
    totals = "\n".join(verdict.lines)
    assert not failures, f"seed {SEED}:\n" + "\n".join(failures) + f"\n{totals}"


@dataclass
class Campaign:
    """Everything one run of the test made, and the three phases."""

    rng: random.Random
    fleet: Fleet
    proxies: dict[str, TcpProxy]
    http: HttpFaultProxy
    reader: SecretsReader
    faults: DatabaseFaults
    lanes: Lanes
    witnesses: dict[str, Witness]
    inventories: dict[str, Path]
    start: Callable[..., RotdProcess]
    pg_server: PgServer
    tmp_path: Path
    group_d_due: float  # monotonic
    stop_faults: asyncio.Event = field(default_factory=asyncio.Event)
    stop_watching: asyncio.Event = field(default_factory=asyncio.Event)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    faulting: asyncio.Task[None] | None = None
    marks: dict[str, float] = field(default_factory=dict)  # monotonic
    phase_2_from: float = 0.0  # wall clock, whole seconds: versions made by daemons
    phase_2_until: float = 0.0
    observed: list[str] = field(default_factory=list)  # status output, /metrics scrapes
    scrapes: int = 0
    extended_for: list[str] = field(default_factory=list)  # what phase 2 went on for
    scrape_errors: Counter[str] = field(default_factory=Counter)

    @classmethod
    async def set_up(
        cls,
        stack: AsyncExitStack,
        pg_server: PgServer,
        mysql_server: MysqlServer,
        moto: MotoServer,
        secrets: Secrets,
        tmp_path: Path,
        start: Callable[..., RotdProcess],
    ) -> Campaign:
        began = time.monotonic()
        rng = random.Random(SEED)
        pg, maria = Postgres(pg_server), Mariadb(mysql_server)
        stack.push_async_callback(maria.cleanup)
        stack.push_async_callback(pg.cleanup)
        proxies = {
            "postgres": TcpProxy(pg_server.host, pg_server.port, "postgres"),
            "mariadb": TcpProxy(mysql_server.host, mysql_server.port, "mariadb"),
        }
        for proxy in proxies.values():
            await proxy.start()
            stack.push_async_callback(proxy.close)
        http = HttpFaultProxy(
            moto.endpoint_url, random.Random(rng.random()), rates=SECRETS_MANAGER_FAULTS
        )
        await http.start()
        stack.push_async_callback(http.close)
        reader = SecretsReader(moto.endpoint_url)
        stack.push_async_callback(reader.close)

        # Group D last: it falls due RATE_S after it was made, and phase 1 (which leaves it
        # alone) ends in time for phase 2 to be under way by then; made last, the time the
        # rest of the set-up takes on a busy machine is not taken from phase 1.
        fleet = Fleet({"postgres": pg, "mariadb": maria}, secrets)
        await fleet.add_masters()
        kinds = [(db, strategy) for db in fleet.databases for strategy in (SINGLE, ALTERNATING)]
        await asyncio.gather(*(fleet.add(db, s, "A") for db, s in kinds for _ in range(3)))
        await asyncio.gather(*(fleet.add(db, strategy, "D") for db, strategy in kinds))
        group_d_due = time.monotonic() + RATE_S

        faults = DatabaseFaults(
            random.Random(rng.random()), pg_server, mysql_server.host, mysql_server.port, proxies
        )
        lanes = Lanes(start, random.Random(rng.random()))
        witnessed = {m.secret_id: m.target for m in fleet.members}
        if MUTATION == "no-injection":
            http.enabled = faults.enabled = lanes.kills = False
        elif MUTATION == "closed-witness":
            closed = free_tcp_port()  # nothing listens there
            witnessed = {name: replace(t, port=closed) for name, t in witnessed.items()}
        campaign = cls(
            rng=rng,
            fleet=fleet,
            proxies=proxies,
            http=http,
            reader=reader,
            faults=faults,
            lanes=lanes,
            witnesses={name: Witness(target, reader) for name, target in witnessed.items()},
            inventories=_inventories(tmp_path, fleet, proxies, http, moto),
            start=start,
            pg_server=pg_server,
            tmp_path=tmp_path,
            group_d_due=group_d_due,
            marks={"began": began},
        )
        stack.push_async_callback(campaign.stop_background)
        tasks = [w.run(campaign.stop_watching) for w in campaign.witnesses.values()]
        tasks.append(campaign.lanes.sample(campaign.stop_watching))
        campaign.faulting = asyncio.create_task(faults.run(campaign.stop_faults))
        campaign.background = [campaign.faulting, *(asyncio.create_task(t) for t in tasks)]
        return campaign

    async def stop_background(self) -> None:
        self.stop_faults.set()
        self.stop_watching.set()
        await asyncio.gather(*self.background, return_exceptions=True)

    async def rotate_processes(self) -> None:
        """Phase 1: ``rotd rotate --all`` on group A, two or three at once, killed at random."""
        self.marks["phase 1"] = time.monotonic()
        deadline = Deadline(
            min(time.monotonic() + PHASE_1_S, self.group_d_due - DUE_AFTER_PHASE_2_STARTS_S)
        )
        args = ["rotate", "-c", str(self.inventories["phase1"]), "--all", "--json"]
        args += ["--log-level", "debug"]
        rng = self.rng
        await asyncio.gather(
            self.lanes.lane(1, "rotate", "1", args, deadline),
            self.lanes.lane(2, "rotate", "1", args, deadline, first_delay_s=rng.uniform(0, 1)),
            self.lanes.lane(
                3, "rotate", "1", args, deadline, first_delay_s=rng.uniform(2, 8), pause_s=(0.5, 4)
            ),
        )
        await self._calls_landed()
        self.phase_2_from = await _next_second()

    async def daemons(self) -> None:
        """Phase 2: ``rotd run`` on every secret, two or three at once, killed at random;
        group D falls due meanwhile; SIGTERM at the end, once the run has met every floor
        that more faults can reach, or at ``PHASE_2_LIMIT_S``."""
        self.marks["phase 2"] = time.monotonic()
        deadline = Deadline(max(time.monotonic() + PHASE_2_S, self.group_d_due + AFTER_DUE_S))
        extending = asyncio.create_task(
            self._extend(deadline, self.marks["phase 2"] + PHASE_2_LIMIT_S)
        )
        lanes = [
            self.lanes.lane(
                lane,
                "run",
                "2",
                ["run", "-c", str(self.inventories[f"daemon{lane}"]), "--log-level", "debug"],
                deadline,
                first_delay_s=0.0 if lane < 3 else self.rng.uniform(1, 6),
                pause_s=(0.0, 0.5) if lane < 3 else (0.5, 4.0),
                at_deadline="terminate",
            )
            for lane in (1, 2, 3)
        ]
        await asyncio.gather(*lanes, self._observe(deadline), extending)
        await self._calls_landed()
        self.phase_2_until = await _next_second()

    async def _calls_landed(self) -> None:
        """Every process of the phase is gone; wait for their calls still on the way to moto
        (a call stalled in the proxy outlives its killed caller), so that each version is
        counted in the phase whose process made it."""
        if not await self.http.drained(timeout_s=CALLS_LAND_S):
            self.http.errors["a call still in the proxy after its phase ended"] += 1

    async def _extend(self, deadline: Deadline, limit: float) -> None:
        """Move ``deadline`` on, up to ``limit`` (monotonic), while the run is short of a
        floor that more time under faults can reach; decided a second ahead, so that no lane
        sees the deadline pass before it moved."""
        floors = {k: v for k, v in minimums.FLOORS.items() if k in minimums.REACHED_BY_INJECTING}
        while deadline.at < limit:
            await asyncio.sleep(max(0.0, deadline.left_s() - 1.0))  # the phase's schedule
            short = minimums.shortfalls(measure(self), floors, {})
            if not short:
                return
            self.extended_for = self.extended_for or short
            deadline.at = min(deadline.at + 2.0, limit)

    async def finish_cleanly(self) -> int:
        """Phase 3, without faults: a daemon resumes whatever is unfinished as it starts;
        stopped with SIGTERM once nothing is left (or after 45 s). Returns its exit code."""
        self.stop_faults.set()
        assert self.faulting is not None
        await self.faulting  # every proxy is up again
        self.http.enabled = False
        self.marks["phase 3"] = time.monotonic()
        daemon = self.start("run", "-c", str(self.inventories["final"]), "--log-level", "debug")
        self.lanes.runs.append(Run("run", "3", 0, daemon, time.monotonic(), "clean"))
        await _event(daemon, "daemon.ready", 60)
        # What is still unfinished after this is judged with the final state.
        deadline = time.monotonic() + 45
        while await _unfinished(self.fleet, self.reader) and time.monotonic() < deadline:
            assert daemon.proc.poll() is None, "".join(daemon.lines[-30:])
            await asyncio.sleep(0.2)  # polling Secrets Manager
        daemon.send(signal.SIGTERM)
        code = await asyncio.to_thread(daemon.wait, 30)
        self.lanes.runs[-1].exit_code = code
        self.stop_watching.set()
        crashed = [
            r
            for r in await asyncio.gather(*self.background, return_exceptions=True)
            if isinstance(r, BaseException)
        ]
        assert not crashed, f"a witness or the fault schedule crashed: {crashed!r}"
        self.marks["ended"] = time.monotonic()
        return code

    async def _observe(self, deadline: Deadline) -> None:
        """Read the daemons' /metrics now and then, and run ``rotd status`` once, amid the
        faults: neither may show a secret."""
        ports = {
            lane: json.loads(self.inventories[f"daemon{lane}"].read_text())["daemon"]["listen"]
            for lane in (1, 2, 3)
        }
        status = self.start("status", "-c", str(self.inventories["daemon1"]), "--json")
        async with ClientSession(timeout=ClientTimeout(total=3)) as session:
            while not deadline.passed():
                for run in self.lanes.alive():
                    if not run.process.named("daemon.ready"):
                        continue  # not listening yet
                    try:
                        url = f"http://{ports[run.lane]}/metrics"
                        async with session.get(url) as answer:
                            self.observed.append(await answer.text())
                            self.scrapes += 1
                    except (ClientError, TimeoutError, OSError) as exc:
                        # The daemon may have been killed since it was found alive.
                        self.scrape_errors[f"a /metrics scrape failed: {type(exc).__name__}"] += 1
                await asyncio.sleep(1.5)  # a scrape interval
        await asyncio.to_thread(status.wait, 60)
        self.observed.append("".join(status.stdout) + "".join(status.lines))


@dataclass
class Verdict:
    violations: dict[str, list[Any]]
    group_d_rotated: int
    measured: dict[str, float]  # see tests.faults.minimums
    witness_errors: Counter[str]
    lines: list[str]  # the totals


def measure(c: Campaign) -> dict[str, float]:
    """What the run has done so far, by the names of ``tests.faults.minimums``; cheap enough
    to call while the run goes on (logs and counters only)."""
    runs = c.lanes.runs
    events: Counter[str] = Counter()
    daemons: set[tuple[str, str]] = set()
    rivals = 0  # rotations that found another process's lock, or its work done
    for run in runs:
        for event in list(run.process.events):
            name = str(event.get("event"))
            events[name] += 1
            locked = name == "rotation.failed" and event.get("category") == "locked"
            rivals += locked or name == "rotation.skipped"
            if run.phase == "2" and name == "rotation.step" and event["step"] == "createSecret":
                daemons.add((event["secret_id"], event["version_id"]))
    samples = c.lanes.concurrency
    witness_errors = _witness_errors(c)
    timed_out = sum(n for kind, n in witness_errors.items() if kind.startswith("timeout:"))
    injection = (
        c.faults.errors
        + c.lanes.errors
        + c.http.errors
        + c.scrape_errors
        + sum((p.errors for p in c.proxies.values()), Counter[str]())
    )
    measured: dict[str, float] = {
        "SIGKILLs in phase 1 (rotd rotate)": sum(r.killed for r in runs if r.phase == "1"),
        "SIGKILLs in phase 2 (rotd run)": sum(r.killed for r in runs if r.phase == "2"),
        "SIGKILLs of a process that had begun a rotation": sum(r.killed_mid_rotation for r in runs),
        "samples with two processes alive at once": sum(
            n for alive, n in samples.items() if alive >= 2
        ),
        "samples with three processes alive at once": sum(
            n for alive, n in samples.items() if alive >= 3
        ),
        "PostgreSQL backends terminated": c.faults.counts["pg_terminate_backends"],
        "MariaDB threads killed": c.faults.counts["mysql_kill_threads"],
        "proxy resets of live connections": c.faults.counts["proxy_cut_connections"],
        "PostgreSQL outages": c.faults.counts["outage_postgres"],
        "MariaDB outages": c.faults.counts["outage_mariadb"],
        "fewest witness logins accepted for one secret": min(
            w.accepted for w in c.witnesses.values()
        ),
        "successful rotations": events["rotation.succeeded"] + events["rotation.resumed"],
        "resumed rotations": events["rotation.resumed"],
        "rotations that met a rival (failed locked, or skipped)": rivals,
        "versions created by daemons in phase 2": len(daemons),
        "/metrics scrapes": c.scrapes,
        "witness errors, unexplained": sum(witness_errors.values()) - timed_out,
        "witness logins timed out": timed_out,
        "injection errors": sum(injection.values()),
    }
    for kind in ("throttle", "error_500", "stall", "cut_before", "cut_after"):
        measured[f"Secrets Manager {kind}"] = c.http.counts[kind]
    return measured


def _witness_errors(c: Campaign) -> Counter[str]:
    errors: Counter[str] = Counter()
    for witness in c.witnesses.values():
        errors.update(witness.errors)
    return errors


async def judge(c: Campaign) -> Verdict:
    """Check every invariant against the logs, the version histories and the witnesses."""
    fleet, runs, witnesses = c.fleet, c.lanes.runs, c.witnesses
    members = fleet.by_id()
    history = {m.secret_id: await c.reader.history(m.secret_id) for m in fleet.members}
    found = evidence.rotations(runs)
    finish_steps = {
        (e.get("secret_id"), e.get("version_id"))
        for run in runs
        for e in run.process.named("rotation.step")
        if e.get("step") == "finishSecret"
    }
    seen = {name: w.seen_current for name, w in witnesses.items()}
    made_by_daemons = evidence.made_in(history, c.phase_2_from, c.phase_2_until)
    racing = evidence.concurrent_creates(runs)
    # A process that lost its lock and wrote late once left neither label logging in
    # (FENCE_BUG); rotations now share one version id per AWSCURRENT, so any such trace is a
    # violation, with the unlabelled version that logged in named to tell it apart.
    neither = [
        (name, a.started, a.current, a.pending, a.holder)
        for name, witness in witnesses.items()
        for a in witness.neither
    ]
    abandoned = evidence.abandoned(history, found, finish_steps, seen)
    early = evidence.early_rotations(history, c.phase_2_from, c.phase_2_until, RATE_S)
    made: dict[str, set[str]] = {}
    for secret_id, versions in history.items():
        for v in versions:
            if c.phase_2_from <= v.created < c.phase_2_until:
                made.setdefault(secret_id, set()).add(v.version_id)
    broken, unprivileged = await _final_state(c)
    final_state = [f"{s}: {problem}" for s, problem in broken]
    for name in sorted(unprivileged):
        member = members[name]
        # A clone without the original's grants: how CLONE_BUG showed, when it was open.
        looks_like = f" (as {CLONE_BUG})" if member.alternating else ""
        final_state.append(f"{name}: AWSCURRENT cannot read {member.table}{looks_like}")

    violations: dict[str, list[Any]] = {
        "(1) final state": final_state,
        f"(1) neither AWSCURRENT nor AWSPENDING logged in ({FENCE_BUG})": neither,
        "(1) single-user refusals outside setSecret..finishSecret": [
            (name, a.started, a.current, a.pending)
            for name, w in witnesses.items()
            if not members[name].alternating
            for a in evidence.outside_windows(
                w.current_only, {v.version_id: v for v in history[name]}, CREATED_SLACK_S
            )
        ],
        "(2) AWSCURRENT refused (alternating users)": [
            (name, a.started, a.current)
            for name, w in witnesses.items()
            if members[name].alternating
            for a in w.current_only + w.neither
        ],
        "(3) abandoned versions (restarted, not resumed)": abandoned,
        "(4) overlapping rotations": [
            (a.secret_id, a.version_id, b.version_id, round(a.finished - b.start, 3))
            for a, b in evidence.overlaps(found, LOG_SLACK_S)
        ],
        "(4) versions finished twice": evidence.finished_twice(found),
        "(4) rotated by a daemon before due": early,
        "(4) rotated twice in phase 2": [s for s, versions in made.items() if len(versions) > 1],
        "(5) secrets in rotd's output": await _leaks(c, history),
    }
    group_d = sum(made_by_daemons[m.secret_id] for m in fleet.in_groups("D"))
    measured = measure(c)
    lines = _totals(c, found, history, made_by_daemons)
    lines += [
        f"createSecret of one secret in two processes at once: {len(racing)}",
        "measured against tests.faults.minimums: "
        + ", ".join(f"{k} {v:g}" for k, v in measured.items()),
        f"every process's output, and the faults' timeline: {_keep_logs(c)}",
    ]
    return Verdict(violations, group_d, measured, _witness_errors(c), lines)


async def _leaks(c: Campaign, history: dict[str, list[Version]]) -> list[str]:
    """(5): every password ever stored (and its hashes) against everything rotd wrote: its
    logs and output, ``status``, ``/metrics``. PostgreSQL's own log holds the verifiers rotd
    sends (by design) and the test's CREATE ROLE ... PASSWORD literals, but none of rotd's."""
    masters = {s: await c.reader.history(s) for s in c.fleet.masters.values()}
    texts = {f"run {i} ({r.kind} {r.phase})": _output(r) for i, r in enumerate(c.lanes.runs)}
    texts |= {f"status or /metrics read {i}": text for i, text in enumerate(c.observed)}
    generated = evidence.secret_strings({k: v[1:] for k, v in history.items()})
    own = evidence.secret_strings({k: v[:1] for k, v in (history | masters).items()})
    server_log = {"the PostgreSQL server log": c.pg_server.log_file.read_text(errors="replace")}
    return evidence.leaks(texts, generated | own) + evidence.leaks(
        server_log, generated, scram=False
    )


def _inventories(
    tmp_path: Path,
    fleet: Fleet,
    proxies: dict[str, TcpProxy],
    http: HttpFaultProxy,
    moto: MotoServer,
) -> dict[str, Path]:
    routes = {name: ("127.0.0.1", proxy.port) for name, proxy in proxies.items()}
    through_proxy = MotoServer(http.url, moto.region)
    paths = {
        "phase1": write_inventory(
            tmp_path / "phase1.yaml",
            through_proxy,
            databases=fleet.routed(routes, fleet.in_groups("A")),
        ),
        "final": write_inventory(
            tmp_path / "final.yaml",
            moto,
            databases=fleet.routed(routes, fleet.members),
            daemon={"shutdown_grace": "10s"},
        ),
    }
    for lane in (1, 2, 3):
        paths[f"daemon{lane}"] = write_inventory(
            tmp_path / f"daemon{lane}.yaml",
            through_proxy,
            databases=fleet.routed(routes, fleet.members),
            defaults={"schedule": "rate(1 minute)", "window": "0"},
            daemon={"shutdown_grace": "5s", "listen": f"127.0.0.1:{free_tcp_port()}"},
        )
    return paths


async def _next_second() -> float:
    """Wait for the next whole second, so that moto's whole-second CreatedDate tells the
    versions made before from those made after; return it."""
    boundary = math.floor(time.time()) + 1
    await asyncio.sleep(boundary - time.time() + 0.01)
    return float(boundary)


async def _unfinished(fleet: Fleet, reader: SecretsReader) -> list[str]:
    left = []
    for member in fleet.members:
        described = await reader.call("DescribeSecret", SecretId=member.secret_id)
        assert described is not None
        for stages in (described.get("VersionIdsToStages") or {}).values():
            if "AWSPENDING" in stages and "AWSCURRENT" not in stages:
                left.append(member.secret_id)
    return left


async def _final_state(c: Campaign) -> tuple[list[tuple[str, str]], set[str]]:
    """What is wrong at the end: something left unfinished, an AWSCURRENT that does not log
    in; and the secrets whose AWSCURRENT cannot read the table their original user may."""
    unfinished = await _unfinished(c.fleet, c.reader)
    problems = [(s, "AWSPENDING left unfinished") for s in unfinished]
    unprivileged = set()
    for member in c.fleet.members:
        current = await c.reader.get(member.secret_id, stage="AWSCURRENT")
        assert current is not None
        username, password = current.value["username"], current.value["password"]
        if not await logs_in(member.target, username, password):
            problems.append((member.secret_id, f"AWSCURRENT ({username}) does not log in"))
        elif not await _reads_table(c.fleet, member, username, password):
            unprivileged.add(member.secret_id)
    return problems, unprivileged


async def _reads_table(fleet: Fleet, member: Member, username: str, password: str) -> bool:
    schema = "public" if member.database == "postgres" else "test"
    try:
        await fleet.databases[member.database].execute_as(
            username, password, f"SELECT count(*) FROM {schema}.{member.table}"
        )
    except Exception:
        return False
    return True


async def _event(process: RotdProcess, name: str, timeout_s: float) -> None:
    """Wait for a log event without blocking the loop (the proxies live in it)."""
    deadline = time.monotonic() + timeout_s
    while not process.named(name):
        assert process.proc.poll() is None, "".join(process.lines[-30:])
        assert time.monotonic() < deadline, f"no {name}: " + "".join(process.lines[-30:])
        await asyncio.sleep(0.05)


def _output(run: Run) -> str:
    return "".join(run.process.lines) + "".join(run.process.stdout)


def _keep_logs(c: Campaign) -> Path:
    """Every process's output and the faults' timeline, for the post-mortem of a failure."""
    logs = c.tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    for i, run in enumerate(c.lanes.runs):
        (logs / f"{i:03d}-{run.kind}-phase{run.phase}-{run.plan}.log").write_text(_output(run))
    timeline = sorted(c.faults.timeline + c.http.timeline)
    (logs / "faults.log").write_text("".join(f"{t:.3f} {what}\n" for t, what in timeline))
    return logs


def _totals(
    c: Campaign,
    found: list[evidence.Rotation],
    history: dict[str, list[Version]],
    made_by_daemons: Counter[str],
) -> list[str]:
    processes: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    notable: Counter[str] = Counter()
    events: Counter[str] = Counter()
    for run in c.lanes.runs:
        processes[f"{run.kind} started"] += 1
        fate = f"killed ({run.plan})" if run.killed else f"exit {run.exit_code}"
        processes[f"{run.kind} {fate}"] += 1
        for event in run.process.events:
            name = str(event.get("event"))
            if name == "rotation.failed":
                outcomes[f"{run.kind}: failed {event.get('category')}"] += 1
                if not event.get("transient"):
                    notable[f"{run.kind} {event.get('step')}: {event.get('error')}"] += 1
            elif name in ("rotation.succeeded", "rotation.resumed", "rotation.skipped"):
                outcomes[f"{run.kind}: {name.rpartition('.')[2]}"] += 1
            elif name in ("rotation.parked", "rotation.retry_scheduled", "schedule.resume"):
                events[f"{name} {event.get('category', '')}".strip()] += 1
    marks = c.marks
    planned = max(marks["phase 2"] + PHASE_2_S, c.group_d_due + AFTER_DUE_S)
    durations = {
        "setup": marks["phase 1"] - marks["began"],
        "phase 1 (rotate)": marks["phase 2"] - marks["phase 1"],
        "phase 2 (run)": marks["phase 3"] - marks["phase 2"],
        "phase 3 (clean)": marks["ended"] - marks["phase 3"],
    }
    alive = c.lanes.concurrency
    samples = sum(alive.values()) or 1
    members = c.fleet.by_id()
    witnesses = c.witnesses.values()
    single = [w for n, w in c.witnesses.items() if not members[n].alternating]
    alternating = [w for n, w in c.witnesses.items() if members[n].alternating]
    errors = _witness_errors(c)
    group_d = sum(made_by_daemons[m.secret_id] for m in c.fleet.in_groups("D"))
    proxies = "; ".join(f"{name} {_join(p.counts)}" for name, p in c.proxies.items())
    return [
        f"seed {SEED}; secrets {len(c.fleet.members)} "
        f"(group A {len(c.fleet.in_groups('A'))}, group D {len(c.fleet.in_groups('D'))})",
        "durations: " + ", ".join(f"{k} {v:.1f} s" for k, v in durations.items()),
        f"phase 2 planned {planned - marks['phase 2']:.0f} s, went on for: "
        + ("; ".join(c.extended_for) or "nothing"),
        "processes: " + _join(processes),
        "processes alive at once (share of samples): "
        + ", ".join(f"{n}: {100 * k / samples:.0f}%" for n, k in sorted(alive.items())),
        f"database faults: {_join(c.faults.counts)}; unreachable {c.faults.outage_s:.1f} s",
        f"database proxies: {proxies}",
        f"Secrets Manager calls {sum(c.http.calls.values())}: {_join(c.http.calls)}",
        f"Secrets Manager faults: {_join(c.http.counts)}",
        "rotation outcomes: " + _join(outcomes),
        "daemon events: " + _join(events),
        f"successful rotations {len(found)} "
        f"(median {_median([r.finished - r.start for r in found])} s; "
        f"reported as possibly a second report {sum(r.ambiguous for r in found)}); "
        f"versions made {sum(len(v) - 1 for v in history.values())}, "
        f"by daemons in phase 2 {sum(made_by_daemons.values())} (group D {group_d})",
        f"witness logins {sum(w.logins for w in witnesses)}; "
        f"stale reads {sum(w.stale for w in witnesses)}; "
        f"errors {sum(errors.values())} {dict(errors.most_common(3))}",
        "single-user refusals of AWSCURRENT while AWSPENDING logged in (expected window): "
        f"{sum(len(w.current_only) for w in single)}",
        "alternating-users refusals of AWSCURRENT: "
        f"{sum(len(w.current_only) + len(w.neither) for w in alternating)}",
        f"neither AWSCURRENT nor AWSPENDING logged in: {sum(len(w.neither) for w in witnesses)}",
        *(f"failure no retry can fix, x{n}: {text}" for text, n in notable.most_common(6)),
    ]


def _median(values: list[float]) -> str:
    return f"{sorted(values)[len(values) // 2]:.2f}" if values else "-"


def _join(counts: Counter[str] | dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
