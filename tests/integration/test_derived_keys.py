"""Derived keys against real databases and moto's server: each new version holds a URL built
from its own new login, whatever the strategy, and a resumed rotation writes the same."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from structlog.testing import capture_logs

from rotd.doctor import Check, Level, diagnose
from rotd.errors import Category
from rotd.inventory import Inventory
from rotd.observability import REDACTED, redactor
from rotd.passwords import PUNCTUATION
from rotd.secretstore import connection_for
from rotd.testing.kit import rendered_logs
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.rotation import Rotd, assert_ok, inventory, make_login, make_master

URL = (
    "{{ engine }}://{{ username | urlencode }}:{{ password | urlencode }}"
    "@{{ host }}:{{ port }}/{{ dbname | default('') }}"
)
# A custom policy whose punctuation is only what a URL's userinfo must escape (rotd's default
# excludes / @ ' " \): each password holds one at least (require_each_included_type).
URL_SPECIAL = "@/:%?#'\"\\"
URL_HOSTILE_POLICY = {
    "length": 24,
    "exclude_characters": "".join(c for c in PUNCTUATION if c not in URL_SPECIAL),
    "exclude_numbers": True,
    "exclude_uppercase": True,
}


def derived_inventory(
    moto: MotoServer,
    name: str,
    strategy: str,
    master: str | None = None,
    derived: dict[str, str] | None = None,
) -> Inventory:
    secret: dict[str, Any] = {"id": name, "strategy": strategy}
    if master:
        secret["master_secret"] = master
    body = {
        "defaults": {"password": URL_HOSTILE_POLICY, "derived_keys": {"url": URL}},
        "databases": [{"name": "testdb", "secrets": [secret]}],
    }
    if derived is not None:
        secret["derived_keys"] = derived
    # Dumped, not written out: no quoting of the templates' braces to get wrong.
    return inventory(moto, yaml.safe_dump(body))


async def assert_url_matches(db: Database, value: dict[str, Any], *, logs_in: bool = True) -> None:
    """The version's url is the one its own keys make, and (``logs_in``) it logs in."""
    parts = urlsplit(value["url"])
    assert parts.scheme == db.engine
    assert unquote(parts.username or "") == value["username"]
    assert unquote(parts.password or "") == value["password"]
    assert (parts.hostname, parts.port) == (value["host"], value["port"])
    assert parts.path == "/" + (value.get("dbname") or "")
    if logs_in:
        assert await db.logs_in(unquote(parts.username or ""), unquote(parts.password or ""))


@pytest.mark.parametrize("strategy", ["single_user", "alternating_users"])
async def test_each_rotation_writes_the_url_of_its_own_new_login(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer, strategy: str
) -> None:
    user, name = await make_login(db, secrets)
    master = await make_master(db, secrets) if strategy == "alternating_users" else None
    inv = derived_inventory(moto, name, strategy, master)
    lines: list[str] = []

    with rendered_logs(lines):
        first = await rotd.rotate_one(inv)
        second = await rotd.rotate_one(inv)

    for outcome in (first, second):
        assert_ok(outcome)
    current = await secrets.value(name)
    previous = await secrets.value(name, "AWSPREVIOUS")
    assert set(current["password"]) & set(URL_SPECIAL)
    await assert_url_matches(db, current)
    # Single user: the previous password is gone; alternating: the previous login still works.
    await assert_url_matches(db, previous, logs_in=strategy == "alternating_users")
    assert current["url"] != previous["url"]
    assert current["extra_key"] == "kept", "other keys stay untouched"
    if strategy == "alternating_users":
        assert {current["username"], previous["username"]} == {user, user + "_clone"}
    logs = "\n".join(lines)
    for value in (current, previous):
        assert value["url"] not in logs
        assert value["password"] not in logs


