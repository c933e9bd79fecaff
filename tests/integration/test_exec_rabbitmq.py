"""Full rotations through the exec engine with the shipped RabbitMQ example (config/exec/),
against the RabbitMQ on this host and moto's server. Logins are checked with rabbitmqctl's own
authenticate_user, the password on its standard input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rotd.doctor import Level, diagnose
from rotd.engines import Settings
from rotd.inventory import Inventory
from rotd.secretstore import connection_for
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.rotation import Rotd, assert_ok, inventory

SCRIPT = Path(__file__).resolve().parents[2] / "config" / "exec" / "rabbitmq"


def ctl(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


class Broker:
    """RabbitMQ users with unique names, deleted (with their clones) at teardown."""

    def __init__(self) -> None:
        self.users: list[str] = []

    def create(self, label: str, password: str, *tags: str) -> str:
        user = f"rotd_{label}_{uuid.uuid4().hex[:8]}"
        self.users += [user, user + "_clone"]
        assert ctl("add_user", user, stdin=password + "\n").returncode == 0
        assert ctl("set_permissions", "-p", "/", user, f"^{user}-.*", ".*", ".*").returncode == 0
        if tags:
            assert ctl("set_user_tags", user, *tags).returncode == 0
        return user

    def logs_in(self, user: str, password: str) -> bool:
        return ctl("authenticate_user", user, stdin=password + "\n").returncode == 0

    def exists(self, user: str) -> bool:
        users = json.loads(ctl("list_users", "--formatter", "json").stdout)
        return any(u["user"] == user for u in users)

    def tags(self, user: str) -> list[str]:
        users = json.loads(ctl("list_users", "--formatter", "json").stdout)
        return next(sorted(u["tags"]) for u in users if u["user"] == user)

    def permissions(self, user: str) -> list[tuple[str, str, str, str]]:
        found = json.loads(ctl("list_user_permissions", user, "--formatter", "json").stdout)
        return sorted((p["vhost"], p["configure"], p["write"], p["read"]) for p in found)

    def cleanup(self) -> None:
        for user in self.users:
            ctl("delete_user", user)


@pytest.fixture
def broker() -> Iterator[Broker]:
    found = Broker()
    yield found
    found.cleanup()


def secret(user: str, password: str) -> dict[str, object]:
    return {
        "engine": "rabbitmq",  # any name: the inventory's engine: exec decides
        "host": "127.0.0.1",
        "port": 5672,
        "username": user,
        "password": password,
        "vhost": "/",
    }


def exec_inventory(
    moto: MotoServer, name: str, strategy: str, master: str | None = None
) -> Inventory:
    lines = [f"      - id: {json.dumps(name)}", f"        strategy: {strategy}"]
    if master:
        lines.append(f"        master_secret: {json.dumps(master)}")
    body = (
        "databases:\n"
        "  - name: broker\n"
        "    engine: exec\n"
        "    exec:\n"
        f"      set_password: [{SCRIPT}, set]\n"
        f"      test_login: [{SCRIPT}, test]\n"
        f"      mirror_user: [{SCRIPT}, mirror]\n"
        "      timeout: 60s\n"
        "    secrets:\n" + "\n".join(lines) + "\n"
    )
    return inventory(moto, body)


async def test_single_user_rotation_changes_the_brokers_password(
    broker: Broker, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    old = "Initial-" + uuid.uuid4().hex
    user = broker.create("single", old)
    name = await secrets.create(user, secret(user, old))

    with capture_logs() as logs:
        outcome = await rotd.rotate_one(exec_inventory(moto, name, "single_user"))

    assert_ok(outcome)
    assert outcome.engine == "exec"
    new = await secrets.value(name)
    assert new["username"] == user
    assert new["engine"] == "rabbitmq"
    assert new["vhost"] == "/"
    assert new["password"] != old
    assert broker.logs_in(user, new["password"])
    assert not broker.logs_in(user, old)
    assert (await secrets.value(name, "AWSPREVIOUS"))["password"] == old
    runs = [(e["command"], e["exit_code"]) for e in logs if e["event"] == "exec.finished"]
    assert ("set_password", 0) in runs
    assert ("test_login", 0) in runs
    logged = json.dumps(logs, default=str)
    assert old not in logged
    assert new["password"] not in logged


async def test_a_resumed_rotation_finishes_with_the_password_the_broker_already_holds(
    broker: Broker, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    old = "Initial-" + uuid.uuid4().hex
    user = broker.create("resume", old)
    name = await secrets.create(user, secret(user, old))
    pending = "Pending-" + uuid.uuid4().hex
    token = await secrets.put_pending(name, secret(user, pending))
    # As if an earlier run was cut after setSecret: the broker holds the pending password.
    assert ctl("change_password", user, stdin=pending + "\n").returncode == 0

    outcome = await rotd.rotate_one(exec_inventory(moto, name, "single_user"))

    assert_ok(outcome)
    assert outcome.resumed
    assert await secrets.version(name) == token
    assert (await secrets.value(name))["password"] == pending
    assert broker.logs_in(user, pending)


async def test_alternating_users_mirror_the_user_and_switch_between_the_pair(
    broker: Broker, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    admin_password = "Admin-" + uuid.uuid4().hex
    admin = broker.create("admin", admin_password, "administrator")
    master = await secrets.create(admin, secret(admin, admin_password))
    old = "Initial-" + uuid.uuid4().hex
    user = broker.create("pair", old, "monitoring", "policymaker")
    name = await secrets.create(user, secret(user, old))
    inv = exec_inventory(moto, name, "alternating_users", master)

    outcome = await rotd.rotate_one(inv)

    assert_ok(outcome)
    clone = user + "_clone"
    first = await secrets.value(name)
    assert first["username"] == clone
    assert broker.logs_in(clone, first["password"])
    assert broker.logs_in(user, old)  # the login applications held is untouched
    assert broker.tags(clone) == broker.tags(user) == ["monitoring", "policymaker"]
    assert [p[1:] for p in broker.permissions(clone)] == [p[1:] for p in broker.permissions(user)]

    outcome = await rotd.rotate_one(inv)

    assert_ok(outcome)
    second = await secrets.value(name)
    assert second["username"] == user
    assert second["password"] not in (old, first["password"])
    assert broker.logs_in(user, second["password"])
    assert not broker.logs_in(user, old)
    assert broker.logs_in(clone, first["password"])


def topic_permissions(user: str) -> list[tuple[str, str, str, str]]:
    found = json.loads(ctl("list_user_topic_permissions", user, "--formatter", "json").stdout)
    return sorted((p["vhost"], p["exchange"], p["write"], p["read"]) for p in found)


def mirror(original: str, password: str) -> subprocess.CompletedProcess[str]:
    payload = {"secret_id": "s", "acting": {}, "original": original, "clone": original + "_clone"}
    return subprocess.run(
        [str(SCRIPT), "mirror"],
        input=json.dumps({**payload, "password": password}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_mirror_brings_the_clone_in_line_with_the_original_removals_too(broker: Broker) -> None:
    user = broker.create("mirror", "Initial-" + uuid.uuid4().hex, "monitoring")
    clone = user + "_clone"
    vhost = f"rotd_vh_{uuid.uuid4().hex[:8]}"
    assert ctl("add_vhost", vhost).returncode == 0
    try:
        assert ctl("set_permissions", "-p", vhost, user, "^q-.*", "^x$", ".*").returncode == 0
        topic = ("set_topic_permissions", "-p", vhost, user, "amq.topic", "^a", "^b")
        assert ctl(*topic).returncode == 0
        first = "First-" + uuid.uuid4().hex

        done = mirror(user, first)

        assert done.returncode == 0, done.stderr
        assert broker.logs_in(clone, first)
        assert broker.tags(clone) == ["monitoring"]
        assert broker.permissions(clone) == [
            ("/", f"^{user}-.*", ".*", ".*"),
            (vhost, "^q-.*", "^x$", ".*"),
        ]
        assert topic_permissions(clone) == [(vhost, "amq.topic", "^a", "^b")]

        # Taken from the original since: taken from the clone at the next mirror.
        assert ctl("clear_permissions", "-p", vhost, user).returncode == 0
        assert ctl("clear_topic_permissions", "-p", vhost, user).returncode == 0
        assert ctl("set_user_tags", user).returncode == 0
        second = "Second-" + uuid.uuid4().hex

        done = mirror(user, second)

        assert done.returncode == 0, done.stderr
        assert broker.logs_in(clone, second)
        assert not broker.logs_in(clone, first)
        assert broker.tags(clone) == []
        assert broker.permissions(clone) == [("/", f"^{user}-.*", ".*", ".*")]
        assert topic_permissions(clone) == []
        assert first not in done.stdout + done.stderr
    finally:
        ctl("delete_vhost", vhost)


async def test_doctor_logs_in_through_test_login_and_warns_what_it_cannot_check(
    broker: Broker, secrets: Secrets, moto: MotoServer
) -> None:
    admin_password = "Admin-" + uuid.uuid4().hex
    admin = broker.create("docadmin", admin_password, "administrator")
    master = await secrets.create(admin, secret(admin, admin_password))
    good = "Good-" + uuid.uuid4().hex
    user = broker.create("doctor", good)
    name = await secrets.create(user, secret(user, good))
    refused = broker.create("refused", "Other-" + uuid.uuid4().hex)
    wrong = "Wrong-" + uuid.uuid4().hex
    bad = await secrets.create(refused, secret(refused, wrong))
    inv = exec_inventory(moto, name, "alternating_users", master)
    inv = dataclasses.replace(
        inv, secrets=(*inv.secrets, dataclasses.replace(inv.secrets[0], id=bad))
    )

    checks = await diagnose(inv, inv.secrets, connection_for(inv))

    found = {c.name: c for c in checks if c.secret_id == name}
    assert found["secret.format"].level is Level.OK
    assert "engine exec" in found["secret.format"].detail
    assert found["secret.engine"].level is Level.WARN
    assert "no rotation lock" in found["secret.engine"].detail
    assert found["db.login"].level is Level.OK
    assert found["master.login"].level is Level.OK
    assert found["db.permissions"].level is Level.WARN
    assert found["db.tls"].level is Level.WARN
    assert "lacks the tls capability" in found["db.tls"].detail
    refusal = next(c for c in checks if c.secret_id == bad and c.name == "db.login")
    assert refusal.level is Level.FAIL
    assert "exited with status 77" in refusal.detail
    assert wrong not in "\n".join(c.line() for c in checks)


RECORDER = """
import json, subprocess, sys
data = sys.stdin.read()
with open(sys.argv[1], "a") as log:
    log.write(json.dumps({"command": sys.argv[3], "payload": json.loads(data)}) + "\\n")
