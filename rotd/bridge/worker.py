"""rotd's side of the bridge in ``rotd run``: the queue's messages turned into steps, failures
reported back to the function, and the scan that finishes rotations whose messages were lost.

A message is a hint, not an order. rotd acts only on a secret of its inventory marked
``rotation: bridge`` and only as far as Secrets Manager's own state allows: the protocol's
bridged guard checks that rotation is enabled with the configured function and that the
message's version is the pending one, and it skips a step whose effect is already visible, so
a message delivered twice, or to two daemons, does its step once. Everything else is dropped
and logged.

A failed step is reported in the secret's tag :data:`rotd.bridge.wire.FAILURE_TAG`, naming
the message it answers; the waiting function reads it on its next poll and fails the step
with rotd's category and reason. The reason is rotd's error text, which holds no secret value,
scrubbed once more. The tag is removed when a rotation of the secret finishes.

The scan describes each bridged secret every ``bridge.scan_every``; a pending version found
in the same state twice in a row (no step was done for it in between) is finished by rotd
itself, so a lost message never strands a rotation, and a single user's new password never
waits for a function that has given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from rotd.bridge import wire
from rotd.bridge.queue import RETRY_SOON_S, VISIBILITY_S, Queue, Received, open_queue
from rotd.errors import Category, RotdError
from rotd.inventory import AwsAccess, Bridge, Inventory, SecretSpec
from rotd.observability import get_logger, log_unexpected, redactor
from rotd.protocol import Bridged, Outcome, Step, ValueReader, has_value
from rotd.secretstore import SecretDescription

log = get_logger("rotd.bridge")

UNTIL = {
    "createSecret": Step.CREATE,
    "setSecret": Step.TEST,  # set and tested together: the function's testSecret then finds it
    "testSecret": Step.TEST,
    "finishSecret": Step.FINISH,
}
SCAN = "scan"  # the request a failure found by the scan is reported under
SCAN_CONCURRENCY = 8
_RECEIVE_BACKOFF_S = (1.0, 60.0)

Perform = Callable[[SecretSpec, Bridged], Awaitable[Outcome]]
Lookup = Callable[[str], SecretSpec | None]


class TagStore(ValueReader, Protocol):
    """What the worker calls in Secrets Manager itself (:class:`rotd.accounts.Stores`)."""

    async def describe(self, secret_id: str) -> SecretDescription: ...
    async def tag(self, secret_id: str, key: str, value: str) -> None: ...
    async def untag(self, secret_id: str, key: str) -> None: ...


QueueKey = tuple[str, AwsAccess]


def queues_of(inventory: Inventory) -> dict[QueueKey, Bridge]:
    """Each queue the inventory's bridged secrets are bridged through, with the identity it
    is read as (that of the secrets' account and region)."""
    found: dict[QueueKey, Bridge] = {}
    for spec in inventory.secrets:
        if spec.bridge is not None:
            found.setdefault((spec.bridge.queue_url, spec.aws), spec.bridge)
    return found


class BridgeWorker:
    """Consumes every bridge queue of the inventory and scans its bridged secrets.

    ``lookup`` finds the inventory's secret a message names (by ARN); ``perform`` runs a
    bridged step through the daemon's runner and returns its outcome.
    """

    def __init__(
        self, inventory: Inventory, store: TagStore, lookup: Lookup, perform: Perform
    ) -> None:
        self.inventory = inventory
        self._store = store
        self._lookup = lookup
        self._perform = perform
        self._consumers: dict[QueueKey, asyncio.Task[None]] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self._scanner: asyncio.Task[None] | None = None
        self._seen: dict[str, tuple[str, frozenset[str], bool]] = {}
        # Told of each message's result and each read of a queue (the daemon's metrics).
        self.on_message: Callable[[str, str], None] = lambda queue, result: None
        self.on_queue: Callable[[str, bool], None] = lambda queue, up: None

    async def __aenter__(self) -> BridgeWorker:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
        await self.abandon()

    @property
    def handling(self) -> set[asyncio.Task[None]]:
        """The messages being answered now."""
        return set(self._handling)

    def start(self, inventory: Inventory) -> None:
        """Consume the queues of ``inventory`` (a reload's too): start the new ones, stop
        those no secret is bridged through any more; scan at the shortest ``scan_every``."""
        self.inventory = inventory
        wanted = queues_of(inventory)
        for key in [k for k in self._consumers if k not in wanted]:
            self._consumers.pop(key).cancel()
        for key, bridge in wanted.items():
            if key not in self._consumers:
                self._consumers[key] = asyncio.create_task(
                    self._consume(bridge, key[1]), name=f"bridge:{key[0]}"
                )
        if self._scanner is not None:
            self._scanner.cancel()
            self._scanner = None
        if wanted:
            every = min(b.scan_every for b in wanted.values()).total_seconds()
            self._scanner = asyncio.create_task(self._scan_loop(every), name="bridge:scan")

    async def stop(self) -> None:
        """Stop receiving and scanning; steps in flight are the daemon's to drain."""
        tasks = [*self._consumers.values(), *([self._scanner] if self._scanner else [])]
        self._consumers.clear()
        self._scanner = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def abandon(self) -> None:
        """Stop answering the messages being handled: each is received again (by another
        daemon, or this one after a restart) once its visibility ends."""
        tasks = list(self._handling)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the queue ------------------------------------------------------------------------------

    async def _consume(self, bridge: Bridge, access: AwsAccess) -> None:
        failures = 0
        while True:
            try:
                async with open_queue(self.inventory, bridge, access) as queue:
                    log.info("bridge.consuming", queue_url=bridge.queue_url, account=access.label)
                    while True:
                        received = await queue.receive()
                        failures = 0
                        self.on_queue(queue.url, True)
                        for message in received:
                            task = asyncio.create_task(self._handle(queue, message))
                            self._handling.add(task)
                            task.add_done_callback(self._handling.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.on_queue(bridge.queue_url, False)
                delay = min(_RECEIVE_BACKOFF_S[1], _RECEIVE_BACKOFF_S[0] * 2 ** (failures - 1))
                if isinstance(exc, RotdError):
                    log.warning(
                        "bridge.queue_failed",
                        queue_url=bridge.queue_url,
                        error=str(exc),
                        retry_in_s=delay,
                        action="allow rotd's identity sqs:ReceiveMessage, sqs:DeleteMessage and "
                        "sqs:ChangeMessageVisibility on the queue (rotd iam-policy prints them)",
                    )
                else:
                    log_unexpected(log, "bridge queue", exc, queue_url=bridge.queue_url)
                await asyncio.sleep(delay)

    async def _handle(self, queue: Queue, received: Received) -> None:
        """One message: drop it, or perform its step and answer; never raises but
        cancellation (an unanswered message is received again once its visibility ends)."""
        try:
            await self._answer(queue, received)
        except asyncio.CancelledError:
            raise
        except RotdError as exc:
            log.warning("bridge.answer_failed", message_id=received.message_id, error=str(exc))
        except Exception as exc:
            log_unexpected(log, "bridge message", exc, message_id=received.message_id)

    async def _answer(self, queue: Queue, received: Received) -> None:
        try:
            message = wire.decode_message(received.body)
        except ValueError as exc:
            await self._drop(queue, received, f"not a bridge message: {exc}")
            return
        spec = self._lookup(message.secret_id)
        if spec is None:
            await self._drop(queue, received, "no secret of the inventory has this ARN", message)
            return
        if spec.bridge is None:
            await self._drop(queue, received, "the inventory says rotation: daemon", message)
            return
        if spec.bridge.queue_url != queue.url:
            await self._drop(
                queue, received, f"the secret is bridged through {spec.bridge.queue_url}", message
            )
            return
        log.info(
            "bridge.message_received",
            secret_id=spec.id,
            step=message.step,
            version_id=message.token,
            request=message.request,
            receive_count=received.receive_count,
        )
        heartbeat = asyncio.create_task(_keep_hidden(queue, received))
        try:
            outcome = await self._perform(spec, Bridged(UNTIL[message.step], message.token))
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        error = outcome.error
        if error is not None and error.category is Category.LOCKED:
            # Another rotation of the secret is at work (in this process or another): show
            # the message again soon; by then its effect is visible, or the lock free.
            log.info(
                "bridge.step_postponed",
                secret_id=spec.id,
                step=message.step,
                request=message.request,
                reason=error.reason,
                retry_in_s=RETRY_SOON_S,
            )
            self.on_message(queue.url, "postponed")
            await queue.hide(received, RETRY_SOON_S)
            return
        self.on_message(queue.url, "failed" if error else "skipped" if outcome.skipped else "done")
        if error is not None:
            await self._report(spec, message.request, message.step, outcome)
        elif outcome.skipped:
            log.info(
                "bridge.step_skipped",
                secret_id=spec.id,
                step=message.step,
                request=message.request,
                reason=outcome.skip_reason,
            )
        await self._finished(spec, outcome)
        await queue.delete(received)

    async def _drop(
        self, queue: Queue, received: Received, reason: str, message: wire.Message | None = None
    ) -> None:
        self.on_message(queue.url, "dropped")
        log.warning(
            "bridge.message_dropped",
            message_id=received.message_id,
            secret_id=message.secret_id if message else None,
            step=message.step if message else None,
            function_arn=message.function_arn if message else None,
            reason=reason,
            action="rotd acts only on the inventory's secrets marked rotation: bridge, through "
            "their own queue; let only the bridge function's role send to it",
        )
        await queue.delete(received)

    async def _report(
        self,
        spec: SecretSpec,
        request: str,
        step: str,
        outcome: Outcome,
        *,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Tell the function (through the failure tag) that ``step`` failed, and why."""
        assert outcome.error is not None
        error = outcome.error
        value = wire.encode_failure(
            wire.Failure(request, step, str(error.category), redactor.scrub(error.reason))
        )
        log.error(
            "bridge.step_failed",
            secret_id=spec.id,
            step=step,
            request=request,
            category=str(error.category),
            error=error.reason,
        )
        if tags is not None and tags.get(wire.FAILURE_TAG) == value:
            return  # reported already (a scan finding the same failure again)
        await self._store.tag(spec.id, wire.FAILURE_TAG, value)

    async def _finished(self, spec: SecretSpec, outcome: Outcome) -> None:
        """After a rotation finished: the failure report of an earlier attempt goes."""
        if outcome.ok and not outcome.skipped and not outcome.partial and outcome.failure_reported:
            await self._store.untag(spec.id, wire.FAILURE_TAG)

    # --- the scan -------------------------------------------------------------------------------

    async def _scan_loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_unexpected(log, "bridge scan", exc)

    async def scan(self) -> list[Outcome]:
        """Look at every bridged secret once; finish the rotations found stranded."""
        specs = [s for s in self.inventory.secrets if s.bridge is not None]
        slots = asyncio.Semaphore(SCAN_CONCURRENCY)
        started = time.monotonic()

        async def one(spec: SecretSpec) -> Outcome | None:
            async with slots:
                return await self._scan_one(spec)

        found = await asyncio.gather(*(one(spec) for spec in specs))
        self._seen = {k: v for k, v in self._seen.items() if k in {s.id for s in specs}}
        outcomes = [o for o in found if o is not None]
        log.debug(
            "bridge.scanned",
            secrets=len(specs),
            finished=len(outcomes),
            duration_s=round(time.monotonic() - started, 3),
        )
        return outcomes

    async def _scan_one(self, spec: SecretSpec) -> Outcome | None:
        try:
            description = await self._store.describe(spec.id)
        except RotdError as exc:
            log.warning("bridge.scan_failed", secret_id=spec.id, error=str(exc))
            return None
        token = description.unfinished_pending()
        if token is None:
            self._seen.pop(spec.id, None)
            return None
        try:
            written = await has_value(self._store, spec.id, token)
        except RotdError as exc:
            log.warning("bridge.scan_failed", secret_id=spec.id, error=str(exc))
            return None
        # Each step leaves its mark: the value (createSecret), a label (setSecret, finishSecret).
        state = (token, description.versions[token], written)
        if self._seen.get(spec.id) != state:
            self._seen[spec.id] = state  # in progress, or stranded: the next scan tells
            return None
        log.warning(
            "bridge.stranded",
            secret_id=spec.id,
            version_id=token,
            plan="no step was done for this pending version since the last scan: rotd "
            "finishes the rotation itself",
        )
        outcome = await self._perform(spec, Bridged(Step.FINISH, token, stranded=True))
        self._seen.pop(spec.id, None)
        if outcome.error is not None and outcome.error.category is not Category.LOCKED:
            step = _function_step(outcome.error.step)
            with contextlib.suppress(RotdError):
                await self._report(spec, SCAN, step, outcome, tags=description.tags)
        with contextlib.suppress(RotdError):
            await self._finished(spec, outcome)
        return outcome


def _function_step(step: str) -> str:
    """The function's step a protocol step belongs to (the guard's: createSecret)."""
    return step if step in wire.STEPS else "createSecret"


async def _keep_hidden(queue: Queue, received: Received) -> None:
    """While a step runs, keep its message hidden from other consumers."""
    while True:
        await asyncio.sleep(VISIBILITY_S / 2)
        with contextlib.suppress(RotdError):
            await queue.hide(received, VISIBILITY_S)
