"""rotd's benchmark: ``make bench`` (or ``python -m bench.run``), on this machine's servers.

It builds its own fixture (moto's server; N logins split over the local PostgreSQL and MariaDB,
half single user and half alternating users, with a master login per engine; their secrets),
then measures, each figure as the median [min-max] of ``--runs`` runs:

* ``rotd rotate --all --json`` of the N secrets, as a real process, at the default limits and at
  ``max_concurrent: 1``: wall time, rotations/s, per-rotation latency p50/p95/p99 (the output's
  ``duration_s``), peak rotations in flight (overlap of the ``rotation.*`` log events), CPU
  seconds of the rotd process (``wait4`` rusage) per rotation, raw and net of start-up and of
  the PostgreSQL SCRAM verifier (PBKDF2, measured here), peak RSS; Secrets Manager calls per
  rotation by operation and strategy, counted by a proxy in front of moto; database connections
  per rotation and peak open connections per host, counted by a TCP proxy per server;
* the floor (``bench/floor.py``): the same calls and statements with no rotd logic, within the
  same limits, with rotd's write cap and without it; rotd's wall time as a ratio of it;
* all of it twice: bare loopback (through the proxies, nothing added) and with latency added
  (``--sm-latency-ms``, default 25, per Secrets Manager call; ``--db-rtt-ms``, default 2, per
  database round trip);
* inventory scale (``--scales``, default 100,1000,10000 secrets, which exist in moto but have no
  login): ``rotd validate`` time, ``rotd run`` time from start to ``READY=1`` (sd_notify), the
  Secrets Manager calls it made until then (counted at the proxy), its RSS then, and the time
  from a SIGHUP that changes one secret to ``reload.applied``; ``rotd run`` bare and, with
  ``--latency``, with ``--sm-latency-ms`` added to every Secrets Manager call.

It prints a table with the targets marked met or missed, and writes the same figures to
``bench-results/results.json``. It drops every login it made; its secrets die with its moto.

Usage::

    python -m bench.run                      # N=1000, 3 runs, bare and with latency
    python -m bench.run --quick              # smoke check: N=100, 1 run, scale 100 only
    python -m bench.run --n 1000 --runs 1 --latency --scales 100,1000
    python -m bench.run --no-latency         # bare loopback only
    python -m bench.run --no-max-concurrent-1 --no-uncapped-floor   # fewer configurations
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg

from bench.fixture import ENGINES, MARIADB, PG, Fixture, start_moto
from bench.proxy import SecretsManagerProxy, TcpProxy
from rotd import inventory as inventory_module
from rotd.protocol import WRITES_PER_BRIDGED_ROTATION, WRITES_PER_ROTATION

RESULTS_DIR = Path("bench-results")
# Database sessions one rotation may hold open at once: the lock session (the master's for
# alternating users) and the one that checks the current login or tests the pending one.
SESSIONS_PER_ROTATION = 2
TARGET_SM_CALLS = {"single_user": 5, "alternating_users": 6}
TARGET_FLOOR_RATIO = 1.25
TARGET_SPEEDUP = 8.0
# PutSecretValue and UpdateSecretVersionStage together, per account and region; not adjustable.
AWS_WRITE_QUOTA_TPS = 50
TARGET_CPU_MS = 5.0
TARGET_VALIDATE_S = 2.0
TARGET_RSS_MB = 150.0
TARGET_SIGHUP_S = 1.0
TARGET_READY_S = 10.0  # rotd run to READY=1 at 10,000 secrets, with latency added
TARGET_SECRETS_PER_STARTUP_CALL = 10  # at most one Secrets Manager call per 10 secrets
ROTATION_EVENTS = ("rotation.succeeded", "rotation.resumed", "rotation.failed", "rotation.skipped")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- numbers --------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, min and max of the runs' values."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same instant)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, step in points:
        current += step
        peak = max(peak, current)
    return peak


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def vm_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def pbkdf2_cost_s(samples: int = 200) -> float:
    """CPU seconds of one PBKDF2-HMAC-SHA256 with 4096 iterations: a SCRAM verifier's cost."""
    salt, password = secrets.token_bytes(16), secrets.token_bytes(32)
    timings = []
    for _ in range(samples):
        start = time.process_time()
        hashlib.pbkdf2_hmac("sha256", password, salt, 4096)
        timings.append(time.process_time() - start)
    return statistics.median(timings)


# --- processes ------------------------------------------------------------------------------


@dataclass
class Finished:
    code: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    stdout: str
    stderr: str


async def run_process(argv: list[str], env: dict[str, str], workdir: Path, name: str) -> Finished:
    """Run ``argv`` to its end in a thread, so that the proxies in this loop keep serving."""
    return await asyncio.to_thread(_run_process, argv, env, workdir, name)


def _run_process(argv: list[str], env: dict[str, str], workdir: Path, name: str) -> Finished:
    """Run ``argv`` to its end; its rusage alone (``wait4``), its output from files."""
    out_path, err_path = workdir / f"{name}.out", workdir / f"{name}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        code=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            found.append(item)
    return found


def epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


