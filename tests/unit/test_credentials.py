"""The secret's ``ssl`` key: its spellings, and how it combines with the inventory's ``tls``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rotd.credentials import BadSecret, Credentials
from rotd.engines import Tls, TlsMode
from rotd.inventory import loads

D, P, R, CA, FULL = (
    TlsMode.DISABLE,
    TlsMode.PREFER,
    TlsMode.REQUIRE,
    TlsMode.VERIFY_CA,
    TlsMode.VERIFY_FULL,
)
ON = ["true", True, "TRUE", "yes", "on", " On ", "1", 1]
OFF = ["false", False, "no", "off", "OFF", "0", 0]
NAMED = {
    "disable": D,
    "disabled": D,
    "DISABLED": D,
    "allow": P,
    "prefer": P,
    "PREFERRED": P,
    "require": R,
    "required": R,
    "REQUIRED": R,
    "verify-ca": CA,
    "VERIFY_CA": CA,
    "verify-full": FULL,
    "verify_identity": FULL,
    "VERIFY_IDENTITY": FULL,
}


def secret(ssl: Any = None, **extra: Any) -> str:
    value = {"engine": "postgres", "host": "db", "username": "app", "password": "S3cret-pw"}
    if ssl is not None:
        value["ssl"] = ssl
    return json.dumps(value | extra)


def used(ssl: Any, inventory: TlsMode | None) -> TlsMode:
    """The mode rotd connects with, for a secret's ``ssl`` and the inventory's ``tls``."""
    credentials = Credentials.parse(secret(ssl))
    tls = Tls(inventory or TlsMode.PREFER, "/ca.pem")
    chosen = credentials.tls_under(tls, chosen=inventory is not None)
    assert chosen.ca_file == "/ca.pem"
    return chosen.mode


@pytest.mark.parametrize("ssl", ON)
def test_every_spelling_of_on_asks_for_tls(ssl: Any) -> None:
    request = Credentials.parse(secret(ssl)).ssl
    assert request is not None
    assert (request.mode, request.boolean, str(request)) == (R, True, "true")


@pytest.mark.parametrize("ssl", OFF)
def test_every_spelling_of_off_asks_for_none(ssl: Any) -> None:
    request = Credentials.parse(secret(ssl)).ssl
    assert request is not None
    assert (request.mode, request.boolean, str(request)) == (D, True, "false")


@pytest.mark.parametrize(("ssl", "mode"), NAMED.items())
def test_libpq_and_mysql_mode_names_ask_for_that_mode(ssl: str, mode: TlsMode) -> None:
    request = Credentials.parse(secret(ssl)).ssl
    assert request is not None
    assert (request.mode, request.boolean, str(request)) == (mode, False, mode.value)


@pytest.mark.parametrize("ssl", ["", "enabled", "tls", "verify", "2", 2, -1, 1.5, [], {}])
def test_an_unknown_ssl_is_a_bad_secret_naming_the_accepted_values(ssl: Any) -> None:
    with pytest.raises(BadSecret) as caught:
        Credentials.parse(secret(ssl))
    message = str(caught.value)
    assert "`ssl`" in message
    for accepted in ("true", "false", "on", "off", "require", "required", "verify-full"):
        assert accepted in message
    assert "S3cret-pw" not in message


def test_absent_or_null_ssl_leaves_the_inventory_alone() -> None:
    assert Credentials.parse(secret()).ssl is None
    assert Credentials.parse(secret(None)).ssl is None
    assert Credentials.parse(json.dumps(json.loads(secret()) | {"ssl": None})).ssl is None
    for inventory in TlsMode:
        assert used(None, inventory) is inventory
    assert used(None, None) is P


@pytest.mark.parametrize(
    ("ssl", "expected"),
    [("true", R), ("false", D), ("required", R), ("verify-ca", CA), ("allow", P), ("on", R)],
)
def test_where_the_inventory_says_nothing_the_secret_decides(ssl: str, expected: TlsMode) -> None:
    assert used(ssl, None) is expected


@pytest.mark.parametrize("ssl", [*ON, *OFF, *NAMED])
@pytest.mark.parametrize("inventory", list(TlsMode))
def test_the_inventorys_tls_is_never_lowered_and_is_raised_to_what_the_secret_asks(
    ssl: Any, inventory: TlsMode
) -> None:
    order = list(TlsMode)
    asked = Credentials.parse(secret(ssl)).ssl
    assert asked is not None
    assert used(ssl, inventory) is max(inventory, asked.mode, key=order.index)


def test_the_reported_downgrade_keeps_verify_full() -> None:
    # A secret whose ssl is "required", "on" or "verify-full" once turned verify-full off.
    for ssl in ("required", "on", "verify-full", "REQUIRED", "yes"):
        assert used(ssl, FULL) is FULL
    assert used(False, FULL) is FULL
    assert used("disable", R) is R


@pytest.mark.parametrize(
    ("ssl", "inventory", "below"),
    [
        (True, FULL, False),  # "TLS on" is all a boolean can say
        ("on", CA, False),
        (True, P, False),
        ("require", FULL, True),
        ("required", CA, True),
        ("verify-ca", FULL, True),
        ("verify-full", FULL, False),
        ("prefer", R, True),
        (False, P, True),
        ("off", D, False),
        ("disable", D, False),
        ("verify-full", R, False),
    ],
)
def test_what_asks_for_less_than_the_inventory(ssl: Any, inventory: TlsMode, below: bool) -> None:
    asked = Credentials.parse(secret(ssl)).ssl
    assert asked is not None
    assert asked.below(inventory) is below


def test_the_inventory_tells_a_chosen_tls_from_the_default() -> None:
    text = """\
aws: {region: us-east-1}
defaults: {%s}
databases:
  - name: a
    %s
    secrets:
      - id: plain
      - id: own
        tls: require
"""
    specs = {s.id: s for s in loads(text % ("", "engine: postgres"), "t.yaml").secrets}
    assert (specs["plain"].tls.mode, specs["plain"].tls_set) == (P, False)
    assert (specs["own"].tls.mode, specs["own"].tls_set) == (R, True)
    specs = {s.id: s for s in loads(text % ("tls: prefer", "tls: prefer"), "t.yaml").secrets}
    assert (specs["plain"].tls.mode, specs["plain"].tls_set) == (P, True)
    specs = {s.id: s for s in loads(text % ("", "tls: verify-ca"), "t.yaml").secrets}
    assert (specs["plain"].tls.mode, specs["plain"].tls_set) == (CA, True)


def test_the_inventorys_engine_lets_the_secrets_engine_key_name_anything() -> None:
    text = json.dumps(
        {"engine": "rabbitmq", "host": "mq", "username": "app", "password": "S3cret-pw"}
    )
    with pytest.raises(BadSecret, match="'rabbitmq': no such engine is installed"):
        Credentials.parse(text)
    found = Credentials.parse(text, engine="exec")
    assert (found.engine, found.host, found.port) == ("rabbitmq", "mq", 0)
    assert Credentials.parse(text, login_only=True).username == "app"
    assert Credentials.parse(text, engine="postgres").port == 5432