async def test_a_resumed_rotation_writes_the_url_it_rendered_first(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    _, name = await make_login(db, secrets)
    master_user = db.unique("m")
    await db.create_login(master_user, "Master-pass-1")  # no privilege to create users yet
    master = await secrets.create(master_user, db.secret(master_user, "Master-pass-1"))
    inv = derived_inventory(moto, name, "alternating_users", master)

    failed = await rotd.rotate_one(inv)

    assert failed.error is not None
    assert failed.error.step == "setSecret"
    pending = await secrets.value(name, "AWSPENDING")
    if db.family == "postgres":
        await db.execute(f'ALTER ROLE "{master_user}" CREATEROLE')
    else:
        await db.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{master_user}'@'%' WITH GRANT OPTION")
    lines: list[str] = []
    with rendered_logs(lines):
        resumed = await rotd.rotate_one(inv)

    assert_ok(resumed)
    assert resumed.resumed
    assert resumed.version_id == failed.version_id
    current = await secrets.value(name)
    assert current["url"] == pending["url"]
    await assert_url_matches(db, current)
    logs = "\n".join(lines)
    assert current["url"] not in logs
    assert "rotation.derived_keys_stale" not in logs


async def test_a_template_naming_a_key_the_secret_lacks_fails_before_anything_changes(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    before = await secrets.version(name)
    inv = derived_inventory(
        moto, name, "single_user", derived={"dsn": "{{ host }} {{ password }} {{ masterarn }}"}
    )

    outcome = await rotd.rotate_one(inv)

    assert outcome.error is not None
    assert outcome.error.step == "createSecret"
    assert outcome.error.category is Category.BAD_SECRET
    assert "'dsn'" in outcome.error.reason
    assert "masterarn" in outcome.error.reason
    assert await secrets.version(name) == before
    assert list(await secrets.stages(name)) == [before], "no pending version was written"
    assert await db.logs_in(user, "Initial-pass-1")


async def test_doctor_checks_the_templates_against_awscurrent(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    _, name = await make_login(db, secrets)
    inv = derived_inventory(moto, name, "single_user")

    def derived_check(checks: list[Check]) -> Check:
        (found,) = [c for c in checks if c.name == "secret.derived_keys"]
        return found

    stale = derived_check(await diagnose(inv, inv.secrets, connection_for(inv)))
    assert stale.level is Level.WARN, "the secret holds no url yet"
    assert "url" in stale.detail

    assert_ok(await rotd.rotate_one(inv))
    fresh = derived_check(await diagnose(inv, inv.secrets, connection_for(inv)))
    assert fresh.level is Level.OK

    lacking = derived_inventory(moto, name, "single_user", derived={"dsn": "{{ masterarn }}"})
    failed = derived_check(await diagnose(lacking, lacking.secrets, connection_for(lacking)))
    assert failed.level is Level.FAIL
    assert "'dsn'" in failed.detail
    assert "masterarn" in failed.detail


async def test_a_pending_url_written_by_another_rotator_is_redacted_and_finished_as_it_is(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    user, name = await make_login(db, secrets)
    inv = derived_inventory(moto, name, "single_user")
    # As another rotator leaves it, cut after createSecret, with a url of its own making (not
    # what the template renders): this process never rendered it.
    password = f"Other-{uuid.uuid4().hex}"
    pending = db.secret(user, password, extra_key="kept")
    pending["url"] = f"{db.engine}://{user}:{password}@{db.host}:{db.port}/?sslmode=prefer"
    assert redactor.scrub(pending["url"]) != REDACTED, "not yet registered in this process"
    token = await secrets.put_pending(name, pending)

    with capture_logs() as logs:
        outcome = await rotd.rotate_one(inv)

    assert_ok(outcome)
    assert outcome.resumed
    assert outcome.version_id == token
    assert (await secrets.value(name))["url"] == pending["url"], "a version is never rewritten"
    assert redactor.scrub(pending["url"]) == REDACTED
    (stale,) = [e for e in logs if e["event"] == "rotation.derived_keys_stale"]
    assert stale["keys"] == ["url"]
