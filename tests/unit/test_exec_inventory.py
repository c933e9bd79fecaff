"""The inventory's ``engine: exec`` databases: their ``exec:`` block checked offline, with
FILE:LINE:COL, and carried to the engine as its settings."""

from __future__ import annotations

import textwrap

import pytest

from rotd.engines import Endpoint, Tls
from rotd.errors import ConfigErrors
from rotd.inventory import Inventory, Strategy, loads

BROKER = """
databases:
  - name: broker
    engine: exec
    exec:
      set_password: [/usr/local/lib/rotd/rabbitmq, set]
      test_login: [/usr/local/lib/rotd/rabbitmq, test]
%s
    secrets:
      - id: prod/broker/app
%s
"""


def parse(exec_extra: str = "", secret_extra: str = "", text: str = BROKER) -> Inventory:
    return loads(textwrap.dedent(text % (exec_extra, secret_extra)).lstrip("\n"), "inv.yaml")


def errors(exec_extra: str = "", secret_extra: str = "", text: str = BROKER) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        parse(exec_extra, secret_extra, text)
    return [str(e) for e in caught.value.errors]


def test_the_exec_block_reaches_the_engine_as_its_settings() -> None:
    spec = parse("      timeout: 45s")
    assert spec.secrets[0].engine == "exec"
    settings = spec.secrets[0].engine_settings
    assert settings["set_password"] == ("/usr/local/lib/rotd/rabbitmq", "set")
    assert settings["test_login"] == ("/usr/local/lib/rotd/rabbitmq", "test")
    assert settings["mirror_user"] is None
    assert settings["timeout_s"] == 45.0
    hash(Endpoint("exec", "h", 1, None, Tls(), settings))  # frozen: usable as a key


def test_alternating_users_needs_the_mirror_user_command() -> None:
    found = errors(secret_extra="        strategy: alternating_users")
    assert found == [
        "inv.yaml:9:13: secret 'prod/broker/app': engine 'exec' lacks the capability "
        "mirror_user, which strategy alternating_users needs (use single_user)"
    ]
    spec = parse(
        "      mirror_user: [/usr/local/lib/rotd/rabbitmq, mirror]",
        "        strategy: alternating_users",
    ).secrets[0]
    assert spec.strategy is Strategy.ALTERNATING_USERS
    assert spec.engine_settings["mirror_user"] == ("/usr/local/lib/rotd/rabbitmq", "mirror")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("      timeout: 0s", "7:16: databases.0.exec.timeout: the commands' timeout must be"),
        ("      timeout: soon", "7:16: databases.0.exec.timeout: duration 'soon' is not valid"),
        ("      mirror_user: []", "7:20: databases.0.exec.mirror_user: List should have at least"),
        (
            "      mirror_user: ['', x]",
            "7:20: databases.0.exec.mirror_user: the program, the first",
        ),
        ("      lock: [x]", "7:7: unknown key 'lock'; allowed here: set_password, test_login, mi"),
    ],
)
def test_a_bad_exec_block_is_an_error_where_it_is(extra: str, message: str) -> None:
    found = errors(extra)
    assert len(found) == 1
    assert found[0].startswith("inv.yaml:" + message), found


def test_a_missing_command_is_named() -> None:
    text = """
    databases:
      - name: broker
        engine: exec
        exec:
          set_password: [x]
    %s
        secrets:
          - id: prod/broker/app
    %s
    """
    assert errors(text=text) == ["inv.yaml:5:7: missing required key 'test_login'"]


def test_exec_goes_with_engine_exec_only_and_the_other_way_round() -> None:
    no_block = """
    databases:
      - name: broker
        engine: exec
    %s%s
        secrets:
          - id: prod/broker/app
    """
    assert errors(text=no_block)[0].startswith(
        "inv.yaml:2:5: databases.0: engine: exec needs an exec: block"
    )
    other = BROKER.replace("engine: exec", "engine: postgres")
    assert errors(text=other) == [
        "inv.yaml:5:7: databases.0.exec: exec: applies only to a database with engine: exec"
    ]


def test_tls_and_test_query_that_exec_cannot_honour_are_errors() -> None:
    assert (
        "lacks the capability tls, which tls: verify-full needs"
        in errors(secret_extra="        tls: verify-full")[0]
    )
    assert (
        "test_query does not apply to engine exec"
        in errors(secret_extra="        test_query: SELECT 1")[0]
    )


def test_verify_endpoints_are_refused_since_test_login_reads_the_secret() -> None:
    text = BROKER.replace("    secrets:", "    verify_endpoints: [10.0.0.2:5672]\n    secrets:")
    assert errors(text=text) == [
        "inv.yaml:2:5: databases.0: verify_endpoints does not apply to engine exec: its "
        "test_login command receives the secret's JSON, not an address to log in through"
    ]
