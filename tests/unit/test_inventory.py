"""The inventory: layered settings, and every configuration error located at FILE:LINE:COL."""

from __future__ import annotations

import gc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotd.engines import TlsMode
from rotd.errors import ConfigErrors
from rotd.inventory import Strategy, load, loads, secret_name
from tests.fixtures.inventory import errors, parse

EXAMPLE = Path(__file__).parents[2] / "config" / "example.yaml"


def test_the_example_inventory_is_valid() -> None:
    inventory = load(EXAMPLE)
    assert [s.id for s in inventory.secrets][:2] == ["prod/orders/app", "prod/orders/master"]
    assert inventory.summary().startswith(f"{EXAMPLE}: valid: 2 database(s), 3 secret(s)")


def test_settings_layer_defaults_then_database_then_secret() -> None:
    inventory = parse(
        """
        defaults:
          strategy: single_user
          schedule: rate(30 days)
          tls: require
          password: {length: 20, exclude_punctuation: true}
          master_secret: global/master
        databases:
          - name: orders
            host: db.internal
            schedule: rate(7 days)
            password: {length: 24}
            secrets:
              - id: a
              - id: b
                strategy: alternating_users
                window: 2h
                password: {exclude_characters: "xyz"}
                master_secret: orders/master
        """
    )
    a, b = inventory.secrets
    assert a.strategy is Strategy.SINGLE_USER
    assert a.schedule.text == "rate(7 days)"
    assert a.tls.mode is TlsMode.REQUIRE
    assert a.password.length == 24
    assert a.password.exclude_punctuation is True
    assert a.master_secret == "global/master"
    assert a.window == timedelta(hours=1)
    assert a.host == "db.internal"
    assert b.strategy is Strategy.ALTERNATING_USERS
    assert b.window == timedelta(hours=2)
    assert b.password.length == 24
    assert b.password.exclude_characters == "xyz"
    assert b.master_secret == "orders/master"


def test_an_empty_inventory_has_defaults() -> None:
    inventory = parse("databases: []\n")
    assert inventory.max_concurrent == 16
    assert inventory.max_concurrent_per_host == 4
    assert inventory.shutdown_grace == timedelta(seconds=30)
    assert inventory.secrets == ()


def test_unknown_keys_are_reported_with_line_column_and_allowed_keys() -> None:
    found = errors(
        """
        aws:
          regoin: us-east-1
        databases:
          - name: orders
            secrets:
              - id: a
                stratgy: single_user
        """
    )
    assert found[0].startswith("inv.yaml:2:3: unknown key 'regoin'; allowed here: region")
    assert found[1].startswith("inv.yaml:7:9: unknown key 'stratgy'; allowed here: ")
    assert "strategy" in found[1]


def test_wrong_types_and_enum_values_say_what_is_allowed() -> None:
    found = errors(
        """
        defaults:
          strategy: round_robin
          tls: maybe
        limits:
          max_concurrent: many
        databases:
          - name: orders
            port: 99999
            secrets:
              - id: a
        """
    )
    assert found[0].startswith("inv.yaml:2:13: defaults.strategy: ")
    assert "'single_user' or 'alternating_users'" in found[0]
    assert found[1].startswith("inv.yaml:3:8: defaults.tls: ")
    assert "'verify-full'" in found[1]
    assert found[2].startswith("inv.yaml:5:19: limits.max_concurrent: ")
    assert found[3].startswith("inv.yaml:8:11: databases.0.port: ")


def test_bad_schedules_and_windows_are_errors() -> None:
    found = errors(
        """
        defaults:
          schedule: every day
        databases:
          - name: orders
            secrets:
              - id: a
                schedule: cron(0 10 * * * *)
              - id: b
                window: soon
              - id: c
                schedule: rate(1 hours)
        """
    )
    assert len(found) == 4
    assert found[0].startswith("inv.yaml:2:13: defaults.schedule: ")
    assert found[1].startswith("inv.yaml:7:19: databases.0.secrets.0.schedule: ")
    assert found[2].startswith("inv.yaml:9:17: databases.0.secrets.1.window: ")
    assert found[3].startswith("inv.yaml:11:19: databases.0.secrets.2.schedule: ")


