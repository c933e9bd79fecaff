"""Rotation events in AWS: one EventBridge event per rotation outcome and per failed hook.

Teams that move rotation from a Lambda function to rotd keep alarms and automations listening
for what happened to a secret. After every rotation (succeeded, resumed, skipped, failed), every
secret the daemon parks and every ``on_rotated`` hook that fails, :class:`EventPublisher` queues
one event: ``source`` (``rotd`` unless configured), a ``detail-type`` per outcome, the secret's
ARN in ``resources`` and a ``detail`` of identifiers, timings and, for a failure, the step,
category and the scrubbed message. Never a secret value: every detail passes the redactor.

Publishing never waits on AWS. Events go into a bounded queue (the oldest is dropped, and
counted, when it is full); one background task sends them in batches of up to ten PutEvents
entries, retries a failed call or a throttled entry with capped exponential backoff, and gives
up on a batch after a few attempts. A dead bus therefore never delays or fails a rotation: it
is reported as ``events.failed`` and ``events.dropped`` log events and in ``rotd_events``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rotd.errors import AwsError, Category
from rotd.inventory import EventBridge, Inventory, SecretSpec
from rotd.observability import get_logger, log_unexpected, redactor
from rotd.protocol import Outcome
from rotd.secretstore import AwsConnection, open_client

log = get_logger("rotd.events")

SUCCEEDED = "Rotation Succeeded"
RESUMED = "Rotation Resumed"
SKIPPED = "Rotation Skipped"
FAILED = "Rotation Failed"
PARKED = "Rotation Parked"
HOOK_FAILED = "Rotation Hook Failed"
DETAIL_TYPES = {
    "succeeded": SUCCEEDED,
    "resumed": RESUMED,
    "skipped": SKIPPED,
    "failed": FAILED,
    "parked": PARKED,
    "hook_failed": HOOK_FAILED,
}

BATCH = 10  # PutEvents takes at most ten entries per call
MAX_QUEUED = 1000
MAX_ATTEMPTS = 5
FLUSH_S = 5.0  # how long ``rotd rotate`` waits for its events before it exits
# Entry errors that a later attempt may not meet; any other is the entry's own fault.
_RETRY_CODES = frozenset({"ThrottlingException", "InternalFailure", "InternalException"})


@dataclass(frozen=True)
class Event:
    """One event as rotd puts it: the EventBridge entry without bus and source."""

    detail_type: str
    resources: tuple[str, ...]
    detail: Mapping[str, Any]
    time: datetime = field(default_factory=lambda: datetime.now(UTC))  # when it happened

    def entry(self, bus: str, source: str) -> dict[str, Any]:
        detail = redactor.scrub(json.dumps(redactor.scrub_value(dict(self.detail))))
        return {
            "Time": self.time,
            "Source": source,
            "DetailType": self.detail_type,
            "Resources": list(self.resources),
            "Detail": detail,
            "EventBusName": bus,
        }


def rotation_event(outcome: Outcome, *, attempt: int) -> Event:
    """The event of a finished rotation, with the fields of its ``rotation.*`` log line."""
    detail = _identifiers(outcome)
    detail.update(
        outcome=outcome.label,
        attempt=attempt,
        duration_s=outcome.duration_s,
        old_username=outcome.old_username,
        new_username=outcome.new_username,
    )
    if outcome.skip_reason is not None:
        detail["reason"] = outcome.skip_reason
    if outcome.error is not None:
        detail.update(
            step=outcome.error.step,
            category=str(outcome.error.category),
            transient=outcome.error.category.transient,
            error=outcome.error.reason,
        )
    return Event(DETAIL_TYPES[outcome.label], _resources(outcome.secret_id, outcome.arn), detail)


def parked_event(
    spec: SecretSpec,
    arn: str | None,
    category: Category,
    reason: str,
    *,
    failures: int,
    next_attempt: datetime | None,
) -> Event:
    """The event of a secret the daemon stopped retrying until a reload or its next due time."""
    detail: dict[str, Any] = {
        "secret_id": spec.id,
        "secret_arn": arn,
        "database": spec.database,
        "engine": spec.engine,
        "strategy": str(spec.strategy),
        "outcome": "parked",
        "category": str(category),
        "error": reason,
        "failures": failures,
        "next_attempt": next_attempt.isoformat() if next_attempt else None,
    }
    return Event(PARKED, _resources(spec.id, arn), detail)


def hook_failed_event(
    outcome: Outcome, *, index: int, kind: str, attempts: int, error: str | None
) -> Event:
    """The event of an ``on_rotated`` hook that failed after a rotation that succeeded."""
    detail = _identifiers(outcome)
    detail.update(
        outcome="hook_failed",
        new_username=outcome.new_username,
        hook=index,
        kind=kind,
        attempts=attempts,
        error=error,
    )
    return Event(HOOK_FAILED, _resources(outcome.secret_id, outcome.arn), detail)


def _identifiers(outcome: Outcome) -> dict[str, Any]:
    return {
        "secret_id": outcome.secret_id,
        "secret_arn": outcome.arn,
        "database": outcome.database,
        "engine": outcome.engine,
        "strategy": str(outcome.strategy),
        "version_id": outcome.version_id,
    }


def _resources(secret_id: str, arn: str | None) -> tuple[str, ...]:
    if arn:
        return (arn,)
    return (secret_id,) if secret_id.startswith("arn:") else ()


def events_connection(inventory: Inventory, bridge: EventBridge) -> AwsConnection:
    """How to reach the bus: its region and endpoint, the inventory's profile, short
    deadlines and few retries of botocore's own (the publisher retries with backoff)."""
    return AwsConnection(
        region=bridge.region,
        endpoint_url=bridge.endpoint_url,
        profile=inventory.profile,
        max_pool_connections=2,
        connect_timeout_s=3.0,
        read_timeout_s=10.0,
        max_attempts=2,
        role_arn=bridge.role_arn,
        session_name="rotd-events",
    )


