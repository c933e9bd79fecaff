"""Runs rotations: concurrency limits, per-secret exclusivity, the master-secret cache.

``limits.max_concurrent`` bounds rotations in the whole process, ``max_concurrent_per_host``
bounds those working on one database host:port, and one secret is never rotated twice at once
in this process. Each finished rotation is logged as one canonical line. The runner never
raises for a failed rotation: it reports it in the :class:`rotd.protocol.Outcome`.

:meth:`Runner.rotate_one` is one secret's boundary: an exception nobody expected, in the
rotation, its hooks or its observers, is logged as ``unexpected_error.caught`` with its
traceback and counted; it fails that rotation alone (category ``internal``) or, after a
rotation that succeeded, leaves it succeeded. Only cancellation goes through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rotd.credentials import BadSecret, Credentials
from rotd.engines import Endpoint, Engine, Login, Session
from rotd.errors import Category, DatabaseError, SecretError, UnexpectedError
from rotd.hooks import HookRunner
from rotd.inventory import SecretSpec
from rotd.logins import SharedLogin
from rotd.observability import get_logger, log_unexpected, redactor
from rotd.protocol import Bridged, Dependencies, Outcome, Progress, Step, rotate
from rotd.replication import Replication
from rotd.secretstore import CURRENT, SecretStore

if TYPE_CHECKING:
    from rotd.events import EventPublisher

log = get_logger("rotd.runner")

# A dead host's breaker: the first interval, doubled per failed probe up to the cap.
BREAKER_BASE_S = 10.0
BREAKER_CAP_S = 300.0


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False
    reason: str = ""


class HostSlot:
    """One of a host's slots; between rotations it keeps at most one idle session.

    A rotation that holds the slot either takes the kept session (same login: a master's) or
    closes it before opening any session of its own, so a host never has more connections open
    than with no reuse at all. A kept session not taken within ``idle_s`` is closed.
    """

    def __init__(self, idle_s: float, closing: set[asyncio.Task[None]]) -> None:
        self._idle_s = idle_s
        self._closing = closing
        self._kept: tuple[Login, Session, AsyncExitStack] | None = None
        self._expiry: asyncio.TimerHandle | None = None

    async def take(self, login: Login) -> tuple[Session, AsyncExitStack] | None:
        kept = self._drop()
        if kept is None:
            return None
        kept_login, session, owner = kept
        if kept_login != login:
            await owner.aclose()
            return None
        try:
            await session.ping()
        except DatabaseError:
            await owner.aclose()
            return None
        return session, owner

    async def evict(self) -> None:
        kept = self._drop()
        if kept is not None:
            await kept[2].aclose()

    def keep(self, login: Login, session: Session, owner: AsyncExitStack) -> None:
        self._close_soon(self._drop())
        self._kept = (login, session, owner)
        self._expiry = asyncio.get_running_loop().call_later(self._idle_s, self.retire)

    def retire(self) -> None:
        """Close the kept session in the background."""
        self._close_soon(self._drop())

    def _drop(self) -> tuple[Login, Session, AsyncExitStack] | None:
        kept, self._kept = self._kept, None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        return kept

    def _close_soon(self, kept: tuple[Login, Session, AsyncExitStack] | None) -> None:
        if kept is not None:
            task = asyncio.ensure_future(kept[2].aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


class HostLimits:
    """Per database host:port: a semaphore for the concurrency limit, and a circuit breaker.

    When rotations find a host unreachable (or timing out), the breaker opens: further
    rotations on that host fail at once instead of each waiting out its own deadline. After
    the interval (``breaker_base_s``, doubling per failed probe up to ``breaker_cap_s``) one
    rotation is let through as the probe; its success closes the breaker.
    """

    def __init__(
        self,
        per_host: int,
        *,
        breaker_base_s: float = BREAKER_BASE_S,
        breaker_cap_s: float = BREAKER_CAP_S,
        keep_idle_s: float = 5.0,
    ) -> None:
        self.per_host = per_host
        self.breaker_base_s = breaker_base_s
        self.breaker_cap_s = breaker_cap_s
        self.keep_idle_s = keep_idle_s
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._spare: dict[str, list[HostSlot]] = {}  # slots not held, most recent last
        self._closing: set[asyncio.Task[None]] = set()
        self._breakers: dict[str, _Breaker] = {}
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    @asynccontextmanager
    async def slot(self, endpoint: Endpoint, lease: Lease | None = None) -> AsyncIterator[HostSlot]:
        """Hold one of the host's slots. While waiting for one, give up ``lease`` (the global
        slot), so that rotations queued on a slow or dead host never starve the others."""
        key = endpoint.address
        probe = self._admit(endpoint)
        semaphore = self._slots.get(key)
        if semaphore is None:
            semaphore = self._slots[key] = asyncio.Semaphore(self.per_host)
        try:
            if lease is not None and semaphore.locked():
                lease.release()
                await semaphore.acquire()
                try:
                    await lease.acquire()
                except BaseException:
                    semaphore.release()
                    raise
            else:
                await semaphore.acquire()
        except BaseException:
            if probe:
                self._breakers[key].probing = False
            raise
        spare = self._spare.setdefault(key, [])
        held = spare.pop() if spare else HostSlot(self.keep_idle_s, self._closing)
        try:
            self.in_flight[key] = self.in_flight.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.in_flight[key])
            try:
                yield held
            except BaseException as exc:
                self._record(key, exc, probe)
                raise
            else:
                self._record(key, None, probe)
            finally:
                self.in_flight[key] -= 1
        finally:
            if self._spare.get(key) is spare:
                spare.append(held)
            else:
                held.retire()  # the host's slots were replaced by a new limit meanwhile
            semaphore.release()

    def _admit(self, endpoint: Endpoint) -> bool:
        """Refuse at once while the host's breaker is open; True if this call is the probe."""
        breaker = self._breakers.get(endpoint.address)
        if breaker is None or breaker.failures == 0:
            return False
        wait = breaker.open_until - time.monotonic()
        if wait > 0 or breaker.probing:
            raise DatabaseError(
                endpoint.host,
                endpoint.port,
                Category.UNREACHABLE,
                f"not tried: the host failed {breaker.failures} time(s) in a row "
                f"({breaker.reason}); rotd probes it again in {max(wait, 0):.0f}s",
            )
        breaker.probing = True
        return True

    def _record(self, key: str, exc: BaseException | None, probe: bool) -> None:
        cause = exc.__cause__ if isinstance(exc, SecretError) else exc
        breaker = self._breakers.setdefault(key, _Breaker())
        if probe:
            breaker.probing = False
        if isinstance(cause, DatabaseError) and cause.category in _HOST_DOWN:
            if not cause.connecting:
                return  # a session cut mid-statement: the host answered
            breaker.failures += 1
            interval = min(self.breaker_cap_s, self.breaker_base_s * 2 ** (breaker.failures - 1))
            breaker.open_until = time.monotonic() + interval
            breaker.reason = cause.reason
            if breaker.failures == 1 or probe:
                log.warning(
                    "host.unreachable", host=key, failures=breaker.failures, retry_in_s=interval
                )
        elif isinstance(exc, asyncio.CancelledError):
            return
        elif breaker.failures:
            log.info("host.reachable", host=key, after_failures=breaker.failures)
            self._breakers.pop(key, None)

    def open_breakers(self) -> list[tuple[str, int, float, str]]:
        """Hosts whose breaker is open: (host:port, failures in a row, when the next probe may
        go, in Unix time, the last failure's reason)."""
        now, wall = time.monotonic(), time.time()
        return [
            (key, b.failures, wall + max(0.0, b.open_until - now), b.reason)
            for key, b in sorted(self._breakers.items())
            if b.failures
        ]

    def resize(self, per_host: int) -> None:
        """Apply a new per-host limit to hosts seen from now on and to idle ones."""
        self.per_host = per_host
        self._slots = {k: s for k, s in self._slots.items() if self.in_flight.get(k)}
        for key in [k for k in self._spare if k not in self._slots]:
            for slot in self._spare.pop(key):
                slot.retire()

    async def close_idle(self) -> None:
        """Close every session the slots keep, and wait until they are closed."""
        for spare in self._spare.values():
            for slot in spare:
                slot.retire()
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


