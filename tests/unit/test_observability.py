"""The redactor masks every registered secret in any text, exceptions included."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pymysql.converters
import pytest

from rotd.observability import REDACTED, Redactor


def test_registered_values_are_masked_wherever_they_appear() -> None:
    redactor = Redactor()
    redactor.add("s3cret-value", "another-one-xyz", None, "abc")
    text = "login s3cret-value failed; also another-one-xyz and abc stay"
    assert redactor.scrub(text) == f"login {REDACTED} failed; also {REDACTED} and abc stay"


def test_nested_values_and_exceptions_are_scrubbed() -> None:
    redactor = Redactor()
    redactor.add("hunter2-hunter2")
    event = {"a": ["x hunter2-hunter2"], "b": {"c": ValueError("bad hunter2-hunter2")}}
    assert redactor.scrub_value(event) == {
        "a": [f"x {REDACTED}"],
        "b": {"c": f"ValueError: bad {REDACTED}"},
    }


def test_the_oldest_values_are_forgotten_beyond_capacity() -> None:
    redactor = Redactor(capacity=2)
    redactor.add("first-value", "second-value", "third-value")
    assert redactor.scrub("first-value") == "first-value"
    assert redactor.scrub("third-value") == REDACTED


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    redactor = Redactor()
    redactor.add("pass-word", "xxpass-wordyy")
    assert redactor.scrub("[xxpass-wordyy]") == f"[{REDACTED}]"


ALPHABETS = (
    "\"\\'%+&=/ ",
    "abc\"\\'%+&=/ éß日本😀",
    "\x00\n\t\x1a\x7f\"\\'é",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~\"'\\%+&=/ é",
)


# Letters and digits only: every writer below leaves it as it is, and it holds no quote that
# would change how a repr quotes.
MARK = "Mark0mark1Mark2"


def writers(value: str) -> dict[str, Callable[[str], str]]:
    """How the standard library, rotd's drivers and scripts write a value: JSON (a secret's JSON,
    and that inside JSON or a repr), Python reprs with either quote, URLs, SQL literals."""
    found: dict[str, Callable[[str], str]] = {
        "json": lambda v: json.dumps(v),
        "json (UTF-8)": lambda v: json.dumps(v, ensure_ascii=False),
        "json, upper-case hex": lambda v: re.sub(
            r"\\u[0-9a-f]{4}", lambda m: "\\u" + m[0][2:].upper(), json.dumps(v)
        ),
        "json, slash escaped": lambda v: json.dumps(v).replace("/", "\\/"),
        "secret json in json": lambda v: json.dumps(json.dumps({"user": "app", "password": v})),
        "secret json in a repr": lambda v: repr(json.dumps({"password": v}, ensure_ascii=False)),
        "repr quoted with '": lambda v: repr(f"'\" {v}"),
        "ascii": lambda v: ascii(f"'\" {v}"),
        "bytes repr": lambda v: repr(f"'\" {v}".encode()),
        "url": lambda v: f"https://app:{quote(v, safe='')}@db/x",
        "url, slash kept": lambda v: f"https://db/{quote(v)}?x=1",
        "url form": lambda v: f"a=1&password={quote_plus(v)}&b=2",
        "url, lower-case hex": lambda v: re.sub(
            "%[0-9A-F]{2}", lambda m: m[0].lower(), f"p={quote(v, safe='')}"
        ),
        "postgres literal": lambda v: "PASSWORD '" + v.replace("'", "''") + "'",
        "mysql literal": lambda v: f"BY '{pymysql.converters.escape_string(v)}'",
        "aiomysql wire": lambda v: v.encode().decode("latin-1"),
    }
    if '"' not in value:  # only then may a repr of a text holding it quote with "
        found['repr quoted with "'] = lambda v: repr(f"' {v}")
        found['bytes repr quoted with "'] = lambda v: repr(f"' {v}".encode())
    return found


@pytest.mark.parametrize("alphabet", ALPHABETS)
def test_a_secret_is_masked_in_every_form_it_can_be_written_in(alphabet: str) -> None:
    rng = random.Random(alphabet)
    for _ in range(50):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 40)))
        redactor = Redactor()
        redactor.add(value)
        for kind, write in writers(value).items():
            expected = write(MARK).replace(MARK, REDACTED)
            assert redactor.scrub(write(value)) == expected, kind


def test_a_secret_escaped_in_an_unknown_way_keeps_no_long_plain_run() -> None:
    redactor = Redactor()
    value = "Jx3kQm9Wp2&Zt7Rv5Hs8<Ny4Lc6Bq1"
    redactor.add(value)
    html = value.replace("&", "&amp;").replace("<", "&lt;")
    assert redactor.scrub(html) == f"{REDACTED}&amp;{REDACTED}&lt;{REDACTED}"


def test_the_pieces_of_a_verifier_are_not_masked_on_their_own() -> None:
    redactor = Redactor()
    verifier = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$c3RvcmVka2V5c3RvcmVk:c2VydmVya2V5c2VydmVy"
    redactor.add(verifier, fragments=False)
    assert redactor.scrub("password_encryption is SCRAM-SHA-256") == (
        "password_encryption is SCRAM-SHA-256"
    )
    assert redactor.scrub(quote(verifier)) == REDACTED


def test_overlapping_secrets_are_masked_as_their_union() -> None:
    redactor = Redactor()
    redactor.add("ab12-cd34-ef56", "cd34-ef56-gh78-ij")
    assert redactor.scrub("xx ab12-cd34-ef56-gh78-ij yy") == f"xx {REDACTED} yy"


def test_values_of_other_types_are_scrubbed_as_the_renderers_write_them() -> None:
    redactor = Redactor()
    redactor.add("pa'ss\"wörd")
    event = {"raw": "pa'ss\"wörd".encode(), "n": 3, "flag": True, "none": None}
    scrubbed = redactor.scrub_value(event)
    assert scrubbed == {"raw": f"b'{REDACTED}'", "n": 3, "flag": True, "none": None}
