"""``rotd iam-policy``, ``rotd status`` and a running daemon's ``/metrics`` and hooks on Redis
and exec databases, as an operator runs them: a redis-server the test starts, this host's
RabbitMQ through the exec engine and the shipped script (config/exec/rabbitmq), moto's server.

The other engines' runs of the same commands are in tests/e2e/test_cli.py,
tests/integration/test_iam_policy.py and tests/e2e/test_daemon_observability.py.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.targets import RabbitmqTarget, RedisTarget, amqp_logs_in
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.deadlines import until
from tests.fixtures.inventory import write_inventory
from tests.fixtures.metrics import documented_metrics, scraped_values
from tests.fixtures.process import RotdProcess, free_tcp_port, run
from tests.fixtures.redis import RedisServer

Start = Callable[..., RotdProcess]
SCHEDULE = timedelta(days=30)
# Appends the rotation's ROTD_* environment as one JSON line to the file named first.
RECORD = (
    "import json, os, sys\n"
    "seen = {k: v for k, v in os.environ.items() if k.startswith('ROTD_')}\n"
    "open(sys.argv[1], 'a').write(json.dumps(seen) + '\\n')\n"
)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def password(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


@pytest.fixture
async def redis_target(redis_servers: Callable[..., RedisServer]) -> RedisTarget:
    return RedisTarget(redis_servers("aclfile"))


@pytest.fixture
async def broker() -> AsyncIterator[RabbitmqTarget]:
    """RabbitMQ through the exec engine; the users made here are deleted at teardown."""
    target = RabbitmqTarget()
    yield target
    for user in sorted(target.users):
        await target.drop_login(user)
    await target.cleanup()


def databases(
    redis: RedisTarget, broker: RabbitmqTarget, cache: list[Any], queue: list[Any]
) -> list[dict[str, Any]]:
    """The inventory's two databases: ``cache`` (Redis) and ``broker`` (engine: exec)."""
    return [
        {"name": "cache", **redis.database_settings(), "secrets": cache},
        {"name": "broker", **broker.database_settings(), "secrets": queue},
    ]


async def test_iam_policy_names_the_redis_and_exec_secrets_and_their_masters(
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
    redis_target: RedisTarget,
    broker: RabbitmqTarget,
) -> None:
    """The policy is read from Secrets Manager alone: no login is made on either server."""
    made: dict[str, tuple[str, str]] = {}  # label -> (name, password)

    async def secret(label: str, target: Any, **extra: str) -> str:
        value = {**target.secret(unique(label), password(label)), **extra}
        name = await secrets.create(label, value)
        made[label] = (name, value["password"])
        return name

    redis_master = await secret("redis-master", redis_target)
    redis_master_arn = (await secrets.describe(redis_master))["ARN"]
    # Redis single_user through a master named by the secret's own masterarn.
    redis_single = await secret("redis-single", redis_target, masterarn=redis_master_arn)
    redis_alt = await secret("redis-alt", redis_target)
    broker_admin = await secret("broker-admin", broker)
    broker_single = await secret("broker-single", broker)
    broker_alt = await secret("broker-alt", broker)
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        databases=databases(
            redis_target,
            broker,
            [
                {"id": redis_single},
                {"id": redis_alt, "strategy": "alternating_users", "master_secret": redis_master},
            ],
            [
                {"id": broker_single},
                {"id": broker_alt, "strategy": "alternating_users", "master_secret": broker_admin},
            ],
        ),
    )
    arn = {name: (await secrets.describe(name))["ARN"] for name, _ in made.values()}

    code, out, err = run(rotd_process, "iam-policy", "-c", str(path))

    assert code == 0, err
    assert "warning" not in err, err
    statements = {s["Sid"]: s for s in json.loads(out)["Statement"]}
    assert list(statements) == ["RotateSecrets", "ReadMasterSecrets"]  # AWS-managed keys only
    assert statements["RotateSecrets"]["Resource"] == sorted(
        arn[n] for n in (redis_single, redis_alt, broker_single, broker_alt)
    )
    assert statements["ReadMasterSecrets"]["Resource"] == sorted(
        [arn[redis_master], arn[broker_admin]]
    )
    for _, secret_password in made.values():
        assert secret_password not in out + err


