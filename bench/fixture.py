"""What the benchmark rotates: its own moto server, logins in the local servers, their secrets.

:func:`start_moto` runs moto's server on a free port. :class:`Fixture` creates, under one
unique prefix (``rb_<8 hex>_``), N logins split over the local PostgreSQL and MariaDB (half
single user, half alternating users), a master login per engine, and their secrets; it writes
the inventories that rotd reads and the plan that the floor script reads; it creates the
secrets-only population for the inventory-scale measurements; and it drops every login it
made (clones included). The secrets live only in the benchmark's own moto server, which goes
away with it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioboto3
import aiomysql
import asyncpg
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"
PG = ("127.0.0.1", 5432, "postgres")  # host, port, superuser (the machine's cluster trusts it)
MARIADB = ("127.0.0.1", 3306, "root")  # root with an empty password
ENGINES = ("postgres", "mariadb")
SCALE_DATABASE_SIZE = 50  # secrets per database in the inventory-scale inventories


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's server (with constant-time secret lookups: bench/moto_server.py) on a free port
    of 127.0.0.1, its request log discarded."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto's server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto's server did not start within 30 s")


def password() -> str:
    return "Rb-" + secrets.token_hex(12)


@dataclass
class Login:
    engine: str  # postgres | mariadb
    strategy: str  # single_user | alternating_users
    secret_id: str


@dataclass
class Fixture:
    """Logins and secrets under one prefix; see the module docstring."""

    moto_url: str
    workdir: Path
    prefix: str = field(default_factory=lambda: f"rb_{secrets.token_hex(4)}_")
    logins: list[Login] = field(default_factory=list)
    masters: dict[str, str] = field(default_factory=dict)  # engine -> master secret id
    scale_ids: list[str] = field(default_factory=list)

    @property
    def secret_prefix(self) -> str:
        return self.prefix.rstrip("_")

    # --- Secrets Manager -------------------------------------------------------------------

    async def _create_secrets(self, values: list[tuple[str, dict[str, Any]]]) -> None:
        session = aioboto3.Session(region_name=REGION)
        config = Config(retries={"max_attempts": 5}, max_pool_connections=16)
        async with session.client(
            "secretsmanager", endpoint_url=self.moto_url, config=config
        ) as client:
            # moto's server answers 500 now and then under concurrent creates: few at once,
            # and a create that fails is tried again (an existing name means it got through).
            slots = asyncio.Semaphore(4)

            async def create(name: str, value: dict[str, Any]) -> None:
                async with slots:
                    for attempt in range(8):
                        try:
                            await client.create_secret(Name=name, SecretString=json.dumps(value))
                            return
                        except client.exceptions.ResourceExistsException:
                            return
                        except ClientError:
                            if attempt == 7:
                                raise
                            await asyncio.sleep(0.2 * (attempt + 1))

            await asyncio.gather(*(create(n, v) for n, v in values))

    # --- databases -------------------------------------------------------------------------

    async def _pg(self) -> Any:
        host, port, user = PG
        return await asyncpg.connect(host=host, port=port, user=user, database="postgres")

    async def _mariadb(self) -> Any:
        host, port, user = MARIADB
        return await aiomysql.connect(host=host, port=port, user=user, password="", autocommit=True)

    async def create_logins(self, n: int) -> None:
        """``n`` logins (half per engine, alternating strategies) and a master per engine."""
        per_engine = {"postgres": (n + 1) // 2, "mariadb": n // 2}
        values: list[tuple[str, dict[str, Any]]] = []
        pg = await self._pg()
        my = await self._mariadb()
        try:
            for engine in ENGINES:
                master_user, master_password = f"{self.prefix}{engine[:2]}_master", password()
                if engine == "postgres":
                    await pg.execute(
                        f'CREATE ROLE "{master_user}" LOGIN CREATEROLE '
                        f"PASSWORD '{master_password}'"
                    )
                else:
                    async with my.cursor() as cur:
                        await cur.execute(
                            "CREATE USER %s@'%%' IDENTIFIED BY %s", (master_user, master_password)
                        )
                        await cur.execute(
                            "GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION",
                            (master_user,),
                        )
                master_id = f"{self.secret_prefix}/{engine}/master"
                self.masters[engine] = master_id
                values.append((master_id, self._value(engine, master_user, master_password)))
                for i in range(per_engine[engine]):
                    strategy = "alternating_users" if i % 2 else "single_user"
                    user, pw = f"{self.prefix}{engine[:2]}_{i:05d}", password()
                    if engine == "postgres":
                        await pg.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{pw}'")
                    else:
                        async with my.cursor() as cur:
                            await cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, pw))
                    short = "single" if strategy == "single_user" else "alternating"
                    secret_id = f"{self.secret_prefix}/{engine}/{short}/{i:05d}"
                    self.logins.append(Login(engine, strategy, secret_id))
                    values.append((secret_id, self._value(engine, user, pw)))
        finally:
            await pg.close()
            my.close()
        await self._create_secrets(values)

    @staticmethod
    def _value(engine: str, user: str, pw: str) -> dict[str, Any]:
        if engine == "postgres":
            host, port, _ = PG
            return {
                "engine": "postgres",
                "host": host,
                "port": port,
                "username": user,
                "password": pw,
                "dbname": "postgres",
            }
        host, port, _ = MARIADB
        return {"engine": "mariadb", "host": host, "port": port, "username": user, "password": pw}

    async def drop_logins(self) -> int:
        """Drop every login whose name starts with the prefix (clones too); return how many."""
        dropped = 0
        pattern = self.prefix.replace("_", "\\_") + "%"
        pg = await self._pg()
        try:
            roles = await pg.fetch(
                "SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1 "
                "ORDER BY length(rolname) DESC",
                pattern,
            )
            for (role,) in roles:
                await pg.execute(f'DROP ROLE "{role}"')
                dropped += 1
        finally:
            await pg.close()
        my = await self._mariadb()
        try:
            async with my.cursor() as cur:
                await cur.execute(
                    "SELECT User, Host FROM mysql.user WHERE User LIKE %s", (pattern,)
                )
                for user, host in await cur.fetchall():
                    await cur.execute("DROP USER %s@%s", (user, host))
                    dropped += 1
        finally:
            my.close()
        return dropped

    # --- what rotd and the floor read --------------------------------------------------------

    def rotation_inventory(
        self,
        path: Path,
        sm_url: str,
        ports: dict[str, int],
        limits: dict[str, int] | None,
        max_write_tps: float | None,
    ) -> Path:
        """The inventory of every login, each engine reached through its proxy on ``ports``."""
        databases = []
        for engine in ENGINES:
            entries: list[dict[str, Any]] = []
            for login in self.logins:
                if login.engine != engine:
                    continue
                entry: dict[str, Any] = {"id": login.secret_id}
                if login.strategy == "alternating_users":
                    entry["strategy"] = "alternating_users"
                    entry["master_secret"] = self.masters[engine]
                entries.append(entry)
            if entries:
                databases.append(
                    {
                        "name": f"bench-{engine}",
                        "host": "127.0.0.1",
                        "port": ports[engine],
                        "secrets": entries,
                    }
                )
        aws: dict[str, Any] = {"region": REGION, "endpoint_url": sm_url}
        if max_write_tps is not None:
            aws["max_write_tps"] = max_write_tps
        document: dict[str, Any] = {"aws": aws, "databases": databases}
        if limits:
            document["limits"] = limits
        path.write_text(json.dumps(document, indent=1))
        return path

    def floor_plan(
        self,
        path: Path,
        sm_url: str,
        ports: dict[str, int],
        max_concurrent: int,
        per_host: int,
        write_tps: float,
    ) -> Path:
        """What the floor script rotates, and within which limits."""
        plan = {
            "endpoint_url": sm_url,
            "region": REGION,
            "max_concurrent": max_concurrent,
            "max_concurrent_per_host": per_host,
            "write_tps": write_tps,
            "secrets": [
                {
                    "id": login.secret_id,
                    "engine": login.engine,
                    "host": "127.0.0.1",
                    "port": ports[login.engine],
                    "strategy": login.strategy,
                    "master": self.masters[login.engine]
                    if login.strategy == "alternating_users"
                    else None,
                }
                for login in self.logins
            ],
        }
        path.write_text(json.dumps(plan))
        return path

    # --- inventory scale -------------------------------------------------------------------

    async def create_scale_secrets(self, n: int) -> None:
        """``n`` secrets that ``rotd run`` can plan (no login behind them; never rotated)."""
        values = []
        for k in range(len(self.scale_ids), n):
            engine = ENGINES[(k // SCALE_DATABASE_SIZE) % 2]
            secret_id = f"{self.secret_prefix}/scale/{k:05d}"
            values.append((secret_id, self._value(engine, f"{self.prefix}s{k:05d}", password())))
            self.scale_ids.append(secret_id)
        await self._create_secrets(values)

    def scale_inventory(
        self, path: Path, n: int, sm_url: str, changed: str | None = None
    ) -> dict[str, Any]:
        """``n`` secrets in databases of 50, half alternating; ``changed``: one secret's id
        to give a different window (the SIGHUP measurement)."""
        databases = []
        for start in range(0, n, SCALE_DATABASE_SIZE):
            d = start // SCALE_DATABASE_SIZE
            engine = ENGINES[d % 2]
            entries: list[dict[str, Any]] = []
            for k in range(start, min(n, start + SCALE_DATABASE_SIZE)):
                secret_id = self.scale_ids[k] if k < len(self.scale_ids) else self._scale_id(k)
                entry: dict[str, Any] = {"id": secret_id}
                if k % 2:
                    entry["strategy"] = "alternating_users"
                if secret_id == changed:
                    entry["window"] = "2h"
                entries.append(entry)
            database: dict[str, Any] = {
                "name": f"scale-{d:04d}",
                "host": f"db-{d:04d}.bench.internal",
                "port": 5432 if engine == "postgres" else 3306,
                "engine": engine,
                "secrets": entries,
            }
            if any(e.get("strategy") for e in entries):
                database["master_secret"] = f"{self.secret_prefix}/scale/master-{d:04d}"
            databases.append(database)
        document = {
            "aws": {"region": REGION, "endpoint_url": sm_url},
            "defaults": {"schedule": "rate(30 days)", "window": "1h"},
            "databases": databases,
        }
        text = json.dumps(document, indent=1)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # a reload never reads half a file
        return document

    def _scale_id(self, k: int) -> str:
        return f"{self.secret_prefix}/scale/{k:05d}"
