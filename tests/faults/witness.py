"""A witness per secret: an application that logs in with whatever AWSCURRENT holds, nonstop.

It reads the secret from moto directly (never through the fault proxy), always naming the
stage, and logs in to the database directly (never through the TCP proxy). A refused login
only counts once it is confirmed: the witness then tries AWSPENDING and reads AWSCURRENT
again. If AWSCURRENT moved meanwhile, the refusal proves nothing (the password read may have
been retired by two rotations in between) and is counted as ``stale``. Otherwise AWSCURRENT
was that version throughout, and the refusal is a real one:

- ``current_only``: AWSPENDING logged in. The database holds the pending password and
  AWSCURRENT has not moved yet, which is exactly the span between setSecret and finishSecret
  of a single-user rotation; for alternating users it breaks invariant (2).
- ``neither``: no label logged in: invariant (1) is broken, whatever the strategy. The
  witness then tries the newest versions that hold neither label, to record which password
  the database holds (``holder``), which tells the known ways this can happen apart.

Errors other than a refused login say nothing about passwords and are counted apart in
``errors``, by kind (:class:`LoginError`): ``timeout`` (the machine was too busy to answer in
time), ``unreachable`` (no server at the address), ``server`` (the server answered with
another error) and ``secrets manager`` (moto could not be read). The witness goes around every
proxy of the test, straight to the database and to moto, so no fault the test injects explains
any of them: an outage or a cut stops rotd, never a witness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiomysql
import asyncpg
import pymysql
from aiohttp import ClientError, ClientSession, ClientTimeout

from tests.fixtures.mariadb import wire_password

__all__ = ["Attempt", "LoginError", "SecretsReader", "Target", "Version", "Witness", "logs_in"]

_AUTH_HEADER = (
    "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/secretsmanager/aws4_request, "
    "SignedHeaders=host, Signature=0"
)


@dataclass(frozen=True)
class Version:
    version_id: str
    value: dict[str, Any]
    stages: tuple[str, ...]
    created: float  # epoch seconds, whole seconds in moto


class SecretsReader:
    """Secrets Manager's JSON API spoken straight to moto: cheaper than botocore per call."""

    def __init__(self, endpoint_url: str) -> None:
        self._url = endpoint_url + "/"
        self._session = ClientSession(timeout=ClientTimeout(total=10))

    async def close(self) -> None:
        await self._session.close()

    async def call(self, operation: str, **body: Any) -> dict[str, Any] | None:
        """The answer's JSON; None when the secret or version is not found."""
        headers = {
            "X-Amz-Target": f"secretsmanager.{operation}",
            "Content-Type": "application/x-amz-json-1.1",
            "Authorization": _AUTH_HEADER,
        }
        async with self._session.post(self._url, data=json.dumps(body), headers=headers) as r:
            answer: dict[str, Any] = json.loads(await r.text())
        if r.status == 400 and "ResourceNotFound" in str(answer.get("__type")):
            return None
        if r.status != 200:
            raise RuntimeError(f"{operation} answered {r.status}: {answer.get('__type')}")
        return answer

    async def get(
        self, secret_id: str, *, stage: str | None = None, version_id: str | None = None
    ) -> Version | None:
        body: dict[str, Any] = {"SecretId": secret_id}
        if stage is not None:
            body["VersionStage"] = stage
        if version_id is not None:
            body["VersionId"] = version_id
        assert body.keys() != {"SecretId"}, "moto answers an unqualified read with version 1"
        answer = await self.call("GetSecretValue", **body)
        if answer is None:
            return None
        return Version(
            version_id=answer["VersionId"],
            value=json.loads(answer["SecretString"]),
            stages=tuple(answer.get("VersionStages") or ()),
            created=float(answer["CreatedDate"]),
        )

    async def history(self, secret_id: str) -> list[Version]:
        """Every version ever stored, in the order moto made them."""
        listed = await self.call("ListSecretVersionIds", SecretId=secret_id, IncludeDeprecated=True)
        assert listed is not None
        versions = []
        for entry in listed["Versions"]:
            version = await self.get(secret_id, version_id=entry["VersionId"])
            assert version is not None
            versions.append(version)
        return versions


