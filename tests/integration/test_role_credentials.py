"""A role's credentials are assumed again before they expire, for as long as the daemon runs.

The daemon runs in this process against moto's server with a refresh margin longer than the
session lasts: every call finds its credentials within the margin of their expiry, as a
long-running daemon does about once an hour, and must assume the role again and go on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rotd import roles
from rotd.daemon import Daemon
from rotd.inventory import load
from rotd.notify import Notifier
from tests.fixtures.accounts import ACCOUNT_A, Accounts, role
from tests.fixtures.aws import MotoServer
from tests.fixtures.databases import Database
from tests.fixtures.deadlines import until
from tests.fixtures.inventory import write_inventory


async def pending(db: Database, accounts: Accounts, region: str, role_arn: str, label: str) -> str:
    """A login whose secret, in the role's account, holds an unfinished rotation."""
    user = db.unique()
    await db.create_login(user, "Initial-pass-1")
    await accounts.create(role_arn, region, label, db.secret(user, "Initial-pass-1"))
    name = accounts.name(label)
    await accounts.put_pending(role_arn, region, name, db.secret(user, "Pending-pass-5"))
    return name


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_expiring_role_credentials_are_refreshed_and_rotations_go_on(
    db: Database,
    accounts: Accounts,
    moto: MotoServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(roles, "REFRESH_MARGIN_S", roles.DURATION_S + 60.0)
    role_a = role(ACCOUNT_A)
    first = await pending(db, accounts, moto.region, role_a, "first")
    database = {"name": "in-a", "aws": {"role_arn": role_a}, "secrets": [{"id": first}]}
    path = write_inventory(tmp_path / "inv.yaml", moto, databases=[database])
    daemon = Daemon(load(path), install_signal_handlers=False, notifier=Notifier(None))

    def named(name: str) -> list[dict[str, object]]:
        return [e for e in logs if e["event"] == name]

    with capture_logs() as logs:
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: named("rotation.resumed"), "the first rotation", 60)
            refreshed = len(named("aws.credentials_refreshed"))
            # A secret added later, while the credentials keep expiring.
            second = await pending(db, accounts, moto.region, role_a, "second")
            database["secrets"] = [{"id": first}, {"id": second}]
            write_inventory(path, moto, databases=[database])
            await daemon.reload()
            await until(lambda: len(named("rotation.resumed")) == 2, "the second rotation", 60)
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, 30) == 0

    assert [e["secret_id"] for e in named("rotation.resumed")] == [first, second]
    assert named("rotation.failed") == []
    assert refreshed > 1
    assert len(named("aws.credentials_refreshed")) > refreshed
    assert {e["role_arn"] for e in named("aws.credentials_refreshed")} == {role_a}
    for name in (first, second):  # each resumed rotation finished: its pending is current
        current = await accounts.value(role_a, moto.region, name)
        assert current["password"] == "Pending-pass-5"
        assert await db.logs_in(current["username"], "Pending-pass-5")
