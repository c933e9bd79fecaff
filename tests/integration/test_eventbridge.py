"""Rotation events on EventBridge: real rotations, moto's EventBridge delivering through a rule
to an SQS queue, and a dead bus that must not slow a rotation down."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from structlog.testing import capture_logs

from rotd.daemon import Daemon
from rotd.doctor import Level, diagnose
from rotd.engines import all_engines
from rotd.events import EventPublisher
from rotd.inventory import Inventory, Strategy, load
from rotd.notify import Notifier
from rotd.protocol import Outcome
from rotd.runner import Runner
from rotd.secretstore import AwsConnection, AwsSecretStore, connection_for
from rotd.testing.kit import processed_events
from tests.fixtures.aws import MotoServer, Secrets, free_port
from tests.fixtures.databases import Database
from tests.fixtures.deadlines import until
from tests.fixtures.iam import IamMoto
from tests.fixtures.inventory import write_inventory
from tests.fixtures.rotation import inventory, make_login

Event = dict[str, Any]


@pytest.fixture
def logged() -> Iterator[list[Event]]:
    captured: list[Event] = []
    with processed_events(lambda _logger, _name, event: captured.append(event)):
        yield captured


class Bus:
    """An event bus in moto with a rule that sends every event from ``source`` to a queue."""

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.name = f"rotd-test-{uuid.uuid4().hex[:10]}"
        self.rule = f"{self.name}-all"
        self.queue_url = ""
        self.received: list[Event] = []

    @asynccontextmanager
    async def client(self, service: str) -> AsyncIterator[Any]:
        session = aioboto3.Session(region_name=self.server.region)
        async with session.client(service, endpoint_url=self.server.endpoint_url) as client:
            yield client

    async def create(self, source: str = "rotd") -> None:
        async with self.client("sqs") as sqs, self.client("events") as events:
            self.queue_url = (await sqs.create_queue(QueueName=self.name))["QueueUrl"]
            attributes = await sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
            )
            await events.create_event_bus(Name=self.name)
            await events.put_rule(
                Name=self.rule,
                EventBusName=self.name,
                EventPattern=json.dumps({"source": [source]}),
            )
            await events.put_targets(
                Rule=self.rule,
                EventBusName=self.name,
                Targets=[{"Id": "queue", "Arn": attributes["Attributes"]["QueueArn"]}],
            )

    async def receive(self, count: int) -> list[Event]:
        """Wait until the queue has given ``count`` events; return them all."""

        async def enough() -> bool:
            async with self.client("sqs") as sqs:
                r = await sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            self.received += [json.loads(m["Body"]) for m in r.get("Messages", [])]
            return len(self.received) >= count

        await until(enough, f"{count} events in the queue", timeout_s=30, interval_s=0.1)
        return self.received

    async def delete(self) -> None:
        async with self.client("sqs") as sqs, self.client("events") as events:
            with suppress(Exception):
                await events.remove_targets(Rule=self.rule, EventBusName=self.name, Ids=["queue"])
                await events.delete_rule(Name=self.rule, EventBusName=self.name)
                await events.delete_event_bus(Name=self.name)
            if self.queue_url:
                await sqs.delete_queue(QueueUrl=self.queue_url)


@pytest.fixture
async def bus(moto: MotoServer) -> AsyncIterator[Bus]:
    created = Bus(moto)
    await created.create()
    yield created
    await created.delete()


def with_events(moto: MotoServer, secrets: list[str], eventbridge: dict[str, str]) -> Inventory:
    lines = "".join(f"      - id: {json.dumps(s)}\n" for s in secrets)
    events = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in eventbridge.items())
    body = f"events:\n  eventbridge:\n{events}databases:\n  - name: testdb\n    secrets:\n{lines}"
    return inventory(moto, body)


async def rotate(
    inv: Inventory,
    publisher: EventPublisher,
    moto: MotoServer,
    expected_current: dict[str, str] | None = None,
) -> list[Outcome]:
    """Rotate every secret of ``inv`` as the daemon's runner does, publishing its outcomes."""
    connection = AwsConnection(region=moto.region, endpoint_url=moto.endpoint_url)
    async with AwsSecretStore(connection) as store:
        runner = Runner(store, all_engines(), max_concurrent=4, max_concurrent_per_host=4)
        runner.events = publisher
        runner.expected_current.update(expected_current or {})
        return await runner.rotate_all(inv.secrets)