class LoginError(Exception):
    """The server could not be asked: nothing learnt about the password. ``kind`` is
    ``timeout``, ``unreachable`` or ``server``; ``detail`` names the error."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Target:
    """Where a secret's database really is (the secret's own host and port)."""

    secret_id: str
    family: str  # postgres | mysql
    strategy: str
    host: str
    port: int
    dbname: str | None


async def logs_in(target: Target, username: str, password: str) -> bool:
    """Whether the database accepts this login; LoginError if it could not tell."""
    try:
        if target.family == "postgres":
            conn = await asyncpg.connect(
                host=target.host,
                port=target.port,
                user=username,
                password=password,
                database=target.dbname or "postgres",
                ssl=False,
                timeout=5,
            )
            await conn.close(timeout=5)
        else:
            mysql = await aiomysql.connect(
                host=target.host,
                port=target.port,
                user=username,
                password=wire_password(password),
                db=None,
                connect_timeout=5,
                charset="utf8mb4",
            )
            mysql.close()
    except asyncpg.InvalidAuthorizationSpecificationError:
        return False
    except pymysql.err.OperationalError as exc:
        code = exc.args[0] if exc.args else None
        if code in _MYSQL_ACCESS_DENIED:
            return False
        if isinstance(exc.__cause__, TimeoutError):
            raise LoginError("timeout", f"MySQL error {code}") from None
        if code in _MYSQL_NO_SERVER:
            raise LoginError("unreachable", f"MySQL error {code}") from None
        raise LoginError("server", f"MySQL error {code}") from None
    except TimeoutError as exc:
        raise LoginError("timeout", type(exc).__name__) from None
    except OSError as exc:
        raise LoginError("unreachable", type(exc).__name__) from None
    except (asyncpg.PostgresError, pymysql.err.Error) as exc:
        raise LoginError("server", type(exc).__name__) from None
    return True


# Access denied: with a password (1045), or as a user the server lets in without one (1698).
_MYSQL_ACCESS_DENIED = frozenset({1045, 1698})
# The client's own codes: could not connect, server gone, connection lost.
_MYSQL_NO_SERVER = frozenset({2003, 2006, 2013})


@dataclass(frozen=True)
class Attempt:
    """One confirmed refusal of AWSCURRENT's login."""

    started: float
    ended: float
    current: str  # the version AWSCURRENT held throughout
    pending: str | None  # the AWSPENDING version tried, if any
    pending_logged_in: bool
    holder: str | None = None  # for ``neither``: an unlabelled version that logs in


@dataclass
class Witness:
    target: Target
    reader: SecretsReader
    interval_s: float = 0.15
    logins: int = 0
    accepted: int = 0  # logins the database accepted, with whatever label
    stale: int = 0
    current_only: list[Attempt] = field(default_factory=list)
    neither: list[Attempt] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # The first instant each version was seen holding AWSCURRENT.
    seen_current: dict[str, float] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                again = await self._once()
            except LoginError as exc:
                self.errors[str(exc)] += 1
                again = False
            except TimeoutError:
                self.errors["timeout: reading Secrets Manager"] += 1
                again = False
            except (RuntimeError, OSError, ClientError) as exc:
                self.errors[f"secrets manager: {type(exc).__name__}"] += 1
                again = False
            if not again:
                # A polling cadence, not a wait for some state.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)

    async def _once(self) -> bool:
        """One login with AWSCURRENT; True when it should be tried again at once."""
        name = self.target.secret_id
        current = await self.reader.get(name, stage="AWSCURRENT")
        assert current is not None
        self.seen_current.setdefault(current.version_id, time.time())
        started = time.time()
        ok = await logs_in(self.target, current.value["username"], current.value["password"])
        ended = time.time()
        self.logins += 1
        if ok:
            self.accepted += 1
            return False
        pending = await self.reader.get(name, stage="AWSPENDING")
        pending_ok = False
        if pending is not None and pending.version_id != current.version_id:
            pending_ok = await logs_in(
                self.target, pending.value["username"], pending.value["password"]
            )
            self.logins += 1
            self.accepted += int(pending_ok)
        again = await self.reader.get(name, stage="AWSCURRENT")
        assert again is not None
        if again.version_id != current.version_id:
            self.stale += 1
            return True
        pending_id = pending.version_id if pending is not None else None
        if pending_ok:
            self.current_only.append(Attempt(started, ended, current.version_id, pending_id, True))
        else:
            holder = await self._holder({current.version_id, pending_id})
            self.neither.append(
                Attempt(started, ended, current.version_id, pending_id, False, holder)
            )
        return False

    async def _holder(self, tried: set[str | None], newest: int = 4) -> str | None:
        listed = await self.reader.call(
            "ListSecretVersionIds", SecretId=self.target.secret_id, IncludeDeprecated=True
        )
        assert listed is not None
        for entry in reversed(listed["Versions"][-newest:]):
            if entry["VersionId"] in tried:
                continue
            version = await self.reader.get(self.target.secret_id, version_id=entry["VersionId"])
            if version is not None and await logs_in(
                self.target, version.value["username"], version.value["password"]
            ):
                return version.version_id
        return None