# --- the bench ------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    fixture: Fixture
    sm: SecretsManagerProxy
    db_proxies: dict[str, TcpProxy]
    moto: subprocess.Popen[bytes]
    moto_url: str
    env: dict[str, str]
    startup_cpu_s: dict[str, float] = field(default_factory=dict)
    pbkdf2_s: float = 0.0
    counter: int = 0

    def _name(self, label: str) -> str:
        self.counter += 1
        return f"{self.counter:03d}-{label}"

    def strategy_of(self) -> dict[str, str]:
        kinds = {login.secret_id: login.strategy for login in self.fixture.logins}
        kinds.update({m: "master" for m in self.fixture.masters.values()})
        return kinds

    def reset_counters(self) -> None:
        self.sm.reset()
        for proxy in self.db_proxies.values():
            proxy.reset()

    def set_latency(self, on: bool) -> None:
        self.sm.delay_s = self.args.sm_latency_ms / 1000 if on else 0.0
        for proxy in self.db_proxies.values():
            # Half a round trip each way.
            proxy.delay_s = self.args.db_rtt_ms / 2000 if on else 0.0

    def counts(self) -> dict[str, Any]:
        """What the proxies saw since the last reset, per rotation."""
        kinds = self.strategy_of()
        n = {"single_user": 0, "alternating_users": 0}
        for login in self.fixture.logins:
            n[login.strategy] += 1
        by_kind: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (operation, secret_id), calls in self.sm.calls.items():
            by_kind[kinds.get(secret_id, "other")][operation] += calls
        per_rotation: dict[str, dict[str, float]] = {}
        for kind in ("single_user", "alternating_users"):
            ops = dict(by_kind.get(kind, {}))
            if kind == "alternating_users":
                for operation, calls in by_kind.get("master", {}).items():
                    ops[operation] = ops.get(operation, 0) + calls
            per_rotation[kind] = {op: calls / max(1, n[kind]) for op, calls in sorted(ops.items())}
            per_rotation[kind]["total"] = sum(per_rotation[kind].values())
        rotations = {e: sum(1 for x in self.fixture.logins if x.engine == e) for e in ENGINES}
        connections = {
            engine: {
                "per_rotation": proxy.accepted / max(1, rotations[engine]),
                "peak_open": proxy.peak_open,
            }
            for engine, proxy in self.db_proxies.items()
        }
        return {
            "sm_calls_per_rotation": per_rotation,
            "sm_master_calls": dict(by_kind.get("master", {})),
            "sm_failures": {f"{op} {status}": c for (op, status), c in self.sm.failures.items()},
            "db": connections,
        }

    async def rotd_rotate(self, inventory: Path, label: str) -> dict[str, Any]:
        self.reset_counters()
        before = self._cpu_marks()
        argv = [sys.executable, "-m", "rotd", "rotate", "-c", str(inventory), "--all", "--json"]
        done = await run_process(argv, self.env, self.workdir, self._name(label))
        cpu = self._cpu_since(before)
        outcomes = json_lines(done.stdout)
        events = [e for e in json_lines(done.stderr) if e.get("event") in ROTATION_EVENTS]
        intervals = [
            (epoch(e["timestamp"]) - float(e["duration_s"]), epoch(e["timestamp"]))
            for e in events
            if e.get("timestamp") and e.get("duration_s") is not None
        ]
        return self._result(label, done, outcomes, intervals, cpu)

    async def floor(self, plan: Path, label: str) -> dict[str, Any]:
        self.reset_counters()
        before = self._cpu_marks()
        argv = [sys.executable, "-m", "bench.floor", str(plan)]
        done = await run_process(argv, self.env, self.workdir, self._name(label))
        cpu = self._cpu_since(before)
        outcomes = json_lines(done.stdout)
        for o in outcomes:
            o["outcome"] = "succeeded" if o.get("ok") else "failed"
        intervals = [(o["ended_at"] - o["duration_s"], o["ended_at"]) for o in outcomes]
        return self._result(label, done, outcomes, intervals, cpu)

    def _cpu_marks(self) -> tuple[float, float, float]:
        return cpu_of(self.moto.pid), self_cpu(), machine_busy_cpu()

    def _cpu_since(self, before: tuple[float, float, float]) -> dict[str, float]:
        moto, proxy, machine = before
        return {
            "moto_cpu_s": cpu_of(self.moto.pid) - moto,
            "proxy_cpu_s": self_cpu() - proxy,
            "machine_cpu_s": machine_busy_cpu() - machine,
        }

    def _result(
        self,
        label: str,
        done: Finished,
        outcomes: list[dict[str, Any]],
        intervals: list[tuple[float, float]],
        cpu: dict[str, float],
    ) -> dict[str, Any]:
        cpu_s = done.cpu_s
        n = len(self.fixture.logins)
        ok = [o for o in outcomes if o.get("outcome") in ("succeeded", "resumed", "skipped")]
        failed = [o for o in outcomes if o.get("outcome") == "failed"]
        durations = [float(o["duration_s"]) for o in outcomes if o.get("duration_s") is not None]
        span = (max(e for _, e in intervals) - min(s for s, _ in intervals)) if intervals else None
        n_pg = sum(1 for x in self.fixture.logins if x.engine == "postgres")
        startup = self.startup_cpu_s["rotd" if label.startswith("rotd") else "floor"]
        result = {
            "label": label,
            "exit_code": done.code,
            "rotations": n,
            "succeeded": len(ok),
            "failed": len(failed),
            "errors": sorted({str(o.get("error"))[:300] for o in failed})[:5],
            "wall_s": done.wall_s,
            "rotation_span_s": span,
            "rotations_per_s": n / done.wall_s,
            "latency_ms": {
                "p50": percentile(durations, 0.50) * 1000,
                "p95": percentile(durations, 0.95) * 1000,
                "p99": percentile(durations, 0.99) * 1000,
            },
            "peak_in_flight": peak_overlap(intervals),
            "cpu_s": cpu_s,
            "cpu_ms_per_rotation": cpu_s / n * 1000,
            "cpu_ms_per_rotation_net": (cpu_s - startup - n_pg * self.pbkdf2_s) / n * 1000,
            "peak_rss_mb": done.maxrss_mb,
            **cpu,
            # CPU the machine spent on anything but this process, moto and the proxies: the
            # databases, and whatever else runs here (a busy machine skews every figure).
            "others_cpu_s": cpu["machine_cpu_s"] - cpu_s - cpu["moto_cpu_s"] - cpu["proxy_cpu_s"],
            "wall_cpus_busy": cpu["machine_cpu_s"] / done.wall_s,
            **self.counts(),
        }
        if failed or done.code:
            say(f"  {label}: exit {done.code}, {len(failed)} failed: {result['errors'][:2]}")
            if not outcomes:
                say("  " + done.stderr[-2000:])
        return result

    async def profile(self, inventory: Path, plan: Path) -> list[str]:
        """One more bare run each of rotd and the floor under py-spy, as collapsed stacks
        (``bench-results/profile-*.txt``); not part of the figures."""
        spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        if spy is None:
            say("--profile needs py-spy (pip install py-spy); skipped")
            return []
        written = []
        for name, command in (
            ("rotd-rotate", ["-m", "rotd", "rotate", "-c", str(inventory), "--all", "--json"]),
            ("floor", ["-m", "bench.floor", str(plan)]),
        ):
            out = RESULTS_DIR / f"profile-{name}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            argv = [spy, "record", "--rate", "250", "--format", "raw", "--output", str(out)]
            say(f"profiling one bare {name} run with py-spy into {out} ...")
            done = await run_process(
                [*argv, "--", sys.executable, *command], self.env, self.workdir, self._name(name)
            )
            if done.code:
                say(f"  py-spy exited {done.code}: {done.stderr[-500:]}")
            written.append(str(out))
        return written

    async def validate(self, inventory: Path, label: str) -> Finished:
        argv = [sys.executable, "-m", "rotd", "validate", "-c", str(inventory)]
        done = await run_process(argv, self.env, self.workdir, self._name(label))
        if done.code:
            raise RuntimeError(f"rotd validate failed ({done.code}): {done.stderr[-2000:]}")
        return done

    def sm_calls(self) -> dict[str, int]:
        """Secrets Manager calls since the last reset, by operation."""
        found: dict[str, int] = defaultdict(int)
        for (operation, _), calls in self.sm.calls.items():
            found[operation] += calls
        return dict(sorted(found.items()))

    async def daemon(self, inventory: Path, n: int, label: str) -> dict[str, Any]:
        """``rotd run``: start to READY=1, the Secrets Manager calls until then, RSS then, and a
        one-secret SIGHUP's time to apply."""
        sock_path = str(self.workdir / f"notify-{secrets.token_hex(3)}.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(sock_path)
        env = {**self.env, "NOTIFY_SOCKET": sock_path}
        argv = [sys.executable, "-m", "rotd", "run", "-c", str(inventory)]
        events: list[tuple[float, dict[str, Any]]] = []
        changed = threading.Condition()
        err_path = self.workdir / f"{self._name(f'run-{n}-{label}')}.err"
        self.sm.reset()
        started = time.monotonic()
        proc = await asyncio.to_thread(
            subprocess.Popen,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )

        def read() -> None:
            assert proc.stderr is not None
            with open(err_path, "wb") as log:
                for line in proc.stderr:
                    log.write(line)
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    with changed:
                        events.append((time.time(), event))
                        changed.notify_all()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def wait_event(name: str, after: int, timeout_s: float) -> tuple[float, dict[str, Any]]:
            deadline = time.monotonic() + timeout_s
            with changed:
                while True:
                    for seen, event in events[after:]:
                        if event.get("event") == name:
                            return seen, event
                    left = deadline - time.monotonic()
                    if left <= 0 or proc.poll() is not None:
                        raise TimeoutError(f"no {name} within {timeout_s:g} s (or rotd exited)")
                    changed.wait(min(left, 0.5))

        def wait_ready(timeout_s: float) -> float:
            notify.settimeout(timeout_s)
            while True:
                message = notify.recv(4096).decode()
                if "READY=1" in message:
                    return time.monotonic()

        try:
            ready_at = await asyncio.to_thread(wait_ready, self.args.ready_timeout_s)
            ready_s = ready_at - started
            startup_calls = self.sm_calls()
            self.sm.reset()
            rss = vm_rss_mb(proc.pid)
            with changed:
                seen_before = len(events)
            # The SIGHUP: one secret gets a different window.
            target = self.fixture.scale_ids[n // 2]
            self.fixture.scale_inventory(inventory, n, self.sm.url, changed=target)
            sent = time.time()
            proc.send_signal(signal.SIGHUP)
            seen, event = await asyncio.to_thread(wait_event, "reload.applied", seen_before, 300)
            applied_s = epoch(event["timestamp"]) - sent
            rss_after = vm_rss_mb(proc.pid)
            sighup_calls = self.sm_calls()
            self.fixture.scale_inventory(inventory, n, self.sm.url)  # back as it was
            ready_events = [e for _, e in events if e.get("event") == "daemon.ready"]
            return {
                "secrets": n,
                "mode": label,
                "ready_s": ready_s,
                "planning_s": ready_events[0].get("duration_s") if ready_events else None,
                "startup_calls": startup_calls,
                "startup_calls_total": sum(startup_calls.values()),
                "sighup_calls_total": sum(sighup_calls.values()),
                "rss_ready_mb": rss,
                "rss_after_reload_mb": rss_after,
                "sighup_applied_s": applied_s,
                "sighup_seen_s": seen - sent,
                "reload": {k: event.get(k) for k in ("added", "removed", "changed", "unchanged")},
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
            await asyncio.to_thread(reader.join, 5)
            notify.close()  # the socket file goes with the working directory


# --- the whole run --------------------------------------------------------------------------


async def versions(moto_url: str) -> dict[str, str]:
    found = {
        "python": platform.python_version(),
        "rotd": importlib.metadata.version("rotd"),
        "moto": importlib.metadata.version("moto"),
        "aioboto3": importlib.metadata.version("aioboto3"),
        "asyncpg": importlib.metadata.version("asyncpg"),
        "aiomysql": importlib.metadata.version("aiomysql"),
    }
    try:
        git = ["git", "rev-parse", "--short", "HEAD"]
        done = await asyncio.to_thread(subprocess.run, git, capture_output=True, text=True)
        head = done.stdout.strip()
        if head:
            found["rotd"] += f" (git {head}, plus any uncommitted changes)"
    except OSError:
        pass
    conn = await asyncpg.connect(host=PG[0], port=PG[1], user=PG[2], database="postgres")
    try:
        found["postgresql"] = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    my = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user=MARIADB[2], password="")
    try:
        async with my.cursor() as cur:
            await cur.execute("SELECT VERSION()")
            found["mariadb"] = str((await cur.fetchone())[0])
    finally:
        my.close()
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def save_partial(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The raw figures so far, in case a long run is cut short."""
    out = Path(args.out).with_suffix(".partial.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="rotd-bench-"))
    say(f"rotd bench: working in {workdir}")
    moto, moto_url = start_moto()
    sm = SecretsManagerProxy(moto_url)
    db_proxies = {
        "postgres": TcpProxy("postgres", PG[0], PG[1]),
        "mariadb": TcpProxy("mariadb", MARIADB[0], MARIADB[1]),
    }
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name in ("AWS_PROFILE", "NOTIFY_SOCKET", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    fixture = Fixture(moto_url, workdir)
    results: dict[str, Any] = {
        "started": datetime.now().astimezone().isoformat(),
        "loadavg_at_start": os.getloadavg(),
    }
    try:
        sm_url = await sm.start()
        ports = {engine: await proxy.start() for engine, proxy in db_proxies.items()}
        bench = Bench(args, workdir, fixture, sm, db_proxies, moto, moto_url, env)
        results["versions"] = await versions(moto_url)
        results["machine"] = {"cpus": os.cpu_count(), "cpu_model": cpu_model()}
        logins = args.n if args.rotations else 0
        say(f"creating {logins} logins, 2 masters and their secrets under {fixture.prefix} ...")
        started = time.monotonic()
        await fixture.create_logins(logins)
        results["fixture_s"] = time.monotonic() - started

        if args.rotations:
            write_tps = args.max_write_tps
            default_inv = fixture.rotation_inventory(
                workdir / "rotation.json", sm_url, ports, None, write_tps
            )
            loaded = inventory_module.load(default_inv)
            limits = {
                "max_concurrent": loaded.max_concurrent,
                "max_concurrent_per_host": loaded.max_concurrent_per_host,
                "max_write_tps": loaded.max_write_tps,
                "max_write_tps_is_default": write_tps is None,
            }
            results["limits"] = limits
            one_inv = fixture.rotation_inventory(
                workdir / "rotation-mc1.json", sm_url, ports, {"max_concurrent": 1}, write_tps
            )
            plan_capped = fixture.floor_plan(
                workdir / "floor-capped.json",
                sm_url,
                ports,
                loaded.max_concurrent,
                loaded.max_concurrent_per_host,
                loaded.max_write_tps,
            )
            plan_free = fixture.floor_plan(
                workdir / "floor-uncapped.json",
                sm_url,
                ports,
                loaded.max_concurrent,
                loaded.max_concurrent_per_host,
                0,
            )
            bench.pbkdf2_s = pbkdf2_cost_s()
            startups = [
                (await bench.validate(default_inv, "startup")).cpu_s for _ in range(args.runs)
            ]
            bench.startup_cpu_s["rotd"] = statistics.median(startups)
            empty_plan = workdir / "floor-empty.json"
            empty_plan.write_text(
                json.dumps({**json.loads(plan_capped.read_text()), "secrets": []})
            )
            floor_startups = []
            for _ in range(args.runs):
                done = await run_process(
                    [sys.executable, "-m", "bench.floor", str(empty_plan)],
                    env,
                    workdir,
                    bench._name("floor-startup"),
                )
                floor_startups.append(done.cpu_s)
            bench.startup_cpu_s["floor"] = statistics.median(floor_startups)
            results["floor_startup_cpu_s"] = bench.startup_cpu_s["floor"]
            results["pbkdf2_4096_cpu_ms"] = bench.pbkdf2_s * 1000
            results["rotd_startup_cpu_s"] = bench.startup_cpu_s["rotd"]

            configs: list[tuple[str, Any]] = [
                ("rotd, default limits", lambda: bench.rotd_rotate(default_inv, "rotd-default")),
                ("floor, same limits and write cap", lambda: bench.floor(plan_capped, "floor")),
            ]
            if args.uncapped_floor:
                configs.append(
                    (
                        "floor, same limits, no write cap",
                        lambda: bench.floor(plan_free, "floor-free"),
                    )
                )
            if args.max_concurrent_1:
                configs.append(
                    ("rotd, max_concurrent 1", lambda: bench.rotd_rotate(one_inv, "rotd-mc1"))
                )
            modes = ["bare"] + (["latency"] if args.latency else [])
            rotation: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for mode in modes:
                bench.set_latency(mode == "latency")
                rotation[mode] = {label: [] for label, _ in configs}
                for run in range(args.runs):
                    for label, go in configs:
                        say(f"[{mode}] run {run + 1}/{args.runs}: {label} ...")
                        result = await go()
                        rotation[mode][label].append(result)
                        save_partial(args, {**results, "rotation": rotation})
                        ok = f"{result['succeeded']}/{result['rotations']}"
                        say(
                            f"    {result['wall_s']:.1f} s, {ok} ok,"
                            f" {result['cpu_ms_per_rotation']:.2f} ms CPU/rotation"
                        )
            bench.set_latency(False)
            results["rotation"] = rotation
            results["loadavg_after_rotations"] = os.getloadavg()
            if args.profile:
                results["profile"] = await bench.profile(default_inv, plan_capped)

        scale: dict[str, Any] = {}
        if args.scales:
            say(f"creating {max(args.scales)} secrets for the inventory-scale runs ...")
            started = time.monotonic()
            await fixture.create_scale_secrets(max(args.scales))
            results["scale_fixture_s"] = time.monotonic() - started
        for n in args.scales:
            inventory = workdir / f"scale-{n}.json"
            fixture.scale_inventory(inventory, n, sm.url)
            runs_v: list[dict[str, Any]] = []
            runs_d: dict[str, list[dict[str, Any]]] = {"run": [], "latency": []}
            for run in range(args.runs):
                say(f"[scale {n}] run {run + 1}/{args.runs}: validate, run, SIGHUP ...")
                done = await bench.validate(inventory, f"validate-{n}")
                runs_v.append(
                    {"wall_s": done.wall_s, "cpu_s": done.cpu_s, "peak_rss_mb": done.maxrss_mb}
                )
                for mode in ["run"] + (["latency"] if args.latency else []):
                    bench.set_latency(mode == "latency")
                    runs_d[mode].append(await bench.daemon(inventory, n, mode))
                    bench.set_latency(False)
                    save_partial(args, {**results, "scale": {**scale, str(n): runs_d}})
                    d = runs_d[mode][-1]
                    say(
                        f"    {mode}: validate {done.wall_s:.2f} s; READY after"
                        f" {d['ready_s']:.2f} s with {d['startup_calls_total']} Secrets Manager"
                        f" calls; RSS {d['rss_ready_mb']:.0f} MB;"
                        f" SIGHUP applied in {d['sighup_applied_s']:.3f} s"
                    )
            scale[str(n)] = {"validate": runs_v, **runs_d}
        results["scale"] = scale
    finally:
        try:
            results["logins_dropped"] = await fixture.drop_logins()
        except Exception as exc:  # report, and still stop the servers
            say(f"could not drop the logins under {fixture.prefix}: {exc}")
        await sm.stop()
        for proxy in db_proxies.values():
            await proxy.stop()
        moto.terminate()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
            moto.wait()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


# --- summary and report ---------------------------------------------------------------------

RUN_FIGURES = (
    "machine_cpu_s",
    "others_cpu_s",
    "wall_cpus_busy",
    "wall_s",
    "rotation_span_s",
    "rotations_per_s",
    "peak_in_flight",
    "cpu_ms_per_rotation",
    "cpu_ms_per_rotation_net",
    "peak_rss_mb",
    "moto_cpu_s",
    "proxy_cpu_s",
)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"rotation": {}, "scale": {}}
    for mode, configs in results.get("rotation", {}).items():
        summary["rotation"][mode] = {}
        for label, runs in configs.items():
            figures: dict[str, Any] = {f: spread([r[f] for r in runs]) for f in RUN_FIGURES}
            for p in ("p50", "p95", "p99"):
                figures[f"latency_{p}_ms"] = spread([r["latency_ms"][p] for r in runs])
            figures["failed"] = sum(r["failed"] for r in runs)
            figures["sm_calls_per_rotation"] = {
                kind: {
                    op: max(r["sm_calls_per_rotation"][kind].get(op, 0) for r in runs)
                    for op in runs[0]["sm_calls_per_rotation"][kind]
                }
                for kind in runs[0]["sm_calls_per_rotation"]
            }
            figures["db"] = {
                engine: {
                    "per_rotation": spread([r["db"][engine]["per_rotation"] for r in runs]),
                    "peak_open": max(r["db"][engine]["peak_open"] for r in runs),
                }
                for engine in runs[0]["db"]
            }
            summary["rotation"][mode][label] = figures
    for n, runs in results.get("scale", {}).items():
        summary["scale"][n] = {
            "validate_s": spread([r["wall_s"] for r in runs["validate"]]),
            "validate_cpu_s": spread([r["cpu_s"] for r in runs["validate"]]),
            "ready_s": spread([r["ready_s"] for r in runs["run"]]),
            "rss_ready_mb": spread([r["rss_ready_mb"] for r in runs["run"]]),
            "sighup_applied_s": spread([r["sighup_applied_s"] for r in runs["run"]]),
            # Figures of runs made before the bench counted start-up calls have none.
            "startup_calls": spread([r.get("startup_calls_total") for r in runs["run"]]),
        }
        latency = runs.get("latency") or []
        if latency:
            summary["scale"][n] |= {
                "ready_latency_s": spread([r["ready_s"] for r in latency]),
                "startup_calls_latency": spread([r["startup_calls_total"] for r in latency]),
                "sighup_applied_latency_s": spread([r["sighup_applied_s"] for r in latency]),
                "rss_ready_latency_mb": spread([r["rss_ready_mb"] for r in latency]),
            }
    summary["targets"] = targets(results, summary)
    return summary


def _median(figure: dict[str, float] | None) -> float | None:
    return None if figure is None else figure["median"]


def targets(results: dict[str, Any], summary: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def check(name: str, value: Any, ok: bool | None, detail: str) -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "missed")
        found.append({"target": name, "value": value, "verdict": verdict, "detail": detail})

    rotation = summary["rotation"]
    n = results["n"]
    limits = results.get("limits", {})
    for kind, bound in TARGET_SM_CALLS.items():
        worst = max(
            (
                figs["sm_calls_per_rotation"][kind]["total"]
                for configs in rotation.values()
                for label, figs in configs.items()
                if label.startswith("rotd")
            ),
            default=None,
        )
        check(
            f"Secrets Manager calls per {kind} rotation <= {bound}",
            None if worst is None else round(worst, 3),
            None if worst is None else worst <= bound,
            "most over every rotd run",
        )
    for mode, configs in rotation.items():
        rotd_wall = _median(configs.get("rotd, default limits", {}).get("wall_s"))
        for floor_label in ("floor, same limits and write cap", "floor, same limits, no write cap"):
            floor_wall = _median(configs.get(floor_label, {}).get("wall_s"))
            if rotd_wall and floor_wall:
                ratio = rotd_wall / floor_wall
                capped = "no write cap" not in floor_label
                check(
                    f"[{mode}] wall time within {TARGET_FLOOR_RATIO}x the floor"
                    f" ({floor_label.removeprefix('floor, ')})",
                    round(ratio, 2),
                    # For reference only: a floor without the cap may write faster than
                    # Secrets Manager's quota allows, which rotd must not.
                    ratio <= TARGET_FLOOR_RATIO if capped else None,
                    f"rotd {rotd_wall:.1f} s / floor {floor_wall:.1f} s at N={n}"
                    + ("" if n == 1000 else " (the target is stated for N=1000)")
                    + ("" if capped else "; for reference, not a target"),
                )
        one_wall = _median(configs.get("rotd, max_concurrent 1", {}).get("wall_s"))
        if mode == "latency" and rotd_wall and one_wall:
            speedup = one_wall / rotd_wall
            check(
                f"[{mode}] default limits >= {TARGET_SPEEDUP:g}x faster than max_concurrent 1",
                round(speedup, 2),
                speedup >= TARGET_SPEEDUP,
                f"{one_wall:.1f} s / {rotd_wall:.1f} s" + _speedup_bounds(one_wall, n, limits),
            )
        net = _median(configs.get("rotd, default limits", {}).get("cpu_ms_per_rotation_net"))
        if net is not None:
            check(
                f"[{mode}] rotd CPU per rotation (net of start-up, PG hash) < {TARGET_CPU_MS} ms",
                round(net, 2),
                net < TARGET_CPU_MS,
                f"raw {_median(configs['rotd, default limits']['cpu_ms_per_rotation']):.2f} ms",
            )
        per_host = limits.get("max_concurrent_per_host", 4)
        for label, figs in configs.items():
            if not label.startswith("rotd"):
                continue
            limit = 1 if "max_concurrent 1" in label else per_host
            bound = limit * SESSIONS_PER_ROTATION
            for engine, db in figs["db"].items():
                check(
                    f"[{mode}] {label}: peak open connections to {engine} <= {bound}",
                    db["peak_open"],
                    db["peak_open"] <= bound,
                    f"{limit} rotation(s) per host x {SESSIONS_PER_ROTATION} sessions each",
                )
    scale = summary["scale"]
    for n_, figs in scale.items():
        calls = _median(figs.get("startup_calls_latency") or figs.get("startup_calls"))
        if calls is not None:
            bound = int(n_) / TARGET_SECRETS_PER_STARTUP_CALL
            check(
                f"Secrets Manager calls to READY <= 1 per {TARGET_SECRETS_PER_STARTUP_CALL}"
                f" secrets at {n_} secrets",
                round(calls),
                calls <= bound,
                f"at most {bound:g}",
            )
    largest = max(scale, key=int) if scale else None
    if largest is not None:
        figs = scale[largest]
        label = f"at {largest} secrets" + ("" if largest == "10000" else " (target: 10000)")
        ready = _median(figs.get("ready_latency_s"))
        if ready is not None:
            check(
                f"rotd run READY < {TARGET_READY_S:g} s with"
                f" +{results['sm_latency_ms']:g} ms per call {label}",
                round(ready, 2),
                ready < TARGET_READY_S,
                "",
            )
        v, r, h = (
            _median(figs["validate_s"]),
            _median(figs["rss_ready_mb"]),
            _median(figs["sighup_applied_s"]),
        )
        check(f"validate < {TARGET_VALIDATE_S:g} s {label}", round(v, 3), v < TARGET_VALIDATE_S, "")
        check(
            f"RSS once scheduled < {TARGET_RSS_MB:g} MB {label}", round(r, 1), r < TARGET_RSS_MB, ""
        )
        check(
            f"one-secret SIGHUP < {TARGET_SIGHUP_S:g} s {label}",
            round(h, 3),
            h < TARGET_SIGHUP_S,
            "",
        )
    return found


def fmt(figure: dict[str, float] | None, digits: int = 2) -> str:
    if figure is None:
        return "-"
    med, lo, hi = figure["median"], figure["min"], figure["max"]
    if lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def report(results: dict[str, Any], summary: dict[str, Any]) -> str:
    """The figures as text, with only the parts the results have.

    ``--no-rotations`` leaves out the rotation runs with their limits and start-up figures, and
    ``--scales ''`` the inventory scale.
    """
    lines: list[str] = []
    add = lines.append
    v = results["versions"]
    n = results["n"]
    rotations = summary["rotation"]
    if rotations:
        add(
            f"rotd benchmark: N={n} secrets ({(n + 1) // 2} PostgreSQL, {n // 2} MariaDB; half"
            f" single user, half alternating users); {results['runs']} run(s) each;"
            " median [min-max]"
        )
    else:
        add(
            f"rotd benchmark: inventory scale only, no rotation runs; {results['runs']} run(s)"
            " each; median [min-max]"
        )
    add(
        f"machine: {results['machine']['cpus']} CPUs ({results['machine']['cpu_model']});"
        f" Python {v['python']}; rotd {v['rotd']}; PostgreSQL {v['postgresql']};"
        f" MariaDB {v['mariadb']}; moto {v['moto']}; aioboto3 {v['aioboto3']};"
        f" asyncpg {v['asyncpg']}; aiomysql {v['aiomysql']}"
    )
    limits = results.get("limits")
    if limits is not None:
        tps = limits["max_write_tps"]
        add(
            f"limits: max_concurrent {limits['max_concurrent']}, max_concurrent_per_host"
            f" {limits['max_concurrent_per_host']} (2 hosts); aws.max_write_tps {tps:g}"
            f"{' (default)' if limits['max_write_tps_is_default'] else ''}:"
            f" {WRITES_PER_ROTATION} writes per rotation, so at most"
            f" {tps / WRITES_PER_ROTATION:g} rotations/s after a burst of {tps:g} writes"
            f" ({tps / WRITES_PER_BRIDGED_ROTATION:.1f}/s for bridged secrets:"
            f" {WRITES_PER_BRIDGED_ROTATION} writes each, the ROTD_TESTED label included)"
        )
    if "pbkdf2_4096_cpu_ms" in results:
        add(
            f"PBKDF2-SHA256 x4096 (one SCRAM verifier per PostgreSQL rotation):"
            f" {results['pbkdf2_4096_cpu_ms']:.2f} ms CPU; rotd start-up (rotd validate of the"
            f" same inventory): {results['rotd_startup_cpu_s']:.2f} s CPU"
        )
    if rotations:
        add(
            f"latency mode: +{results['sm_latency_ms']:g} ms per Secrets Manager call,"
            f" +{results['db_rtt_ms']:g} ms per database round trip; bare mode goes through the"
            " same proxies with nothing added"
        )
    load = f"load average at start {results['loadavg_at_start'][0]:.2f}"
    if "loadavg_after_rotations" in results:
        load += f", after the rotation runs {results['loadavg_after_rotations'][0]:.2f}"
    if "floor_startup_cpu_s" in results:
        load = f"floor start-up (an empty plan): {results['floor_startup_cpu_s']:.2f} s CPU; {load}"
    add(load)
    if rotations:
        add(
            "columns: wall time of the process; rotations/s; per-rotation duration_s percentiles"
            " (they include waiting for a host slot and the write cap); peak rotations in flight"
            " (overlap of the per-rotation intervals); CPU of the process per rotation, raw and"
            " net of its start-up and the PBKDF2 of each PostgreSQL rotation; peak RSS; CPU"
            " seconds of moto, of the bench's proxies, and of everything else on the machine"
            " (databases, other work); CPUs busy on average over the wall time"
        )
    header = (
        f"{'':34} {'wall s':>20} {'rot/s':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'flight':>6} {'CPU ms':>7} {'net':>6} {'RSS MB':>6} {'moto s':>6}"
        f" {'proxy s':>7} {'other s':>7} {'busy':>5}"
    )
    for mode, configs in rotations.items():
        add("")
        add(f"== {mode} ==")
        add(header)
        for label, f in configs.items():
            add(
                f"{label:34} {fmt(f['wall_s'], 1):>20} {_median(f['rotations_per_s']):6.1f}"
                f" {_median(f['latency_p50_ms']):7.0f} {_median(f['latency_p95_ms']):7.0f}"
                f" {_median(f['latency_p99_ms']):7.0f} {_median(f['peak_in_flight']):6.0f}"
                f" {_median(f['cpu_ms_per_rotation']):7.2f}"
                f" {_median(f['cpu_ms_per_rotation_net']):6.2f}"
                f" {_median(f['peak_rss_mb']):6.0f} {_median(f['moto_cpu_s']):6.1f}"
                f" {_median(f['proxy_cpu_s']):7.1f} {_median(f['others_cpu_s']):7.1f}"
                f" {_median(f['wall_cpus_busy']):5.2f}"
                + (f"  FAILED {f['failed']}" if f["failed"] else "")
            )
        add(
            "Secrets Manager calls per rotation (counted at the proxy; alternating includes the"
            " master's reads):"
        )
        for label, f in configs.items():
            for kind, ops in f["sm_calls_per_rotation"].items():
                detail = ", ".join(f"{op} {c:.3f}" for op, c in ops.items() if op != "total")
                add(f"  {label:34} {kind:18} {ops['total']:.3f}  ({detail})")
        add(
            "database connections per rotation (each host: half single, half alternating) and"
            " peak open at once:"
        )
        for label, f in configs.items():
            parts = [
                f"{engine} {fmt(db['per_rotation'])} /rotation, peak {db['peak_open']}"
                for engine, db in f["db"].items()
            ]
            add(f"  {label:34} " + "; ".join(parts))
    if summary["scale"]:
        add("")
        add("== inventory scale (through the counting proxy) ==")
        add(
            f"{'secrets':>8} {'mode':>8} {'validate s':>22} {'run: READY s':>24}"
            f" {'SM calls to READY':>18} {'RSS MB':>18} {'SIGHUP applied s':>24}"
        )
        for n_, f in summary["scale"].items():
            add(
                f"{n_:>8} {'bare':>8} {fmt(f['validate_s']):>22} {fmt(f['ready_s']):>24}"
                f" {fmt(f.get('startup_calls'), 0):>18} {fmt(f['rss_ready_mb'], 0):>18}"
                f" {fmt(f['sighup_applied_s'], 3):>24}"
            )
            if "ready_latency_s" in f:
                latency = f"+{results['sm_latency_ms']:g}ms"
                add(
                    f"{'':>8} {latency:>8} {'':>22} {fmt(f['ready_latency_s']):>24}"
                    f" {fmt(f['startup_calls_latency'], 0):>18}"
                    f" {fmt(f['rss_ready_latency_mb'], 0):>18}"
                    f" {fmt(f['sighup_applied_latency_s'], 3):>24}"
                )
    if summary["targets"]:
        add("")
        add("== targets ==")
    for t in summary["targets"]:
        detail = f"  ({t['detail']})" if t["detail"] else ""
        add(f"  {t['verdict']:6} {t['target']}: {t['value']}{detail}")
    return "\n".join(lines)


def _speedup_bounds(one_wall: float, n: int, limits: dict[str, Any]) -> str:
    """The most any process could gain over one rotation at a time: its writes per rotation
    within the write cap, and within Secrets Manager's own quota."""
    tps = limits.get("max_write_tps")
    if not tps:
        return ""
    at_cap = one_wall / (WRITES_PER_ROTATION * n / tps)
    at_quota = one_wall / (WRITES_PER_ROTATION * n / AWS_WRITE_QUOTA_TPS)
    return (
        f"; at most {at_cap:.1f}x within the write cap ({tps:g}/s), {at_quota:.1f}x within"
        f" Secrets Manager's quota ({AWS_WRITE_QUOTA_TPS}/s)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="logins to rotate (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke check: N=100, 1 run, inventory scale 100 only"
    )
    parser.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure with latency added (default: on)",
    )
    parser.add_argument("--sm-latency-ms", type=float, default=25.0)
    parser.add_argument("--db-rtt-ms", type=float, default=2.0)
    parser.add_argument(
        "--scales",
        default="100,1000,10000",
        help="inventory sizes for validate/run/SIGHUP; '' for none",
    )
    parser.add_argument(
        "--max-write-tps",
        type=float,
        default=None,
        help="aws.max_write_tps for rotd and the floor (default: rotd's own)",
    )
    parser.add_argument(
        "--max-concurrent-1",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run rotd with max_concurrent 1 (default: on)",
    )
    parser.add_argument(
        "--uncapped-floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the floor without the write cap (default: on)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one extra bare rotd run under py-spy (collapsed stacks in"
        " bench-results/profile-rotd-rotate.txt)",
    )
    parser.add_argument(
        "--rotations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the rotation runs (default: on)",
    )
    parser.add_argument(
        "--rotations-from",
        metavar="FILE",
        help="take the rotation runs from an earlier results(.partial).json"
        " instead (with --no-rotations: finish a run that was cut short)",
    )
    parser.add_argument("--ready-timeout-s", type=float, default=900.0)
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and inventories")
    parser.add_argument("--out", default=str(RESULTS_DIR / "results.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.runs = 100, 1
        if args.scales == parser.get_default("scales"):
            args.scales = "100"
    args.scales = [int(s) for s in str(args.scales).split(",") if s.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(measure(args))
    if args.rotations_from:
        earlier = json.loads(Path(args.rotations_from).read_text())
        earlier = earlier.get("results", earlier)
        keys = (
            "rotation",
            "limits",
            "pbkdf2_4096_cpu_ms",
            "rotd_startup_cpu_s",
            "floor_startup_cpu_s",
            "loadavg_at_start",
            "loadavg_after_rotations",
            "started",
        )
        results.update({k: earlier[k] for k in keys if k in earlier})
        results["rotations_from"] = args.rotations_from
    results.update(
        n=args.n,
        runs=args.runs,
        sm_latency_ms=args.sm_latency_ms,
        db_rtt_ms=args.db_rtt_ms,
        scales=args.scales,
        quick=args.quick,
    )
    summary = summarize(results)
    text = report(results, summary)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "summary": summary, "report": text}, indent=1))
    say(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
