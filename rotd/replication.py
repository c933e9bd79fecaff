"""After a rotation of a multi-region secret: whether its replicas caught up.

Secrets Manager copies each new version of a primary secret to its replica regions on its
own; rotd cannot hurry it, but an application reading a replica sees the old password until
the copy lands. After a successful rotation of a secret that has replicas, :class:`Replication`
reads the primary's ``ReplicationStatus`` until every replica region is ``InSync`` or
``Failed``, within a bound, and reports each region: ``replication.in_sync`` with the lag
(seconds from the end of finishSecret until rotd saw it in sync), ``replication.failed`` with
AWS's message, ``replication.lagging`` when the bound passed first. A failed check undoes
nothing: the rotation stays succeeded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from rotd.errors import StoreError
from rotd.inventory import SecretSpec
from rotd.observability import get_logger
from rotd.protocol import Outcome
from rotd.secretstore import Replica, SecretStore

log = get_logger("rotd.replication")

IN_SYNC = "InSync"
FAILED = "Failed"


@dataclass(frozen=True)
class ReplicaCheck:
    """What rotd saw of one replica region after one rotation."""

    secret_id: str
    database: str
    region: str
    in_sync: bool
    lag_s: float | None  # until rotd saw it in sync; None if it never was within the bound
    status: str
    message: str = ""


class Replication:
    """Checks the replicas of each rotated multi-region secret; ``on_result`` (metrics) is
    called with each region's :class:`ReplicaCheck`."""

    def __init__(self, store: SecretStore, *, bound_s: float = 120.0, interval_s: float = 2.0):
        self.store = store
        self.bound_s = bound_s
        self.interval_s = interval_s
        self.on_result: Callable[[ReplicaCheck], None] | None = None

    async def check(self, spec: SecretSpec, outcome: Outcome) -> list[ReplicaCheck]:
        """Wait (bounded) for the replicas of ``outcome``'s secret to be in sync; report each."""
        if not outcome.replica_regions:
            return []
        started = time.monotonic()
        synced_at: dict[str, float] = {}
        replicas: tuple[Replica, ...] = ()
        while True:
            try:
                replicas = (await self.store.describe(spec.id)).replicas
            except StoreError as exc:
                log.warning(
                    "replication.unknown",
                    secret_id=spec.id,
                    database=spec.database,
                    reason=exc.reason,
                )
                return []
            now = time.monotonic()
            for replica in replicas:
                if replica.status == IN_SYNC:
                    synced_at.setdefault(replica.region, now - started)
            waiting = [r for r in replicas if r.status not in (IN_SYNC, FAILED)]
            if not waiting or now - started >= self.bound_s:
                break
            await asyncio.sleep(self.interval_s)
        checks = [
            ReplicaCheck(
                spec.id,
                spec.database,
                r.region,
                r.status == IN_SYNC,
                round(synced_at[r.region], 3) if r.region in synced_at else None,
                r.status,
                r.message,
            )
            for r in replicas
        ]
        for check in checks:
            self._report(check, outcome)
        return checks

    def _report(self, check: ReplicaCheck, outcome: Outcome) -> None:
        fields = {
            "secret_id": check.secret_id,
            "database": check.database,
            "region": check.region,
            "version_id": outcome.version_id,
        }
        if check.in_sync:
            log.info("replication.in_sync", lag_s=check.lag_s, **fields)
        elif check.status == FAILED:
            log.error(
                "replication.failed",
                reason=check.message,
                action="see the replica's StatusMessage; fix it in Secrets Manager "
                "(a secret of that name in the replica region blocks replication)",
                **fields,
            )
        else:
            log.warning(
                "replication.lagging",
                status=check.status,
                bound_s=self.bound_s,
                action="Secrets Manager has not copied the new version yet; readers of this "
                "region still get the previous password",
                **fields,
            )
        if self.on_result is not None:
            self.on_result(check)
