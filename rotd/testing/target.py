"""What an engine author gives the conformance kit: a live system to rotate logins on.

A :class:`Target` makes and removes logins on a real server (the kit never mocks one), says
whether a username and password log in, and writes the secret JSON that points rotd at it.
``logs_in`` should ask the server independently of the engine under test where it can (its
driver, a client); :func:`engine_logs_in` asks through the engine itself, for systems where
that is the only way. A target may also define ``database_settings()``: keys the kit adds to
the inventory's database entry (``nodes:``, or ``engine: exec`` and its ``exec:`` block).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from rotd.credentials import Credentials
from rotd.engines import Login, all_engines
from rotd.errors import Category, DatabaseError
from rotd.inventory import Inventory, loads
from rotd.protocol import endpoint_for


class Target(Protocol):
    """A live server of one engine, with an administrator's hand on it.

    ``engine`` is the name the engine is registered under (the secret's ``engine``). Names the
    kit passes are short (under 24 characters with rotd's ``_clone`` suffix), lower case
    letters, digits and underscores; passwords are made by rotd's generator.

    Optional, not part of the protocol's type: ``database_settings() -> Mapping[str, Any]``,
    keys the kit adds to the inventory's database entry, for an engine that reads its settings
    there: ``{"nodes": ["127.0.0.1:7001", ...]}`` (Redis), ``{"engine": "exec", "exec":
    {...}}`` (exec). ``engine`` is then the engine the entry names.
    """

    @property
    def engine(self) -> str: ...

    async def create_login(self, username: str, password: str) -> None:
        """Create a login that may change its own password (single_user)."""

    async def create_master(self, username: str, password: str) -> None:
        """Create an administrator that may create logins and mirror them (alternating_users);
        only asked for when the engine declares ``mirror_user``."""

    async def grant_access(self, username: str) -> str:
        """Give ``username`` access to something a new login lacks (a table, a key pattern, a
        queue) and return its name; only asked for when the engine declares ``mirror_user``,
        whose clone must have all the original has."""

    async def has_access(self, username: str, password: str, thing: str) -> bool:
        """Whether this login can use ``thing`` (a name ``grant_access`` returned)."""

    async def drop_login(self, username: str) -> None:
        """Remove ``username`` and what it owns; nothing when it does not exist."""

    async def logs_in(self, username: str, password: str) -> bool:
        """Whether the server accepts this login now: False when it refuses the password or
        does not know the user; raise for anything else (it could not tell)."""

    def secret(self, username: str, password: str) -> dict[str, Any]:
        """The secret's JSON for this login: ``engine``, ``host``, ``port``, ``username``,
        ``password`` and whatever else the engine reads (``dbname``, ``ssl``, own keys)."""


def database_settings(target: Target) -> dict[str, Any]:
    """The keys ``target`` adds to the inventory's database entry (none when it defines no
    ``database_settings``)."""
    extra = getattr(target, "database_settings", None)
    found: Mapping[str, Any] = extra() if callable(extra) else {}
    return dict(found)


def kit_inventory(
    target: Target,
    secret: str,
    strategy: str,
    master: str | None = None,
    aws: Mapping[str, str] | None = None,
) -> Inventory:
    """A one-secret inventory for ``target``: its database entry (with the target's own
    settings) holding ``secret`` rotated with ``strategy``."""
    entry: dict[str, Any] = {"id": secret, "strategy": strategy}
    if master is not None:
        entry["master_secret"] = master
    database = {"name": "kit", **database_settings(target), "secrets": [entry]}
    document: dict[str, Any] = {"databases": [database]}
    if aws is not None:
        document = {"aws": dict(aws), **document}
    # JSON is YAML: no quoting rules to get wrong for names, paths or argv.
    return loads(json.dumps(document, indent=2) + "\n", "kit.yaml")


async def engine_logs_in(
    target: Target, username: str, password: str, *, timeout_s: float = 10.0
) -> bool:
    """Whether ``target``'s engine logs in with this login, asked through the engine's own
    ``connect`` (at the endpoint, with the settings and the secret JSON a rotation would
    give it): False on an ``auth`` refusal, :class:`DatabaseError` for anything else."""
    document = target.secret(username, password)
    spec = kit_inventory(target, "rotd-kit/login", "single_user").secrets[0]
    credentials = Credentials.parse(json.dumps(document), engine=spec.engine)
    endpoint = endpoint_for(spec, credentials)
    engine = all_engines()[endpoint.engine]
    login = Login(endpoint, username, password, document=document)
    try:
        async with engine.connect(login, timeout_s=timeout_s):
            return True
    except DatabaseError as exc:
        if exc.category is Category.AUTH:
            return False
        raise
