"""The one-shot commands as an operator runs them: output, exit codes, nothing secret printed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, run
from tests.fixtures.rotation import make_login, make_master

Start = Callable[..., RotdProcess]
EXAMPLE = Path(__file__).parents[2] / "config" / "example.yaml"


async def test_validate_prints_a_summary_or_every_error(
    tmp_path: Path, rotd_process: Start
) -> None:
    code, out, _ = run(rotd_process, "validate", "-c", str(EXAMPLE))
    assert code == 0
    assert (
        out.strip()
        == f"{EXAMPLE}: valid: 2 database(s), 3 secret(s) (1 alternating_users, 2 single_user)"
    )

    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  strategy: nope\n  windw: 1h\n")
    code, out, err = run(rotd_process, "validate", "-c", str(bad))
    assert code == 78
    assert f"{bad}:2:13: defaults.strategy:" in err
    assert f"{bad}:3:3: unknown key 'windw'" in err

    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("defaults:\n  window: !foo 1h\n")
    code, out, err = run(rotd_process, "validate", "-c", str(tagged))
    assert code == 78
    assert f"{tagged}:2:11: YAML tags (!foo) are not supported" in err
    assert "Traceback" not in err


async def test_rotate_reports_each_secret_and_exits_by_outcome(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    single_user, single = await make_login(db, secrets)
    alt_user, alternating = await make_login(db, secrets, "Alt-pass-3")
    master = await make_master(db, secrets)
    broken = await secrets.create(
        "broken", {"engine": "postgres", "host": "h", "password": "Pw-broken-1"}
    )
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [
            {"id": single},
            {"id": alternating, "strategy": "alternating_users", "master_secret": master},
            {"id": broken},
        ],
    )

    code, out, err = run(rotd_process, "rotate", "-c", str(path), single, alternating, "--json")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["secret_id"] for r in results] == [single, alternating]
    assert [r["outcome"] for r in results] == ["succeeded", "succeeded"]
    assert results[1]["old_username"] == alt_user
    assert results[1]["new_username"] == alt_user + "_clone"
    assert results[0]["version_id"] == await secrets.version(single)

    code, out, err = run(rotd_process, "rotate", "-c", str(path), "--all")
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"ok     {single}  single_user  {single_user} -> {single_user}")
    assert lines[2].startswith(f"FAILED {broken}  single_user  createSecret: ")
    assert "missing key `username`" in lines[2]

    passwords = {(await secrets.value(n))["password"] for n in (single, alternating, master)}
    passwords |= {"Pw-broken-1", "Initial-pass-1", "Alt-pass-3"}
    for password in passwords:
        assert password not in out + err

    code, _, err = run(rotd_process, "rotate", "-c", str(path), "prod/not-there")
    assert code == 2
    assert "'prod/not-there'" in err


async def test_status_shows_each_secret_and_its_problems(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    user, good = await make_login(db, secrets)
    await secrets.put_pending(good, db.secret(user, "Pending-pass-9"))
    missing = secrets.name("never-created")
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": good}, {"id": missing}])

    code, out, _ = run(rotd_process, "status", "-c", str(path), "--json")
    assert code == 1
    good_report, missing_report = (json.loads(line) for line in out.splitlines())
    assert good_report["username"] == user
    assert good_report["engine"] == db.engine
    assert good_report["unfinished"] is not None
    assert good_report["problem"] is None
    assert good_report["next_due"] > good_report["last_rotated"]
    assert missing_report["problem"].startswith("not_found")
    assert "Pending-pass-9" not in out
