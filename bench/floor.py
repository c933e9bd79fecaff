"""The floor: rotd's Secrets Manager calls and SQL statements with none of rotd's logic.

``python -m bench.floor PLAN.json`` rotates every secret of the plan (written by
:meth:`bench.fixture.Fixture.floor_plan`) once, with aioboto3, asyncpg and aiomysql called
directly, in the order rotd makes the same calls, within the same limits: ``max_concurrent``
rotations at once, ``max_concurrent_per_host`` of them between reading the current value and
finishing (a rotation waiting for its host gives its global slot up meanwhile, as rotd's
runner does), and the same client-side cap on writes per second (``write_tps``; 0: none).
It prints one JSON line per rotation: ``{"id", "ok", "duration_s", "ended_at", "error"}``.

What it mirrors, per rotation (rotd's protocol as of the lock session):
  DescribeSecret; GetSecretValue (AWSCURRENT); take a host slot; open the lock session (single
  user: the login itself; alternating: the master, whose secret is read once per batch); take
  the rotation lock; DescribeSecret again; PutSecretValue (AWSPENDING); set the password
  (single: on the lock session; alternating: log in as the current user and close, then the
  master mirrors the clone or sets the original's password); log in as the pending login and
  run the test; UpdateSecretVersionStage (AWSCURRENT); close the lock session.
Every connection reads what rotd reads on login (PostgreSQL: session user, password
encryption, identifier length; MariaDB: the version). Passwords reach PostgreSQL as SCRAM
verifiers (PBKDF2, 4096 iterations) and MariaDB as native hashes, as rotd sends them.
Whatever rotd adds over this is its own cost.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import string
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aioboto3
import aiomysql
import asyncpg
from botocore.config import Config

TIMEOUT_S = 15.0
ALPHABET_CLASSES = [
    string.ascii_lowercase,
    string.ascii_uppercase,
    string.digits,
    "".join(c for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" if c not in "/@\"'\\"),
]


def new_password(length: int = 32) -> str:
    alphabet = "".join(ALPHABET_CLASSES)
    while True:
        chars = [secrets.choice(alphabet) for _ in range(length)]
        if all(any(c in cls for c in chars) for cls in ALPHABET_CLASSES):
            return "".join(chars)


def scram_verifier(password: str) -> str:
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
    stored = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return f"SCRAM-SHA-256$4096:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def native_hash(password: str) -> str:
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()  # noqa: S324


def pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def pg_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def lock_key(arn: str) -> tuple[int, str]:
    digest = hashlib.blake2b(arn.encode(), digest_size=20).digest()
    return int.from_bytes(digest[:8], "big", signed=True), "rotd:" + digest.hex()


class WriteLimit:
    """At most ``rate`` writes per second, bursting to ``rate``; no limit when 0."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.rate:
            return
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


# --- the two engines: a session is (kind, connection) -----------------------------------------


@asynccontextmanager
async def session(secret: dict[str, Any], user: str, password: str) -> AsyncIterator[Any]:
    if secret["engine"] == "postgres":
        conn = await asyncpg.connect(
            host=secret["host"],
            port=secret["port"],
            user=user,
            password=password,
            database="postgres",
            ssl="prefer",
            timeout=TIMEOUT_S,
            command_timeout=TIMEOUT_S,
            statement_cache_size=0,
            server_settings={"application_name": "rotd-floor"},
        )
        try:
            await conn.fetchrow(
                "SELECT session_user::text, current_setting('password_encryption'),"
                " current_setting('max_identifier_length')::int"
            )
            yield conn
        finally:
            await conn.close(timeout=TIMEOUT_S)
    else:
        conn = await aiomysql.connect(
            host=secret["host"],
            port=secret["port"],
            user=user,
            password=password,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=TIMEOUT_S,
        )
        try:
            await my(conn, "SELECT VERSION()")
            yield conn
        finally:
            await conn.ensure_closed()


async def my(conn: Any, sql: str) -> list[Any]:
    cursor = await conn.cursor()
    await cursor.execute(sql)
    rows = list(await cursor.fetchall())
    await cursor.close()
    return rows


async def take_lock(engine: str, conn: Any, arn: str) -> bool:
    lock_id, name = lock_key(arn)
    if engine == "postgres":
        return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_id))
    rows = await my(conn, f"SELECT GET_LOCK({conn.escape(name)}, 0)")
    return bool(rows and rows[0][0] == 1)