sys.exit(subprocess.run([sys.argv[2], sys.argv[3]], input=data, text=True).returncode)
"""


async def test_the_protocol_hands_each_command_the_rotations_payload(
    broker: Broker, secrets: Secrets, rotd: Rotd, moto: MotoServer, tmp_path: Path
) -> None:
    recorder = tmp_path / "record.py"
    recorder.write_text(RECORDER)
    log = tmp_path / "runs.jsonl"
    old = "Initial-" + uuid.uuid4().hex
    user = broker.create("payload", old)
    name = await secrets.create(user, secret(user, old))
    text = exec_inventory(moto, name, "single_user")
    wrapped = dataclasses.replace(
        text.secrets[0],
        engine_settings=Settings(
            {
                **text.secrets[0].engine_settings,
                "set_password": [sys.executable, str(recorder), str(log), str(SCRIPT), "set"],
                "test_login": [sys.executable, str(recorder), str(log), str(SCRIPT), "test"],
            }
        ),
    )

    assert_ok(await rotd.rotate_one(dataclasses.replace(text, secrets=(wrapped,))))

    new = await secrets.value(name)
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    sets = [r["payload"] for r in runs if r["command"] == "set"]
    assert sets == [
        {
            "secret_id": name,
            "strategy": "single_user",
            "acting": secret(user, old),
            "username": user,
            "password": new["password"],
            "pending": new,
        }
    ]
    tests = [r["payload"] for r in runs if r["command"] == "test"]
    assert tests[0] == {"secret_id": name, "login": secret(user, old)}
    assert tests[-1] == {"secret_id": name, "login": new}