def test_a_window_as_long_as_the_schedule_is_an_error() -> None:
    found = errors(
        """
        databases:
          - name: orders
            secrets:
              - id: a
                schedule: rate(1 hour)
                window: 1h
        """
    )
    assert found == [
        "inv.yaml:4:13: secret 'a': window 1h is not shorter than its schedule rate(1 hour); "
        "the next rotation would be due before the window closes"
    ]


def test_duplicates_are_errors_also_by_name_and_arn() -> None:
    found = errors(
        """
        databases:
          - name: orders
            secrets:
              - id: prod/app
              - id: prod/app
          - name: orders
            secrets:
              - id: arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/app-AbCdEf
        """
    )
    assert found[0].startswith(
        "inv.yaml:5:13: secret 'prod/app' is already in the inventory (line 4)"
    )
    assert found[1].startswith("inv.yaml:6:11: duplicate database name 'orders' (first at line 2)")
    assert found[2].startswith("inv.yaml:8:13: secret 'arn:aws:secretsmanager:")


def test_duplicate_yaml_keys_are_errors() -> None:
    found = errors(
        """
        limits:
          max_concurrent: 4
          max_concurrent: 8
        """
    )
    assert found == ["inv.yaml:3:3: duplicate key 'max_concurrent'"]


def test_missing_required_keys_point_at_their_parent() -> None:
    found = errors(
        """
        databases:
          - secrets:
              - strategy: single_user
        """
    )
    assert found == [
        "inv.yaml:2:5: missing required key 'name'",
        "inv.yaml:3:9: missing required key 'id'",
    ]


def test_yaml_syntax_errors_have_a_position() -> None:
    found = errors("databases:\n  - name: [unclosed\n")
    assert found[0].startswith("inv.yaml:3:1: not valid YAML")


def test_yaml_tags_are_errors_at_their_value_not_a_crash() -> None:
    found = errors(
        """
        defaults:
          strategy: !foo single_user
          password: !!python/object:os.system {length: 32}
        databases:
          - !!python/object/apply:os.system [ls]
          - name: orders
            !bar tls: require
            secrets: !!set {a}
        """
    )
    assert found == [
        "inv.yaml:2:13: YAML tags (!foo) are not supported",
        "inv.yaml:3:13: YAML tags (!!python/object:os.system) are not supported",
        "inv.yaml:5:5: YAML tags (!!python/object/apply:os.system) are not supported",
        "inv.yaml:7:5: YAML tags (!bar) are not supported",
        "inv.yaml:8:14: YAML tags (!!set) are not supported",
    ]


def test_scalars_the_yaml_library_cannot_construct_are_errors() -> None:
    found = errors(
        """
        defaults:
          window: !!int soon
          timezone: 2024-13-45
          schedule: !!binary cmF0ZSgxIGRheSk=
        """
    )
    assert found == [
        "inv.yaml:2:11: 'soon' is not a valid !!int",
        "inv.yaml:3:13: '2024-13-45' is not a valid !!timestamp",
        "inv.yaml:4:13: YAML tags (!!binary) are not supported",
    ]
    # YAML 1.1 resolves a plain "=" to a tag nothing constructs; here it is just text.
    assert errors("defaults: {test_query: =, window: =}\n") == [
        "inv.yaml:1:35: defaults.window: duration '=' is not valid; write whole seconds (0, 90) "
        "or amounts with units d, h, m, s in that order, e.g. 30s, 10m, 1h, 2h30m, 1d, 1d12h"
    ]


def test_an_alias_inside_the_value_it_refers_to_is_an_error_at_the_alias() -> None:
    assert errors("databases: &x [*x]\n") == [
        "inv.yaml:1:16: the YAML alias *x is inside the value it refers to; "
        "recursive aliases are not supported"
    ]
    found = errors(
        """
        defaults: &d
          password: {length: 32}
          on_rotated:
            - exec: [/bin/true]
              extra: *d
        databases: *d
        """
    )
    assert found == [
        "inv.yaml:5:14: the YAML alias *d is inside the value it refers to; "
        "recursive aliases are not supported"
    ]


