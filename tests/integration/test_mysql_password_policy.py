"""A pending password the MySQL-family server refuses for what it is (validate_password's
1819, the password history's 3638) is never resumed: it was never accepted, so its version
loses AWSPENDING and the next attempt makes a new password under the next version id.

MariaDB here has no password policy plugin loaded (loading one would change the shared server
for every test), so the refusal is injected at rotd's own statement runner, as the server's
error would arrive there, and goes through the engine's real error translation.
"""

from __future__ import annotations

import json
from typing import Any

import pymysql
import pytest
from structlog.testing import capture_logs

from rotd.engines.mysql import MysqlSession
from rotd.errors import Category
from rotd.passwords import mysql_native_hash
from rotd.protocol import version_token
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.rotation import Rotd, assert_ok, make_login, make_master, one_secret


@pytest.fixture
def policy_refuses_one_password(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The server refuses, forever, the first password rotd tries to set (error 1819)."""
    refused: list[str] = []
    real_run = MysqlSession._run

    async def run(self: MysqlSession, sql: str, **kwargs: Any) -> list[tuple[Any, ...]]:
        if kwargs.get("secret") and sql.startswith(("ALTER USER", "SET PASSWORD")):
            if not refused:
                refused.append(sql)
            if sql == refused[0]:
                policy = pymysql.err.OperationalError(
                    1819, "Your password does not satisfy the current policy requirements"
                )
                raise self._statement_error(policy, doing=kwargs["doing"], secret=True)
        return await real_run(self, sql, **kwargs)

    monkeypatch.setattr(MysqlSession, "_run", run)
    return refused


@pytest.mark.parametrize("db", ["mariadb"], indirect=True)
@pytest.mark.parametrize("strategy", ["single_user", "alternating_users"])
async def test_a_pending_password_the_server_refuses_is_replaced_by_the_next_attempt(
    db: Database,
    secrets: Secrets,
    rotd: Rotd,
    moto: MotoServer,
    strategy: str,
    policy_refuses_one_password: list[str],
) -> None:
    user, name = await make_login(db, secrets)
    master = await make_master(db, secrets) if strategy == "alternating_users" else None
    inv = one_secret(moto, name, strategy, master)
    current = await secrets.version(name)
    arn = (await secrets.describe(name))["ARN"]

    with capture_logs() as logs:
        failed = await rotd.rotate_one(inv)

    assert failed.error is not None
    assert failed.error.step == "setSecret"
    assert failed.error.category is Category.BAD_SECRET
    assert "next version id" in failed.error.reason
    assert failed.version_id == version_token(arn, current)
    async with secrets.client() as client:
        got = await client.get_secret_value(SecretId=name, VersionId=failed.version_id)
    refused_password = json.loads(got["SecretString"])["password"]
    assert mysql_native_hash(refused_password) in policy_refuses_one_password[0] or (
        refused_password in policy_refuses_one_password[0]
    )
    dropped = [e for e in logs if e["event"] == "rotation.pending_dropped"]
    assert [e["dropped_version_id"] for e in dropped] == [failed.version_id]
    assert refused_password not in str(failed.error)
    stages = await secrets.stages(name)
    assert "AWSPENDING" not in stages.get(failed.version_id, [])
    assert await secrets.version(name) == current
    assert await db.logs_in(user, "Initial-pass-1")

    again = await rotd.rotate_one(inv)

    assert_ok(again)
    assert not again.resumed
    assert again.version_id == version_token(arn, current, 1)
    now = await secrets.value(name)
    assert now["password"] != refused_password
    assert await db.logs_in(now["username"], now["password"])
