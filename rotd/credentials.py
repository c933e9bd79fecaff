"""The secret's format: AWS's documented JSON for database credentials.

``{"engine", "host", "port", "username", "password", "dbname", "masterarn"?, "ssl"?}``, with
``engine``, ``host``, ``username`` and ``password`` required. Every other key is kept untouched
through rotations, so a secret can move between rotd and AWS's rotation functions as it is.
It also owns how the secret's ``ssl`` combines with the inventory's ``tls``: it decides where
the inventory says nothing, and may raise the inventory's mode, never lower it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rotd.engines import EngineInfo, Tls, TlsMode
from rotd.engines.registry import installed
from rotd.errors import EngineError
from rotd.observability import redactor

REQUIRED_KEYS = ("engine", "host", "username", "password")


class BadSecret(ValueError):
    """The secret string is not usable as database credentials. The message holds no value."""


# The spellings of ``ssl`` (after lower-casing, ``_`` read as ``-``): AWS's booleans, their
# usual string forms, libpq's sslmode names and MySQL's ssl-mode names. libpq's ``allow`` is
# read as ``prefer``: rotd has no mode that tries plain TCP first.
SSL_ON = ("true", "yes", "on", "1")
SSL_OFF = ("false", "no", "off", "0")
SSL_MODES: dict[str, TlsMode] = {
    "disable": TlsMode.DISABLE,
    "disabled": TlsMode.DISABLE,
    "allow": TlsMode.PREFER,
    "prefer": TlsMode.PREFER,
    "preferred": TlsMode.PREFER,
    "require": TlsMode.REQUIRE,
    "required": TlsMode.REQUIRE,
    "verify-ca": TlsMode.VERIFY_CA,
    "verify-full": TlsMode.VERIFY_FULL,
    "verify-identity": TlsMode.VERIFY_FULL,
}
SSL_ACCEPTED = ", ".join((*SSL_ON, *SSL_OFF, *SSL_MODES))
_STRENGTH = tuple(TlsMode)  # weakest first


@dataclass(frozen=True)
class SslRequest:
    """What the secret's ``ssl`` key asks for.

    ``boolean`` requests say only "TLS on" (``mode`` require, satisfied by any mode that
    insists on TLS) or "TLS off"; a mode name asks for that mode exactly.
    """

    mode: TlsMode
    boolean: bool

    def __str__(self) -> str:
        if self.boolean:
            return "false" if self.mode is TlsMode.DISABLE else "true"
        return self.mode.value

    def below(self, mode: TlsMode) -> bool:
        """Whether this asks for less than ``mode``."""
        if self.boolean and self.mode is TlsMode.REQUIRE:
            return False  # "TLS on" is what every mode from require up means
        return _STRENGTH.index(self.mode) < _STRENGTH.index(mode)

    @classmethod
    def parse(cls, value: Any) -> SslRequest:
        """Read an ``ssl`` value; raise :class:`BadSecret` naming the accepted spellings."""
        if isinstance(value, bool):
            return cls(TlsMode.REQUIRE if value else TlsMode.DISABLE, boolean=True)
        if isinstance(value, int) and value in (0, 1):
            return cls(TlsMode.REQUIRE if value else TlsMode.DISABLE, boolean=True)
        if isinstance(value, str):
            word = value.strip().lower().replace("_", "-")
            if word in SSL_ON or word in SSL_OFF:
                return cls(TlsMode.REQUIRE if word in SSL_ON else TlsMode.DISABLE, boolean=True)
            if word in SSL_MODES:
                return cls(SSL_MODES[word], boolean=False)
        raise BadSecret(
            "the secret JSON key `ssl` must be true or false, or one of: " + SSL_ACCEPTED
        )


@dataclass(frozen=True)
class Credentials:
    engine: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    dbname: str | None = None
    masterarn: str | None = None
    ssl: SslRequest | None = None
    # The whole JSON object as read, so that unknown keys survive a rotation.
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(
        cls, text: str, *, engine: str | None = None, login_only: bool = False
    ) -> Credentials:
        """Parse a secret string; raise :class:`BadSecret` naming what is wrong, never a value.

        ``engine``: the engine the inventory's database names, which wins over the secret's
        own ``engine`` key; that key may then hold any name (a secret of a system only the
        exec engine reaches says ``rabbitmq``), and the named engine's defaults fill ``port``
        and ``dbname``. ``login_only``: only the login is used (a master's, at the rotated
        secret's endpoint), so the secret's ``engine`` key is not checked either.
        """
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
        try:
            info: EngineInfo | None = installed()[engine or document["engine"]].info
        except EngineError as exc:
            if not login_only:
                raise BadSecret(f"the secret JSON key `engine`: {exc}") from None
            info = None
        port = document.get("port", info.default_port if info else 0)
        try:
            port = int(port)
        except (ValueError, TypeError):
            raise BadSecret("the secret JSON key `port` must be a number") from None
        if "port" in document and not 0 < port < 65536:
            raise BadSecret(f"the secret JSON key `port` is out of range: {port}")
        dbname = document.get("dbname")
        if dbname is None and info is not None:
            dbname = info.default_dbname
        ssl = document.get("ssl")
        masterarn = document.get("masterarn")
        return cls(
            engine=document["engine"],
            host=document["host"],
            port=port,
            username=document["username"],
            password=document["password"],
            dbname=str(dbname) if dbname is not None else None,
            masterarn=str(masterarn) if masterarn else None,
            ssl=None if ssl is None else SslRequest.parse(ssl),
            document=document,
        )

    def tls_under(self, inventory: Tls, *, chosen: bool) -> Tls:
        """The TLS to connect with: the inventory's ``tls`` when it ``chosen`` one (defaults,
        database or secret), raised to the secret's ``ssl`` when that asks for more, never
        lowered; where the inventory chose nothing, the secret's ``ssl`` decides."""
        if self.ssl is None:
            return inventory
        stronger = _STRENGTH.index(self.ssl.mode) > _STRENGTH.index(inventory.mode)
        if stronger or not chosen:
            return Tls(self.ssl.mode, inventory.ca_file)
        return inventory

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

    def template_keys(self) -> dict[str, Any]:
        """The keys a derived key's template is rendered from: the secret's own JSON, with the
        ``port`` and ``dbname`` the engine supplies where the secret leaves them out."""
        keys = {k: v for k, v in self.document.items() if v is not None}
        if self.port:
            keys.setdefault("port", self.port)
        if self.dbname is not None:
            keys.setdefault("dbname", self.dbname)
        return keys

    def with_keys(self, values: Mapping[str, str]) -> Credentials:
        """A copy whose JSON also holds ``values`` (derived keys), every other key untouched."""
        return dataclasses.replace(self, document={**self.document, **values})

    def dumps(self) -> str:
        return json.dumps(self.document, ensure_ascii=False)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