async def pg_transaction(conn: Any, statements: list[str]) -> None:
    await conn.execute(f"BEGIN; SET LOCAL statement_timeout = {int(TIMEOUT_S * 1000)}")
    for statement in statements:
        await conn.execute(statement)
    await conn.execute("COMMIT")


async def set_own_password(engine: str, conn: Any, user: str, password: str) -> None:
    if engine == "postgres":
        verifier = pg_literal(scram_verifier(password))
        await pg_transaction(
            conn, ["SET LOCAL ROLE NONE", f"ALTER ROLE {pg_ident(user)} WITH PASSWORD {verifier}"]
        )
        return
    await my(conn, "SELECT CURRENT_USER()")
    await my(conn, "SHOW CREATE USER CURRENT_USER()")
    await my(conn, f"SET PASSWORD = {conn.escape(native_hash(password))}")


MY_ACCOUNT_COLUMNS = (
    "User, Host, plugin, ssl_type, ssl_cipher, x509_issuer, x509_subject, max_questions,"
    " max_updates, max_connections, max_user_connections, max_statement_time"
)


async def my_accounts(conn: Any, user: str) -> list[Any]:
    return await my(
        conn,
        f"SELECT {MY_ACCOUNT_COLUMNS} FROM mysql.user WHERE User = {conn.escape(user)}"
        " AND is_role <> 'Y' ORDER BY Host",
    )


async def set_password(engine: str, conn: Any, user: str, password: str) -> None:
    if engine == "postgres":
        verifier = pg_literal(scram_verifier(password))
        await pg_transaction(conn, [f"ALTER ROLE {pg_ident(user)} WITH PASSWORD {verifier}"])
        return
    hashed = conn.escape(native_hash(password))
    for row in await my_accounts(conn, user):
        account = f"{conn.escape(user)}@{conn.escape(row[1])}"
        await my(conn, f"ALTER USER {account} IDENTIFIED BY PASSWORD {hashed}")


async def mirror_user(engine: str, conn: Any, original: str, clone: str, password: str) -> None:
    if engine == "postgres":
        verifier = pg_literal(scram_verifier(password))
        await conn.execute(f"BEGIN; SET LOCAL statement_timeout = {int(TIMEOUT_S * 1000)}")
        rows = await conn.fetch(
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[])",
            [original, clone],
        )
        verb = "ALTER" if clone in {r[0] for r in rows} else "CREATE"
        await conn.execute(f"{verb} ROLE {pg_ident(clone)} WITH LOGIN INHERIT PASSWORD {verifier}")
        await conn.execute(f"GRANT {pg_ident(original)} TO {pg_ident(clone)}")
        await conn.execute(f"ALTER ROLE {pg_ident(clone)} SET role = {pg_literal(original)}")
        await conn.execute("COMMIT")
        return
    hashed = conn.escape(native_hash(password))
    originals = await my_accounts(conn, original)
    clones = {row[1] for row in await my_accounts(conn, clone)}
    for row in originals:
        account = f"{conn.escape(clone)}@{conn.escape(row[1])}"
        if row[1] not in clones:
            limits = (
                f"MAX_QUERIES_PER_HOUR {row[7]} MAX_UPDATES_PER_HOUR {row[8]}"
                f" MAX_CONNECTIONS_PER_HOUR {row[9]} MAX_USER_CONNECTIONS {row[10]}"
                f" MAX_STATEMENT_TIME {row[11]}"
            )
            await my(
                conn,
                f"CREATE USER {account} IDENTIFIED BY PASSWORD {hashed} REQUIRE NONE WITH {limits}",
            )
        await my(conn, f"SHOW GRANTS FOR {conn.escape(original)}@{conn.escape(row[1])}")
        await my(conn, f"SHOW GRANTS FOR {account}")
        if row[1] in clones:
            await my(conn, f"ALTER USER {account} IDENTIFIED BY PASSWORD {hashed}")


async def run_test(engine: str, conn: Any) -> None:
    if engine == "postgres":
        await conn.execute(f"BEGIN; SET LOCAL statement_timeout = {int(TIMEOUT_S * 1000)}")
        await conn.fetchval("SELECT 1")
        await conn.execute("ROLLBACK")
    else:
        await my(conn, "SELECT 1")


# --- the rotation ---------------------------------------------------------------------------


