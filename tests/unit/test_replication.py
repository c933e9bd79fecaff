"""After a rotation of a multi-region secret: replicas waited for, within the bound, reported."""

from __future__ import annotations

from collections.abc import Iterator

from structlog.testing import capture_logs

from rotd.inventory import loads
from rotd.protocol import Outcome
from rotd.replication import ReplicaCheck, Replication
from rotd.secretstore import Replica, SecretDescription

SPEC = loads("databases: [{name: db, secrets: [{id: app}]}]", "inv.yaml").secrets[0]


class Statuses:
    """Answers describe with the next ReplicationStatus of a script (the last one repeats)."""

    def __init__(self, *script: tuple[Replica, ...]) -> None:
        self._script: Iterator[tuple[Replica, ...]] = iter(script)
        self._last: tuple[Replica, ...] = ()
        self.calls = 0

    async def describe(self, secret_id: str) -> SecretDescription:
        self.calls += 1
        self._last = next(self._script, self._last)
        return SecretDescription("arn", secret_id, False, None, None, {}, self._last)


def outcome(*regions: str) -> Outcome:
    return Outcome("app", "db", SPEC.strategy, 0.1, version_id="v2", replica_regions=regions)


async def test_replicas_are_polled_until_in_sync_and_each_region_reported() -> None:
    store = Statuses(
        (Replica("eu-west-1", "InProgress"), Replica("ap-south-1", "InProgress")),
        (Replica("eu-west-1", "InSync"), Replica("ap-south-1", "InProgress")),
        (Replica("eu-west-1", "InSync"), Replica("ap-south-1", "Failed", "name taken")),
    )
    seen: list[ReplicaCheck] = []
    replication = Replication(store, interval_s=0.01)  # type: ignore[arg-type]
    replication.on_result = seen.append
    with capture_logs() as logs:
        checks = await replication.check(SPEC, outcome("eu-west-1", "ap-south-1"))

    assert store.calls == 3
    assert checks == seen
    assert [(c.region, c.in_sync, c.status) for c in checks] == [
        ("eu-west-1", True, "InSync"),
        ("ap-south-1", False, "Failed"),
    ]
    assert checks[0].lag_s is not None
    assert checks[1].lag_s is None
    events = {e["event"]: e for e in logs}
    assert events["replication.in_sync"]["region"] == "eu-west-1"
    assert events["replication.failed"]["reason"] == "name taken"


async def test_the_wait_is_bounded_and_a_lagging_region_is_reported() -> None:
    store = Statuses((Replica("eu-west-1", "InProgress"),))
    replication = Replication(store, bound_s=0.05, interval_s=0.01)  # type: ignore[arg-type]
    with capture_logs() as logs:
        (check,) = await replication.check(SPEC, outcome("eu-west-1"))
    assert not check.in_sync
    assert [e["event"] for e in logs] == ["replication.lagging"]
    assert store.calls >= 2


async def test_a_secret_without_replicas_costs_no_call() -> None:
    store = Statuses()
    assert await Replication(store).check(SPEC, outcome()) == []  # type: ignore[arg-type]
    assert store.calls == 0
