"""The inventory's ``bridge`` blocks and ``rotation`` setting, as ``rotd validate`` reads them."""

from __future__ import annotations

from datetime import timedelta

from rotd.inventory import Rotation
from tests.fixtures.inventory import errors, parse

QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/rotd-bridge"
FUNCTION = "arn:aws:lambda:eu-west-1:123456789012:function:rotd-bridge"


def test_rotation_defaults_to_daemon_and_bridge_layers_most_specific_first() -> None:
    inv = parse(
        f"""
        aws: {{region: eu-west-1}}
        bridge: {{queue_url: {QUEUE}, function_arn: {FUNCTION}}}
        defaults: {{rotation: bridge}}
        databases:
          - name: a
            host: h
            secrets:
              - id: one
              - id: two
                rotation: daemon
          - name: b
            host: h
            bridge:
              queue_url: {QUEUE}-b
              function_arn: {FUNCTION}-b
              scan_every: 30s
            secrets: [{{id: three}}]
        """
    )
    one, two, three = inv.secrets
    assert (one.rotation, one.bridged) == (Rotation.BRIDGE, True)
    assert one.bridge is not None
    assert (one.bridge.queue_url, one.bridge.function_arn) == (QUEUE, FUNCTION)
    assert one.bridge.scan_every == timedelta(minutes=5)
    assert one.bridge.region == one.bridge.queue_region == "eu-west-1"
    assert (two.rotation, two.bridge) == (Rotation.DAEMON, None)
    assert three.bridge is not None
    assert three.bridge.queue_url.endswith("-b")
    assert three.bridge.scan_every == timedelta(seconds=30)


def test_a_bridged_secret_needs_a_bridge_in_its_region() -> None:
    found = errors(
        f"""
        aws: {{region: us-east-1}}
        databases:
          - name: a
            host: h
            secrets:
              - id: lonely
                rotation: bridge
          - name: b
            host: h
            bridge: {{queue_url: {QUEUE}, function_arn: {FUNCTION}}}
            secrets:
              - id: elsewhere
                rotation: bridge
        """
    )
    assert found == [
        "inv.yaml:6:13: secret 'lonely': rotation: bridge needs a bridge: block (queue_url, "
        "function_arn) at the top level, in defaults or on database 'a'",
        "inv.yaml:12:13: secret 'elsewhere': the bridge function is in region eu-west-1 but the "
        "secret in us-east-1: Secrets Manager invokes a rotation function of the secret's own "
        "region; deploy one there and set bridge.function_arn on database 'b'",
    ]


def test_bridge_addresses_are_checked_offline() -> None:
    found = errors(
        """
        bridge:
          queue_url: sqs://rotd-bridge
          function_arn: arn:aws:iam::123456789012:role/rotd
        rotation: sideways
        databases: []
        """
    )
    assert len(found) == 3, found
    assert "is not an SQS queue URL; it looks like https://sqs." in found[0]
    assert "is not a Lambda function ARN; it looks like arn:aws:lambda:" in found[1]
    assert "unknown key 'rotation'" in found[2]