class Floor:
    def __init__(self, plan: dict[str, Any], client: Any) -> None:
        self.client = client
        self.global_slots = asyncio.Semaphore(plan["max_concurrent"])
        self.per_host = plan["max_concurrent_per_host"]
        self.host_slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self.writes = WriteLimit(plan["write_tps"])
        self.masters: dict[str, asyncio.Task[dict[str, Any]]] = {}

    async def master(self, secret_id: str) -> dict[str, Any]:
        task = self.masters.get(secret_id)
        if task is None:
            task = self.masters[secret_id] = asyncio.ensure_future(self._read(secret_id))
        return await asyncio.shield(task)

    async def _read(self, secret_id: str) -> dict[str, Any]:
        got = await self.client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
        value: dict[str, Any] = json.loads(got["SecretString"])
        return value

    async def rotate(self, secret: dict[str, Any]) -> dict[str, Any]:
        await self.global_slots.acquire()
        started = time.monotonic()
        result: dict[str, Any] = {"id": secret["id"], "ok": True}
        try:
            await self._rotate(secret)
        except Exception as exc:
            result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        finally:
            self.global_slots.release()
        result.update(duration_s=round(time.monotonic() - started, 4), ended_at=time.time())
        return result

    async def _rotate(self, secret: dict[str, Any]) -> None:
        sm = self.client
        secret_id, engine = secret["id"], secret["engine"]
        described = await sm.describe_secret(SecretId=secret_id)
        arn = described["ARN"]
        current_version = next(
            v for v, s in described["VersionIdsToStages"].items() if "AWSCURRENT" in s
        )
        got = await sm.get_secret_value(SecretId=secret_id, VersionId=current_version)
        current = json.loads(got["SecretString"])
        key = (secret["host"], secret["port"])
        host = self.host_slots.setdefault(key, asyncio.Semaphore(self.per_host))
        if host.locked():  # give the global slot up while waiting for the host
            self.global_slots.release()
            await host.acquire()
            await self.global_slots.acquire()
        else:
            await host.acquire()
        try:
            async with AsyncExitStack() as stack:
                if secret["strategy"] == "alternating_users":
                    master = await self.master(secret["master"])
                    lock_session = await stack.enter_async_context(
                        session(secret, master["username"], master["password"])
                    )
                else:
                    lock_session = await stack.enter_async_context(
                        session(secret, current["username"], current["password"])
                    )
                if not await take_lock(engine, lock_session, arn):
                    raise RuntimeError("locked")
                await sm.describe_secret(SecretId=secret_id)
                token = str(uuid.uuid4())
                user = current["username"]
                if secret["strategy"] == "alternating_users":
                    clone = user.endswith("_clone")
                    user = user.removesuffix("_clone") if clone else user + "_clone"
                pending = {**current, "username": user, "password": new_password()}
                await self.writes.acquire()
                await sm.put_secret_value(
                    SecretId=secret_id,
                    ClientRequestToken=token,
                    SecretString=json.dumps(pending),
                    VersionStages=["AWSPENDING"],
                )
                if secret["strategy"] == "single_user":
                    await set_own_password(engine, lock_session, user, pending["password"])
                else:
                    async with session(secret, current["username"], current["password"]):
                        pass
                    if user == current["username"] + "_clone":
                        await mirror_user(
                            engine, lock_session, current["username"], user, pending["password"]
                        )
                    else:
                        await set_password(engine, lock_session, user, pending["password"])
                async with session(secret, user, pending["password"]) as test:
                    await run_test(engine, test)
                await self.writes.acquire()
                await sm.update_secret_version_stage(
                    SecretId=secret_id,
                    VersionStage="AWSCURRENT",
                    MoveToVersionId=token,
                    RemoveFromVersionId=current_version,
                )
        finally:
            host.release()


async def main(plan: dict[str, Any]) -> int:
    session_ = aioboto3.Session(region_name=plan["region"])
    config = Config(
        retries={"mode": "adaptive", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=15,
        max_pool_connections=32,
    )
    async with session_.client(
        "secretsmanager", endpoint_url=plan["endpoint_url"], config=config
    ) as client:
        floor = Floor(plan, client)
        results = await asyncio.gather(*(floor.rotate(s) for s in plan["secrets"]))
    for result in results:
        print(json.dumps(result))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        sys.exit(asyncio.run(main(json.load(f))))