def test_aliases_may_repeat_values_but_not_multiply_them_without_bound() -> None:
    lines = ["v0: &v0 [a, b, c, d, e, f, g, h, i, j]"]
    lines += [f"v{n}: &v{n} [{', '.join([f'*v{n - 1}'] * 10)}]" for n in range(1, 10)]
    with pytest.raises(ConfigErrors) as caught:
        loads("\n".join(lines) + "\n", "inv.yaml")
    [error] = caught.value.errors
    assert (error.line, error.column) == (5, 5)  # where the expansion outgrew the budget
    assert error.reason.startswith("YAML aliases expand to too many values")

    # An anchored policy shared by thousands of secrets is what aliases are for.
    secrets = "".join(f"      - {{id: s{n}, password: *p, on_rotated: *h}}\n" for n in range(5000))
    inventory = parse(
        "defaults:\n"
        "  password: &p {length: 40, exclude_punctuation: true, exclude_characters: abc}\n"
        "  on_rotated: &h [{exec: [/usr/bin/reload, --all, --quiet]}, {webhook: http://hook/x}]\n"
        "databases:\n"
        "  - name: orders\n"
        "    secrets:\n" + secrets
    )
    assert len(inventory.secrets) == 5000
    assert inventory.secrets[-1].password.length == 40


def test_deep_nesting_is_an_error_not_a_recursion_error(monkeypatch: pytest.MonkeyPatch) -> None:
    deep = "[" * 900 + "]" * 900
    found = errors(f"defaults:\n  window: {deep}\n")
    assert found[-1] == "inv.yaml:2:73: values may be nested at most 64 levels deep"
    # Aliases nest values inside each other too.
    lines = ["v0: &v0 " + "[" * 40 + "]" * 40]
    lines += [f"v{n}: &v{n} {'[' * 40}*v{n - 1}{']' * 40}" for n in range(1, 40)]
    found = [e for e in errors("\n".join(lines)) if "nested" in e]
    assert found[0] == "inv.yaml:2:48: values may be nested at most 64 levels deep"
    # Without libyaml, PyYAML's own parser recurses, and nesting stops it first.
    monkeypatch.setattr("rotd.inventory._Loader", yaml.SafeLoader)
    [found] = errors(f"window: {'[' * 5000}{']' * 5000}\n")
    assert found == "inv.yaml:1:1: not valid YAML: nested too deeply"


def test_an_impossible_password_policy_is_an_error() -> None:
    found = errors(
        """
        defaults:
          password:
            exclude_punctuation: true
            exclude_numbers: true
            exclude_uppercase: true
            exclude_lowercase: true
        databases:
          - name: orders
            secrets:
              - id: a
        """
    )
    assert found == [
        "inv.yaml:10:13: secret 'a': password: the exclusions leave no character to build a "
        "password from"
    ]


def test_short_schedules_are_accepted_with_a_warning() -> None:
    inventory = parse(
        """
        databases:
          - name: orders
            secrets:
              - id: a
                schedule: rate(1 minute)
                window: 0
        """
    )
    assert len(inventory.warnings) == 1
    assert "more often than every 10 minutes" in inventory.warnings[0]


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(tmp_path / "missing.yaml")
    assert "cannot read the file" in str(caught.value)


def test_find_accepts_the_id_its_name_or_its_arn() -> None:
    inventory = parse(
        """
        databases:
          - name: orders
            secrets:
              - id: prod/app
        """
    )
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/app-AbCdEf"
    assert secret_name(arn) == "prod/app"
    spec = inventory.find(arn)
    assert spec is not None
    assert spec.id == "prod/app"
    assert inventory.find("prod/other") is None


def test_positions_follow_the_value_that_was_kept_and_aliases_point_at_their_anchor() -> None:
    found = errors(
        """
        defaults:
          window: &w soon
        limits:
          max_concurrent: many
          max_concurrent: 8
        databases:
          - name: orders
            port: 5432
            secrets:
              - id: a
                window: *w
                flavour: sweet
        """
    )
    assert found == [
        "inv.yaml:2:11: defaults.window: duration 'soon' is not valid; write whole seconds "
        "(0, 90) or amounts with units d, h, m, s in that order, e.g. 30s, 10m, 1h, 2h30m, 1d, "
        "1d12h",
        "inv.yaml:2:11: databases.0.secrets.0.window: duration 'soon' is not valid; write whole "
        "seconds (0, 90) or amounts with units d, h, m, s in that order, e.g. 30s, 10m, 1h, "
        "2h30m, 1d, 1d12h",
        "inv.yaml:4:19: limits.max_concurrent: Input should be a valid integer, unable to parse "
        "string as an integer",
        "inv.yaml:5:3: duplicate key 'max_concurrent'",
        "inv.yaml:12:9: unknown key 'flavour'; allowed here: strategy, schedule, window, "
        "timezone, password, tls, ca_file, master_secret, test_query, on_rotated, "
        "derived_keys, rotation, id",
    ]


