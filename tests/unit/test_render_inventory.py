"""The inventory's ``render`` entries: their defaults, and every mistake located offline."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rotd.render import fill
from tests.fixtures.inventory import errors, parse


def test_an_entry_takes_its_defaults_and_counts_in_the_summary() -> None:
    inventory = parse(
        """
        render:
          - secret: prod/orders/app
            path: /run/rotd/orders.json
          - secret: arn:aws:secretsmanager:eu-west-1:123456789012:secret:shared/api-AbCdEf
            path: /run/rotd/../rotd/api.env
            template: "KEY={{ key }}\\n"
            mode: "0640"
            owner: app
            group: 1000
            on_change: [kill, -HUP, "1"]
            refresh: 1s
        """
    )
    first, second = inventory.renders
    assert (first.mode, first.refresh, first.template, first.on_change) == (
        0o600,
        timedelta(minutes=5),
        None,
        None,
    )
    assert first.line == 2
    assert second.path == "/run/rotd/api.env"
    assert (second.mode, second.owner, second.group) == (0o640, "app", 1000)
    assert second.on_change == ("kill", "-HUP", "1")
    assert second.refresh == timedelta(seconds=1)
    assert inventory.summary() == "inv.yaml: valid: 0 database(s), 0 secret(s), 2 rendered file(s)"


def test_every_mistake_is_located() -> None:
    found = errors(
        """
        render:
          - secret: "bad name!"
            path: relative/app.env
            template: "{{ url "
            mode: 0600
            refresh: 0s
          - secret: ok
            path: /run/a.env
            on_change: []
            colour: blue
          - secret: ok2
            path: /run/a.env
            mode: "4755"
        """
    )
    assert found == [
        "inv.yaml:2:13: render.0.secret: 'bad name!' is neither a secret name (letters, digits "
        "and /_+=.@-, at most 512) nor a Secrets Manager ARN",
        "inv.yaml:3:11: render.0.path: path must be an absolute file path such as "
        "/run/rotd/app.env",
        "inv.yaml:4:15: render.0.template: template line 1: template syntax error: "
        "unexpected end of template, expected 'end of print statement'.",
        'inv.yaml:5:11: render.0.mode: mode must be a quoted octal string such as "0600" '
        "(unquoted, YAML reads 0600 as a number)",
        "inv.yaml:6:14: render.0.refresh: must be at least 1s",
        "inv.yaml:9:16: render.1.on_change: List should have at least 1 item after validation, "
        "not 0",
        "inv.yaml:10:5: unknown key 'colour'; allowed here: secret, path, template, mode, owner, "
        "group, on_change, on_change_timeout, refresh",
        "inv.yaml:13:11: render.2.mode: mode may not set setuid, setgid or sticky bits",
    ]


def test_two_entries_may_not_write_one_file() -> None:
    found = errors(
        """
        render:
          - secret: a
            path: /run/rotd/app.env
          - secret: b
            path: /run/rotd/./app.env
        """
    )
    assert found == [
        "inv.yaml:5:11: render.1.path: /run/rotd/app.env is already rendered (line 3); "
        "each file may be written by one entry"
    ]


def test_the_template_is_sandboxed() -> None:
    inventory = parse(
        """
        render:
          - secret: a
            path: /run/a.env
            template: "{{ secret.__class__.__mro__ }}"
        """
    )
    from rotd.render import RenderError

    with pytest.raises(RenderError) as caught:
        fill(inventory.renders[0], '{"password": "Sandbox-pass-1"}')
    assert caught.value.stage == "template"
    assert "unsafe" in caught.value.reason
