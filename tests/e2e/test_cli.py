"""The one-shot commands as an operator runs them: output, exit codes, nothing secret printed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import HOOK_FAULT, RotdProcess, injected_env, run
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
        == f"{EXAMPLE}: valid: 2 database(s), 3 secret(s) (1 alternating_users, 2 single_user), "
        "1 rendered file(s)"
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


async def test_validate_rejects_hooks_that_could_never_run(
    tmp_path: Path, rotd_process: Start
) -> None:
    """A hook that cannot be called is a configuration error found offline, with its position,
    not a crash after the rotation."""
    path = tmp_path / "hooks.yaml"
    path.write_text(
        "databases:\n"
        "  - name: orders\n"
        "    on_rotated:\n"
        "      - webhook: http://127.0.0.1:99999/x\n"
        "      - webhook: http://[::1/x\n"
        "      - exec: [/bin/true, '']\n"
        "      - exec: ['']\n"
        "    secrets:\n"
        "      - id: a\n"
    )
    code, out, err = run(rotd_process, "validate", "-c", str(path))
    assert code == 78, out + err
    assert f"{path}:4:18: databases.0.on_rotated.0.webhook: " in err
    assert "port" in err.split(f"{path}:4:18:")[1].splitlines()[0]
    assert f"{path}:5:18: databases.0.on_rotated.1.webhook: " in err
    assert f"{path}:7:15: databases.0.on_rotated.3.exec" in err
    assert f"{path}:6:" not in err, "an empty argument after the program is a valid argument"
    assert "Traceback" not in err


# The rotation of any secret whose id holds "faulty" raises an exception rotd never expects.
ROTATION_FAULT = """
import rotd.protocol

_run = rotd.protocol._Rotation._run

async def _faulty_run(self):
    if "faulty" in self.spec.id:
        raise RuntimeError("injected fault in " + self.spec.id)
    await _run(self)

rotd.protocol._Rotation._run = _faulty_run
"""


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_rotate_reports_every_secret_when_a_hook_raises_after_the_rotation(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    hooked_user, hooked = await make_login(db, secrets)
    _, plain = await make_login(db, secrets)
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"id": hooked, "on_rotated": [{"exec": ["/bin/true"]}]}, {"id": plain}],
    )
    process = rotd_process(
        "rotate", "-c", str(path), "--all", env=injected_env(tmp_path, HOOK_FAULT)
    )
    code = process.wait(120)
    out, err = "".join(process.stdout), "".join(process.lines)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"ok     {hooked}  single_user  {hooked_user} -> {hooked_user}")
    assert lines[1].startswith(f"ok     {plain}  ")
    assert len(process.events) == len(process.lines), "every line on stderr is a log event"
    (caught,) = process.named("unexpected_error.caught")
    assert (caught["secret_id"], caught["stage"]) == (hooked, "hooks")
    assert "ValueError: Port out of range" in caught["exception"]
    (failed,) = process.named("hook.failed")
    assert failed["secret_id"] == hooked
    assert await db.logs_in(hooked_user, (await secrets.value(hooked))["password"])


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_rotate_reports_a_rotation_that_raised_and_rotates_the_others(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    faulty_user, faulty = await make_login(db, secrets)
    faulty_renamed = await secrets.create("faulty", await secrets.value(faulty))
    _, good = await make_login(db, secrets)
    path = write_inventory(tmp_path / "inv.yaml", moto, [{"id": faulty_renamed}, {"id": good}])
    env = injected_env(tmp_path, ROTATION_FAULT)
    process = rotd_process("rotate", "-c", str(path), "--all", "--json", env=env)
    code = process.wait(120)
    out, err = "".join(process.stdout), "".join(process.lines)
    assert code == 1, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [(r["secret_id"], r["outcome"]) for r in results] == [
        (faulty_renamed, "failed"),
        (good, "succeeded"),
    ]
    assert results[0]["category"] == "internal"
    assert "RuntimeError: injected fault" in results[0]["error"]
    assert len(process.events) == len(process.lines), "every line on stderr is a log event"
    (caught,) = process.named("unexpected_error.caught")
    assert (caught["secret_id"], caught["stage"]) == (faulty_renamed, "rotation")
    assert "RuntimeError: injected fault" in caught["exception"]
    (failed,) = process.named("rotation.failed")
    assert (failed["secret_id"], failed["category"]) == (faulty_renamed, "internal")
    assert await db.logs_in(faulty_user, (await secrets.value(faulty_renamed))["password"])


async def test_validate_rejects_broken_templates_at_their_position(
    tmp_path: Path, rotd_process: Start
) -> None:
    broken = tmp_path / "derived.yaml"
    broken.write_text(
        "defaults:\n"
        "  derived_keys:\n"
        '    url: "postgresql://{{ username }}:{{ pasword }}@{{ host }}/"\n'
        "databases:\n"
        "  - name: pg\n"
        "    engine: postgres\n"
        "    derived_keys:\n"
        "      dsn: |\n"
        "        host={{ host }}\n"
        "        password={{ password | urlencod }}\n"
        "      jdbc: 'jdbc:postgresql://{{ host }'\n"
        "    secrets:\n"
        "      - id: app\n"
    )

    code, out, err = run(rotd_process, "validate", "-c", str(broken))

    assert code == 78
    assert out == ""
    assert f"{broken}:3:42: derived key 'url': 'pasword' is not a key a postgres secret" in err
    assert f"{broken}:10:32: derived key 'dsn': unknown filter 'urlencod'" in err
    assert f"{broken}:11:14: derived key 'jdbc': template syntax error" in err
    assert "3 error(s)" in err