async def test_a_rotation_a_failure_and_a_skip_reach_a_rule_with_their_fields_and_no_secret(
    db: Database, secrets: Secrets, moto: MotoServer, bus: Bus, logged: list[Event]
) -> None:
    user, name = await make_login(db, secrets)
    old = await secrets.value(name)
    broken = await secrets.create(
        "broken",
        db.secret("nobody", "Broken-pass-7") | {"port": free_port()},
    )
    inv = with_events(
        moto,
        [name, broken],
        {"bus": bus.name, "role_arn": "arn:aws:iam::123456789012:role/rotd-events"},
    )

    seen_due = await secrets.version(name)
    assert inv.eventbridge is not None

    async with EventPublisher(inv, inv.eventbridge) as publisher:
        rotated, failed = await rotate(inv, publisher, moto)
        assert rotated.ok
        assert failed.error is not None
        # Found due before that rotation: as if another process had rotated it meanwhile.
        (skipped,) = await rotate(
            with_events(moto, [name], {"bus": bus.name}), publisher, moto, {name: seen_due}
        )
        assert skipped.skipped
        assert await publisher.flush(10)

    received = await bus.receive(3)
    new = await secrets.value(name)
    by_type = {e["detail-type"]: e for e in received}
    assert set(by_type) == {"Rotation Succeeded", "Rotation Failed", "Rotation Skipped"}
    for event in received:
        assert event["source"] == "rotd"
        text = json.dumps(event)
        for value in (old["password"], new["password"], "Broken-pass-7"):
            assert value not in text

    ok = by_type["Rotation Succeeded"]
    arn = (await secrets.describe(name))["ARN"]
    assert ok["resources"] == [arn]
    assert ok["detail"] == {
        "secret_id": name,
        "secret_arn": arn,
        "database": "testdb",
        "engine": rotated.engine,
        "strategy": "single_user",
        "version_id": rotated.version_id,
        "outcome": "succeeded",
        "attempt": 1,
        "duration_s": rotated.duration_s,
        "old_username": user,
        "new_username": user,
    }
    bad = by_type["Rotation Failed"]
    assert bad["resources"] == [(await secrets.describe(broken))["ARN"]]
    assert bad["detail"]["outcome"] == "failed"
    assert bad["detail"]["category"] == "unreachable"
    assert bad["detail"]["step"] == failed.error.step
    assert bad["detail"]["error"] == failed.error.reason
    assert by_type["Rotation Skipped"]["detail"]["outcome"] == "skipped"
    assert by_type["Rotation Skipped"]["detail"]["reason"] == skipped.skip_reason
    assert by_type["Rotation Skipped"]["resources"] == [arn]
    assert not [e for e in logged if e["event"].startswith("events.")]


async def test_a_missing_bus_never_delays_a_rotation_and_is_reported(
    db: Database, secrets: Secrets, moto: MotoServer, logged: list[Event]
) -> None:
    _, name = await make_login(db, secrets)
    inv = with_events(moto, [name], {"bus": f"rotd-test-absent-{uuid.uuid4().hex[:8]}"})
    assert inv.eventbridge is not None

    # Retries far apart: if the rotation waited on its event, it would take over a minute.
    async with EventPublisher(
        inv, inv.eventbridge, backoff_base_s=60, backoff_cap_s=60
    ) as publisher:
        started = time.monotonic()
        (outcome,) = await rotate(inv, publisher, moto)
        returned_s = time.monotonic() - started
        assert outcome.ok
        await until(lambda: any(e["event"] == "events.failed" for e in logged), "events.failed")
        assert publisher.queued == 1, "the event waits for its next attempt"

    assert returned_s < 30
    (failed,) = [e for e in logged if e["event"] == "events.failed"]
    assert failed["bus"] == inv.eventbridge.bus
    assert "ResourceNotFoundException" in failed["error"]
    assert failed["retry_in_s"] >= 30
    (dropped,) = [e for e in logged if e["event"] == "events.dropped"]
    assert dropped["count"] == 1
    assert publisher.counts == {"sent": 0, "retried": 1, "dropped": 1}
    assert [e for e in logged if e["event"] == "rotation.succeeded"]


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_the_daemon_publishes_resumed_and_parked_secrets_and_flushes_when_stopped(
    db: Database, secrets: Secrets, moto: MotoServer, bus: Bus, tmp_path: Path
) -> None:
    user, resumed = await make_login(db, secrets)
    await secrets.put_pending(resumed, db.secret(user, "Pending-pass-5"))
    _, one = await make_login(db, secrets)
    other = await secrets.create("same-login", await secrets.value(one))
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"id": resumed}, {"id": one}, {"id": other}],
        events={"eventbridge": {"bus": bus.name}},
    )
    daemon = Daemon(load(path), install_signal_handlers=False, notifier=Notifier(None))
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.run())
        await until(
            lambda: any(e["event"] == "rotation.resumed" for e in logs), "the resumed rotation"
        )
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0

    received = await bus.receive(3)
    kinds = sorted((e["detail-type"], e["detail"]["secret_id"]) for e in received)
    assert kinds == sorted(
        [("Rotation Resumed", resumed), ("Rotation Parked", one), ("Rotation Parked", other)]
    )
    for event in received:
        if event["detail-type"] == "Rotation Parked":
            assert event["detail"]["category"] == "shared_login"
            arn = (await secrets.describe(event["detail"]["secret_id"]))["ARN"]
            assert event["resources"] == [arn]
        assert "Pending-pass-5" not in json.dumps(event)
    assert not [e for e in logs if e["event"].startswith("events.")]


