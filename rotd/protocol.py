"""The rotation of one secret: AWS's four-step protocol over the staging labels.

guard -> createSecret -> setSecret -> testSecret -> finishSecret, written against the
:class:`rotd.secretstore.SecretStore` and :class:`rotd.engines.Engine` interfaces. It behaves
as AWS's rotation functions do, so a secret can move between them and rotd: an unfinished
rotation (AWSPENDING on a version without AWSCURRENT) is resumed with the same token, never
restarted with a new password the database may already hold; AWSPENDING stays on the new
current version when done, as AWS leaves it. A failing step leaves AWSCURRENT where it was.

The version id of a new rotation is not random: it follows from the secret and the version it
replaces (:func:`version_token`), so every rotd process that starts a rotation from the same
AWSCURRENT writes the same version. Secrets Manager never changes a version once written, so
the first PutSecretValue wins and a late one from a process that lost its lock is refused:
the version id is the fence that Secrets Manager's lack of conditional writes otherwise denies.
A rotation that Secrets Manager started (RotateSecret staged AWSPENDING on a version id of its
own) but whose function never wrote the value is taken over under that staged id: the same
fence holds, since every process that takes it over writes the same version.

A bridged secret (``rotation: bridge``) is rotated by Secrets Manager through the bridge
function, which asks rotd for one step at a time (:class:`Bridged`): the guard inverts (its
rotation must be enabled with the bridge function), rotd never starts a rotation of its own,
only continues the one Secrets Manager staged, and stops after the step asked for, marking a
version it set and tested with the label :data:`rotd.bridge.wire.TESTED`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NoReturn, Protocol

from rotd import passwords, strategies, templates
from rotd.bridge.wire import FAILURE_TAG, TESTED
from rotd.credentials import BadSecret, Credentials
from rotd.engines import (
    Endpoint,
    Engine,
    Login,
    Rotation,
    Session,
    capabilities,
    check_fit,
    rotation,
)
from rotd.errors import (
    Category,
    DatabaseError,
    EngineError,
    Missing,
    SecretError,
    StoreError,
    UnexpectedError,
)
from rotd.inventory import SecretSpec, Strategy
from rotd.observability import get_logger
from rotd.secretstore import (
    CURRENT,
    PENDING,
    PREVIOUS,
    Replica,
    SecretDescription,
    SecretStore,
    SecretValue,
)

log = get_logger("rotd.rotation")

# The namespace of rotd's version ids (uuid5); changing it would let processes of two rotd
# releases start the same rotation under two version ids.
_TOKENS = uuid.UUID("6c1b8a3e-2f4d-5a7b-9e0c-1d2f3a4b5c6d")
# Secrets Manager writes per rotation, counted against its write quota and aws.max_write_tps:
# createSecret's PutSecretValue and finishSecret's label move; a bridged rotation also moves
# the ROTD_TESTED label (tests/integration/test_call_counts.py counts them).
WRITES_PER_ROTATION = 2
WRITES_PER_BRIDGED_ROTATION = 3
# How many version ids a rotation tries before giving up: each one taken means AWSCURRENT was
# moved back to this version by hand that many times.
_TOKEN_TRIES = 8


def version_token(arn: str, current_version: str, n: int = 0) -> str:
    """The version id of the ``n``-th try of the rotation that replaces ``current_version``.

    Every rotd process computes the same one, so two processes that both believe they hold
    the rotation lock write the same version, and Secrets Manager keeps only the first value.
    ``n`` moves past ids already used (AWSCURRENT moved back to an older version by hand).
    """
    name = f"{arn}\n{current_version}" + (f"\n{n}" if n else "")
    return str(uuid.uuid5(_TOKENS, name))


class Step(StrEnum):
    GUARD = "guard"
    CREATE = "createSecret"
    SET = "setSecret"
    TEST = "testSecret"
    FINISH = "finishSecret"


@dataclass(frozen=True)
class Bridged:
    """What the bridge asks of one rotation: continue Secrets Manager's rotation to ``token``
    (None: whichever version is pending, when a scan finds one stranded) up to ``until``:
    createSecret, testSecret (setSecret and testSecret are done together) or finishSecret."""

    until: Step
    token: str | None = None
    stranded: bool = False  # found by the scan: its messages were lost (reported as resumed)


def same_function(configured: str | None, expected: str) -> bool:
    """Whether the rotation function Secrets Manager invokes is ``expected``, whatever version
    or alias qualifier either names."""
    return configured is not None and configured.split(":")[:7] == expected.split(":")[:7]


def enable_bridge_command(spec: SecretSpec) -> str:
    """The command that makes Secrets Manager rotate ``spec`` with its bridge function."""
    assert spec.bridge is not None
    return (
        f"aws secretsmanager rotate-secret --secret-id {spec.id} --rotation-lambda-arn "
        f"{spec.bridge.function_arn} --rotation-rules "
        f'\'{{"ScheduleExpression": "{spec.schedule.text}"}}\''
    )


class MasterSecrets(Protocol):
    async def get(self, secret_id: str, *, refresh: bool = False) -> Credentials:
        """The master login stored at ``secret_id``'s AWSCURRENT; ``refresh`` re-reads it."""


class HostSlot(Protocol):
    """One of a host's slots, held by one rotation at a time. Between rotations it may keep
    one idle session (a master login's), so that the next rotation as that login reuses it."""

    async def take(self, login: Login) -> tuple[Session, AsyncExitStack] | None:
        """The session kept as ``login``, with what closes it, if it still answers; a session
        kept as another login is closed."""

    async def evict(self) -> None:
        """Close the kept session, if any, before this rotation opens one of its own."""

    def keep(self, login: Login, session: Session, owner: AsyncExitStack) -> None:
        """Keep ``session`` (closed by ``owner``) for the next rotation on this slot."""


