"""Engines a third party installs: found through the ``rotd.engines`` entry points, used by
every command, refused before anything changes where they cannot do what a secret asks, and
reported (not crashed on) when broken."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, run
from tests.fixtures.rotation import make_master

Start = Callable[..., RotdProcess]

# A third party's package: rotd's own sessions behind engines that cannot mirror a user.
FAKE_ENGINE = '''
"""Engines without the mirror_user capability, for rotd's tests."""

from rotd.engines import Capabilities, EngineInfo
from rotd.engines import builtin


class SingleUserOnly:
    def __init__(self, inner, default_port, default_dbname):
        self.info = EngineInfo(
            Capabilities(single_user=True, rotation_lock=True, tls=True, permission_checks=True),
            default_port=default_port,
            default_dbname=default_dbname,
        )
        self._inner = inner

    def connect(self, login, *, timeout_s):
        return self._inner.connect(login, timeout_s=timeout_s)


def postgres():
    return SingleUserOnly(builtin.postgres(), 5432, "postgres")


def mariadb():
    return SingleUserOnly(builtin.mysql(), 3306, None)
'''


def _distribution(root: Path, name: str, module: str, points: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata finds it on sys.path."""
    package = root / name.replace("-", "_")
    package.mkdir()
    (package / "__init__.py").write_text(module)
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{key} = {value}\n" for key, value in points.items())
    (info / "entry_points.txt").write_text("[rotd.engines]\n" + lines)


@pytest.fixture
def plugins(tmp_path: Path) -> dict[str, str]:
    """The environment of a rotd that has two third-party packages installed: one with working
    engines (fake-postgres, fake-mariadb), one whose engine cannot be imported (broken)."""
    root = tmp_path / "site"
    root.mkdir()
    _distribution(
        root,
        "fake-engine",
        FAKE_ENGINE,
        {"fake-postgres": "fake_engine:postgres", "fake-mariadb": "fake_engine:mariadb"},
    )
    _distribution(
        root, "broken-engine", "import rotd_no_such_driver\n", {"broken": "broken_engine:make"}
    )
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


def inventory(path: Path, databases: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"databases": databases}))  # JSON is YAML
    return path


async def test_validate_refuses_what_an_installed_engine_cannot_do(
    tmp_path: Path, rotd_process: Start, plugins: dict[str, str]
) -> None:
    alternating = {"id": "app/alt", "strategy": "alternating_users", "master_secret": "app/m"}
    path = inventory(
        tmp_path / "lacking.yaml",
        [
            {"name": "a", "engine": "fake-postgres", "secrets": [alternating]},
            {"name": "b", "engine": "broken", "secrets": [{"id": "app/b"}]},
            {"name": "c", "engine": "fake-postgres", "secrets": [{"id": "app/single"}]},
        ],
    )
    code, _, err = run(rotd_process, "validate", "-c", str(path), env=plugins)
    assert code == 78, err
    assert (
        "secret 'app/alt': engine 'fake-postgres' lacks the capability mirror_user, which "
        "strategy alternating_users needs" in err
    )
    assert (
        "secret 'app/b': engine 'broken': cannot be loaded from entry point "
        "'broken_engine:make' of broken-engine 0.1: ModuleNotFoundError: No module named "
        "'rotd_no_such_driver'" in err
    )
    assert "app/single" not in err
    assert "Traceback" not in err

    # A broken package does not stop an inventory that does not use it.
    path = inventory(
        tmp_path / "fine.yaml",
        [{"name": "c", "engine": "fake-postgres", "secrets": [{"id": "app/single"}]}],
    )
    code, out, err = run(rotd_process, "validate", "-c", str(path), env=plugins)
    assert code == 0, err
    assert "valid: 1 database(s), 1 secret(s)" in out

    path = inventory(
        tmp_path / "unknown.yaml", [{"name": "d", "engine": "oracle", "secrets": [{"id": "x"}]}]
    )
    code, _, err = run(rotd_process, "validate", "-c", str(path), env=plugins)
    assert code == 78, err
    assert (
        "unknown engine 'oracle'; installed: aurora-mysql, aurora-postgresql, broken, "
        "exec, fake-mariadb, fake-postgres, mariadb, mysql, postgres" in err
    )


async def test_a_third_party_engine_rotates_and_refuses_what_it_cannot_do(
    db: Database,
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
    plugins: dict[str, str],
) -> None:
    engine = f"fake-{db.engine}"
    single_user = db.unique()
    await db.create_login(single_user, "Single-pass-1")
    single = await secrets.create(
        single_user, db.secret(single_user, "Single-pass-1", engine=engine)
    )
    alt_user = db.unique()
    await db.create_login(alt_user, "Alt-pass-1")
    alternating = await secrets.create(alt_user, db.secret(alt_user, "Alt-pass-1", engine=engine))
    master = await make_master(db, secrets)
    alternating_version = await secrets.version(alternating)
    # Only the secrets say which engine: the inventory cannot know, so validate lets it by.
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [
            {"id": single},
            {"id": alternating, "strategy": "alternating_users", "master_secret": master},
        ],
    )
    code, _, err = run(rotd_process, "validate", "-c", str(path), env=plugins)
    assert code == 0, err

    code, out, err = run(rotd_process, "rotate", "-c", str(path), "--all", "--json", env=plugins)
    assert code == 1, err
    results = {r["secret_id"]: r for r in map(json.loads, out.splitlines())}
    assert results[single]["outcome"] == "succeeded"
    assert results[single]["engine"] == engine
    assert await db.logs_in(single_user, (await secrets.value(single))["password"])
    refused = results[alternating]
    assert (refused["outcome"], refused["step"], refused["category"]) == (
        "failed",
        "createSecret",
        "unsupported",
    )
    assert f"engine {engine!r}: the engine lacks the capability mirror_user" in refused["error"]
    # Refused before anything changed: no new version, no clone, the old password works.
    assert await secrets.stages(alternating) == {alternating_version: ["AWSCURRENT"]}
    assert not await db.user_exists(alt_user + "_clone")
    assert await db.logs_in(alt_user, "Alt-pass-1")

    code, out, err = run(rotd_process, "doctor", "-c", str(path), "--json", env=plugins)
    assert code == 1, err
    assert "Traceback" not in err
    checks = [json.loads(line) for line in out.splitlines()]
    broken = [c for c in checks if c["check"] == "engines"]
    assert [c["level"] for c in broken] == ["FAIL"]
    assert "broken-engine 0.1: ModuleNotFoundError" in broken[0]["detail"]
    lacking = [c for c in checks if c["check"] == "secret.engine"]
    assert [(c["secret_id"], c["level"]) for c in lacking] == [(alternating, "FAIL")]
    assert "lacks the capability mirror_user" in lacking[0]["detail"]
    logged_in = [c for c in checks if c["check"] == "db.login" and c["secret_id"] == single]
    assert [c["level"] for c in logged_in] == ["ok"]
