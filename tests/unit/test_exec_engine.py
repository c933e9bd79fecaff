"""The exec engine against small commands written by each test: what they receive on standard
input, argv and environment, how their exits and timeouts become errors, what is logged."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotd.engines import Endpoint, Login, Rotation, Settings, rotation
from rotd.engines.exec import ExecEngine
from rotd.errors import Category, DatabaseError

PASSWORD = "Old-secret-" + uuid.uuid4().hex
NEW = "New-secret-" + uuid.uuid4().hex
MASTER = "Master-secret-" + uuid.uuid4().hex


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    """A Python command that runs ``body`` with ``payload`` (its standard input) and ``out``
    (a directory to write to) defined."""
    path = tmp_path / f"{name}.py"
    path.write_text(
        "import json, os, sys\n"
        "payload = json.load(sys.stdin)\n"
        f"out = {str(tmp_path)!r}\n" + textwrap.dedent(body)
    )
    return [sys.executable, str(path)]


def login(
    tmp_path: Path,
    *,
    set_password: str = "sys.exit(0)",
    test_login: str = "sys.exit(0)",
    mirror_user: str | None = None,
    timeout_s: float = 10.0,
    username: str = "app",
    password: str = PASSWORD,
) -> Login:
    settings = Settings(
        {
            "set_password": script(tmp_path, "set", set_password),
            "test_login": script(tmp_path, "test", test_login),
            "mirror_user": script(tmp_path, "mirror", mirror_user) if mirror_user else None,
            "timeout_s": timeout_s,
        }
    )
    endpoint = Endpoint("exec", "broker.example", 5672, None, settings=settings)
    document = {"engine": "rabbitmq", "host": "broker.example", "vhost": "/orders"}
    return Login(endpoint, username, password, {**document, "username": username})


def written(tmp_path: Path, name: str) -> Any:
    return json.loads((tmp_path / name).read_text())


@pytest.fixture(autouse=True)
def in_a_rotation() -> Any:
    token = rotation.set(
        Rotation(
            "prod/broker/app",
            "single_user",
            {"engine": "rabbitmq", "username": "app", "password": NEW},
        )
    )
    yield
    rotation.reset(token)


async def test_set_password_receives_the_payload_on_stdin(tmp_path: Path) -> None:
    dump = "json.dump(payload, open(os.path.join(out, 'set.json'), 'w'))"
    async with ExecEngine().connect(login(tmp_path, set_password=dump), timeout_s=5) as session:
        await session.set_own_password(NEW)
    assert written(tmp_path, "set.json") == {
        "secret_id": "prod/broker/app",
        "strategy": "single_user",
        "acting": {
            "engine": "rabbitmq",
            "host": "broker.example",
            "vhost": "/orders",
            "username": "app",
            "password": PASSWORD,
        },
        "username": "app",
        "password": NEW,
        "pending": {"engine": "rabbitmq", "username": "app", "password": NEW},
    }


async def test_as_master_the_acting_login_is_the_masters(tmp_path: Path) -> None:
    dump = "json.dump(payload, open(os.path.join(out, 'set.json'), 'w'))"
    master = login(tmp_path, set_password=dump, username="admin", password=MASTER)
    async with ExecEngine().connect(master, timeout_s=5) as session:
        await session.set_password("app", NEW)
    found = written(tmp_path, "set.json")
    assert found["acting"]["username"] == "admin"
    assert found["acting"]["password"] == MASTER
    assert (found["username"], found["password"]) == ("app", NEW)


async def test_test_login_and_mirror_user_receive_theirs(tmp_path: Path) -> None:
    test = "json.dump(payload, open(os.path.join(out, 'test.json'), 'w'))"
    mirror = "json.dump(payload, open(os.path.join(out, 'mirror.json'), 'w'))"
    master = login(tmp_path, test_login=test, mirror_user=mirror, username="admin", password=MASTER)
    async with ExecEngine().connect(master, timeout_s=5) as session:
        await session.mirror_user("app", "app_clone", NEW)
    assert written(tmp_path, "test.json") == {
        "secret_id": "prod/broker/app",
        "login": {
            "engine": "rabbitmq",
            "host": "broker.example",
            "vhost": "/orders",
            "username": "admin",
            "password": MASTER,
        },
    }
    found = written(tmp_path, "mirror.json")
    assert found["acting"]["password"] == MASTER
    assert {k: found[k] for k in ("secret_id", "original", "clone", "password")} == {
        "secret_id": "prod/broker/app",
        "original": "app",
        "clone": "app_clone",
        "password": NEW,
    }


async def test_no_secret_reaches_argv_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-" + uuid.uuid4().hex)
    monkeypatch.setenv("ROTD_SOMETHING", "x")
    # The running command reads its own /proc entries, as another process would see them.
    seen = """
    me = '/proc/%d/' % os.getpid()
    found = {k: open(me + k, 'rb').read().decode() for k in ('cmdline', 'environ')}
    json.dump(found, open(os.path.join(out, 'proc.json'), 'w'))
    """
    async with ExecEngine().connect(login(tmp_path, set_password=seen), timeout_s=5) as session:
        await session.set_own_password(NEW)
    found = written(tmp_path, "proc.json")
    for secret in (PASSWORD, NEW, os.environ["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in found["cmdline"]
        assert secret not in found["environ"]
    names = {item.split("=", 1)[0] for item in found["environ"].split("\0") if item}
    assert names <= {"PATH", "HOME", "LANG", "LC_ALL", "TZ"}
    assert "PATH" in names


@pytest.mark.parametrize(
    ("command", "code", "category"),
    [
        ("set_password", 75, Category.SERVER),
        ("set_password", 77, Category.PERMISSION),
        ("set_password", 3, Category.COMMAND_FAILED),
        ("test_login", 75, Category.SERVER),
        ("test_login", 77, Category.AUTH),
        ("test_login", 1, Category.COMMAND_FAILED),
    ],
)
async def test_exit_codes_become_error_categories(
    tmp_path: Path, command: str, code: int, category: Category
) -> None:
    fail = f"""
    print('connecting as', payload.get('acting', payload.get('login'))['password'],
          file=sys.stderr)
    print('line two', file=sys.stderr)
    print('the last line', file=sys.stderr)
    sys.exit({code})
    """
    kind = {command: fail}
    with pytest.raises(DatabaseError) as caught:
        async with ExecEngine().connect(login(tmp_path, **kind), timeout_s=5) as session:
            await session.set_own_password(NEW)
    error = caught.value
    assert error.category is category
    assert error.transient is (code == 75)
    assert f"exited with status {code}" in error.reason
    assert "the last line" in error.reason
    assert PASSWORD not in str(error)
    assert "connecting as" in str(error)


async def test_a_timeout_kills_the_process_group_and_is_transient(tmp_path: Path) -> None:
    slow = """
    import subprocess, time
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    open(os.path.join(out, 'child.pid'), 'w').write(str(child.pid))
    time.sleep(60)
    """
    started = time.monotonic()
    with pytest.raises(DatabaseError) as caught:
        async with ExecEngine().connect(
            login(tmp_path, test_login=slow, timeout_s=1.0), timeout_s=5
        ):
            pass
    assert caught.value.category is Category.TIMEOUT
    assert caught.value.transient
    assert time.monotonic() - started < 10
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the command's child outlived its timeout"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_each_run_is_logged_with_scrubbed_output(tmp_path: Path) -> None:
    chatty = """
    print('set to', payload['password'])
    print('warning: acting as', payload['acting']['username'], file=sys.stderr)
    """
    with capture_logs() as logs:
        async with ExecEngine().connect(login(tmp_path, set_password=chatty), timeout_s=5) as s:
            await s.set_own_password(NEW)
    runs = [e for e in logs if e["event"] == "exec.finished"]
    assert [e["command"] for e in runs] == ["test_login", "set_password"]
    assert runs[1]["exit_code"] == 0
    assert runs[1]["secret_id"] == "prod/broker/app"
    assert "set to" in runs[1]["stdout"]
    assert NEW not in runs[1]["stdout"]
    assert "acting as app" in runs[1]["stderr"]


async def test_a_command_that_cannot_start_is_a_permanent_error(tmp_path: Path) -> None:
    broken = login(tmp_path)
    settings = Settings({**broken.endpoint.settings, "test_login": [str(tmp_path / "missing")]})
    endpoint = Endpoint("exec", "h", 1, None, settings=settings)
    with pytest.raises(DatabaseError) as caught:
        async with ExecEngine().connect(Login(endpoint, "app", PASSWORD), timeout_s=5):
            pass
    assert caught.value.category is Category.UNSUPPORTED
    assert "cannot start" in caught.value.reason


def test_mirror_user_is_a_capability_only_when_its_command_is_configured(
    tmp_path: Path,
) -> None:
    engine = ExecEngine()
    assert not engine.info.capabilities.mirror_user
    assert not engine.info.capabilities.rotation_lock
    assert not engine.info.capabilities.tls
    assert not engine.capabilities_for(login(tmp_path).endpoint.settings).mirror_user
    configured = login(tmp_path, mirror_user="sys.exit(0)").endpoint.settings
    assert engine.capabilities_for(configured).mirror_user