_HOST_DOWN = frozenset({Category.UNREACHABLE, Category.TIMEOUT})


@dataclass(frozen=True)
class InFlight:
    """One rotation the runner holds, for ``/status``: which attempt, since when (Unix time),
    and its :class:`rotd.protocol.Progress`, which the protocol moves along."""

    spec: SecretSpec
    attempt: int
    started: float
    progress: Progress


class Lease:
    """One rotation's hold on a global slot, which it may give up and take back."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self._held = False

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()


class _Gate:
    """The host gate one rotation sees: the runner's host limits, with its own lease."""

    def __init__(self, hosts: HostLimits, lease: Lease) -> None:
        self._hosts = hosts
        self._lease = lease

    def slot(self, endpoint: Endpoint) -> AbstractAsyncContextManager[HostSlot]:
        return self._hosts.slot(endpoint, self._lease)


class MasterCache:
    """Master logins read once per batch and shared by every rotation that needs them."""

    def __init__(self, store: SecretStore) -> None:
        self._store = store
        self._reads: dict[str, asyncio.Task[Credentials]] = {}

    async def get(self, secret_id: str, *, refresh: bool = False) -> Credentials:
        task = self._reads.get(secret_id)
        if task is None or refresh or (task.done() and task.exception() is not None):
            task = self._reads[secret_id] = asyncio.ensure_future(self._read(secret_id))
        return await asyncio.shield(task)

    async def _read(self, secret_id: str) -> Credentials:
        value = await self._store.get_value(secret_id, stage=CURRENT)
        try:
            return Credentials.parse(value.string, login_only=True)
        except BadSecret as exc:
            raise BadSecret(f"master secret {secret_id!r}: {exc}") from None

    def clear(self) -> None:
        self._reads.clear()


