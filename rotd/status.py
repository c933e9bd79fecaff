"""``rotd status``: every secret's rotation state, read from Secrets Manager, changing nothing.

For each secret in the inventory: its database, engine, strategy, current username, when it
was last rotated (the CreatedDate of AWSCURRENT), when it is next due, any unfinished rotation,
and any conflict (native rotation enabled, secret missing or unreadable). No password is read
into the report; the values read are AWSCURRENT, for its username and engine, and an unfinished
rotation's pending version, only to tell whether it was ever written.

A bridged secret (``rotation: bridge``) is rotated on Secrets Manager's schedule, not rotd's:
its row says ``rotation=bridge``, its ``last`` and ``next`` are Secrets Manager's
LastRotatedDate and NextRotationDate (``last`` falls back to AWSCURRENT's CreatedDate when
Secrets Manager has none), a rotation in progress says how far it got (value written, set and
tested: the :data:`rotd.bridge.wire.TESTED` label), and a failure rotd reported to the bridge
function (the :data:`rotd.bridge.wire.FAILURE_TAG` tag) is shown as it stands.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from rotd.bridge.wire import FAILURE_TAG, TESTED, decode_failure
from rotd.errors import StoreError
from rotd.inventory import Inventory, Rotation, SecretSpec
from rotd.protocol import UNWRITTEN, UNWRITTEN_PLAN, inspection_of
from rotd.secretstore import SecretDescription, SecretStore

CONCURRENCY = 32


@dataclass(frozen=True)
class SecretReport:
    secret_id: str
    database: str
    strategy: str
    account: str = "base"  # the account of the role it is reached through; base: rotd's own
    region: str | None = None
    engine: str | None = None
    username: str | None = None
    last_rotated: str | None = None
    next_due: str | None = None
    unfinished: str | None = None
    unfinished_case: str | None = None  # what the unfinished rotation is, when not plain
    problem: str | None = None
    # What a running daemon is doing about it (rotating, retrying): ``rotd status --daemon``.
    activity: str | None = None
    # A multi-region secret's replica regions and their ReplicationStatus (InSync, ...).
    replicas: dict[str, str] | None = None
    # Who starts its rotations: daemon (rotd's schedule) or bridge (Secrets Manager's).
    rotation: str = str(Rotation.DAEMON)
    # A bridged secret's rotation in progress: how far it got (value written? tested?).
    progress: str | None = None
    # The failure rotd last reported to the bridge function on this secret, if any.
    bridge_failure: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        state = f"PROBLEM: {self.problem}" if self.problem else "ok"
        if self.unfinished and not self.problem:
            state = f"unfinished rotation {self.unfinished} (resumes at the next run)"
            if self.progress:
                state = f"rotation in progress {self.unfinished}: {self.progress}"
            elif self.unfinished_case:
                state = f"unfinished rotation {self.unfinished}: {self.unfinished_case}"
        if self.bridge_failure:
            state = f"{state}; BRIDGE FAILURE: {self.bridge_failure}"
        if self.activity:
            state = f"{state}; {self.activity}"
        if self.replicas:
            state += " replicas=" + ",".join(f"{r}:{s}" for r, s in sorted(self.replicas.items()))
        return (
            f"{self.secret_id}  db={self.database} aws={self.account}/{self.region or '-'} "
            f"engine={self.engine or '-'} "
            f"strategy={self.strategy} "
            + (f"rotation={self.rotation} " if self.rotation != Rotation.DAEMON else "")
            + f"user={self.username or '-'} "
            f"last={self.last_rotated or '-'} next={self.next_due or '-'}  {state}"
        )


async def survey(inventory: Inventory, store: SecretStore) -> list[SecretReport]:
    """One report per secret, in inventory order; a failing read becomes a problem, not an error."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(spec: SecretSpec) -> SecretReport:
        async with slots:
            return await _report(spec, store)

    return list(await asyncio.gather(*(one(spec) for spec in inventory.secrets)))


async def _report(spec: SecretSpec, store: SecretStore) -> SecretReport:
    base: dict[str, Any] = {
        "secret_id": spec.id,
        "database": spec.database,
        "strategy": str(spec.strategy),
        "account": spec.aws.account or "base",
        "region": spec.aws.region,
    }
    try:
        description = await store.describe(spec.id)
        state = await inspection_of(spec, store, description)
    except StoreError as exc:
        return SecretReport(**base, problem=f"{exc.category}: {exc.reason}")
    if spec.bridged:
        base.update(_bridged(state.unfinished, state.unwritten, description))
        last = state.last_rotated or state.created
        due = state.next_rotation
    else:
        last = state.created
        due = spec.schedule.next_after(state.created, spec.timezone)
    problem = state.conflict
    failed = [r for r in state.replicas if r.status == "Failed"]
    if failed and problem is None:
        problem = "replication failed to " + ", ".join(f"{r.region} ({r.message})" for r in failed)
    if state.username is None and problem is None:
        problem = "bad_secret: the AWSCURRENT value is not usable database credentials JSON"
    return SecretReport(
        **base,
        engine=spec.engine or state.engine,
        username=state.username,
        last_rotated=_iso(last),
        next_due=_iso(due) if due else None,
        unfinished=state.unfinished,
        unfinished_case=f"{UNWRITTEN}; at the next run {UNWRITTEN_PLAN}"
        if state.unwritten and not spec.bridged
        else None,
        problem=problem,
        replicas={r.region: r.status for r in state.replicas} or None,
    )


def _bridged(
    unfinished: str | None, unwritten: bool, description: SecretDescription
) -> dict[str, Any]:
    """What a bridged secret's row adds: its rotation in progress, and the failure tag."""
    fields: dict[str, Any] = {"rotation": str(Rotation.BRIDGE)}
    if unfinished is not None:
        if unwritten:
            fields["progress"] = "Secrets Manager's; value not yet written (createSecret)"
        elif TESTED in description.versions.get(unfinished, ()):
            fields["progress"] = f"Secrets Manager's; value written, set and tested ({TESTED})"
        else:
            fields["progress"] = "Secrets Manager's; value written, not yet set and tested"
    tag = description.tags.get(FAILURE_TAG)
    if tag is not None:
        failure = decode_failure(tag)
        fields["bridge_failure"] = (
            f"{failure.step} failed ({failure.category}): {failure.reason} "
            f"[request {failure.request}]"
            if failure is not None
            else tag
        )
    return fields


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