async def test_status_metrics_and_hooks_follow_redis_and_exec_rotations(
    secrets: Secrets,
    moto: MotoServer,
    tmp_path: Path,
    rotd_process: Start,
    redis_target: RedisTarget,
    broker: RabbitmqTarget,
) -> None:
    """Two secrets with an unfinished rotation (a daemon takes them up at once) and one
    alternating pair that is not due: ``rotd status`` before and after ``rotd run`` resumed
    the two, the daemon's ``/metrics`` and its ``on_rotated`` hooks in between."""
    redis_user, redis_old = unique("rapp"), password("Redis-old")
    await redis_target.create_login(redis_user, redis_old)
    redis_secret = await secrets.create("redis", redis_target.secret(redis_user, redis_old))
    broker_user, broker_old = unique("bapp"), password("Broker-old")
    await broker.create_login(broker_user, broker_old)
    broker_secret = await secrets.create("broker", broker.secret(broker_user, broker_old))
    pending = {
        redis_secret: await secrets.put_pending(
            redis_secret, redis_target.secret(redis_user, password("Redis-new"))
        ),
        broker_secret: await secrets.put_pending(
            broker_secret, broker.secret(broker_user, password("Broker-new"))
        ),
    }
    # Only read by status and scheduled by the daemon: 30 days from due, it logs in nowhere.
    alt_user = unique("balt")
    alt_secret = await secrets.create("alt", broker.secret(alt_user, password("Alt")))
    admin_secret = await secrets.create("admin", broker.secret(unique("badm"), password("Adm")))
    hooked = tmp_path / "hooks.jsonl"
    listen = free_tcp_port()
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        databases=databases(
            redis_target,
            broker,
            [{"id": redis_secret}],
            [
                {"id": broker_secret},
                {"id": alt_secret, "strategy": "alternating_users", "master_secret": admin_secret},
            ],
        ),
        defaults={
            "schedule": "rate(30 days)",
            "on_rotated": [{"exec": [sys.executable, "-c", RECORD, str(hooked)]}],
        },
        daemon={"listen": f"127.0.0.1:{listen}"},
    )

    before = status(rotd_process, path)

    assert [r["secret_id"] for r in before] == [redis_secret, broker_secret, alt_secret]
    expected = [
        ("cache", "redis", "single_user", redis_user, pending[redis_secret]),
        ("broker", "exec", "single_user", broker_user, pending[broker_secret]),
        ("broker", "exec", "alternating_users", alt_user, None),
    ]
    assert [
        (r["database"], r["engine"], r["strategy"], r["username"], r["unfinished"]) for r in before
    ] == expected
    for report in before:
        assert report["problem"] is None, report
        assert at(report["next_due"]) == at(report["last_rotated"]) + SCHEDULE, report
    code, out, _ = run(rotd_process, "status", "-c", str(path))
    assert code == 0, out
    lines = out.splitlines()
    where = f"aws=base/{moto.region}"
    assert f"db=cache {where} engine=redis strategy=single_user user={redis_user}" in lines[0]
    assert f"unfinished rotation {pending[redis_secret]}" in lines[0]
    assert f"db=broker {where} engine=exec strategy=single_user user={broker_user}" in lines[1]
    assert f"db=broker {where} engine=exec strategy=alternating_users user={alt_user}" in lines[2]
    assert lines[2].endswith("  ok")

    process = rotd_process("run", "-c", str(path))
    process.wait_for_event("rotation.resumed", 90, count=2)
    process.wait_for_event("hook.finished", 30, count=2)
    # After a rotation and its hooks the daemon reads the secret again to plan the next one.
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}

    def planned() -> bool:
        samples.update(scraped_values(listen))
        month = time.time() + SCHEDULE.total_seconds() / 2
        due = samples["rotd_secret_next_due_timestamp_seconds"]
        return all(value > month for _, value in due)

    await until(planned, "the next due times after the rotations", 30, interval_s=0.1)
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0

    after = status(rotd_process, path)

    redis_now, broker_now = await secrets.value(redis_secret), await secrets.value(broker_secret)
    assert await redis_target.logs_in(redis_user, redis_now["password"])
    assert await amqp_logs_in(broker_user, broker_now["password"])
    assert not await amqp_logs_in(broker_user, broker_old)
    for old, new in zip(before, after, strict=True):
        assert new["unfinished"] is None, new
        assert new["problem"] is None, new
        assert (new["engine"], new["strategy"], new["username"]) == (
            old["engine"],
            old["strategy"],
            old["username"],
        )
        assert at(new["next_due"]) == at(new["last_rotated"]) + SCHEDULE, new
    for old, new in zip(before[:2], after[:2], strict=True):
        assert await secrets.version(new["secret_id"]) == pending[new["secret_id"]]
        assert at(new["last_rotated"]) >= at(old["last_rotated"]), new
    assert after[2] == before[2], "the secret that was not due changed"

    # Every sample has the documented labels; the two rotations and their hooks are counted
    # under their databases, and each secret's next due time is the one status shows.
    documented = documented_metrics()
    for name, labels in documented.items():
        for served, _ in samples.get(name, []) + samples.get(f"{name}_count", []):
            assert set(served) == labels, (name, served)
    rotations = {
        tuple(sorted(labels.items())): value for labels, value in samples["rotd_rotations_total"]
    }
    for database in ("cache", "broker"):
        assert rotations[(("database", database), ("outcome", "resumed"))] == 1
        assert ({"database": database, "kind": "exec", "result": "succeeded"}, 1.0) in samples[
            "rotd_hook_runs_total"
        ]
    next_due = {
        labels["secret_id"]: value
        for labels, value in samples["rotd_secret_next_due_timestamp_seconds"]
    }
    for report in after:
        # status shows whole seconds
        assert abs(next_due[report["secret_id"]] - at(report["next_due"]).timestamp()) < 1, report
    assert (
        "rotd_rotation_failures_total" not in samples or not samples["rotd_rotation_failures_total"]
    )

    runs = sorted(
        (json.loads(line) for line in hooked.read_text().splitlines()),
        key=lambda env: env["ROTD_DATABASE"],
    )
    assert [
        (e["ROTD_DATABASE"], e["ROTD_SECRET_ID"], e["ROTD_USERNAME"], e["ROTD_VERSION_ID"])
        for e in runs
    ] == [
        ("broker", broker_secret, broker_user, pending[broker_secret]),
        ("cache", redis_secret, redis_user, pending[redis_secret]),
    ]
    for secret_password in (redis_old, broker_old, redis_now["password"], broker_now["password"]):
        assert secret_password not in hooked.read_text()
        assert secret_password not in "".join(process.lines)


def status(rotd_process: Start, path: Path) -> list[dict[str, Any]]:
    code, out, err = run(rotd_process, "status", "-c", str(path), "--json")
    assert code == 0, out + err
    return [json.loads(line) for line in out.splitlines()]


def at(moment: str) -> datetime:
    return datetime.fromisoformat(moment)