class HostGate(Protocol):
    def slot(self, endpoint: Endpoint) -> AbstractAsyncContextManager[HostSlot]:
        """Wait for room to work on ``endpoint``'s host, and hold it while inside."""


@dataclass
class Progress:
    """Where one rotation stands, for whoever watches it (the daemon's ``/status``). The
    protocol moves it along as it enters each step; nothing in the protocol reads it."""

    step: str = "queued"  # until the rotation has its slots
    version_id: str | None = None


@dataclass(frozen=True)
class Dependencies:
    store: SecretStore
    engines: Mapping[str, Engine]
    masters: MasterSecrets
    gate: HostGate
    db_timeout_s: float = 15.0
    verify_bound_s: float = 60.0  # how long verify endpoints may lag behind the primary
    # The AWSCURRENT version each secret had when it was found due (daemon): a secret whose
    # current version has changed since was rotated elsewhere and is skipped.
    expected_current: Mapping[str, str] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)


@dataclass(frozen=True)
class Outcome:
    """What one rotation did, for the command's output, logs and metrics."""

    secret_id: str
    database: str
    strategy: Strategy
    duration_s: float
    arn: str | None = None
    engine: str | None = None
    old_username: str | None = None
    new_username: str | None = None
    version_id: str | None = None
    resumed: bool = False
    error: SecretError | None = None
    skipped: bool = False  # rotated elsewhere: nothing (left) for this process to do
    skip_reason: str | None = None
    # Verify endpoints (replicas, poolers) that never took the new login: replication broken.
    unreplicated: tuple[str, ...] = ()
    # The regions Secrets Manager replicates the secret to (a multi-region secret's primary).
    replica_regions: tuple[str, ...] = ()
    # A bridged step: the step it stopped after (createSecret, testSecret); None when the
    # rotation went on to finishSecret.
    stopped_after: str | None = None
    # The secret carries a failure report of the bridge's (cleared once a rotation finishes).
    failure_reported: bool = False
    # `rotd rotate` on a bridged secret: Secrets Manager was asked to rotate it (RotateSecret).
    started: bool = False

    @property
    def partial(self) -> bool:
        """A bridged step that left the rotation unfinished (on purpose)."""
        return self.stopped_after is not None and self.error is None and not self.skipped

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        """succeeded, resumed, skipped or failed."""
        if self.error is not None:
            return "failed"
        if self.skipped:
            return "skipped"
        if self.partial:
            return "stepped"
        if self.started:
            return "started"
        return "resumed" if self.resumed else "succeeded"


def endpoint_for(spec: SecretSpec, credentials: Credentials) -> Endpoint:
    """Where to reach the database: the inventory's route from this host, else the secret's."""
    engine = spec.engine or credentials.engine
    tls = credentials.tls_under(spec.tls, chosen=spec.tls_set)
    dbname = spec.dbname if spec.dbname is not None else credentials.dbname
    return Endpoint(
        engine=engine,
        host=spec.host or credentials.host,
        port=spec.port or credentials.port,
        dbname=dbname,
        tls=tls,
        settings=spec.engine_settings,
        nodes=spec.nodes,
    )


def with_derived_keys(spec: SecretSpec, credentials: Credentials) -> Credentials:
    """``credentials`` with the inventory's derived keys rendered from its own keys (the new
    username and password, the secret's host), so the version is consistent once written;
    raise :class:`BadSecret` naming the key and what it lacks, before anything is written."""
    if not spec.derived_keys:
        return credentials
    try:
        values = templates.render_keys(spec.derived_keys, credentials.template_keys())
    except templates.RenderError as exc:
        raise BadSecret(str(exc)) from None
    return credentials.with_keys(values)


def engine_fits(spec: SecretSpec, endpoint: Endpoint, engines: Mapping[str, Engine]) -> Engine:
    """The engine of ``endpoint``, once it is known to be installed and able to rotate
    ``spec``; else raise :class:`EngineError` (permanent), before anything changes."""
    engine = engines[endpoint.engine]
    alternating = spec.strategy is Strategy.ALTERNATING_USERS
    check_fit(
        endpoint.engine,
        engine,
        alternating=alternating,
        tls=endpoint.tls.mode,
        settings=endpoint.settings,
    )
    return engine


@dataclass(frozen=True)
class Inspection:
    """A secret's rotation state as Secrets Manager holds it, read without changing anything."""

    arn: str
    version_id: str  # of AWSCURRENT
    created: datetime  # CreatedDate of the AWSCURRENT version: the credential's age
    username: str | None  # None when the current value is not usable JSON
    engine: str | None
    endpoint: Endpoint | None  # where rotd reaches the database; None as for username
    unfinished: str | None  # the token of an unfinished rotation
    conflict: str | None  # why rotd must not rotate it (native rotation enabled)
    unwritten: bool = False  # the unfinished rotation's pending version was never given a value
    replicas: tuple[Replica, ...] = ()  # of a multi-region secret, as its primary reports them
    # Secrets Manager's own rotation record (what a bridged secret's schedule is).
    next_rotation: datetime | None = None
    last_rotated: datetime | None = None


async def inspect(spec: SecretSpec, store: SecretStore) -> Inspection:
    """Read a secret's state: two calls, describe and the AWSCURRENT value."""
    return await inspection_of(spec, store, await store.describe(spec.id))


