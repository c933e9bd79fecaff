"""What an engine author gives the conformance kit: a live system to rotate logins on.

A :class:`Target` makes and removes logins on a real server (the kit never mocks one), says
whether a username and password log in, and writes the secret JSON that points rotd at it.
``logs_in`` should ask the server independently of the engine under test where it can (its
driver, a client); :func:`engine_logs_in` asks through the engine itself, for systems where
that is the only way.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from rotd.credentials import Credentials
from rotd.engines import Endpoint, Login, Tls, all_engines
from rotd.errors import Category, DatabaseError


class Target(Protocol):
    """A live server of one engine, with an administrator's hand on it.

    ``engine`` is the name the engine is registered under (the secret's ``engine``). Names the
    kit passes are short (under 24 characters with rotd's ``_clone`` suffix), lower case
    letters, digits and underscores; passwords are made by rotd's generator.
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


async def engine_logs_in(
    target: Target, username: str, password: str, *, timeout_s: float = 10.0
) -> bool:
    """Whether ``target``'s engine logs in with this login, asked through the engine's own
    ``connect``: False on an ``auth`` refusal, :class:`DatabaseError` for anything else."""
    credentials = Credentials.parse(json.dumps(target.secret(username, password)))
    endpoint = Endpoint(
        engine=credentials.engine,
        host=credentials.host,
        port=credentials.port,
        dbname=credentials.dbname,
        tls=credentials.tls_under(Tls(), chosen=False),
    )
    engine = all_engines()[target.engine]
    try:
        async with engine.connect(Login(endpoint, username, password), timeout_s=timeout_s):
            return True
    except DatabaseError as exc:
        if exc.category is Category.AUTH:
            return False
        raise