class Runner:
    """Rotates secrets within the process's limits; one instance per process."""

    def __init__(
        self,
        store: SecretStore,
        engines: Mapping[str, Engine],
        *,
        max_concurrent: int,
        max_concurrent_per_host: int,
        db_timeout_s: float = 15.0,
        verify_bound_s: float = 60.0,
        breaker_base_s: float = BREAKER_BASE_S,
        breaker_cap_s: float = BREAKER_CAP_S,
    ) -> None:
        self.store = store
        self.engines = engines
        self.hosts = HostLimits(
            max_concurrent_per_host, breaker_base_s=breaker_base_s, breaker_cap_s=breaker_cap_s
        )
        self.masters = MasterCache(store)
        self.hooks = HookRunner(store)
        self.replication = Replication(store)
        self._global = asyncio.Semaphore(max_concurrent)
        self.max_concurrent = max_concurrent
        self._busy: set[str] = set()
        self.rotating: dict[str, InFlight] = {}  # secret id -> its rotation in flight
        self.in_flight = 0
        self.peak_in_flight = 0
        self.db_timeout_s = db_timeout_s
        self.verify_bound_s = verify_bound_s
        # Set by the daemon: the AWSCURRENT version of each secret when it was found due.
        self.expected_current: dict[str, str] = {}
        # Secrets holding a login another secret holds too: never rotated (rotd.logins).
        self.shared_logins: Mapping[str, SharedLogin] = {}
        # Observers for metrics: called as a rotation takes its slot and when it has finished,
        # and with (database, stage) for each unexpected exception caught.
        self.on_start: Callable[[SecretSpec], None] | None = None
        self.on_finish: Callable[[Outcome], None] | None = None
        self.on_fault: Callable[[str, str], None] | None = None
        # Where each outcome and each failed hook is published as an event (rotd.events).
        self.events: EventPublisher | None = None

    def deps(self, lease: Lease, progress: Progress | None = None) -> Dependencies:
        return Dependencies(
            progress=progress or Progress(),
            store=self.store,
            engines=self.engines,
            masters=self.masters,
            gate=_Gate(self.hosts, lease),
            db_timeout_s=self.db_timeout_s,
            verify_bound_s=self.verify_bound_s,
            expected_current=self.expected_current,
        )

    def resize(self, max_concurrent: int, max_concurrent_per_host: int) -> None:
        """Apply new limits to rotations that start from now on; those in flight go on."""
        if max_concurrent != self.max_concurrent:
            self._global = asyncio.Semaphore(max_concurrent)
            self.max_concurrent = max_concurrent
        self.hosts.resize(max_concurrent_per_host)

    def is_busy(self, secret_id: str) -> bool:
        return secret_id in self._busy

    async def rotate_one(
        self, spec: SecretSpec, *, attempt: int = 1, bridged: Bridged | None = None
    ) -> Outcome:
        """Rotate ``spec`` once, waiting for room; refuse if this process is already on it,
        or if another secret holds the same login (changing nothing for either). ``bridged``:
        the steps the bridge asks for; a step that leaves the rotation unfinished runs no
        hooks and sends no event (the rotation has not happened yet).

        Never raises but ``CancelledError``: see the module's description.
        """
        shared = self.shared_logins.get(spec.id)
        if shared is not None:
            error = SecretError(spec.id, Step.GUARD, Category.SHARED_LOGIN, shared.reason)
            outcome = Outcome(spec.id, spec.database, spec.strategy, 0.0, error=error)
            report(outcome, attempt=attempt)
            self._publish(spec, outcome, attempt)
            return outcome
        if spec.id in self._busy:
            error = SecretError(
                spec.id, Step.GUARD, Category.LOCKED, "a rotation of this secret is in flight"
            )
            return Outcome(spec.id, spec.database, spec.strategy, 0.0, error=error)
        self._busy.add(spec.id)
        lease = Lease(self._global)
        started = time.monotonic()
        progress = Progress()
        self.rotating[spec.id] = InFlight(spec, attempt, time.time(), progress)
        try:
            await lease.acquire()
            self.in_flight += 1
            with self.contained(spec, "metrics"):
                if self.on_start is not None:
                    self.on_start(spec)
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                outcome = await rotate(
                    spec, self.deps(lease, progress), attempt=attempt, bridged=bridged
                )
            except UnexpectedError as exc:
                self.caught(spec, "rotation", exc.cause)
                outcome = _unexpected_outcome(spec, exc.cause, exc.step, time.monotonic() - started)
            except Exception as exc:
                self.caught(spec, "rotation", exc)
                outcome = _unexpected_outcome(spec, exc, "unknown step", time.monotonic() - started)
            finally:
                self.in_flight -= 1
        finally:
            lease.release()
            self._busy.discard(spec.id)
            self.rotating.pop(spec.id, None)
        with self.contained(spec, "metrics"):
            report(outcome, attempt=attempt)
        with self.contained(spec, "metrics"):
            if self.on_finish is not None:
                self.on_finish(outcome)
        if outcome.partial:
            return outcome
        self._publish(spec, outcome, attempt)
        if outcome.ok and spec.hooks:
            # A failing hook undoes nothing: the rotation stays succeeded whatever happens here.
            with self.contained(spec, "hooks"):
                results = await self.hooks.run(spec, outcome)
                for failed in (r for r in results if not r.ok):
                    with self.contained(spec, "events"):
                        if self.events is not None:
                            self.events.hook_failed(
                                outcome,
                                index=failed.index,
                                kind=failed.kind,
                                attempts=failed.attempts,
                                error=failed.error,
                            )
        if outcome.ok and outcome.replica_regions:
            with self.contained(spec, "replication"):
                await self.replication.check(spec, outcome)
        return outcome

    def _publish(self, spec: SecretSpec, outcome: Outcome, attempt: int) -> None:
        with self.contained(spec, "events"):
            if self.events is not None:
                self.events.rotation(outcome, attempt=attempt)

    def caught(self, spec: SecretSpec, stage: str, exc: Exception) -> None:
        """Log and count an exception nobody expected in ``stage`` of ``spec``'s life."""
        log_unexpected(log, stage, exc, secret_id=spec.id, database=spec.database)
        if self.on_fault is not None:
            self.on_fault(spec.database, stage)

    @contextmanager
    def contained(self, spec: SecretSpec, stage: str) -> Iterator[None]:
        """Catch, log and count any exception but cancellation: ``stage`` of ``spec`` must not
        take the rest of its rotation, or other secrets, down with it."""
        try:
            yield
        except Exception as exc:
            self.caught(spec, stage, exc)

    async def rotate_all(self, specs: Iterable[SecretSpec]) -> list[Outcome]:
        """Rotate every secret given, concurrently within the limits; keep their order."""
        self.masters.clear()
        try:
            return list(await asyncio.gather(*(self.rotate_one(spec) for spec in specs)))
        finally:
            await self.hosts.close_idle()


