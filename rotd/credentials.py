"""The secret's format: AWS's documented JSON for database credentials.

``{"engine", "host", "port", "username", "password", "dbname", "masterarn"?, "ssl"?}``, with
``engine``, ``host``, ``username`` and ``password`` required. Every other key is kept untouched
through rotations, so a secret can move between rotd and AWS's rotation functions as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rotd.engines import DEFAULT_PORTS, ENGINE_FAMILIES, Family
from rotd.observability import redactor

REQUIRED_KEYS = ("engine", "host", "username", "password")


class BadSecret(ValueError):
    """The secret string is not usable as database credentials. The message holds no value."""


@dataclass(frozen=True)
class Credentials:
    engine: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    dbname: str | None = None
    masterarn: str | None = None
    ssl: bool | None = None
    # The whole JSON object as read, so that unknown keys survive a rotation.
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def family(self) -> Family:
        return ENGINE_FAMILIES[self.engine]

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """Parse a secret string; raise :class:`BadSecret` naming what is wrong, never a value."""
        try:
            document = json.loads(text)
        except (ValueError, TypeError):
            redactor.add(text)
            raise BadSecret("the secret string is not JSON") from None
        if not isinstance(document, dict):
            redactor.add(text)
            raise BadSecret("the secret string is JSON but not an object") from None
        redactor.add(_text(document.get("password")))
        missing = [k for k in REQUIRED_KEYS if document.get(k) in (None, "")]
        if missing:
            keys = ", ".join(f"`{k}`" for k in missing)
            raise BadSecret(f"the secret JSON is missing key {keys}")
        for key in ("engine", "host", "username", "password"):
            if not isinstance(document[key], str):
                raise BadSecret(f"the secret JSON key `{key}` must be a string")
        engine = document["engine"]
        if engine not in ENGINE_FAMILIES:
            allowed = ", ".join(sorted(ENGINE_FAMILIES))
            raise BadSecret(f"engine {engine!r} is not supported; use one of: {allowed}")
        family = ENGINE_FAMILIES[engine]
        port = document.get("port", DEFAULT_PORTS[family])
        try:
            port = int(port)
        except (ValueError, TypeError):
            raise BadSecret("the secret JSON key `port` must be a number") from None
        if not 0 < port < 65536:
            raise BadSecret(f"the secret JSON key `port` is out of range: {port}")
        dbname = document.get("dbname")
        if dbname is None and family is Family.POSTGRES:
            dbname = "postgres"
        ssl = document.get("ssl")
        if isinstance(ssl, str):
            ssl = ssl.strip().lower() in ("true", "1", "yes")
        elif ssl is not None and not isinstance(ssl, bool):
            raise BadSecret("the secret JSON key `ssl` must be true or false")
        masterarn = document.get("masterarn")
        return cls(
            engine=engine,
            host=document["host"],
            port=port,
            username=document["username"],
            password=document["password"],
            dbname=str(dbname) if dbname is not None else None,
            masterarn=str(masterarn) if masterarn else None,
            ssl=ssl,
            document=document,
        )

    def with_login(self, username: str, password: str) -> Credentials:
        """A copy with another login, every other key untouched."""
        redactor.add(password)
        document = {**self.document, "username": username, "password": password}
        return Credentials(
            engine=self.engine,
            host=self.host,
            port=self.port,
            username=username,
            password=password,
            dbname=self.dbname,
            masterarn=self.masterarn,
            ssl=self.ssl,
            document=document,
        )

    def dumps(self) -> str:
        return json.dumps(self.document, ensure_ascii=False)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
