"""A reload of a large inventory plans again only the secrets whose settings changed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from structlog.testing import capture_logs

from rotd.daemon import Daemon
from rotd.inventory import load
from rotd.notify import Notifier
from rotd.secretstore import SecretDescription, SecretValue
from tests.fixtures.deadlines import until

SECRETS = 1000
CREATED = datetime.now(UTC) - timedelta(days=3)
# Each secret its own user: secrets holding one login would be parked (rotd.logins).
STRING = '{"engine": "postgres", "host": "db", "port": 5432, "username": "%s", "password": "x"}'


class Store:
    """Just what planning reads: every secret has one AWSCURRENT version, three days old."""

    def __init__(self) -> None:
        self.described: list[str] = []

    async def describe(self, secret_id: str) -> SecretDescription:
        self.described.append(secret_id)
        versions = {"v1": frozenset({"AWSCURRENT"})}
        return SecretDescription(secret_id, secret_id, False, None, None, versions)

    async def get_value(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> SecretValue:
        string = STRING % secret_id
        return SecretValue(secret_id, secret_id, "v1", frozenset({"AWSCURRENT"}), CREATED, string)


def write(path: Path, changed: dict[str, Any] | None = None) -> None:
    databases = [
        {
            "name": f"db-{d}",
            "host": f"db-{d}.internal",
            "secrets": [
                {"id": f"app/{d}/{k}", **({"strategy": "alternating_users"} if k % 2 else {})}
                for k in range(50)
            ],
            "master_secret": f"app/{d}/master",
        }
        for d in range(SECRETS // 50)
    ]
    if changed is not None:
        databases[7]["secrets"][3].update(changed)
    path.write_text(yaml.safe_dump({"databases": databases}))


async def test_a_one_secret_change_plans_that_secret_alone(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    write(path)
    store = Store()
    daemon = Daemon(
        load(path), install_signal_handlers=False, notifier=Notifier(None), engines={}, store=store
    )
    running = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.started, "the daemon to start")
        assert len(store.described) == SECRETS
        before = {secret_id: s.spec for secret_id, s in daemon.secrets.items()}
        store.described.clear()

        write(path, {"window": "2h"})
        with capture_logs() as logs:
            daemon.request_reload()
            await until(lambda: any(e["event"] == "reload.applied" for e in logs), "reload.applied")
        (applied,) = [e for e in logs if e["event"] == "reload.applied"]
        assert (applied["added"], applied["removed"], applied["changed"]) == (0, 0, 1)
        assert applied["unchanged"] == SECRETS - 1
        assert store.described == ["app/7/3"]
        assert daemon.secrets["app/7/3"].spec.window == timedelta(hours=2)
        kept = [i for i, s in daemon.secrets.items() if s.spec is before[i]]
        assert len(kept) == SECRETS - 1
    finally:
        daemon.request_stop()
        assert await running == 0
