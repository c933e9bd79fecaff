"""No password, hash or secret string reaches a log line or an error, whatever the outcome."""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog

from rotd.observability import processors
from rotd.passwords import mysql_native_hash, postgres_md5_verifier
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.rotation import Rotd, make_login, make_master, one_secret


@pytest.fixture
def rendered_logs() -> Iterator[list[str]]:
    """Every log line rotd renders, through its real processor chain, as JSON text."""
    lines: list[str] = []

    def keep(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
        lines.append(json.dumps(event, default=str))
        raise structlog.DropEvent

    previous = structlog.get_config()
    structlog.configure(
        processors=[*processors(), keep],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    try:
        yield lines
    finally:
        structlog.configure(**previous)


async def all_passwords(secrets: Secrets, name: str) -> set[str]:
    found: set[str] = set()
    async with secrets.client() as client:
        versions = await client.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)
        for version in versions["Versions"]:
            got = await client.get_secret_value(SecretId=name, VersionId=version["VersionId"])
            try:
                found.add(json.loads(got["SecretString"])["password"])
            except (ValueError, KeyError, TypeError):
                found.add(got["SecretString"])
    return found


async def test_no_secret_value_in_logs_or_errors(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer, rendered_logs: list[str]
) -> None:
    single_user, single = await make_login(db, secrets)
    alt_user, alternating = await make_login(db, secrets, "Alt-initial-9")
    master = await make_master(db, secrets)
    # A secret whose password the database refuses, and one that is not JSON at all.
    wrong_user, wrong = await make_login(db, secrets, "Right-pass-77")
    # The server holds a password no version has, so every login rotd knows is refused.
    if db.family == "postgres":
        await db.execute(f"ALTER ROLE \"{wrong_user}\" PASSWORD 'Elsewhere-pass-77'")
    else:
        await db.execute(f"ALTER USER '{wrong_user}'@'%' IDENTIFIED BY 'Elsewhere-pass-77'")
    async with secrets.client() as client:
        for attempt in ("Wrong-pass-77", "Wrong-pass-78"):  # current and previous both wrong
            await client.put_secret_value(
                SecretId=wrong,
                SecretString=json.dumps(db.secret(wrong_user, attempt)),
                VersionStages=["AWSCURRENT"],
            )
    broken = await secrets.create("broken", "Broken-not-json-secret-string-42")
    outcomes = []
    for _ in range(2):
        outcomes.append(await rotd.rotate_one(one_secret(moto, single, "single_user")))
        outcomes.append(
            await rotd.rotate_one(one_secret(moto, alternating, "alternating_users", master))
        )
    outcomes.append(await rotd.rotate_one(one_secret(moto, wrong, "single_user")))
    outcomes.append(await rotd.rotate_one(one_secret(moto, broken, "single_user")))
    assert [o.ok for o in outcomes] == [True, True, True, True, False, False]

    values: set[str] = set()
    for name in (single, alternating, master, wrong, broken):
        values |= await all_passwords(secrets, name)
    users = {single_user: single, alt_user: alternating}
    hashes = {mysql_native_hash(v) for v in values}
    hashes |= {postgres_md5_verifier(u, v) for u in users for v in values}
    assert len(values) >= 8
    written = "\n".join(rendered_logs)
    written += "\n".join(f"{o.error!s} {o.error!r}" for o in outcomes if o.error)
    assert "rotation.succeeded" in written
    assert "rotation.failed" in written
    for value in values | hashes:
        assert value not in written, "a secret value reached a log line or an error"