@asynccontextmanager
async def events_client(inventory: Inventory, bridge: EventBridge) -> AsyncIterator[Any]:
    """An EventBridge client for ``bridge``, as the role it names if it names one."""
    connection = events_connection(inventory, bridge)
    async with open_client("events", connection, retry_mode="standard") as client:
        yield client


async def describe_bus(inventory: Inventory, bridge: EventBridge) -> str:
    """The bus's ARN, as EventBridge describes it to whoever puts the events (the role, if
    one is named); raise :class:`AwsError` saying what is wrong. Puts nothing."""
    operation = "events:DescribeEventBus"
    try:
        async with events_client(inventory, bridge) as client:
            r = await client.describe_event_bus(Name=bridge.bus)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if exc.operation_name == "AssumeRole":
            reason = f"cannot assume the role {bridge.role_arn}: {_reason(exc)}"
            raise AwsError("sts:AssumeRole", Category.PERMISSION, reason) from None
        if code == "ResourceNotFoundException":
            where = bridge.region or "the region"
            reason = f"EventBridge has no bus {bridge.bus!r} in {where}"
            raise AwsError(operation, Category.NOT_FOUND, reason) from None
        if "AccessDenied" in code or code == "UnauthorizedOperation":
            raise AwsError(operation, Category.PERMISSION, _reason(exc)) from None
        raise AwsError(operation, Category.UNSUPPORTED, _reason(exc)) from None
    except BotoCoreError as exc:
        raise AwsError(operation, Category.UNREACHABLE, _reason(exc)) from None
    return str(r["Arn"])


