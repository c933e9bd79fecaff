"""A verify endpoint (a replica) that never takes the new password: the rotation fails at
testSecret before AWSCURRENT moves, and its outcome names the endpoint, which the daemon counts
in ``rotd_replication_failures_total`` (the RotdReplicationFailing alert)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from rotd.engines import Engine, Login, Session, all_engines
from rotd.errors import Category, DatabaseError
from rotd.observability import Metrics
from rotd.runner import Runner
from rotd.secretstore import AwsSecretStore
from tests.fixtures.aws import MotoServer, Secrets, free_port
from tests.fixtures.databases import Database
from tests.fixtures.rotation import Rotd, inventory, make_login

REPLICA = "127.0.0.1"


class LaggingReplica:
    """The real PostgreSQL engine, except that the replica at ``address`` refuses every login
    but the one it had before the rotation: replication to it has stopped."""

    def __init__(self, engine: Engine, address: str, known_password: str) -> None:
        self._engine = engine
        self._address = address
        self._known = known_password

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def connect(self, login: Login, *, timeout_s: float) -> AbstractAsyncContextManager[Session]:
        if login.endpoint.address == self._address and login.password != self._known:
            host, port = login.endpoint.host, login.endpoint.port
            raise DatabaseError(host, port, Category.AUTH, "password authentication failed")
        return self._engine.connect(login, timeout_s=timeout_s)


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_replica_that_never_takes_the_new_password_is_counted(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    replica = f"{REPLICA}:{free_port()}"
    engines: Mapping[str, Any] = {
        "postgres": LaggingReplica(all_engines()["postgres"], replica, "Initial-pass-1")
    }
    inv = inventory(
        moto,
        f"databases:\n  - name: testdb\n    verify_endpoints: [{json.dumps(replica)}]\n"
        f"    secrets:\n      - id: {json.dumps(name)}\n",
    )
    store: AwsSecretStore = rotd.store
    runner = Runner(store, engines, max_concurrent=1, max_concurrent_per_host=1, verify_bound_s=0.5)
    before = await secrets.version(name)

    (outcome,) = await runner.rotate_all(inv.secrets)

    assert outcome.error is not None
    assert outcome.error.step == "testSecret"
    assert outcome.error.category is Category.TEST_FAILED
    assert "is replication to it working?" in outcome.error.reason
    assert outcome.unreplicated == (replica,)
    assert await secrets.version(name) == before, "AWSCURRENT did not move"
    pending = await secrets.value(name, "AWSPENDING")  # the next attempt resumes it
    assert await db.logs_in(user, pending["password"])

    metrics = Metrics()
    metrics.watch_database("testdb")
    assert 'rotd_replication_failures_total{database="testdb"} 0.0' in metrics.render().decode()
    metrics.unreplicated(outcome.database, len(outcome.unreplicated))
    assert 'rotd_replication_failures_total{database="testdb"} 1.0' in metrics.render().decode()