def test_errors_inside_lists_and_under_odd_keys_keep_their_positions() -> None:
    found = errors(
        """
        defaults:
          on_rotated:
            - exec: [/bin/true]
            - webhook: ftp://example.com
        databases:
          - name: orders
            verify_endpoints: ["10.0.0.1:5432", "nowhere"]
            1: one
            "secrets":
              - id: a
                <<: {window: 2h}
        """
    )
    assert [e.split(": ")[0] for e in found] == [
        "inv.yaml:4:16",
        "inv.yaml:7:23",
        "inv.yaml:8:5",
        "inv.yaml:11:9",
    ]
    assert "webhook must be an http:// or https:// URL" in found[0]
    assert "'nowhere'" in found[1]
    assert found[2].endswith("keys must be strings, not 1")
    assert found[3].endswith("YAML merge keys (<<) are not supported")


def test_each_secret_knows_its_line_and_warnings_name_their_position() -> None:
    inventory = parse(
        """
        databases:
          - name: orders
            secrets:
              - id: a
              - strategy: alternating_users
                id: b
                schedule: rate(5 minutes)
                window: 0
          - name: billing
            secrets: [{id: c}]
        """
    )
    assert [(s.id, s.line) for s in inventory.secrets] == [("a", 4), ("b", 6), ("c", 10)]
    assert inventory.warnings == (
        "inv.yaml:6:13: secret 'b' rotates more often than every 10 minutes; Secrets Manager "
        "advises against that, since every rotation adds a version",
    )


ALTERNATING = {"strategy": "alternating_users", "master_secret": "orders/master"}
SHARED: dict[str, Any] = {
    "defaults": {
        "password": {"length": 20},
        "on_rotated": [{"webhook": "http://hooks.internal/rotated"}],
    },
    "databases": [
        {
            "name": "orders",
            "host": "orders.internal",
            "secrets": [
                {"id": "o1"},
                {"id": "o2"},
                {"id": "o3", **ALTERNATING},
                {"id": "o4", **ALTERNATING},
                {"id": "o5", "password": {"length": 24}, "on_rotated": [{"exec": ["/bin/true"]}]},
                {"id": "o6", "password": {"length": 24}, "on_rotated": [{"exec": ["/bin/no"]}]},
            ],
        },
        {
            "name": "billing",
            "port": 3306,
            "schedule": "rate(7 days)",
            "secrets": [
                {"id": "b1"},
                {"id": "b2", **ALTERNATING},
                {"id": "b3", "password": {"length": 24}, "window": "2h", "on_rotated": []},
            ],
        },
    ],
}


def test_secrets_that_share_settings_resolve_as_if_each_stood_alone() -> None:
    inventory = loads(yaml.safe_dump(SHARED))
    assert len(inventory.secrets) == 9
    for database in SHARED["databases"]:
        for secret in database["secrets"]:
            alone = {**SHARED, "databases": [{**database, "secrets": [secret]}]}
            (spec,) = loads(yaml.safe_dump(alone)).secrets
            assert inventory.find(secret["id"]) == spec
    by_id = {s.id: s for s in inventory.secrets}
    assert by_id["o1"].host == "orders.internal"
    assert by_id["b1"].host is None
    assert by_id["b2"].port == 3306
    assert by_id["b2"].schedule.text == "rate(7 days)"
    assert [h.argv for h in by_id["o6"].hooks] == [("/bin/no",)]
    assert by_id["b3"].hooks == ()
    assert by_id["b3"].password.length == 24


