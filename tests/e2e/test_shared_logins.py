"""Two secrets holding one database login: ``rotate``, ``doctor`` and ``run`` refuse both,
name both, and change nothing for either, so that each one's AWSCURRENT keeps logging in."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.test_daemon import _get
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, free_tcp_port, run
from tests.fixtures.rotation import make_login, make_master

Start = Callable[..., RotdProcess]


async def snapshot(secrets: Secrets, *names: str) -> dict[str, Any]:
    return {name: await secrets.stages(name) for name in names}


async def assert_unchanged(
    db: Database, secrets: Secrets, before: dict[str, Any], *names: str
) -> None:
    assert await snapshot(secrets, *names) == before, "a version or label changed"
    for name in names:
        current = await secrets.value(name)
        assert await db.logs_in(current["username"], current["password"]), name


async def same_login_pair(db: Database, secrets: Secrets) -> tuple[str, str, str]:
    """Two secrets holding one login (the second a copy of the first); the user's name."""
    user, first = await make_login(db, secrets)
    second = await secrets.create(user + "-copy", await secrets.value(first))
    return user, first, second


def refused(results: list[dict[str, Any]], name: str, other: str) -> None:
    (result,) = [r for r in results if r["secret_id"] == name]
    assert result["outcome"] == "failed"
    assert result["category"] == "shared_login"
    assert repr(name) in result["error"]
    assert repr(other) in result["error"]


async def test_rotate_refuses_both_secrets_of_one_login_and_changes_nothing(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    user, first, second = await same_login_pair(db, secrets)
    _, alone = await make_login(db, secrets)
    path = write_inventory(
        tmp_path / "inv.yaml", moto, [{"id": first}, {"id": second}, {"id": alone}]
    )
    before = await snapshot(secrets, first, second)

    code, out, err = run(rotd_process, "rotate", "-c", str(path), "--all", "--json")

    assert code == 1, err
    results = [json.loads(line) for line in out.splitlines()]
    refused(results, first, second)
    refused(results, second, first)
    assert [r["outcome"] for r in results if r["secret_id"] == alone] == ["succeeded"]
    assert f"{user!r} at {db.host}:{db.port}" in results[0]["error"]
    await assert_unchanged(db, secrets, before, first, second)

    # Rotating one of them alone would break the other just the same.
    code, out, _ = run(rotd_process, "rotate", "-c", str(path), first)
    assert code == 1
    assert "shared_login" in out
    assert repr(second) in out
    await assert_unchanged(db, secrets, before, first, second)


async def test_an_alternating_pair_and_a_secret_of_its_clone_are_both_refused(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    user, alternating = await make_login(db, secrets)
    master = await make_master(db, secrets)
    await db.create_login(user + "_clone", "Clone-pass-7")
    clone = await secrets.create(user + "-clone", db.secret(user + "_clone", "Clone-pass-7"))
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [
            {"id": alternating, "strategy": "alternating_users", "master_secret": master},
            {"id": clone},
            {"id": master},  # a master in the inventory is no pair with its secrets
        ],
    )
    before = await snapshot(secrets, alternating, clone, master)

    code, out, err = run(rotd_process, "rotate", "-c", str(path), alternating, clone, "--json")

    assert code == 1, err
    results = [json.loads(line) for line in out.splitlines()]
    refused(results, alternating, clone)
    refused(results, clone, alternating)
    await assert_unchanged(db, secrets, before, alternating, clone, master)


async def test_doctor_fails_both_secrets_of_one_login(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    _, first, second = await same_login_pair(db, secrets)
    _, alone = await make_login(db, secrets)
    path = write_inventory(
        tmp_path / "inv.yaml", moto, [{"id": first}, {"id": second}, {"id": alone}]
    )
    before = await snapshot(secrets, first, second)

    # Checking one secret is enough to be told about its pair.
    code, out, err = run(rotd_process, "doctor", "-c", str(path), "--json", first, alone)

    assert code == 1, err
    checks = {(c["secret_id"], c["check"]): c for c in map(json.loads, out.splitlines())}
    failed = checks[(first, "secret.shared_login")]
    assert failed["level"] == "FAIL"
    assert repr(second) in failed["detail"]
    assert failed["fix"]
    assert checks[(alone, "secret.shared_login")]["level"] == "ok"
    await assert_unchanged(db, secrets, before, first, second)


async def test_the_daemon_parks_both_and_a_reload_that_fixes_the_inventory_frees_them(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    user, first, second = await same_login_pair(db, secrets)
    # An unfinished rotation of the first: the daemon would resume it at once.
    await secrets.put_pending(first, db.secret(user, "Pending-pass-5"))
    listen = {"listen": f"127.0.0.1:{free_tcp_port()}"}
    port = int(listen["listen"].rsplit(":", 1)[1])
    path = write_inventory(
        tmp_path / "inv.yaml", moto, [{"id": first}, {"id": second}], daemon=listen
    )
    before = await snapshot(secrets, first, second)

    process = rotd_process("run", "-c", str(path))
    process.wait_for_event("daemon.ready", 30)
    parked = {e["secret_id"]: e for e in process.named("rotation.parked")}
    assert set(parked) == {first, second}
    for name, other in ((first, second), (second, first)):
        assert parked[name]["category"] == "shared_login"
        assert repr(other) in parked[name]["error"]
    assert process.named("rotation.resumed") == []
    _, metrics = _get(port, "/metrics")
    for name in (first, second):
        problem = (
            f'rotd_secret_problem{{category="shared_login",database="testdb",secret_id="{name}"}}'
        )
        assert f"{problem} 1.0" in metrics
    await assert_unchanged(db, secrets, before, first, second)

    # The operator takes the copy out: the first is no longer parked and its rotation resumes.
    write_inventory(path, moto, [{"id": first}], daemon=listen)
    process.send(signal.SIGHUP)
    (resumed,) = process.wait_for_event("rotation.resumed", 60)
    assert resumed["secret_id"] == first
    _, metrics = _get(port, "/metrics")
    assert "shared_login" not in metrics
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0
    current = await secrets.value(first)
    assert await db.logs_in(current["username"], current["password"])
