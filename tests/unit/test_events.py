"""Rotation events offline: the ``events`` section, the events built from outcomes, the queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from rotd.errors import Category, SecretError
from rotd.events import EventPublisher, hook_failed_event, parked_event, rotation_event
from rotd.inventory import EventBridge, Strategy
from rotd.observability import redactor
from rotd.protocol import Outcome
from rotd.testing.kit import processed_events
from tests.fixtures.inventory import errors, parse

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/app-AbC123"


def test_the_events_section_takes_region_and_endpoint_from_the_bus_or_the_aws_section() -> None:
    by_name = parse(
        """
        aws: {region: eu-west-1, endpoint_url: "http://127.0.0.1:5000"}
        events:
          eventbridge: {bus: rotations}
        """
    )
    assert by_name.eventbridge == EventBridge(
        bus="rotations",
        region="eu-west-1",
        role_arn=None,
        endpoint_url="http://127.0.0.1:5000",  # an emulator serves every service
        source="rotd",
    )
    by_arn = parse(
        """
        aws: {region: eu-west-1, endpoint_url: "https://vpce-1.secretsmanager.eu-west-1.vpce.amazonaws.com"}
        events:
          eventbridge:
            bus: arn:aws:events:us-east-2:210987654321:event-bus/central
            role_arn: arn:aws:iam::210987654321:role/rotd-events
            source: acme.rotd
        """
    )
    assert by_arn.eventbridge is not None
    assert by_arn.eventbridge.region == "us-east-2"
    assert by_arn.eventbridge.endpoint_url is None  # a Secrets Manager VPC endpoint is not one
    assert by_arn.eventbridge.role_arn == "arn:aws:iam::210987654321:role/rotd-events"
    assert by_arn.eventbridge.source == "acme.rotd"
    assert parse("databases: []\n").eventbridge is None


def test_a_wrong_events_section_is_located_and_says_what_to_write() -> None:
    found = errors(
        """
        events:
          eventbridge:
            bus: "arn:aws:sns:us-east-1:123456789012:topic"
            role_arn: rotd-events
            source: aws.secretsmanager
            buss: x
        """
    )
    assert found[0].startswith("inv.yaml:3:10: events.eventbridge.bus: bus must be an event bus")
    assert found[1].startswith(
        "inv.yaml:4:15: events.eventbridge.role_arn: 'rotd-events' is not an IAM role ARN"
    )
    assert found[2].startswith("inv.yaml:5:13: events.eventbridge.source: source may not start")
    assert found[3].startswith("inv.yaml:6:5: unknown key 'buss'; allowed here: bus, region,")
    assert errors("events:\n  eventbridge: {region: us-east-1}\n") == [
        "inv.yaml:2:16: missing required key 'bus'"
    ]


def outcome(**fields: Any) -> Outcome:
    base: dict[str, Any] = {
        "secret_id": "prod/app",
        "database": "orders",
        "strategy": Strategy.ALTERNATING_USERS,
        "duration_s": 1.25,
        "arn": ARN,
        "engine": "postgres",
        "old_username": "app",
        "new_username": "app_clone",
        "version_id": "v-2",
    }
    return Outcome(**(base | fields))


def test_each_outcome_has_its_detail_type_and_the_fields_of_its_log_line() -> None:
    ok = rotation_event(outcome(), attempt=1)
    assert ok.detail_type == "Rotation Succeeded"
    assert ok.resources == (ARN,)
    assert ok.detail == {
        "secret_id": "prod/app",
        "secret_arn": ARN,
        "database": "orders",
        "engine": "postgres",
        "strategy": "alternating_users",
        "version_id": "v-2",
        "outcome": "succeeded",
        "attempt": 1,
        "duration_s": 1.25,
        "old_username": "app",
        "new_username": "app_clone",
    }
    assert rotation_event(outcome(resumed=True), attempt=2).detail_type == "Rotation Resumed"
    skipped = rotation_event(outcome(skipped=True, skip_reason="rotated elsewhere"), attempt=1)
    assert (skipped.detail_type, skipped.detail["reason"]) == (
        "Rotation Skipped",
        "rotated elsewhere",
    )
    error = SecretError("prod/app", "setSecret", Category.LOCKED, "the login is locked")
    failed = rotation_event(outcome(error=error, arn=None, version_id=None), attempt=3)
    assert failed.detail_type == "Rotation Failed"
    assert failed.resources == ()  # no ARN known, and the id is a name
    assert {k: failed.detail[k] for k in ("step", "category", "transient", "error", "attempt")} == {
        "step": "setSecret",
        "category": "locked",
        "transient": True,
        "error": "the login is locked",
        "attempt": 3,
    }
    inventory = f"""
        aws: {{region: eu-west-1}}
        databases:
          - name: orders
            secrets:
              - id: {ARN}
    """
    spec = parse(inventory).secrets[0]
    when = datetime(2026, 12, 1, tzinfo=UTC)
    parked = parked_event(spec, None, Category.AUTH, "refused", failures=2, next_attempt=when)
    assert parked.detail_type == "Rotation Parked"
    assert parked.resources == (ARN,)  # the id is an ARN
    assert parked.detail["next_attempt"] == "2026-12-01T00:00:00+00:00"
    hook = hook_failed_event(outcome(), index=2, kind="exec", attempts=3, error="exited with 1")
    assert hook.detail_type == "Rotation Hook Failed"
    assert (hook.detail["hook"], hook.detail["kind"], hook.detail["attempts"]) == (2, "exec", 3)


def test_no_secret_value_reaches_an_entry() -> None:
    password = "Leaky-pass-8c1f"
    redactor.add(password)
    error = SecretError("prod/app", "testSecret", Category.AUTH, f"login with {password} failed")
    entry = rotation_event(outcome(error=error), attempt=1).entry("rotations", "rotd")
    assert password not in json.dumps(entry, default=str)
    assert json.loads(entry["Detail"])["error"].startswith("login with ")
    assert (entry["Source"], entry["EventBusName"], entry["DetailType"]) == (
        "rotd",
        "rotations",
        "Rotation Failed",
    )


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    captured: list[dict[str, Any]] = []
    with processed_events(lambda _logger, _name, event: captured.append(event)):
        yield captured


def test_a_full_queue_drops_its_oldest_event_and_counts_it(logged: list[dict[str, Any]]) -> None:
    inventory = parse("events:\n  eventbridge: {bus: rotations, region: us-east-1}\n")
    assert inventory.eventbridge is not None
    publisher = EventPublisher(inventory, inventory.eventbridge, max_queued=2)
    seen: list[tuple[str, int]] = []
    publisher.on_result = lambda result, count: seen.append((result, count))

    for attempt in (1, 2, 3):
        publisher.rotation(outcome(), attempt=attempt)

    assert publisher.queued == 2
    assert [e.detail["attempt"] for e in publisher._queue] == [2, 3]
    assert publisher.counts["dropped"] == 1
    assert seen == [("dropped", 1)]
    (dropped,) = [e for e in logged if e["event"] == "events.dropped"]
    assert dropped["count"] == 1
    assert dropped["reason"] == "the queue holds 2 events unsent"
