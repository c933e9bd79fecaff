"""No password, hash or secret string reaches a log line or an error, whatever the outcome."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import structlog

from rotd.engines import all_engines
from rotd.hooks import HookRunner
from rotd.passwords import PUNCTUATION, mysql_native_hash, postgres_md5_verifier
from rotd.runner import Runner
from rotd.testing.kit import processed_events
from rotd.testing.kit import rendered_logs as kit_rendered_logs
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.process import RotdProcess
from tests.fixtures.rotation import Rotd, inventory, make_login, make_master, one_secret
from tests.integration.test_hooks import Receiver, receiver

__all__ = ["receiver"]  # the fixture, shared with the hook tests


@pytest.fixture
def rendered_logs() -> Iterator[list[str]]:
    """Every log line rotd renders, through its real processor chain, as JSON text."""
    lines: list[str] = []
    with kit_rendered_logs(lines):
        yield lines


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


# The characters that escaping changes: quotes, backslash, and what URLs and forms encode.
TRICKY = "\"\\'%+&=/"
# Logins whose first password is not ASCII: the generator makes ASCII only, other tools do not.
NON_ASCII = "Init é ß 日本 😀 \"'\\%+&=/ end"
NON_ASCII_MASTER = "Mäster-ß-日本-😀-\"'\\%+&=/-Passwort"
# An exec hook printing the secret it is given the ways a script might: as Python and JSON
# reprs, URL-encoded, and escaped in a way rotd does not know (HTML). It fails, so that its
# output is logged by hook.failed as well as hook.finished.
PRINT_FORMS = (
    "import json, sys, urllib.parse as u\n"
    "p = json.load(sys.stdin)['password']\n"
    "print(repr(p), ascii(p), repr(p.encode()), repr(('x', p)), json.dumps(p))\n"
    "print(json.dumps(json.dumps({'password': p})), u.quote(p), u.quote_plus(p))\n"
    "print(p.replace('&', '&amp;').replace('<', '&lt;').replace('\"', '&quot;'), file=sys.stderr)\n"
    "sys.exit(3)\n"
)


def forms_of(value: str) -> dict[str, str]:
    """``value`` as JSON, Python and URLs write it, each made here by the standard library."""
    forms = {
        "raw": value,
        "json": json.dumps(value)[1:-1],
        "json (UTF-8)": json.dumps(value, ensure_ascii=False)[1:-1],
        "json, slash escaped": json.dumps(value)[1:-1].replace("/", "\\/"),
        "json in json": json.dumps(json.dumps(value))[3:-3],
        "json in json (UTF-8)": json.dumps(json.dumps(value, ensure_ascii=False))[3:-3],
        "repr": repr(value)[1:-1],
        "repr in a tuple": repr(("'\"", value))[8:-2],
        "ascii": ascii(value)[1:-1],
        "bytes repr": repr(value.encode())[2:-1],
        "url": quote(value, safe=""),
        "url, slash kept": quote(value),
        "url form": quote_plus(value),
        "url, lower-case hex": re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(value)),
    }
    # A run of plain characters that an unknown escaping leaves as it is.
    for n, run in enumerate(re.findall(r"[A-Za-z0-9_.~-]{8,}", value)):
        forms[f"plain run {n}"] = run
    return forms


@pytest.fixture
def rendered_both_ways() -> Iterator[list[str]]:
    """Every log line rotd renders, through its real processor chain, by both of its real
    renderers: JSON lines and the console's readable lines."""
    lines: list[str] = []
    as_json = structlog.processors.JSONRenderer()
    as_text = structlog.dev.ConsoleRenderer(colors=False)

    def keep(logger: Any, name: str, event: dict[str, Any]) -> None:
        lines.append(as_json(logger, name, dict(event)))
        lines.append(as_text(logger, name, dict(event)))

    with processed_events(keep):
        yield lines


async def test_no_secret_value_in_any_encoding_in_any_output(
    db: Database,
    secrets: Secrets,
    rotd: Rotd,
    moto: MotoServer,
    receiver: Receiver,
    rendered_both_ways: list[str],
    rotd_process: Callable[..., RotdProcess],
    tmp_path: Path,
) -> None:
    tricky_only = {
        "length": 40,
        "exclude_characters": "".join(c for c in PUNCTUATION if c not in TRICKY),
        "exclude_lowercase": True,
        "exclude_uppercase": True,
        "exclude_numbers": True,
    }
    everything = {"length": 64, "exclude_characters": ""}
    single_user, single = await make_login(db, secrets, NON_ASCII)
    alt_user, alternating = await make_login(db, secrets, "Alt-initial-9" + TRICKY)
    master_user = db.unique("m")
    await db.create_master(master_user, NON_ASCII_MASTER)
    master = await secrets.create(master_user, db.secret(master_user, NON_ASCII_MASTER))
    hooks = [
        {"exec": ["sh", "-c", "cat"], "include_secret": True},
        {"exec": [sys.executable, "-c", PRINT_FORMS], "include_secret": True, "retries": 1},
        {"webhook": receiver.url},
    ]
    database = {
        "name": "testdb",
        "on_rotated": hooks,
        "secrets": [
            {"id": single, "password": tricky_only},
            {
                "id": alternating,
                "strategy": "alternating_users",
                "master_secret": master,
                "password": everything,
            },
        ],
    }
    inv = inventory(moto, f"databases: {json.dumps([database])}\n")
    path = tmp_path / "inv.yaml"
    aws = {"endpoint_url": moto.endpoint_url, "region": moto.region}
    path.write_text(json.dumps({"aws": aws, "databases": [database]}))  # JSON is YAML
    runner = Runner(rotd.store, all_engines(), max_concurrent=2, max_concurrent_per_host=2)
    runner.hooks = HookRunner(rotd.store, backoff_base_s=0.01, backoff_cap_s=0.05)

    outcomes = []
    for _ in range(2):
        outcomes += await runner.rotate_all(inv.secrets)
    # And once more by a real rotd process, whose output and JSON log lines are kept whole.
    process = rotd_process("rotate", "-c", str(path), "--all", "--json")
    code = await asyncio.to_thread(process.wait, 120)

    assert [o.ok for o in outcomes] == [True] * 4, [str(o.error) for o in outcomes]
    assert code == 0, "".join(process.lines[-20:])
    assert len(receiver.requests) == 6
    values: set[str] = {NON_ASCII_MASTER}
    for name in (single, alternating):
        values |= await all_passwords(secrets, name)
    assert len(values) >= 7
    assert any(set(v) <= set(TRICKY) for v in values), "no password made of escaped characters"
    hashes = {mysql_native_hash(v) for v in values}
    hashes |= {postgres_md5_verifier(u, v) for u in (single_user, alt_user) for v in values}
    written = "\n".join(rendered_both_ways)
    written += "\n".join(f"{o.error!s} {o.error!r}" for o in outcomes if o.error)
    written += "".join(process.stdout) + "".join(process.lines)
    assert process.named("hook.failed")
    assert "hook.finished" in written
    assert "hook.failed" in written
    for value in values | hashes:
        for kind, form in forms_of(value).items():
            assert form not in written, f"a secret value reached an output, written as {kind}"