def _unexpected_outcome(spec: SecretSpec, exc: Exception, step: str, duration_s: float) -> Outcome:
    """A rotation that raised what nobody expected: failed, category ``internal``. Its state is
    in Secrets Manager, so the next attempt resumes it like any interrupted rotation."""
    reason = redactor.scrub(
        f"unexpected {type(exc).__name__}: {exc} (a fault in rotd; the "
        "unexpected_error.caught event has the traceback)"
    )
    error = SecretError(spec.id, step, Category.INTERNAL, reason)
    return Outcome(spec.id, spec.database, spec.strategy, round(duration_s, 4), error=error)


def report(outcome: Outcome, *, attempt: int) -> None:
    """The one canonical log line of a finished rotation."""
    fields: dict[str, Any] = {
        "secret_id": outcome.secret_id,
        "database": outcome.database,
        "engine": outcome.engine,
        "strategy": str(outcome.strategy),
        "version_id": outcome.version_id,
        "attempt": attempt,
        "duration_s": outcome.duration_s,
        "old_username": outcome.old_username,
        "new_username": outcome.new_username,
    }
    if outcome.partial:
        log.info("bridge.step_done", **fields, step=outcome.stopped_after)
    elif outcome.skipped:
        log.info("rotation.skipped", **fields, reason=outcome.skip_reason)
    elif outcome.error is None:
        event = "rotation.resumed" if outcome.resumed else "rotation.succeeded"
        log.info(event, **fields)
    else:
        error = outcome.error
        log.error(
            "rotation.failed",
            **fields,
            step=error.step,
            category=str(error.category),
            transient=error.category.transient,
            error=error.reason,
        )