async def inspection_of(
    spec: SecretSpec,
    store: SecretStore,
    description: SecretDescription,
    value: SecretValue | None = None,
) -> Inspection:
    """A secret's state from its ``description`` and, when already read, the ``value`` of its
    AWSCURRENT version (a batch read's); reads what is missing: the value, when not given or
    of another version than the description's AWSCURRENT, and whether an unfinished
    rotation's pending version has a value."""
    current_version = description.version_with(CURRENT)
    if current_version is None:
        raise StoreError(spec.id, "describe_secret", Category.BAD_SECRET, "no AWSCURRENT version")
    if value is None or value.version_id != current_version:
        value = await store.get_value(spec.id, version_id=current_version)
    try:
        credentials: Credentials | None = Credentials.parse(value.string, engine=spec.engine)
    except BadSecret:
        credentials = None
    unfinished = description.unfinished_pending()
    unwritten = unfinished is not None and not await has_value(store, spec.id, unfinished)
    conflict = bridge_conflict(spec, description)
    if spec.bridge is None and description.rotation_enabled and description.rotation_lambda:
        conflict = f"Secrets Manager's own rotation is enabled with {description.rotation_lambda}"
    return Inspection(
        arn=description.arn,
        version_id=current_version,
        created=value.created,
        username=credentials.username if credentials else None,
        engine=(spec.engine or credentials.engine) if credentials else None,
        endpoint=endpoint_for(spec, credentials) if credentials else None,
        unfinished=unfinished,
        unwritten=unwritten,
        conflict=conflict,
        replicas=description.replicas,
        next_rotation=description.next_rotation,
        last_rotated=description.last_rotated,
    )


def bridge_conflict(spec: SecretSpec, description: SecretDescription) -> str | None:
    """Why a bridged secret's rotation would not reach rotd: its rotation is not enabled, or
    with another function than the bridge's; None when it would (or it is not bridged)."""
    if spec.bridge is None:
        return None
    if description.rotation_enabled and same_function(
        description.rotation_lambda, spec.bridge.function_arn
    ):
        return None
    now = (
        f"its rotation function is {description.rotation_lambda}"
        if description.rotation_enabled and description.rotation_lambda
        else "its rotation is not enabled in Secrets Manager"
    )
    return (
        f"the inventory says rotation: bridge, but {now}; enable it with the bridge function: "
        f"{enable_bridge_command(spec)}"
    )


# What rotd says of a pending version without a value, in logs, status and doctor.
UNWRITTEN = "rotation started elsewhere, pending value never written"
UNWRITTEN_PLAN = "rotd runs createSecret under its version id, then finishes the rotation"