def test_a_problem_shared_by_many_secrets_is_reported_for_each() -> None:
    found = errors(
        """
        defaults:
          schedule: rate(1 hour)
        databases:
          - name: orders
            window: 1h
            secrets:
              - id: a
              - id: b
              - id: c
                window: 10m
                password: &none
                  {exclude_lowercase: true, exclude_uppercase: true, exclude_numbers: true,
                   exclude_punctuation: true}
              - {id: d, window: 10m}
              - {id: e, window: 10m, password: *none}
        """
    )
    assert [e.split(": secret")[0] for e in found] == [
        "inv.yaml:7:13",
        "inv.yaml:8:13",
        "inv.yaml:9:13",
        "inv.yaml:15:14",
    ]
    assert found[1].startswith("inv.yaml:8:13: secret 'b': window 1h is not shorter")
    assert found[3] == (
        "inv.yaml:15:14: secret 'e': password: the exclusions leave no character to build a "
        "password from"
    )


def test_loading_leaves_the_garbage_collector_as_it_found_it() -> None:
    assert gc.isenabled()
    parse("databases: []\n")
    assert gc.isenabled()
    errors("databases: [{name: orders}]\n")
    assert gc.isenabled()
    gc.disable()
    try:
        parse("databases: []\n")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_field_errors_do_not_hide_the_checks_across_entries() -> None:
    """Every problem is reported in one pass: the checks across entries run on every entry that
    parsed, next to the field errors, all in the order of the file."""
    found = errors(
        """
        defaults:
          strategy: nope
        limits:
          max_concurrent: 0
        databases:
          - name: orders
            port: 99999
            secrets:
              - id: prod/app
                tls: sometimes
              - id: prod/app
              - id: prod/long-window
                schedule: rate(1 hour)
                window: 2h
              - id: prod/no-alphabet
                password: {exclude_lowercase: true, exclude_uppercase: true,
                           exclude_numbers: true, exclude_punctuation: true}
          - name: orders
            secrets:
              - id: arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/app-AbCdEf
                windw: 1h
              - id: 42
        """
    )
    assert [e.split(": ", 1)[0] for e in found] == [
        "inv.yaml:2:13",  # defaults.strategy
        "inv.yaml:4:19",  # limits.max_concurrent
        "inv.yaml:7:11",  # port
        "inv.yaml:10:14",  # tls
        "inv.yaml:11:13",  # duplicate secret
        "inv.yaml:12:13",  # window not shorter than schedule
        "inv.yaml:15:13",  # empty alphabet
        "inv.yaml:18:11",  # duplicate database name
        "inv.yaml:20:13",  # duplicate by ARN
        "inv.yaml:21:9",  # unknown key
        "inv.yaml:22:13",  # id must be a string
    ], "\n".join(found)
    assert "secret 'prod/app' is already in the inventory (line 9)" in found[4]
    assert "secret 'prod/long-window': window 2h is not shorter than" in found[5]
    assert "secret 'prod/no-alphabet': password: the exclusions leave no character" in found[6]
    assert "duplicate database name 'orders' (first at line 6)" in found[7]
    assert "secret 'arn:aws:secretsmanager:" in found[8]
    assert "already in the inventory (line 9)" in found[8]


def test_a_check_that_needs_a_setting_that_failed_is_not_guessed() -> None:
    """With a layer's schedule or password invalid, the window and alphabet checks would judge
    settings the file does not hold: only the field errors are reported."""
    found = errors(
        """
        defaults:
          schedule: rate(1 fortnight)
          password: {length: 3, exclude_punctuation: true, exclude_numbers: true,
                     exclude_uppercase: true, exclude_lowercase: true}
        databases:
          - name: orders
            window: 40d
            secrets:
              - id: a
              - id: b
                timezone: Mars/Olympus
        """
    )
    assert len(found) == 3, "\n".join(found)
    assert found[0].startswith("inv.yaml:2:13: defaults.schedule:")
    assert found[1].startswith("inv.yaml:3:22: defaults.password.length:")
    assert found[2].startswith("inv.yaml:11:19: databases.0.secrets.1.timezone:")


def test_a_value_yaml_could_not_build_leaves_its_checks_out_but_not_the_others() -> None:
    found = errors(
        """
        databases:
          - name: orders
            secrets:
              - id: a
                window: !custom 1h
                schedule: rate(30 minutes)
              - id: a
        """
    )
    assert [e.split(": ", 1)[0] for e in found] == ["inv.yaml:5:17", "inv.yaml:7:13"], found
    assert "already in the inventory" in found[1]


