"""Which secrets hold one login: the server rotd reaches, the users each strategy holds."""

from __future__ import annotations

import json

from rotd.credentials import Credentials
from rotd.inventory import Inventory
from rotd.logins import Claim, claim_from, find_shared
from tests.fixtures.inventory import parse


def login(
    username: str, host: str = "db.example", port: int = 5432, engine: str = "postgres"
) -> Credentials:
    return Credentials.parse(
        json.dumps(
            {"engine": engine, "host": host, "port": port, "username": username, "password": "x"}
        )
    )


def claims(inventory: Inventory, values: dict[str, Credentials]) -> dict[str, Claim]:
    return {
        spec.id: claim_from(spec, f"arn:{spec.id}", values[spec.id]) for spec in inventory.secrets
    }


def test_two_secrets_of_one_user_on_one_server_are_both_refused_naming_each_other() -> None:
    inventory = parse(
        """
        databases:
          - name: a
            secrets: [{id: one}, {id: two}, {id: three}]
        """
    )
    shared = find_shared(
        claims(inventory, {"one": login("app"), "two": login("app"), "three": login("other")})
    )
    assert set(shared) == {"one", "two"}
    assert shared["one"].others == ("two",)
    assert shared["two"].others == ("one",)
    assert "'one'" in shared["one"].reason
    assert "'two'" in shared["one"].reason
    assert "'app' at db.example:5432" in shared["two"].reason


def test_the_server_is_the_one_rotd_reaches_the_route_of_the_inventory() -> None:
    # Two names for one server, routed to one address by the inventory: one login.
    inventory = parse(
        """
        databases:
          - name: a
            host: 10.0.0.5
            port: 6432
            secrets: [{id: one}]
          - name: b
            host: 10.0.0.5
            port: 6432
            secrets: [{id: two}]
          - name: c
            host: 10.0.0.6
            port: 6432
            secrets: [{id: three}]
        """
    )
    values = {
        "one": login("app", host="primary.internal"),
        "two": login("app", host="db.example", port=5433),
        "three": login("app", host="primary.internal"),
    }
    assert set(find_shared(claims(inventory, values))) == {"one", "two"}


def test_host_names_ignore_case_user_names_do_not() -> None:
    inventory = parse("databases: [{name: a, secrets: [{id: one}, {id: two}, {id: three}]}]\n")
    values = {
        "one": login("app", host="DB.example"),
        "two": login("app", host="db.EXAMPLE"),
        "three": login("App", host="db.example"),
    }
    assert set(find_shared(claims(inventory, values))) == {"one", "two"}


def test_other_ports_are_other_servers() -> None:
    inventory = parse("databases: [{name: a, secrets: [{id: one}, {id: two}]}]\n")
    values = {"one": login("app"), "two": login("app", port=5433)}
    assert find_shared(claims(inventory, values)) == {}


def test_one_address_is_one_server_whatever_engine_name_the_secret_gives() -> None:
    """``mysql`` and ``mariadb`` (or ``postgres`` and ``aurora-postgresql``) at one address are
    the same server, so the same user there is one login."""
    inventory = parse("databases: [{name: a, secrets: [{id: one}, {id: two}]}]\n")
    values = {
        "one": login("app", engine="mysql", port=3306),
        "two": login("app", engine="mariadb", port=3306),
    }
    assert set(find_shared(claims(inventory, values))) == {"one", "two"}


def test_alternating_users_hold_both_users_of_their_pair() -> None:
    inventory = parse(
        """
        databases:
          - name: a
            secrets:
              - {id: alt, strategy: alternating_users, master_secret: m}
              - {id: clone_holder}
              - {id: base_holder}
              - {id: alt_now_on_clone, strategy: alternating_users, master_secret: m}
              - {id: unrelated}
        """
    )
    values = {
        "alt": login("app"),
        "clone_holder": login("app_clone"),
        "alt_now_on_clone": login("web_clone"),
        "base_holder": login("web"),
        "unrelated": login("app_clone_clone"),
    }
    shared = find_shared(claims(inventory, values))
    assert set(shared) == {"alt", "clone_holder", "alt_now_on_clone", "base_holder"}
    assert shared["clone_holder"].others == ("alt",)
    assert shared["base_holder"].others == ("alt_now_on_clone",)


def test_a_master_is_not_a_pair_and_one_secret_named_twice_is_one_secret() -> None:
    inventory = parse(
        """
        databases:
          - name: a
            secrets:
              - {id: app, strategy: alternating_users, master_secret: master}
              - {id: master}
              - {id: "arn:aws:secretsmanager:us-east-1:1:secret:master-AbCdEf"}
        """
    )
    values = {spec.id: login("admin") for spec in inventory.secrets}
    values["app"] = login("app")
    found = {spec.id: claim_from(spec, "arn:x", values[spec.id]) for spec in inventory.secrets}
    found["app"] = claim_from(inventory.secrets[0], "arn:app", values["app"])
    # "master" and its ARN are one secret (the same ARN); "app" only names it as its master.
    assert find_shared(found) == {}