class EventPublisher:
    """Puts rotd's events on one bus. Use as ``async with EventPublisher(inventory, bridge)``.

    :meth:`publish` never blocks and never raises; :meth:`flush` waits, up to a deadline, for
    what is queued to be sent. Leaving the block drops whatever is still queued (counted).
    ``backoff_base_s`` and ``backoff_cap_s`` shape the wait between attempts of one batch.
    """

    def __init__(
        self,
        inventory: Inventory,
        bridge: EventBridge,
        *,
        max_queued: int = MAX_QUEUED,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.inventory = inventory
        self.bridge = bridge
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._queue: deque[Event] = deque()
        self._max_queued = max_queued
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sending = 0  # events taken from the queue and not yet sent or given up
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self.counts = {"sent": 0, "retried": 0, "dropped": 0}
        # Observer for metrics: called with (result, count), result one of sent, retried
        # (entries of a failed attempt that will be tried again) or dropped.
        self.on_result: Callable[[str, int], None] | None = None

    async def __aenter__(self) -> EventPublisher:
        try:
            self._client = await self._stack.enter_async_context(
                events_client(self.inventory, self.bridge)
            )
        except (BotoCoreError, ClientError) as exc:
            # Events must never stop rotations: say so, and drop what comes.
            log.error(
                "events.failed",
                bus=self.bridge.bus,
                error=_reason(exc),
                action="fix events.eventbridge in the inventory and restart rotd",
            )
            self._closed = True
            return self
        self._sender = asyncio.create_task(self._send_loop(), name="events:sender")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        left = self.queued
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        self._queue.clear()
        self._sending = 0
        if left:
            self._drop(left, "not sent before rotd stopped")
        await self._stack.aclose()

    # --- what the runner and the daemon call ----------------------------------------------------

    def rotation(self, outcome: Outcome, *, attempt: int) -> None:
        self.publish(rotation_event(outcome, attempt=attempt))

    def parked(
        self,
        spec: SecretSpec,
        arn: str | None,
        category: Category,
        reason: str,
        *,
        failures: int,
        next_attempt: datetime | None,
    ) -> None:
        self.publish(
            parked_event(spec, arn, category, reason, failures=failures, next_attempt=next_attempt)
        )

    def hook_failed(
        self, outcome: Outcome, *, index: int, kind: str, attempts: int, error: str | None
    ) -> None:
        self.publish(
            hook_failed_event(outcome, index=index, kind=kind, attempts=attempts, error=error)
        )

    def publish(self, event: Event) -> None:
        """Queue ``event`` for sending; when the queue is full, drop its oldest event."""
        if self._closed:
            self._drop(1, "the publisher is closed")
            return
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self._drop(1, f"the queue holds {self._max_queued} events unsent")
        self._queue.append(event)
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every queued event to be sent or given up on; False
        if some were still waiting (they are dropped when the block ends)."""
        if self._sender is None:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning(
                "events.flush_timeout",
                bus=self.bridge.bus,
                waiting=len(self._queue) + self._sending,
                timeout_s=timeout_s,
            )
            return False
        return True

    @property
    def queued(self) -> int:
        return len(self._queue) + self._sending

    # --- the sender -----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                self._idle.set()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            self._sending = len(batch)
            try:
                await self._deliver(batch)
            except Exception as exc:  # a fault in rotd: lose this batch, not the sender
                log_unexpected(log, "events", exc, bus=self.bridge.bus)
                self._drop(len(batch), "a fault in rotd")
            finally:
                self._sending = 0

    async def _deliver(self, batch: list[Event]) -> None:
        """Send ``batch``, retrying what failed, until all is sent or attempts run out."""
        pending = batch
        attempt = 0
        while pending:
            attempt += 1
            entries = [q.entry(self.bridge.bus, self.bridge.source) for q in pending]
            retry: list[Event] = []
            reason: str
            try:
                r = await self._client.put_events(Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                retry, reason = pending, _reason(exc)
            else:
                results = r.get("Entries") or []
                refused: list[str] = []
                for queued, result in zip(pending, results, strict=False):
                    code = result.get("ErrorCode")
                    if not code:
                        continue
                    if code in _RETRY_CODES:
                        retry.append(queued)
                    else:
                        refused.append(f"{code}: {result.get('ErrorMessage', '')}".strip())
                failed = len(retry) + len(refused)
                self._count("sent", len(pending) - failed)
                if refused:
                    log.error(
                        "events.failed",
                        bus=self.bridge.bus,
                        count=len(refused),
                        error=redactor.scrub("; ".join(sorted(set(refused)))),
                        action="EventBridge refused these events; they are dropped",
                    )
                    self._count("dropped", len(refused))
                reason = "EventBridge asked to retry (throttled or failed inside)"
            if not retry:
                return
            if attempt >= self.max_attempts:
                log.error(
                    "events.failed",
                    bus=self.bridge.bus,
                    count=len(retry),
                    attempts=attempt,
                    error=redactor.scrub(reason),
                    action=_action(self.bridge),
                )
                self._count("dropped", len(retry))
                return
            delay = self._delay(attempt)
            log.warning(
                "events.failed",
                bus=self.bridge.bus,
                count=len(retry),
                attempts=attempt,
                error=redactor.scrub(reason),
                retry_in_s=round(delay, 3),
            )
            self._count("retried", len(retry))
            await asyncio.sleep(delay)
            pending = retry

    def _delay(self, failures: int) -> float:
        ceiling: float = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** (failures - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def _drop(self, count: int, why: str) -> None:
        log.error("events.dropped", bus=self.bridge.bus, count=count, reason=why)
        self._count("dropped", count)

    def _count(self, result: str, count: int) -> None:
        if count <= 0:
            return
        self.counts[result] += count
        if self.on_result is not None:
            self.on_result(result, count)


def _action(bridge: EventBridge) -> str:
    who = f"the role {bridge.role_arn}" if bridge.role_arn else "rotd's identity"
    return (
        f"these events are dropped: check that the bus {bridge.bus} exists in "
        f"{bridge.region or 'the region'} and that {who} may call events:PutEvents on it "
        "(rotd doctor checks both)"
    )


def _reason(exc: Exception) -> str:
    """What a failed EventBridge or STS call says, in a sentence (never a credential)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")).strip()
        return redactor.scrub(f"{code}: {message}" if message else code)
    return redactor.scrub(f"{type(exc).__name__}: {exc}")
