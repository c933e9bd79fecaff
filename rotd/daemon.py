"""The long-running daemon: schedules every secret, reloads on SIGHUP, drains on SIGTERM.

When a secret is due comes from Secrets Manager, not from local state: the CreatedDate of its
AWSCURRENT version, read at start, after each rotation and on reload. APScheduler is only the
clock: each job is a tiny coroutine that hands the secret to the :class:`rotd.runner.Runner`,
which owns concurrency; in-flight rotations are tasks of this module, so that a stop can let
them finish within the grace period. Signal handlers only set events; the main loop acts.

No secret may silently drop out of the schedule: an exception nobody expected while planning,
firing or rotating one secret is caught at that secret's boundary, logged as
``unexpected_error.caught``, counted, and the secret is planned again with backoff. When the
daemon can no longer plan, :meth:`Daemon.health_problem` says so and ``/healthz`` fails.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from rotd import daemonstatus
from rotd import inventory as inventory_module
from rotd.accounts import Stores
from rotd.bridge.worker import BridgeWorker, TagStore
from rotd.engines import Engine, all_engines
from rotd.errors import Category, ConfigErrors, StoreError
from rotd.events import EventPublisher
from rotd.inventory import Inventory, SecretSpec, secret_location, secret_name
from rotd.logins import Claim, claim_of, find_shared
from rotd.notify import Notifier
from rotd.observability import (
    DaemonSample,
    Metrics,
    SecretStatus,
    get_logger,
    log_unexpected,
    serve_http,
)
from rotd.protocol import Bridged, Outcome, inspect, inspection_of
from rotd.render import Renderer
from rotd.replication import ReplicaCheck
from rotd.runner import BREAKER_BASE_S, BREAKER_CAP_S, Runner
from rotd.schedule import plan_start
from rotd.secretstore import SecretStore
from rotd.survey import Known, Survey

log = get_logger("rotd.daemon")

EXIT_OK = 0
EXIT_FORCED = 130  # a second SIGINT: exit at once, as a shell does after Ctrl-C

RETRY_BASE = timedelta(seconds=15)
RETRY_CAP = timedelta(minutes=15)
PLANNING_CONCURRENCY = 32
# /healthz fails once planning has raised this many times in a row, for as many different
# secrets (or for every secret, when there are fewer), with no planning succeeding between.
PLANNING_FAULTS_UNHEALTHY = 3


def backoff(
    failures: int, *, base: timedelta = RETRY_BASE, cap: timedelta = RETRY_CAP
) -> timedelta:
    """Capped exponential backoff with jitter: about base, 2*base, 4*base ... up to cap."""
    ceiling: timedelta = min(cap, base * (2 ** max(0, failures - 1)))
    return ceiling * random.uniform(0.5, 1.0)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Secret:
    """What the daemon tracks for one secret between runs."""

    spec: SecretSpec
    status: SecretStatus
    last_rotated: datetime | None = None
    failures: int = 0
    arn: str | None = None  # as Secrets Manager last named it, for events
    parked: bool = False  # waiting for a reload or its next due time after a permanent error
    # For /status: what the last read of Secrets Manager found, the last rotation's outcome,
    # the reason of the problem that parked it, and when a retry after a failure is due.
    username: str | None = None
    engine: str | None = None
    unfinished: str | None = None
    last: daemonstatus.LastRun | None = None
    problem_reason: str | None = None
    retry_at: datetime | None = None


class Daemon:
    """``rotd run``. Build it with a loaded inventory, then ``await run()`` for the exit code."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        install_signal_handlers: bool = True,
        notifier: Notifier | None = None,
        engines: Mapping[str, Engine] | None = None,
        store: SecretStore | None = None,
        retry_base: timedelta = RETRY_BASE,
        retry_cap: timedelta = RETRY_CAP,
        breaker_base_s: float = BREAKER_BASE_S,
        breaker_cap_s: float = BREAKER_CAP_S,
    ) -> None:
        """``retry_*`` and ``breaker_*`` set the waits after transient failures
        (docs/operations.md's 15 s to 15 min, docs/reliability.md's 10 s to 5 min); only tests
        change them."""
        self.inventory = inventory
        self.inventory_loaded = utcnow()
        self.started_at = utcnow()
        self.install_signal_handlers = install_signal_handlers
        self.notifier = notifier or Notifier.from_environ()
        self.engines = engines or all_engines()
        self._store = store
        self._breaker = (breaker_base_s, breaker_cap_s)
        self.metrics = Metrics()
        self.secrets: dict[str, _Secret] = {}
        self.started = False
        self._rotations: set[asyncio.Task[Any]] = set()
        self._planning: set[asyncio.Task[None]] = set()
        self._scheduler: AsyncIOScheduler | None = None
        self._runner: Runner | None = None
        self.renderer: Renderer | None = None
        self._events: EventPublisher | None = None
        self._bridge: BridgeWorker | None = None
        self._planning_slots = asyncio.Semaphore(PLANNING_CONCURRENCY)
        self._survey_reader: Survey | None = None
        # The logins each secret holds, as last read; a rotation waits until planning has read
        # every secret (``_settled``), so that a pair holding one login is refused in time.
        self._claims: dict[str, Claim] = {}
        self._tracking = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._waiting: set[str] = set()
        self.counts = {"succeeded": 0, "failed": 0, "resumed": 0, "skipped": 0}
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        # What /healthz reads: secrets that could not even be given a retry, and the secrets
        # whose planning raised since a planning last succeeded (with the count of faults).
        self._unplanned: set[str] = set()
        self._planning_faults = 0
        self._planning_faulty: set[str] = set()

    # --- signals: handlers only set events -----------------------------------------------------

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)

    def request_reload(self) -> None:
        self._reload.set()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _on_sigint(self) -> None:
        if self._stop.is_set():
            self._force.set()
        self.request_stop()

    def healthy(self) -> bool:
        return self.health_problem() is None

    def health_problem(self) -> str | None:
        """Why the daemon cannot keep every secret on schedule, or None while it can."""
        scheduler = self._scheduler
        if not self.started:
            return "starting"
        if scheduler is None or not scheduler.running:
            return "the scheduler is not running"
        if self._unplanned:
            return f"{len(self._unplanned)} secret(s) could not be scheduled again"
        needed = min(PLANNING_FAULTS_UNHEALTHY, len(self.secrets))
        if self._planning_faults >= PLANNING_FAULTS_UNHEALTHY and (
            len(self._planning_faulty) >= needed
        ):
            return (
                f"planning failed {self._planning_faults} times in a row, for "
                f"{len(self._planning_faulty)} secret(s)"
            )
        return None

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> int:
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._reload = asyncio.Event()
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            # First of all, so that a signal during start-up is handled, not fatal.
            if self.install_signal_handlers:
                self._install_signal_handlers(loop)
                stack.callback(self._remove_signal_handlers, loop)
            store = self._store
            if store is None:
                store = await stack.enter_async_context(Stores(self.inventory))
            self.store = store
            self._runner = Runner(
                store,
                self.engines,
                max_concurrent=self.inventory.max_concurrent,
                max_concurrent_per_host=self.inventory.max_concurrent_per_host,
                breaker_base_s=self._breaker[0],
                breaker_cap_s=self._breaker[1],
            )
            self._runner.on_start = lambda _spec: self.metrics.in_flight.inc()
            self._runner.on_finish = self._observe
            self._runner.on_fault = self.metrics.unexpected_error
            self._runner.hooks.on_result = self.metrics.hook_finished
            self._runner.hooks.on_fault = self.metrics.unexpected_error
            # Rendered files: written before the daemon is ready, so that a sidecar's
            # application finds them; kept current every refresh and after each rotation.
            self.renderer = Renderer(store, self.inventory.renders)
            self.renderer.on_result = self.metrics.render_finished
            self.renderer.on_fault = self.metrics.unexpected_error
            stack.push_async_callback(self.renderer.close)
            self.metrics.daemon = self._sample
            if self.inventory.eventbridge is not None:
                self._events = await stack.enter_async_context(
                    EventPublisher(self.inventory, self.inventory.eventbridge)
                )
                self._events.on_result = self.metrics.events_result
                self._runner.events = self._events
            self._runner.replication.on_result = self._replicated
            # Bridged secrets: Secrets Manager starts their rotations; the bridge function
            # hands rotd the steps through a queue (consumed once planning knows the ARNs).
            bridge = self._bridge = await stack.enter_async_context(
                BridgeWorker(
                    self.inventory, cast(TagStore, store), self.bridged_secret, self.bridged_step
                )
            )
            if self.inventory.listen is not None:
                host, port = self.inventory.listen
                await stack.enter_async_context(
                    serve_http(host, port, self.metrics, self.healthy, self.status_document)
                )
            self._scheduler = AsyncIOScheduler(timezone=UTC, event_loop=loop)
            self._scheduler.start()
            watchdog = asyncio.create_task(self.notifier.watchdog_loop())
            stack.push_async_callback(_cancel_and_wait, watchdog)
            stack.callback(self.notifier.close)

            started = time.monotonic()
            await self.renderer.render_all()
            self.renderer.start()
            await self._track(self.inventory.secrets)
            bridge.on_message = self.metrics.bridge_message
            bridge.on_queue = self.metrics.bridge_queue
            bridge.start(self.inventory)
            self.started = True
            log.info(
                "daemon.ready",
                secrets=len(self.secrets),
                duration_s=round(time.monotonic() - started, 3),
                listen=_listen_text(self.inventory),
            )
            self.notifier.ready(self.status_line())

            while not self._stop.is_set():
                await self._wait_for_signal()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    await self._guarded_reload()
            return await self._shutdown()
        return EXIT_OK  # pragma: no cover - the stack never swallows

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    async def _wait_for_signal(self) -> None:
        """Sleep until a reload or a stop is requested, sending STATUS now and then."""
        waiters = {
            asyncio.ensure_future(self._reload.wait()),
            asyncio.ensure_future(self._wake.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self.notifier.status(self.status_line())

    async def _shutdown(self) -> int:
        grace = self.inventory.shutdown_grace.total_seconds()
        deadline = time.monotonic() + grace
        in_flight = len(self._rotations)
        # Stage 1: start nothing new. Jobs that fire from now on are ignored; planning stops.
        self.notifier.stopping(f"stopping; {in_flight} rotation(s) in flight")
        log.info("daemon.stopping", in_flight=in_flight, grace_s=grace)
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for task in self._planning:
            task.cancel()
        if self._bridge is not None:
            await self._bridge.stop()
        # Stage 2: let rotations in flight finish, up to the grace period (a second SIGINT
        # cuts it short).
        finished = await self._drain(grace) if self._rotations else 0
        # Stage 3: cancel what is left and wait for it, so its finally blocks run. Its state
        # is in Secrets Manager: the next start resumes it (a bridge message not answered is
        # received again).
        left = [t for t in (*self._rotations, *self._planning) if not t.done()]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        if self._bridge is not None:
            await self._bridge.abandon()
        if self._runner is not None:
            await self._runner.hosts.close_idle()
        # Stage 4: send the events still queued, in what is left of the grace period (at least
        # a second, so that the last rotation's event has its chance); drop the rest.
        if self._events is not None and not self._force.is_set():
            await self._events.flush(max(deadline - time.monotonic(), 1.0))
        log.info(
            "daemon.stopped",
            finished_in_grace=finished,
            cancelled=len([t for t in left if t in self._rotations or t.cancelled()]),
            succeeded=self.counts["succeeded"],
            resumed=self.counts["resumed"],
            failed=self.counts["failed"],
        )
        return EXIT_FORCED if self._force.is_set() else EXIT_OK

    async def _drain(self, grace: float) -> int:
        """Wait for the rotations in flight, up to ``grace`` seconds or a second SIGINT."""
        tasks: set[asyncio.Future[Any]] = set(self._rotations)
        if self._bridge is not None:
            tasks |= self._bridge.handling  # their answers to the bridge function
        deadline = time.monotonic() + grace
        force = asyncio.ensure_future(self._force.wait())
        pending = set(tasks)
        try:
            while pending and not force.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                _, pending = await asyncio.wait(
                    {*pending, force}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(force)
        finally:
            force.cancel()
        return sum(1 for t in tasks if t.done())

    def _sample(self) -> DaemonSample:
        scheduler = self._scheduler
        breakers = self._runner.hosts.open_breakers() if self._runner is not None else []
        return DaemonSample(
            healthy=self.healthy(),
            scheduler_running=scheduler is not None and scheduler.running,
            open_breakers=tuple(host for host, *_ in breakers),
            inventory_path=str(self.inventory.path),
            inventory_loaded=self.inventory_loaded.timestamp(),
        )

    def status_document(self) -> dict[str, Any]:
        """What ``GET /status`` serves: see :mod:`rotd.daemonstatus`."""
        runner = self._runner
        scheduler = self._scheduler
        jobs: dict[str, datetime] = {}
        if scheduler is not None and scheduler.running:
            for job in scheduler.get_jobs():
                if job.next_run_time is not None:
                    jobs[job.id] = job.next_run_time
        return daemonstatus.document(
            self,
            secrets=list(self.secrets.values()),
            rotating=dict(runner.rotating) if runner is not None else {},
            breakers=runner.hosts.open_breakers() if runner is not None else [],
            jobs=jobs,
            now=utcnow(),
        )

    def status_line(self) -> str:
        parked = sum(1 for s in self.secrets.values() if s.parked)
        failing = sum(1 for s in self.secrets.values() if s.failures)
        return (
            f"{len(self.secrets)} secrets; {len(self._rotations)} rotating; "
            f"{failing} failing ({parked} need attention); rotated {self.counts['succeeded']}, "
            f"resumed {self.counts['resumed']}, failed {self.counts['failed']}"
        )

    # --- reload ---------------------------------------------------------------------------------

    async def _guarded_reload(self) -> None:
        """A reload that raises what no code path expected never ends the daemon: the secrets
        keep their schedules, the fault is logged and counted, and the next SIGHUP tries again."""
        try:
            await self.reload()
        except Exception as exc:
            self.metrics.reloads.labels("failed").inc()
            log_unexpected(log, "reload", exc, path=str(self.inventory.path))
            self.notifier.ready(self.status_line())

    def _replicated(self, check: ReplicaCheck) -> None:
        secret = self.secrets.get(check.secret_id)
        if secret is not None:
            secret.status.replicas[check.region] = (check.in_sync, check.lag_s)

    async def reload(self) -> None:
        """Re-read the inventory; keep the old one untouched if the new one is invalid."""
        self.notifier.reloading()
        try:
            new = await asyncio.to_thread(inventory_module.load, self.inventory.path)
            loaded = utcnow()
        except ConfigErrors as exc:
            self.metrics.reloads.labels("rejected").inc()
            log.error(
                "reload.rejected",
                path=self.inventory.path,
                errors=[str(e) for e in exc.errors],
                kept_secrets=len(self.secrets),
            )
            self.notifier.ready(self.status_line())
            return
        for warning in new.warnings:
            log.warning("inventory.warning", warning=warning)
        old_specs = {secret_id: s.spec for secret_id, s in self.secrets.items()}
        new_specs = {spec.id: spec for spec in new.secrets}
        removed = [i for i in old_specs if i not in new_specs]
        added = [new_specs[i] for i in new_specs if i not in old_specs]
        changed = [
            new_specs[i] for i in new_specs if i in old_specs and new_specs[i] != old_specs[i]
        ]
        for secret_id in removed:
            self._untrack(secret_id)
        # A reload is also the operator's way to say "I fixed it": parked secrets plan again,
        # and so do secrets that a fault left without a schedule.
        retry = [
            s.spec
            for s in self.secrets.values()
            if (s.parked or s.spec.id in self._unplanned) and s.spec.id in new_specs
        ]
        retry = [new_specs[spec.id] for spec in retry if new_specs[spec.id] not in changed]
        for spec in changed:
            self.secrets[spec.id].spec = spec
            self.secrets[spec.id].status.database = spec.database
        if self._runner is not None:
            self._runner.resize(new.max_concurrent, new.max_concurrent_per_host)
        if new.eventbridge != self.inventory.eventbridge:
            log.warning("reload.events_unchanged", reason="events settings take effect at restart")
        if (new.region, new.endpoint_url, new.profile, new.role_arn) != (
            self.inventory.region,
            self.inventory.endpoint_url,
            self.inventory.profile,
            self.inventory.role_arn,
        ):
            log.warning(
                "reload.aws_unchanged",
                reason="the top-level aws settings take effect at restart; a database's own "
                "aws: block takes effect now",
            )
        if isinstance(self.store, Stores):
            self.store.update(new)
        self.inventory = new
        if self.renderer is not None:
            self.renderer.replace(new.renders)
        self.inventory_loaded = loaded
        await self._track([*added, *changed, *retry])
        if self._bridge is not None:
            self._bridge.start(new)
        self.metrics.reloads.labels("applied").inc()
        log.info(
            "reload.applied",
            added=len(added),
            removed=len(removed),
            changed=len(changed),
            retried=len(retry),
            unchanged=len(new_specs) - len(added) - len(changed),
        )
        self.notifier.ready(self.status_line())

    # --- planning -------------------------------------------------------------------------------

    async def _track(self, specs: Iterable[SecretSpec]) -> None:
        """Plan each secret (concurrently, bounded) and wait until all have a schedule.

        The secrets' state is read in batches first where there are enough of them
        (:mod:`rotd.survey`); each secret's planning reads alone what the batches left out."""
        specs = list(specs)
        tasks = []
        unplanned: dict[str, _Secret] = {}
        databases: dict[str, set[str]] = {}  # database -> the kinds of hooks its secrets run
        for spec in specs:
            secret = self.secrets.get(spec.id)
            if secret is None:
                status = SecretStatus(spec.id, spec.database)
                secret = self.secrets[spec.id] = _Secret(spec, status)
                self.metrics.secrets[spec.id] = secret.status
            databases.setdefault(spec.database, set()).update(
                "exec" if hook.argv is not None else "webhook" for hook in spec.hooks
            )
            secret.status.account = spec.aws.account or "base"
            secret.status.region = spec.aws.region or ""
            secret.parked = False
            unplanned[spec.id] = secret
        for database, hook_kinds in databases.items():
            self.metrics.watch_database(database, hook_kinds)
        self._tracking += 1
        self._settled.clear()

        def plan(secret_id: str, known: Known | None) -> None:
            secret = unplanned.pop(secret_id, None)
            if secret is not None:
                tasks.append(self._spawn_planning(secret, known))

        try:
            # Each secret the batch reads found is planned as its batch arrives, then the rest.
            await self._survey(specs, plan)
            for secret_id in list(unplanned):
                plan(secret_id, None)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tracking -= 1
            self._refuse_shared_logins()
            if not self._tracking:
                self._settled.set()

    def _refuse_shared_logins(self) -> None:
        """Park every secret that holds a login another secret holds too; the runner refuses
        to rotate them. Those no longer in a pair lose the problem (planned meanwhile)."""
        shared = find_shared(self._claims)
        if self._runner is not None:
            self._runner.shared_logins = shared
        now = utcnow()
        for secret_id, secret in self.secrets.items():
            found = shared.get(secret_id)
            was = secret.status.problem == Category.SHARED_LOGIN
            if found is not None and not (was and secret.parked):
                self._after_failure(secret, Category.SHARED_LOGIN, found.reason, now, planning=True)
            elif found is None and was:
                secret.status.problem = None
                secret.failures = secret.status.consecutive_failures = 0

    def _untrack(self, secret_id: str) -> None:
        self.secrets.pop(secret_id, None)
        self._claims.pop(secret_id, None)
        self.metrics.secrets.pop(secret_id, None)
        self._unplanned.discard(secret_id)
        if self._scheduler is not None and self._scheduler.get_job(secret_id) is not None:
            self._scheduler.remove_job(secret_id)

    async def _survey(
        self, specs: list[SecretSpec], plan: Callable[[str, Known | None], None]
    ) -> None:
        """The batch reads' head start, handed to ``plan`` secret by secret; when they fail,
        the secrets they did not reach are read alone."""
        if not isinstance(self.store, Stores):
            return
        if self._survey_reader is None:
            self._survey_reader = Survey(self.store)
        try:
            await self._survey_reader.stream(specs, plan)
        except Exception as exc:
            log_unexpected(log, "survey", exc, secrets=len(specs))

    def _spawn_planning(self, secret: _Secret, known: Known | None = None) -> asyncio.Task[None]:
        task = asyncio.create_task(self._plan(secret, known), name=f"plan:{secret.spec.id}")
        self._planning.add(task)
        task.add_done_callback(self._planning.discard)
        task.add_done_callback(lambda done: self._task_done(done, secret))
        return task

    async def _plan(self, secret: _Secret, known: Known | None = None) -> None:
        """Read the secret's state in Secrets Manager (starting from what the batch reads
        ``known``) and schedule its next rotation.

        Never raises but ``CancelledError``: the secret's planning boundary."""
        try:
            await self._plan_once(secret, known)
        except Exception as exc:
            self._planning_faults += 1
            self._planning_faulty.add(secret.spec.id)
            self._caught(secret, "planning", exc)
        else:
            self._planning_faults = 0
            self._planning_faulty.clear()

    async def _plan_once(self, secret: _Secret, known: Known | None) -> None:
        spec = secret.spec
        now = utcnow()
        try:
            async with self._planning_slots:
                if known is not None:
                    state = await inspection_of(spec, self.store, known.description, known.value)
                else:
                    state = await inspect(spec, self.store)
        except StoreError as exc:
            self._after_failure(secret, exc.category, str(exc), now, planning=True)
            return
        if self.secrets.get(spec.id) is not secret:
            return  # removed by a reload meanwhile
        secret.last_rotated = state.created
        secret.arn = state.arn
        secret.status.created = state.created.timestamp()
        secret.username, secret.engine = state.username, spec.engine or state.engine
        secret.unfinished = state.unfinished
        due_by_schedule = spec.schedule.next_after(state.created, spec.timezone)
        secret.status.max_age = (
            (due_by_schedule - state.created + spec.window).total_seconds()
            if due_by_schedule is not None
            else None
        )
        if self._runner is not None:
            self._runner.expected_current[spec.id] = state.version_id
        if state.endpoint is not None and state.username is not None:
            self._claims[spec.id] = claim_of(spec, state.arn, state.endpoint, state.username)
        if state.conflict is not None:
            self._after_failure(secret, Category.CONFLICT, state.conflict, now, planning=True)
            return
        if spec.bridged:
            # Secrets Manager's rotation rules start its rotations, and the bridge function
            # hands over their steps; the bridge's scan finishes one whose messages were lost.
            secret.status.next_due = (
                state.next_rotation.timestamp() if state.next_rotation is not None else None
            )
            return
        if state.unfinished is not None:
            # An unfinished rotation: resume it promptly, whatever the schedule says.
            log.info("schedule.resume", secret_id=spec.id, version_id=state.unfinished)
            self._schedule(secret, now, now)
            return
        planned = plan_start(spec.id, spec.schedule, spec.window, state.created, now, spec.timezone)
        if planned is None:
            log.warning("schedule.never", secret_id=spec.id, schedule=spec.schedule.text)
            secret.status.next_due = None
            return
        due, start = planned
        self._schedule(secret, due, start)

    def _schedule(
        self,
        secret: _Secret,
        due: datetime,
        start: datetime,
        *,
        replan: bool = False,
        retry: bool = False,
    ) -> None:
        """Run the secret's job at ``start``: rotate it, or with ``replan`` plan it again;
        ``retry`` when that is a retry after a failure."""
        spec = secret.spec
        secret.status.next_due = due.timestamp()
        secret.retry_at = start if retry else None
        if self._scheduler is None or not self._scheduler.running:
            return
        self._scheduler.add_job(
            self._replan if replan else self._fire,
            "date",
            run_date=start,
            args=[spec.id],
            id=spec.id,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )
        self._unplanned.discard(spec.id)
        log.debug(
            "schedule.planned",
            secret_id=spec.id,
            due=due.isoformat(),
            start=start.isoformat(),
            parked=secret.parked,
            replan=replan,
        )

    async def _fire(self, secret_id: str) -> None:
        """The scheduled job: hand the secret to a rotation task and return at once."""
        secret = self.secrets.get(secret_id)
        if secret is None or self._stop.is_set() or self._runner is None:
            return
        try:
            if self._runner.is_busy(secret_id) or secret_id in self._waiting:
                return
            task = asyncio.create_task(self._rotate(secret), name=f"rotate:{secret_id}")
            self._rotations.add(task)
            task.add_done_callback(self._rotations.discard)
            task.add_done_callback(lambda done: self._task_done(done, secret))
        except Exception as exc:
            self._caught(secret, "scheduling", exc)

    async def _replan(self, secret_id: str) -> None:
        """The scheduled job after a fault: plan the secret again, in a task of its own."""
        secret = self.secrets.get(secret_id)
        if secret is None or self._stop.is_set():
            return
        try:
            self._spawn_planning(secret)
        except Exception as exc:
            self._caught(secret, "scheduling", exc)

    async def _rotate(self, secret: _Secret) -> None:
        """One rotation task: the runner's boundary covers the rotation, its hooks and
        metrics; this one covers what the daemon does with the outcome."""
        assert self._runner is not None
        self._waiting.add(secret.spec.id)
        try:
            await self._settled.wait()  # planning in progress: which logins are shared?
        finally:
            self._waiting.discard(secret.spec.id)
        try:
            attempt = secret.failures + 1
            outcome = await self._runner.rotate_one(secret.spec, attempt=attempt)
            if self.secrets.get(secret.spec.id) is not secret or self._stop.is_set():
                return
            now = utcnow()
            secret.last = daemonstatus.LastRun.of(outcome, attempt, now)
            secret.arn = outcome.arn or secret.arn
            if outcome.error is not None:
                self._after_failure(secret, outcome.error.category, outcome.error.reason, now)
                return
            if not outcome.skipped:
                secret.status.last_success = now.timestamp()
            secret.failures = 0
            secret.status.consecutive_failures = 0
            secret.status.problem = None
        except Exception as exc:
            self._caught(secret, "scheduling", exc)
            return
        await self._plan(secret)
        self._refuse_shared_logins()

    # --- the bridge -----------------------------------------------------------------------------

    def bridged_secret(self, arn: str) -> SecretSpec | None:
        """The inventory's secret a bridge message names by ARN: as Secrets Manager named it
        when it was planned, else by id, else by name in the ARN's region."""
        for secret in self.secrets.values():
            if secret.arn == arn:
                return secret.spec
        located = secret_location(arn)
        for spec in self.inventory.secrets:
            if spec.id == arn:
                return spec
            if (
                located is not None
                and spec.name == secret_name(arn)
                and spec.aws.region in (None, located[1])
                and spec.aws.account in (None, located[0])
            ):
                return spec
        return None

    async def bridged_step(self, spec: SecretSpec, bridged: Bridged) -> Outcome:
        """Perform what the bridge asks of ``spec``'s rotation, as a rotation task of the
        daemon's (drained on stop like any rotation); the daemon's view of the secret follows."""
        task = asyncio.create_task(self._bridged(spec, bridged), name=f"bridge:{spec.id}")
        self._rotations.add(task)
        task.add_done_callback(self._rotations.discard)
        # Shielded: stopping the queue's consumer must not cut a step short.
        return await asyncio.shield(task)

    async def _bridged(self, spec: SecretSpec, bridged: Bridged) -> Outcome:
        assert self._runner is not None
        await self._settled.wait()  # planning in progress: which logins are shared?
        secret = self.secrets.get(spec.id)
        attempt = secret.failures + 1 if secret is not None else 1
        outcome = await self._runner.rotate_one(spec, attempt=attempt, bridged=bridged)
        if secret is None or self.secrets.get(spec.id) is not secret or outcome.partial:
            return outcome
        now = utcnow()
        secret.arn = outcome.arn or secret.arn
        if outcome.error is not None:
            # Not parked whatever the category: Secrets Manager retries the rotation, and
            # the scan finishes it once the cause is fixed.
            secret.last = daemonstatus.LastRun.of(outcome, attempt, now)
            secret.failures += 1
            secret.status.consecutive_failures = secret.failures
            return outcome
        if not outcome.skipped:
            secret.last = daemonstatus.LastRun.of(outcome, attempt, now)
            secret.status.last_success = now.timestamp()
            secret.failures = secret.status.consecutive_failures = 0
            secret.status.problem = None
            await self._plan(secret)
        return outcome

    def _caught(self, secret: _Secret, stage: str, exc: Exception) -> None:
        """The boundary of one secret: log and count ``exc``, then plan the secret again with
        backoff. A secret that cannot even be given a retry fails the health check."""
        spec = secret.spec
        log_unexpected(log, stage, exc, secret_id=spec.id, database=spec.database)
        try:
            self.metrics.unexpected_error(spec.database, stage)
            if self.secrets.get(spec.id) is not secret or self._stop.is_set():
                return
            secret.failures += 1
            secret.status.consecutive_failures = secret.failures
            delay = backoff(secret.failures, base=self.retry_base, cap=self.retry_cap)
            retry_at = utcnow() + delay
            log.warning(
                "schedule.retry_scheduled",
                secret_id=spec.id,
                category=str(Category.INTERNAL),
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=round(delay.total_seconds(), 3),
                failures=secret.failures,
            )
            self._schedule(secret, retry_at, retry_at, replan=True, retry=True)
        except Exception as again:
            self._lost(secret, again)

    def _task_done(self, task: asyncio.Task[None], secret: _Secret) -> None:
        """The last line of defence: a task of one secret that ended with an exception its
        boundary did not catch (a fault in the boundary itself) leaves the secret unplanned."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._lost(secret, exc)

    def _lost(self, secret: _Secret, exc: BaseException) -> None:
        """The secret has no schedule and nothing will give it one: say so, fail /healthz."""
        spec = secret.spec
        if self.secrets.get(spec.id) is not secret or self._stop.is_set():
            return  # removed by a reload meanwhile, or stopping: nothing to schedule
        self._unplanned.add(spec.id)
        log.error(
            "schedule.lost",
            secret_id=spec.id,
            database=spec.database,
            error=f"{type(exc).__name__}: {exc}",
            action="rotd cannot schedule this secret and /healthz fails: reload rotd (SIGHUP) "
            "or restart it, and report this event's exception",
            exc_info=exc,
        )

    def _after_failure(
        self,
        secret: _Secret,
        category: Category,
        reason: str,
        now: datetime,
        *,
        planning: bool = False,
    ) -> None:
        """Retry soon when waiting may help; otherwise wait for a reload or the next due time."""
        spec = secret.spec
        secret.failures += 1
        secret.status.consecutive_failures = secret.failures
        if category.transient:
            delay = backoff(secret.failures, base=self.retry_base, cap=self.retry_cap)
            retry_at = now + delay
            log.warning(
                "rotation.retry_scheduled" if not planning else "schedule.retry_scheduled",
                secret_id=spec.id,
                category=str(category),
                error=reason,
                retry_in_s=round(delay.total_seconds(), 1),
                failures=secret.failures,
            )
            self._schedule(secret, retry_at, retry_at, replan=planning, retry=True)
            return
        secret.parked = True
        secret.status.problem = str(category)
        secret.problem_reason = reason
        next_due = spec.schedule.next_after(now, spec.timezone)
        log.error(
            "rotation.parked",
            secret_id=spec.id,
            database=spec.database,
            category=str(category),
            error=reason,
            failures=secret.failures,
            next_attempt=next_due.isoformat() if next_due else None,
            action="fix the cause, then reload rotd (SIGHUP) or wait for the next due time",
        )
        if self._events is not None:
            self._events.parked(
                spec,
                secret.arn,
                category,
                reason,
                failures=secret.failures,
                next_attempt=next_due,
            )
        if next_due is not None:
            self._schedule(secret, next_due, next_due, replan=planning)

    def _observe(self, outcome: Outcome) -> None:
        self.metrics.in_flight.dec()
        if outcome.partial:
            return  # a bridged step: the rotation is counted when it finishes
        label = outcome.label
        category = outcome.error.category if outcome.error is not None else None
        self.metrics.rotation_finished(
            outcome.database,
            label,
            outcome.duration_s,
            str(category) if category else None,
            bool(category and category.transient),
        )
        if outcome.unreplicated:
            self.metrics.unreplicated(outcome.database, len(outcome.unreplicated))
        self.counts[label] = self.counts.get(label, 0) + 1
        if outcome.ok and self.renderer is not None:
            self.renderer.rotated(outcome.secret_id)


async def _cancel_and_wait(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _listen_text(loaded: Inventory) -> str | None:
    return f"{loaded.listen[0]}:{loaded.listen[1]}" if loaded.listen else None