async def test_doctor_checks_the_bus_and_says_what_to_do_when_it_is_missing(
    moto: MotoServer, bus: Bus
) -> None:
    role = "arn:aws:iam::123456789012:role/rotd-events"
    found = inventory(moto, f"events:\n  eventbridge:\n    bus: {bus.name}\n    role_arn: {role}\n")
    absent = inventory(moto, "events:\n  eventbridge:\n    bus: rotd-test-absent\n")

    checks = {
        label: {c.name: c for c in await diagnose(inv, [], connection_for(inv))}
        for label, inv in (("found", found), ("absent", absent))
    }

    ok = checks["found"]["events.bus"]
    assert ok.level is Level.OK
    assert ok.detail.startswith(f"arn:aws:events:{moto.region}:123456789012:event-bus/{bus.name}")
    # moto's server cannot simulate policies: not checked, and why, for the role.
    permissions = checks["found"]["events.permissions"]
    assert permissions.level is Level.WARN
    assert permissions.detail.startswith("not checked (events:PutEvents)")
    missing = checks["absent"]["events.bus"]
    assert missing.level is Level.FAIL
    assert missing.detail == f"EventBridge has no bus 'rotd-test-absent' in {moto.region}"
    assert missing.fix is not None
    assert "aws events create-event-bus --name rotd-test-absent" in missing.fix


async def test_events_are_put_as_the_role_when_rotd_itself_may_not_put_them(
    iam_moto: IamMoto, monkeypatch: pytest.MonkeyPatch, logged: list[Event]
) -> None:
    user_arn, user = await iam_moto.user(["sts:AssumeRole"])
    role = await iam_moto.role(["events:PutEvents"], trusted=user_arn)
    for variable, value in user.items():
        monkeypatch.setenv(variable, value)
    server = iam_moto.server
    as_role = inventory(
        server, f"events:\n  eventbridge:\n    bus: default\n    role_arn: {role}\n"
    )
    as_user = inventory(server, "events:\n  eventbridge:\n    bus: default\n")
    publishers = [
        EventPublisher(inv, inv.eventbridge, max_attempts=1)
        for inv in (as_role, as_user)
        if inv.eventbridge is not None
    ]

    iam_moto.enforce(True)
    try:
        for publisher in publishers:
            async with publisher:
                publisher.rotation(
                    Outcome("prod/app", "orders", Strategy.SINGLE_USER, 0.1), attempt=1
                )
                assert await publisher.flush(30)
    finally:
        iam_moto.enforce(False)

    assert [p.counts for p in publishers] == [
        {"sent": 1, "retried": 0, "dropped": 0},
        {"sent": 0, "retried": 0, "dropped": 1},
    ]
    (failed,) = [e for e in logged if e["event"] == "events.failed"]
    assert "AccessDenied" in failed["error"]
    assert "rotd doctor checks both" in failed["action"]
    assert user["AWS_SECRET_ACCESS_KEY"] not in json.dumps(logged, default=str)


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_failed_hook_is_an_event_of_its_own_after_the_rotation_event(
    db: Database, secrets: Secrets, moto: MotoServer, bus: Bus
) -> None:
    user, name = await make_login(db, secrets)
    body = f"""\
        events:
          eventbridge: {{bus: {bus.name}}}
        databases:
          - name: testdb
            secrets:
              - id: {name}
                on_rotated:
                  - exec: [/bin/true]
                  - exec: [/bin/false]
                    retries: 0
        """
    inv = inventory(moto, body)
    assert inv.eventbridge is not None

    async with EventPublisher(inv, inv.eventbridge) as publisher:
        (rotated,) = await rotate(inv, publisher, moto)
        assert await publisher.flush(10)

    assert rotated.ok
    received = await bus.receive(2)
    by_type = {e["detail-type"]: e for e in received}
    assert set(by_type) == {"Rotation Succeeded", "Rotation Hook Failed"}
    hook = by_type["Rotation Hook Failed"]
    assert hook["resources"] == [rotated.arn]
    assert hook["detail"] == {
        "secret_id": name,
        "secret_arn": rotated.arn,
        "database": "testdb",
        "engine": "postgres",
        "strategy": "single_user",
        "version_id": rotated.version_id,
        "outcome": "hook_failed",
        "new_username": user,
        "hook": 2,
        "kind": "exec",
        "attempts": 1,
        "error": "exited with status 1",
    }