def test_hooks_that_could_never_run_are_located_errors() -> None:
    """Checked offline: a webhook's scheme, host, port and syntax, as both the URL parser of
    the logs and the HTTP client read it, and an exec hook's program and arguments."""
    found = errors(
        """
        defaults:
          on_rotated:
            - webhook: http://127.0.0.1:99999/x
            - webhook: http://[::1/x
            - webhook: http://[not-ipv6]/x
            - webhook: http://host:8o/x
            - webhook: http://host:0/x
            - webhook: http:///x
            - webhook: ftp://example.com/x
            - webhook: "http://exa mple.com/x"
            - webhook: http://xn--zz/x
            - exec: [" "]
            - exec: ["/bin/echo", "a\\0b"]
            - exec: []
            - {webhook: "https://ok.example/x", hmac_key_file: ""}
            - {webhook: "https://ok.example/x", timeout: 0}
            - {webhook: "https://ok.example/x", retries: 11}
        databases: []
        """
    )
    assert [e.split(": ")[0] for e in found] == [f"inv.yaml:{n}:16" for n in range(3, 12)] + [
        "inv.yaml:12:13",
        "inv.yaml:13:13",
        "inv.yaml:14:13",
        "inv.yaml:15:56",
        "inv.yaml:16:50",
        "inv.yaml:17:50",
    ]
    reasons = [e.split(": ", 2)[2] for e in found]
    assert reasons[0] == "not a valid URL: the port must be 1 to 65535"
    assert reasons[1].startswith("not a valid URL: an IPv6 host in [brackets] is not closed")
    assert reasons[2].startswith("not a valid URL: an IPv6 host")
    assert reasons[3] == "not a valid URL: the port is not a number"
    assert reasons[4] == "not a valid URL: the port must be 1 to 65535, not 0"
    assert reasons[5].startswith("the URL names no host")
    assert reasons[6] == "webhook must be an http:// or https:// URL"
    assert reasons[7] == "the URL must not contain spaces or control characters"
    assert reasons[8] == "not a valid URL: the host cannot be parsed"
    assert reasons[9] == "the program, the first item, is empty"
    assert reasons[10].startswith("an argument holds a NUL character")
    assert "at least 1 item" in reasons[11]
    assert "at least 1 character" in reasons[12]
    assert reasons[13] == "a hook's timeout must be at least 1s"
    assert "less than or equal to 10" in reasons[14]
    assert "tok" not in " ".join(found)


def test_a_valid_webhook_and_empty_arguments_after_the_program_are_accepted() -> None:
    inventory = parse(
        """
        defaults:
          on_rotated:
            - webhook: "https://[::1]:8443/hooks/x?tok=1"
            - webhook: http://user@deploy.internal:8080/x
            - exec: [ssh-keygen, -N, ""]
        databases:
          - name: orders
            secrets: [{id: a}]
        """
    )
    (spec,) = inventory.secrets
    assert [h.url for h in spec.hooks[:2]] == [
        "https://[::1]:8443/hooks/x?tok=1",
        "http://user@deploy.internal:8080/x",
    ]
    assert spec.hooks[2].argv == ("ssh-keygen", "-N", "")


def test_nodes_are_host_port_pairs_carried_to_every_secret_of_the_database() -> None:
    inv = parse(
        """
        databases:
          - name: cache
            engine: redis
            nodes: ["10.0.0.1:6379", "[::1]:6380"]
            secrets:
              - id: a
          - name: other
            secrets:
              - id: b
        """
    )
    assert inv.secrets[0].nodes == (("10.0.0.1", 6379), ("::1", 6380))
    assert inv.secrets[1].nodes == ()
    found = errors(
        """
        databases:
          - name: cache
            nodes: ["10.0.0.1:6379", "replica"]
            secrets:
              - id: a
        """
    )
    assert len(found) == 1
    assert found[0].startswith("inv.yaml:3:12: databases.0.nodes: ")
    assert "a node must be HOST:PORT" in found[0]
    assert "'replica'" in found[0]