class ValueReader(Protocol):
    async def get_value(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> SecretValue: ...


async def has_value(store: ValueReader, secret_id: str, version_id: str) -> bool:
    """False when ``version_id`` exists without a value (RotateSecret staged it and the
    rotation function never wrote it); other failures to read it are raised."""
    try:
        await store.get_value(secret_id, version_id=version_id)
    except StoreError as exc:
        if exc.missing is Missing.VALUE:
            return False
        raise
    return True


async def rotate(
    spec: SecretSpec, deps: Dependencies, *, attempt: int = 1, bridged: Bridged | None = None
) -> Outcome:
    """Rotate one secret now, resuming an unfinished rotation if there is one; for a bridged
    secret, perform what ``bridged`` asks of the rotation Secrets Manager started."""
    return await _Rotation(spec, deps, attempt, bridged).run()


class RotationStarter(Protocol):
    async def describe(self, secret_id: str) -> SecretDescription: ...
    async def start_rotation(self, secret_id: str) -> str: ...


async def start_bridged(spec: SecretSpec, store: RotationStarter) -> Outcome:
    """``rotd rotate`` on a bridged secret: ask Secrets Manager to rotate it (RotateSecret),
    so that the console, the CLI and rotd take one path; its bridge function then hands the
    steps to ``rotd run``. Refused, changing nothing, when the rotation would not reach rotd."""
    started = time.monotonic()

    def outcome(**fields: Any) -> Outcome:
        duration_s = round(time.monotonic() - started, 4)
        return Outcome(spec.id, spec.database, spec.strategy, duration_s, **fields)

    try:
        description = await store.describe(spec.id)
        conflict = bridge_conflict(spec, description)
        if conflict is not None:
            raise SecretError(spec.id, Step.GUARD, Category.CONFLICT, conflict)
        unfinished = description.unfinished_pending()
        if unfinished is not None:
            raise SecretError(
                spec.id,
                Step.GUARD,
                Category.LOCKED,
                f"a rotation to version {unfinished} is in progress; `rotd run` finishes it "
                "(see `rotd status`)",
            )
        token = await store.start_rotation(spec.id)
    except StoreError as exc:
        error = SecretError(spec.id, Step.GUARD, exc.category, str(exc))
        return outcome(error=error)
    except SecretError as exc:
        return outcome(error=exc, arn=None)
    log.info("rotation.started", secret_id=spec.id, version_id=token, via="RotateSecret")
    return outcome(arn=description.arn, version_id=token, started=True)


class _Rotation:
    def __init__(
        self, spec: SecretSpec, deps: Dependencies, attempt: int, bridged: Bridged | None
    ) -> None:
        self.spec = spec
        # A bridged secret is only ever continued, to the end unless a step is asked for.
        self.bridged = bridged or (Bridged(Step.FINISH) if spec.bridged else None)
        self.stopped_after: str | None = None
        self.tested_on: str | None = None  # the version carrying TESTED, as last described
        self.failure_reported = False
        self.deps = deps
        self.store = deps.store
        self.step = Step.GUARD
        self.started = time.monotonic()
        self.log: Any = log.bind(
            secret_id=spec.id, database=spec.database, strategy=str(spec.strategy), attempt=attempt
        )
        self.arn: str | None = None
        self.replica_regions: tuple[str, ...] = ()
        self.engine: str | None = None
        self.current: Credentials | None = None
        self.pending: Credentials | None = None
        self.token: str | None = None
        self.resumed = False
        self.skipped = False
        self.current_version: str | None = None
        self.slot: HostSlot | None = None
        self.skip_reason: str | None = None
        # single_user on an engine whose users hold several passwords: no window (below).
        self.several = False
        self.unreplicated: list[str] = []

    async def run(self) -> Outcome:
        # What an engine that hands the rotation on (exec) may know of it; reset on leaving,
        # so that nothing of it outlives the rotation in a caller's context.
        context = rotation.set(Rotation(self.spec.id, str(self.spec.strategy)))
        try:
            await self._run()
        except SecretError as exc:
            return self._outcome(exc)
        except Exception as exc:
            raise UnexpectedError(self.spec.id, self.step, exc) from exc
        finally:
            rotation.reset(context)
        return self._outcome(None)

    def _outcome(self, error: SecretError | None) -> Outcome:
        return Outcome(
            secret_id=self.spec.id,
            database=self.spec.database,
            strategy=self.spec.strategy,
            duration_s=round(time.monotonic() - self.started, 4),
            arn=self.arn,
            engine=self.engine,
            old_username=self.current.username if self.current else None,
            new_username=self.pending.username if self.pending else None,
            version_id=self.token,
            # A bridged rotation always continues Secrets Manager's: resumed when stranded.
            resumed=self.resumed and (self.bridged is None or self.bridged.stranded),
            error=error,
            skipped=self.skipped,
            skip_reason=self.skip_reason,
            unreplicated=tuple(self.unreplicated),
            replica_regions=self.replica_regions,
            stopped_after=self.stopped_after,
            failure_reported=self.failure_reported,
        )

    @asynccontextmanager
    async def _step(self, step: Step) -> AsyncIterator[None]:
        self.step = step
        self.deps.progress.step = str(step)
        self.deps.progress.version_id = self.token
        started = time.monotonic()
        try:
            yield
        except (StoreError, DatabaseError, EngineError) as exc:
            raise SecretError(self.spec.id, step, exc.category, str(exc)) from exc
        except BadSecret as exc:
            raise SecretError(self.spec.id, step, Category.BAD_SECRET, str(exc)) from None
        self.log.debug(
            "rotation.step",
            step=str(step),
            version_id=self.token,
            engine=self.engine,
            duration_s=round(time.monotonic() - started, 4),
        )

    @asynccontextmanager
    async def _connect(self, login: Login) -> AsyncIterator[Session]:
        engine = self.deps.engines[login.endpoint.engine]
        if self.slot is not None:
            # At most one session kept per slot, and none beside a rotation's own sessions:
            # the host's connection limit holds with reuse too.
            await self.slot.evict()
        async with AsyncExitStack() as stack:
            try:
                session = await stack.enter_async_context(
                    engine.connect(login, timeout_s=self.deps.db_timeout_s)
                )
            except DatabaseError as exc:
                exc.connecting = True
                raise
            yield session

    async def _run(self) -> None:
        spec = self.spec
        async with self._step(Step.GUARD):
            description = await self.store.describe(spec.id)
            self.arn = description.arn
            self.replica_regions = tuple(r.region for r in description.replicas)
            current_version = self._guard(description)
            if current_version is None:
                return

        async with AsyncExitStack() as stack:
            async with self._step(Step.CREATE):
                self.current_version = current_version
                current_value = await self.store.get_value(spec.id, version_id=current_version)
                current = self.current = self._parse(current_value.string)
                self.engine = spec.engine or current.engine
                endpoint = endpoint_for(spec, current)
                engine = engine_fits(spec, endpoint, self.deps.engines)
                self.several = (
                    spec.strategy is Strategy.SINGLE_USER
                    and capabilities(engine, endpoint.settings).several_passwords
                )
                self.slot = await stack.enter_async_context(self.deps.gate.slot(endpoint))
                session, how = await self._lock_session(stack, endpoint, current)
                if not await session.try_lock(self.arn):
                    raise SecretError(
                        spec.id,
                        Step.CREATE,
                        Category.LOCKED,
                        "another rotd process is rotating this secret now; it will be left to it",
                    )
                # Now that the lock is held, look again: another process may have finished or
                # begun a rotation between our first look and the lock.
                if await self._changed_under_lock(current_version):
                    return
                if spec.strategy is Strategy.SINGLE_USER and not self.several:
                    # Some servers of an engine hold several passwords, for some logins only
                    # (MySQL 8.0.14+): known only now that the session is open.
                    self.several = await strategies.keeps_several_here(session, current.username)
                    self.log.debug("rotation.several_passwords_asked", granted=self.several)
                if self.resumed:
                    self.pending = await self._recover(current, how)
                    if self.pending is not None and self._stops_at(Step.CREATE):
                        self._skip("createSecret was done already: the version has its value")
                        return
                if self.pending is None:
                    self.pending = await self._create(session, current, how)
                if self._stops_at(Step.CREATE):
                    self.stopped_after = str(Step.CREATE)
                    return
            pending = self.pending
            assert pending is not None
            rotation.set(Rotation(spec.id, str(spec.strategy), pending.document))

            async with self._step(Step.SET), self._refused_pending_dropped(session):
                if self.several:
                    previous = await self._read_previous(current)
                    await strategies.add_pending(session, current, pending, previous)
                elif spec.strategy is Strategy.SINGLE_USER:
                    await strategies.set_single_user(
                        session, how, current.username, pending.password
                    )
                else:
                    # Even when resuming, and even if the pending login already works: the
                    # clone's grants are brought in line again (idempotent), since a cut may
                    # have left them half done.
                    await strategies.set_alternating(
                        self._connect, endpoint, current, pending, session
                    )

            async with self._step(Step.TEST):
                async with self._connect(strategies.login(endpoint, pending)) as test_session:
                    await test_session.run_test(spec.test_query)
                for host, port in spec.verify_endpoints:
                    await self._verify_at(
                        dataclasses.replace(endpoint, host=host, port=port), pending
                    )
                if self._stops_at(Step.TEST):
                    assert self.token is not None
                    await self._hold_lock(session)
                    await self.store.move_stage(spec.id, TESTED, self.token, self.tested_on)
                    self.stopped_after = str(Step.TEST)
                    return

            async with self._step(Step.FINISH):
                assert self.token is not None
                if current_version != self.token:
                    await self._hold_lock(session)
                    await self._move_current(current_version, session)
                    if self.several and not self.skipped:
                        await self._drop_older_passwords(session, current, pending)

    async def _drop_older_passwords(
        self, session: Session, current: Credentials, pending: Credentials
    ) -> None:
        """After finishSecret, on an engine whose users hold several passwords: keep the new
        AWSCURRENT's and AWSPREVIOUS's passwords only. The rotation is done whatever happens
        here: a failure leaves one older password that the next rotation's setSecret removes,
        so it is a warning, never a failed (and retried) rotation."""
        try:
            await strategies.keep_passwords(session, current.username, [pending, current])
        except DatabaseError as exc:
            self.log.warning(
                "rotation.passwords_kept",
                reason=str(exc),
                category=str(exc.category),
                plan="the next rotation's setSecret removes the password older than AWSPREVIOUS",
            )

    async def _create(self, session: Session, current: Credentials, how: str) -> Credentials:
        """createSecret: store a new password as AWSPENDING under this rotation's version id.

        A version id already taken means another process wrote it first (it held the lock
        once; its write arrived late), or AWSCURRENT was moved back to an older version: in
        the first case this rotation finishes that version, in the second it takes the next id.
        """
        spec = self.spec
        assert self.arn is not None
        assert self.current_version is not None
        username = strategies.pending_username(spec.strategy, current.username)
        if spec.strategy is Strategy.ALTERNATING_USERS:
            await session.check_username(username)
        for n in range(_TOKEN_TRIES):
            if n and self.bridged is not None:
                raise SecretError(
                    spec.id,
                    Step.CREATE,
                    Category.CONFLICT,
                    f"version {self.token} that Secrets Manager staged for this rotation holds "
                    "a value rotd did not write; cancel the rotation (remove its AWSPENDING "
                    "label) and rotate again",
                )
            if n:
                self.token = version_token(self.arn, self.current_version, n)
                self.log = self.log.bind(version_id=self.token)
            assert self.token is not None
            fresh = with_derived_keys(
                spec, current.with_login(username, passwords.generate(spec.password))
            )
            await self._hold_lock(session)
            if await self.store.put_pending(spec.id, self.token, fresh.dumps()):
                return fresh
            await self._hold_lock(session)
            found = await self.store.describe(spec.id)
            if found.version_with(CURRENT) != self.current_version:
                raise SecretError(
                    spec.id,
                    Step.CREATE,
                    Category.LOCKED,
                    "AWSCURRENT moved while rotd was writing the pending version: another "
                    "rotator finished a rotation just now; run again to rotate once more",
                )
            if found.unfinished_pending() == self.token:
                self.log.warning(
                    "rotation.recovering",
                    case="another rotd process wrote this rotation's pending version first: "
                    "finishing it",
                )
                self.resumed = True
                pending = await self._recover(current, how)
                if pending is not None:
                    return pending
                continue
            self.log.info(
                "rotation.version_id_taken",
                reason="a version with this id exists (AWSCURRENT moved back by hand?)",
            )
        raise SecretError(
            spec.id,
            Step.CREATE,
            Category.CONFLICT,
            f"the next {_TOKEN_TRIES} version ids of a rotation from AWSCURRENT "
            f"{self.current_version} are all taken; move AWSCURRENT to a new version first",
        )

    @asynccontextmanager
    async def _refused_pending_dropped(self, session: Session) -> AsyncIterator[None]:
        """The database refused the pending password for what it is (its password policy or
        history), so it never took it: resuming would send it again forever. Take AWSPENDING
        off it; the next attempt writes a new password under the next version id."""
        try:
            yield
        except DatabaseError as exc:
            if exc.password_refused:
                await self._drop_refused(session, exc)
            raise

    async def _drop_refused(self, session: Session, refused: DatabaseError) -> NoReturn:
        assert self.token is not None
        await self._hold_lock(session)
        await self.store.remove_stage(self.spec.id, PENDING, self.token)
        self.log.warning(
            "rotation.pending_dropped", reason=refused.reason, dropped_version_id=self.token
        )
        raise SecretError(
            self.spec.id,
            Step.SET,
            Category.BAD_SECRET,
            f"{refused}; the database never accepted this pending password, so version "
            f"{self.token} is no longer AWSPENDING and the next attempt makes a new one under "
            "the next version id. If it is refused again, the secret's password settings "
            "(length, character types, exclusions) do not satisfy the database's password "
            "policy: change them in the inventory",
        ) from refused

    async def _hold_lock(self, session: Session) -> None:
        """Make sure the lock is still ours before writing to Secrets Manager.

        The lock dies with its session; taking it again on the same session is a no-op that
        fails if the session is gone, so a rotation whose lock was lost writes nothing.
        """
        assert self.arn is not None
        if not await session.try_lock(self.arn):
            raise SecretError(
                self.spec.id,
                self.step,
                Category.LOCKED,
                "the rotation lock was lost; another rotd process may have taken over",
            )

    async def _move_current(self, current_version: str, session: Session) -> None:
        """finishSecret, idempotent: a retried call whose first attempt went through is fine.

        Refused because AWSCURRENT is already on this version: if the call was sent more than
        once and this process still holds the lock, that was most likely its own earlier
        attempt (the answer was lost), and it reports the rotation; but it may have been the
        delayed move of a process that lost its lock, which reports it too
        (``rotation.finish_ambiguous`` says so). Otherwise another process moved it, having
        taken the rotation over once this one lost its lock; that process reports the
        rotation (and runs its hooks), so this one reports a skip. AWSCURRENT already past
        this version (now AWSPREVIOUS): the rotation was done and another has followed; also
        a skip. Anywhere else: another rotator is at work, a transient LOCKED failure.
        """
        assert self.token is not None
        assert self.arn is not None
        try:
            await self.store.move_current(self.spec.id, self.token, current_version)
        except StoreError as exc:
            if exc.category is not Category.CONFLICT:
                raise
            found = await self.store.describe(self.spec.id)
            now = found.version_with(CURRENT)
            if now != self.token:
                if PREVIOUS in found.versions.get(self.token, ()):
                    # This version was current, and another rotation has followed it.
                    self.skipped = True
                    self.skip_reason = (
                        "this rotation's version became AWSCURRENT and another rotation has "
                        "followed it since"
                    )
                    return
                raise SecretError(
                    self.spec.id,
                    Step.FINISH,
                    Category.LOCKED,
                    f"AWSCURRENT moved to version {now} while this rotation was finishing: "
                    "another rotator is at work on this secret; it is left to it",
                ) from None
            held = False
            if exc.retried:
                with contextlib.suppress(DatabaseError):
                    held = await session.try_lock(self.arn)
            if not held:
                self.skipped = True
                self.skip_reason = (
                    "finished by another rotd process after this one lost its rotation lock"
                )
                return
            # Secrets Manager records no author of a move: the earlier attempt whose answer
            # was lost made it, or a process that lost its lock before this one took it and
            # whose move was delayed until now. Reported as this process's, since leaving it
            # unreported would skip its hooks; the other process may report it too.
            self.log.warning(
                "rotation.finish_ambiguous",
                reason="AWSCURRENT was already on this version when a retried move arrived",
                consequence="if another rotd process reports this version too, its hooks run "
                "twice: hooks must be idempotent",
            )

    def _stops_at(self, step: Step) -> bool:
        return self.bridged is not None and self.bridged.until is step

    def _skip(self, reason: str) -> None:
        self.skipped = True
        self.skip_reason = reason

    def _guard(self, description: SecretDescription) -> str | None:
        """Check that rotd may rotate the secret; pick the token. None: nothing to do."""
        spec = self.spec
        if self.bridged is not None:
            return self._guard_bridged(description)
        if description.rotation_enabled and description.rotation_lambda:
            raise SecretError(
                spec.id,
                Step.GUARD,
                Category.CONFLICT,
                "Secrets Manager's own rotation is enabled on this secret with "
                f"{description.rotation_lambda}; two rotators would fight. Turn it off "
                f"(aws secretsmanager cancel-rotate-secret --secret-id {spec.id}) or "
                "remove the secret from the inventory",
            )
        current_version = description.version_with(CURRENT)
        if current_version is None:
            raise SecretError(
                spec.id, Step.GUARD, Category.BAD_SECRET, "the secret has no AWSCURRENT version"
            )
        unfinished = description.unfinished_pending()
        expected = self.deps.expected_current.get(spec.id)
        if unfinished is None and expected is not None and expected != current_version:
            # Rotated elsewhere since it was found due (another rotd, the console, AWS).
            self.skipped = True
            self.skip_reason = "rotated elsewhere since it was found due"
            return None
        announced = self.token if self.resumed else None
        self.resumed = unfinished is not None
        self.token = unfinished or version_token(description.arn, current_version)
        self.log = self.log.bind(version_id=self.token)
        # Once per rotation resumed: the look under the lock usually finds the same one.
        if self.resumed and self.token != announced:
            under_lock = {"reason": "found under lock"} if self.step is Step.CREATE else {}
            self.log.info("rotation.resuming", step=str(self.step), **under_lock)
        return current_version

    def _guard_bridged(self, description: SecretDescription) -> str | None:
        """The guard of a bridged secret: Secrets Manager must rotate it with the bridge
        function, and rotd only continues the rotation it staged, up to the step asked."""
        spec, bridged = self.spec, self.bridged
        assert spec.bridge is not None
        assert bridged is not None
        self.tested_on = description.version_with(TESTED)
        self.failure_reported = FAILURE_TAG in description.tags
        conflict = bridge_conflict(spec, description)
        if conflict is not None:
            raise SecretError(spec.id, Step.GUARD, Category.CONFLICT, conflict)
        current_version = description.version_with(CURRENT)
        if current_version is None:
            raise SecretError(
                spec.id, Step.GUARD, Category.BAD_SECRET, "the secret has no AWSCURRENT version"
            )
        unfinished = description.unfinished_pending()
        if unfinished is None:
            if CURRENT in description.versions.get(bridged.token or "", ()):
                self._skip("finished already: the version is AWSCURRENT")
            else:
                self._skip("no rotation in progress: Secrets Manager starts bridged rotations")
            return None
        if bridged.token is not None and unfinished != bridged.token:
            self._skip(f"version {bridged.token} is no longer the pending one ({unfinished} is)")
            return None
        if bridged.until is Step.TEST and self.tested_on == unfinished:
            self._skip("setSecret and testSecret were done already: the version is ROTD_TESTED")
            return None
        announced = self.token if self.resumed else None
        self.resumed = True
        self.token = unfinished
        self.log = self.log.bind(version_id=self.token)
        if self.token != announced:
            self.log.info("rotation.resuming", step=str(self.step), bridged=str(bridged.until))
        return current_version

    async def _changed_under_lock(self, current_version: str) -> bool:
        """Describe again under the lock; True when another rotation made this one moot."""
        fresh = await self.store.describe(self.spec.id)
        if self._guard(fresh) is None:
            return True
        if fresh.version_with(CURRENT) != current_version:
            raise SecretError(
                self.spec.id,
                Step.CREATE,
                Category.LOCKED,
                "AWSCURRENT moved while rotd was taking the lock: another rotator finished a "
                "rotation just now; run again to rotate once more",
            )
        return False

    async def _lock_session(
        self, stack: AsyncExitStack, endpoint: Endpoint, current: Credentials
    ) -> tuple[Session, str]:
        """The session that holds the lock and sets the password: the master's for
        alternating users; for single user, the first login the database accepts."""
        if self.spec.strategy is Strategy.ALTERNATING_USERS:
            return await self._open_master(stack, endpoint, current), strategies.MASTER

        async def opened(login: Login) -> Session:
            return await stack.enter_async_context(self._connect(login))

        async def as_current() -> Credentials | None:
            return current

        async def as_pending() -> Credentials | None:
            if not self.resumed:
                return None
            assert self.token is not None
            try:
                value = await self.store.get_value(self.spec.id, version_id=self.token)
                return self._parse(value.string)
            except BadSecret:
                return None  # unusable: _recover decides what to do with it
            except StoreError as exc:
                if exc.missing is Missing.VALUE:
                    return None  # never written: _recover takes it over
                raise

        async def as_master() -> Credentials | None:
            return await self._master_or_none(current)

        candidates: list[strategies.Candidate] = [
            ("current", as_current),
            ("previous", lambda: self._read_previous(current)),
            (strategies.PENDING, as_pending),
            (strategies.MASTER, as_master),
        ]
        if self.several and self._master_id(current) is not None:
            # The user keeps its passwords while the master adds and removes them: an
            # application login is rarely allowed to manage users (Redis's ACL SETUSER).
            candidates.insert(0, candidates.pop())
        elif self.resumed and self.tested_on == self.token:
            # Set and tested already (a bridged finishSecret): the database holds the pending
            # password, so it goes first; no refused login, no read of AWSPREVIOUS.
            candidates.insert(0, candidates.pop(2))
        try:
            how, session = await strategies.first_login(
                opened, endpoint, current.username, candidates
            )
            return session, how
        except DatabaseError as exc:
            if exc.category is not Category.AUTH:
                raise
            refused = exc
        try:
            # A write delivered late (after its process lost the lock) can leave the password
            # the database holds on a version with no label: try those too, newest first.
            how, session = await strategies.first_login(
                opened, endpoint, current.username, await self._unlabelled(current)
            )
            self.log.warning(
                "rotation.recovering",
                case="only an unlabelled version's password logs in: setting the pending one",
            )
            return session, strategies.OWN[1]
        except DatabaseError as exc:
            if exc.category is not Category.AUTH:
                raise
        # Every password refused: another rotator may have changed it since we read it.
        fresh = await self.store.describe(self.spec.id)
        before = (self.current_version, self.token if self.resumed else None)
        if (fresh.version_with(CURRENT), fresh.unfinished_pending()) != before:
            raise SecretError(
                self.spec.id,
                Step.CREATE,
                Category.LOCKED,
                "the secret changed while rotd was logging in: another rotator is at work on "
                "it; it is left to it",
            ) from None
        raise refused

    async def _unlabelled(self, current: Credentials) -> list[strategies.Candidate]:
        """Login candidates from the secret's unlabelled versions (a few, newest first)."""
        candidates: list[strategies.Candidate] = []
        for version_id in (await self.store.unlabelled_versions(self.spec.id))[:8]:

            async def read(version_id: str = version_id) -> Credentials | None:
                try:
                    value = await self.store.get_value(self.spec.id, version_id=version_id)
                    found = self._parse(value.string)
                except BadSecret:
                    return None
                except StoreError as exc:
                    if exc.missing is Missing.VALUE:
                        return None  # staged by a RotateSecret whose function never ran
                    raise
                return found if found.username == current.username else None

            candidates.append((f"version {version_id}", read))
        return candidates

    async def _recover(self, current: Credentials, how: str) -> Credentials | None:
        """Take up an unfinished rotation, of any origin (rotd, AWS's Lambda, a hand edit).

        Returns the pending credentials to finish with, or None when createSecret is to run:
        under the same version id when the pending version was never written (Secrets
        Manager staged it, its rotation function never ran), under a new one after removing
        a stale AWSPENDING label that cannot be finished safely. Logs which case it was.
        """
        assert self.token is not None
        try:
            value = await self.store.get_value(self.spec.id, version_id=self.token)
        except StoreError as exc:
            if exc.missing is not Missing.VALUE:
                raise
            # As AWS's own function would: createSecret writes this very version id, so a
            # second process taking it over at the same time is refused by Secrets Manager.
            self.log.warning("rotation.recovering", case=f"{UNWRITTEN}: {UNWRITTEN_PLAN}")
            return None
        problem = None
        try:
            pending: Credentials | None = self._parse(value.string)
        except BadSecret as exc:
            pending, problem = None, f"its value is unusable: {exc}"
        alternating = self.spec.strategy is Strategy.ALTERNATING_USERS
        if pending is not None and alternating and pending.username == current.username:
            problem = (
                "it has the same username as AWSCURRENT, so finishing it as alternating users "
                "would change the password applications use now"
            )
        if pending is not None and problem is None:
            self._check_derived(pending)
        if problem is None and alternating:
            self.log.info("rotation.recovering", case="the master sets the pending user's password")
            return pending
        if problem is None:
            case = {
                "current": "the database still accepts AWSCURRENT: setting the pending password",
                "previous": "only AWSPREVIOUS logs in: setting the pending password with it",
                strategies.PENDING: "the database already holds the pending password: finishing",
            }.get(how, "the user's own logins are refused: the master sets it")
            if self.several and how == strategies.MASTER:
                case = "the master adds the pending password beside the user's current ones"
            self.log.info("rotation.recovering", case=case, login=how)
            return pending
        # Dropping the label is safe only while the database provably still holds a password
        # rotd knows: the current (or previous) login worked, or the pending user is not the
        # one applications use (alternating users).
        # With several passwords, setSecret never removes AWSCURRENT's: it still logs in.
        # Never for a bridged secret: Secrets Manager rotates to its own version id.
        if (alternating or how in strategies.OWN or self.several) and self.bridged is None:
            await self.store.remove_stage(self.spec.id, PENDING, self.token)
            self.log.warning(
                "rotation.recovering",
                case="stale AWSPENDING removed; starting a new rotation",
                reason=problem,
                stale_version_id=self.token,
            )
            self.resumed = False
            assert self.arn is not None
            assert self.current_version is not None
            self.token = version_token(self.arn, self.current_version)
            self.log = self.log.bind(version_id=self.token)
            return None
        raise SecretError(
            self.spec.id,
            Step.CREATE,
            Category.BAD_SECRET,
            f"the unfinished AWSPENDING version {self.token} cannot be finished: {problem}; "
            "fix it, or remove its AWSPENDING label once AWSCURRENT logs in again",
        )

    async def _verify_at(self, endpoint: Endpoint, pending: Credentials) -> None:
        """Log in through another endpoint (a replica, a pooler) before AWSCURRENT moves,
        waiting with backoff, up to a bound, for the new password to replicate there."""
        deadline = time.monotonic() + self.deps.verify_bound_s
        delay = 0.25
        while True:
            try:
                async with self._connect(strategies.login(endpoint, pending)) as session:
                    await session.run_test(None)
                    return
            except DatabaseError as exc:
                if exc.category is not Category.AUTH:
                    raise
                if time.monotonic() + delay > deadline:
                    self.unreplicated.append(endpoint.address)
                    raise DatabaseError(
                        endpoint.host,
                        endpoint.port,
                        Category.TEST_FAILED,
                        f"verify endpoint {endpoint.address} still refuses the new login "
                        f"{pending.username!r} after {self.deps.verify_bound_s:.0f}s; "
                        "is replication to it working?",
                    ) from None
            self.log.info("rotation.verify_waiting", endpoint=endpoint.address, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)

    def _check_derived(self, pending: Credentials) -> None:
        """Warn when a pending version being finished does not hold the derived keys its
        templates render from its own keys (written by AWS's function, or before the
        templates changed): a version cannot be changed, so it is finished as it is, and the
        next rotation writes them right."""
        stale = []
        for key, source in self.spec.derived_keys:
            try:
                value = templates.render(
                    source, pending.template_keys(), what=templates.derived_key(key)
                )
            except templates.RenderError:
                value = None
            if pending.document.get(key) != value:
                stale.append(key)
        if stale:
            self.log.warning(
                "rotation.derived_keys_stale",
                keys=stale,
                plan="finishing the pending version as written; the next rotation renders them",
            )

    def _parse(self, text: str) -> Credentials:
        """A version of the rotated secret, its derived keys registered with the redactor as
        its password is: they hold it, as written by this process or another one."""
        credentials = Credentials.parse(text, engine=self.spec.engine)
        templates.register(credentials.document, (key for key, _ in self.spec.derived_keys))
        return credentials

    def _master_id(self, current: Credentials) -> str | None:
        return self.spec.master_secret or current.masterarn

    async def _master_or_none(self, current: Credentials) -> Credentials | None:
        master_id = self._master_id(current)
        if master_id is None:
            return None
        return await self.deps.masters.get(master_id)

    async def _open_master(
        self, stack: AsyncExitStack, endpoint: Endpoint, current: Credentials
    ) -> Session:
        """A session as the master login, re-reading the master secret once if refused."""
        master_id = self._master_id(current)
        if master_id is None:
            raise BadSecret(
                "alternating_users needs a master login: set master_secret in the inventory "
                "or masterarn in the secret"
            )
        master = await self.deps.masters.get(master_id)
        try:
            return await self._master_session(stack, strategies.login(endpoint, master))
        except DatabaseError as exc:
            if exc.category is not Category.AUTH:
                raise
        # The master may have been rotated since it was read: read it again, once.
        master = await self.deps.masters.get(master_id, refresh=True)
        return await self._master_session(stack, strategies.login(endpoint, master))

    async def _master_session(self, stack: AsyncExitStack, login: Login) -> Session:
        """A session as the master: the one the host slot kept from an earlier rotation, or a
        new one. When this rotation ends well its lock is released and the slot keeps the
        session for the next rotation; when it ends badly the session is closed."""
        slot = self.slot
        kept = await slot.take(login) if slot is not None else None
        if kept is not None:
            session, owner = kept
        else:
            owner = AsyncExitStack()
            session = await owner.enter_async_context(self._connect(login))

        async def done(exc_type: type[BaseException] | None, *_: object) -> bool:
            if exc_type is None and slot is not None and self.arn is not None:
                try:
                    await session.unlock(self.arn)
                except DatabaseError:
                    pass
                else:
                    slot.keep(login, session, owner)
                    return False
            await owner.aclose()
            return False

        stack.push_async_exit(done)
        return session

    async def _read_previous(self, current: Credentials) -> Credentials | None:
        try:
            value = await self.store.get_value(self.spec.id, stage=PREVIOUS)
        except StoreError as exc:
            if exc.category is Category.NOT_FOUND:
                return None
            raise
        try:
            previous = self._parse(value.string)
        except BadSecret:
            return None
        return previous if previous.username == current.username else None
