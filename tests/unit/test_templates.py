"""Derived keys' templates: checked offline with positions, rendered from a secret's keys."""

from __future__ import annotations

import json
import textwrap
from urllib.parse import unquote, urlsplit

import pytest

from rotd import templates
from rotd.errors import ConfigErrors
from rotd.inventory import loads
from rotd.observability import get_logger
from rotd.testing.kit import rendered_logs

URL = (
    "postgresql://{{ username | urlencode }}:{{ password | urlencode }}"
    "@{{ host }}:{{ port }}/{{ dbname }}"
)
KEYS = {
    "engine": "postgres",
    "host": "db.internal",
    "port": 5432,
    "dbname": "app",
    "username": "app user",
    "password": "p/@:%?#&=+ 'é",
}


def test_a_url_survives_a_password_with_every_url_special_character() -> None:
    url = templates.render(URL, KEYS)

    parts = urlsplit(url)
    assert unquote(parts.password or "") == KEYS["password"]
    assert unquote(parts.username or "") == "app user"
    assert (parts.hostname, parts.port, parts.path) == ("db.internal", 5432, "/app")


def test_a_rendered_value_with_the_password_never_reaches_a_log() -> None:
    keys = {**KEYS, "password": "Derived-Secret-x9"}
    url = templates.render(URL, keys, what="derived key 'url'")
    hostport = templates.render("{{ host }}:{{ port }}", keys)

    lines: list[str] = []
    with rendered_logs(lines):
        get_logger("test").info("leak.tried", url=url, where=hostport)

    (line,) = lines
    assert "Derived-Secret" not in line
    assert "postgresql://" not in line
    assert json.loads(line)["where"] == "db.internal:5432", "without the password: no secret"


def test_a_missing_name_fails_naming_it_and_never_a_value() -> None:
    keys = {k: v for k, v in KEYS.items() if k != "dbname"}

    with pytest.raises(templates.RenderError) as raised:
        templates.render(URL, keys, what="derived key 'url'")

    assert str(raised.value).startswith("derived key 'url': ")
    assert "'dbname'" in str(raised.value)
    assert KEYS["password"] not in str(raised.value)


def test_the_sandbox_refuses_reaching_into_python() -> None:
    with pytest.raises(templates.RenderError, match="unsafe"):
        templates.render("{{ password.__class__.__mro__ }}", KEYS)


@pytest.mark.parametrize(
    ("source", "line", "column", "reason"),
    [
        ("postgresql://{{ hots }}/", 1, 17, "'hots' is not a key a postgres secret has"),
        ("{{ password | urlencod }}", 1, 15, "unknown filter 'urlencod'"),
        ("a\n{{ host is shiny }}", 2, 12, "unknown test 'shiny'"),
        ("x\ny\n{{ host ", 3, 1, "template syntax error"),
        ("{% include 'other' %}", 1, 1, "cannot include"),
    ],
)
def test_problems_are_placed_in_the_template(
    source: str, line: int, column: int, reason: str
) -> None:
    (problem,) = templates.problems(source, templates.secret_names("postgres"), engine="postgres")

    assert (problem.line, problem.column) == (line, column)
    assert reason in problem.reason


def test_names_depend_on_the_engine() -> None:
    assert templates.problems("{{ dbname }}", templates.secret_names("postgres")) == []
    assert templates.problems("{{ dbname }}", templates.secret_names("redis"))
    assert templates.secret_names("exec") is None, "an exec secret holds whatever it needs"


def _errors(body: str) -> list[str]:
    with pytest.raises(ConfigErrors) as raised:
        loads(textwrap.dedent(body), "inv.yaml")
    return [str(e) for e in raised.value.errors]


def test_validate_places_each_broken_template_at_its_line_and_column() -> None:
    errors = _errors(
        """\
        defaults:
          derived_keys:
            url: "postgresql://{{ username }}:{{ pasword | urlencode }}@{{ host }}/"
        databases:
          - name: cache
            engine: redis
            secrets:
              - id: a
                derived_keys:
                  dsn: |
                    host={{ host }}
                    db={{ dbname }}
          - name: pg
            engine: postgres
            derived_keys:
              jdbc: 'jdbc:postgresql://{{ host | hostify }}/'
            secrets:
              - id: b
                derived_keys:
                  password: "{{ username }}"
        """
    )

    assert errors == [
        "inv.yaml:3:42: derived key 'url': 'pasword' is not a key a redis secret has; "
        "known keys: engine, host, masterarn, password, port, ssl, username",
        "inv.yaml:12:19: derived key 'dsn': 'dbname' is not a key a redis secret has; "
        "known keys: engine, host, masterarn, password, port, ssl, username",
        "inv.yaml:16:42: derived key 'jdbc': unknown filter 'hostify'; "
        "e.g. urlencode, default, lower, upper, replace, trim",
        "inv.yaml:20:11: databases.1.secrets.0.derived_keys: 'password' is a key rotd reads "
        "from the secret itself; a derived key may not replace it: choose another name "
        "(url, DATABASE_URL, dsn)",
    ]


def test_derived_keys_layer_key_by_key_and_null_removes_one() -> None:
    inventory = loads(
        textwrap.dedent(
            """\
            defaults:
              derived_keys:
                url: "a://{{ host }}"
                dsn: "host={{ host }}"
            databases:
              - name: pg
                engine: postgres
                derived_keys:
                  url: "b://{{ host }}"
                secrets:
                  - id: one
                  - id: two
                    derived_keys:
                      dsn: null
                      jdbc: "c://{{ host }}"
            """
        )
    )

    one, two = inventory.secrets
    assert one.derived_keys == (("dsn", "host={{ host }}"), ("url", "b://{{ host }}"))
    assert two.derived_keys == (("jdbc", "c://{{ host }}"), ("url", "b://{{ host }}"))
    assert inventory.derived_keys == (("dsn", "host={{ host }}"), ("url", "a://{{ host }}"))
