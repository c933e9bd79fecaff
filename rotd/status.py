"""``rotd status``: every secret's rotation state, read from Secrets Manager, changing nothing.

For each secret in the inventory: its database, engine, strategy, current username, when it
was last rotated (the CreatedDate of AWSCURRENT), when it is next due, any unfinished rotation,
and any conflict (native rotation enabled, secret missing or unreadable). No password is read
into the report; the values read are AWSCURRENT, for its username and engine, and an unfinished
rotation's pending version, only to tell whether it was ever written.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from rotd.errors import StoreError
from rotd.inventory import Inventory, SecretSpec
from rotd.protocol import UNWRITTEN, UNWRITTEN_PLAN, inspect
from rotd.secretstore import SecretStore

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        state = f"PROBLEM: {self.problem}" if self.problem else "ok"
        if self.unfinished and not self.problem:
            state = f"unfinished rotation {self.unfinished} (resumes at the next run)"
            if self.unfinished_case:
                state = f"unfinished rotation {self.unfinished}: {self.unfinished_case}"
        if self.activity:
            state = f"{state}; {self.activity}"
        if self.replicas:
            state += " replicas=" + ",".join(f"{r}:{s}" for r, s in sorted(self.replicas.items()))
        return (
            f"{self.secret_id}  db={self.database} aws={self.account}/{self.region or '-'} "
            f"engine={self.engine or '-'} "
            f"strategy={self.strategy} user={self.username or '-'} "
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
        state = await inspect(spec, store)
    except StoreError as exc:
        return SecretReport(**base, problem=f"{exc.category}: {exc.reason}")
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
        last_rotated=_iso(state.created),
        next_due=_iso(due) if due else None,
        unfinished=state.unfinished,
        unfinished_case=f"{UNWRITTEN}; at the next run {UNWRITTEN_PLAN}"
        if state.unwritten
        else None,
        problem=problem,
        replicas={r.region: r.status for r in state.replicas} or None,
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
