"""``rotd demo``: the daemon at work in a minute, on this machine's own servers.

It starts a local Secrets Manager emulator (moto's server, from the ``demo`` extra), creates demo
logins in the local PostgreSQL and MariaDB/MySQL (whichever answers), stores their secrets, and
runs ``rotd run`` with ``rate(1 minute)`` so rotations show up as they happen. It prints how to
look at the result, and removes every login, secret and file it made when stopped (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioboto3
import aiomysql
import asyncpg
from botocore.config import Config

from rotd import inventory as inventory_module
from rotd.daemon import Daemon
from rotd.observability import get_logger

log = get_logger("rotd.demo")

PREFIX = "rotd_demo_"


@dataclass
class DemoServers:
    postgres: tuple[str, int, str] = ("127.0.0.1", 5432, "postgres")  # host, port, admin user
    mysql: tuple[str, int, str] = ("127.0.0.1", 3306, "root")
    admin_password: str = ""
    listen_port: int = 9464


@dataclass
class _Made:
    secrets: list[dict[str, Any]] = field(default_factory=list)
    # Logins are dropped first: they matter more than the emulator's secrets.
    drops: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    deletes: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def run_demo(servers: DemoServers) -> int:
    """Set everything up, run the daemon until stopped, then clean up. Returns the exit code."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        _say("rotd demo needs moto's server: pip install 'rotd[demo]'")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="rotd-demo-"))
    made = _Made()
    async with AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        endpoint = await _start_moto(stack, workdir)
        os.environ.update(
            AWS_ACCESS_KEY_ID="demo",
            AWS_SECRET_ACCESS_KEY="demo",
            AWS_REGION="us-east-1",
        )
        os.environ.pop("AWS_PROFILE", None)
        session = aioboto3.Session(region_name="us-east-1")
        config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2})
        client = await stack.enter_async_context(
            session.client("secretsmanager", endpoint_url=endpoint, config=config)
        )
        stack.push_async_callback(_undo, made)
        await _postgres(servers, client, made)
        await _mysql(servers, client, made)
        if not made.secrets:
            _say("neither PostgreSQL nor MariaDB/MySQL answered on 127.0.0.1; nothing to rotate")
            return 1
        listen = servers.listen_port if _port_free(servers.listen_port) else _free_port()
        path = workdir / "inventory.yaml"
        path.write_text(
            json.dumps(
                {
                    "aws": {"region": "us-east-1", "endpoint_url": endpoint},
                    "defaults": {"schedule": "rate(1 minute)", "window": "0", "tls": "disable"},
                    "daemon": {"listen": f"127.0.0.1:{listen}", "shutdown_grace": "10s"},
                    "databases": [{"name": "demo", "secrets": made.secrets}],
                },
                indent=2,
            )
        )
        loaded = inventory_module.load(path)
        env = "AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1"
        _say(
            "\n".join(
                [
                    "",
                    f"rotd demo: {len(made.secrets)} secrets in a local Secrets Manager at "
                    f"{endpoint}",
                    f"  inventory: {path}",
                    "  each rotates once a minute; the first rotations come in about a minute.",
                    "  look at the result, from another terminal:",
                    f"    {env} {sys.argv[0]} status -c {path}",
                    f"    curl -s http://127.0.0.1:{listen}/metrics | grep ^rotd_",
                    "  stop with Ctrl-C: the demo logins, secrets and files are removed.",
                    "",
                ]
            )
        )
        code = await Daemon(loaded).run()
        _say("rotd demo: stopping and cleaning up")
        return code
    return 1  # pragma: no cover


async def _start_moto(stack: AsyncExitStack, workdir: Path) -> str:
    port = _free_port()
    logfile = (workdir / "moto.log").open("w")
    stack.callback(logfile.close)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "moto.server",
        "-H",
        "127.0.0.1",
        "-p",
        str(port),
        stdout=logfile,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # Its own session: Ctrl-C must stop rotd, not the emulator the clean-up still needs.
        start_new_session=True,
    )

    async def stop() -> None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    stack.push_async_callback(stop)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return f"http://127.0.0.1:{port}"
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("moto's server did not start; see its log in the demo directory")


async def _store(client: Any, made: _Made, name: str, value: dict[str, Any]) -> str:
    await client.create_secret(Name=name, SecretString=json.dumps(value))

    async def delete() -> None:
        await client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)

    made.deletes.append(delete)
    return name


async def _postgres(servers: DemoServers, client: Any, made: _Made) -> None:
    host, port, admin = servers.postgres
    try:
        conn = await asyncpg.connect(
            host=host,
            port=port,
            user=admin,
            password=servers.admin_password or None,
            database="postgres",
            timeout=5,
            ssl=False,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        _say(f"PostgreSQL at {host}:{port} not used: {exc}")
        return
    names = {"app": f"{PREFIX}pg_app", "alt": f"{PREFIX}pg_alt", "master": f"{PREFIX}pg_master"}
    passwords = {k: secrets.token_urlsafe(18) for k in names}
    try:
        for key, user in names.items():
            await conn.execute(f'DROP ROLE IF EXISTS "{user}_clone"')
            await conn.execute(f'DROP ROLE IF EXISTS "{user}"')
            extra = " CREATEROLE" if key == "master" else ""
            password = passwords[key].replace("'", "''")
            await conn.execute(f"CREATE ROLE \"{user}\" LOGIN{extra} PASSWORD '{password}'")
    finally:
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(
            host=host,
            port=port,
            user=admin,
            password=servers.admin_password or None,
            database="postgres",
            timeout=5,
            ssl=False,
        )
        try:
            for user in names.values():
                await conn.execute(f'DROP ROLE IF EXISTS "{user}_clone"')
                await conn.execute(f'DROP ROLE IF EXISTS "{user}"')
        finally:
            await conn.close()

    made.drops.append(drop)
    base = {"engine": "postgres", "host": host, "port": port, "dbname": "postgres"}
    stored = {
        key: await _store(
            client,
            made,
            f"demo/postgres/{key}",
            {**base, "username": user, "password": passwords[key]},
        )
        for key, user in names.items()
    }
    made.secrets += [
        {"id": stored["app"], "strategy": "single_user"},
        {"id": stored["alt"], "strategy": "alternating_users", "master_secret": stored["master"]},
    ]
    _say(f"PostgreSQL at {host}:{port}: created logins {', '.join(names.values())}")


async def _mysql(servers: DemoServers, client: Any, made: _Made) -> None:
    host, port, admin = servers.mysql
    try:
        conn = await aiomysql.connect(
            host=host,
            port=port,
            user=admin,
            password=servers.admin_password,
            connect_timeout=5,
            autocommit=True,
        )
    except Exception as exc:
        _say(f"MariaDB/MySQL at {host}:{port} not used: {exc}")
        return
    names = {"app": f"{PREFIX}my_app", "alt": f"{PREFIX}my_alt", "master": f"{PREFIX}my_master"}
    passwords = {k: secrets.token_urlsafe(18) for k in names}
    try:
        async with conn.cursor() as cur:
            await cur.execute("SET SESSION sql_notes = 0")  # no notes for DROP ... IF EXISTS
            for key, user in names.items():
                for name in (user + "_clone", user):
                    await cur.execute("DROP USER IF EXISTS %s@'%%'", (name,))
                await cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, passwords[key]))
            await cur.execute(
                "GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", (names["master"],)
            )
    finally:
        conn.close()

    async def drop() -> None:
        conn = await aiomysql.connect(
            host=host,
            port=port,
            user=admin,
            password=servers.admin_password,
            connect_timeout=5,
            autocommit=True,
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute("SET SESSION sql_notes = 0")
                for user in names.values():
                    for name in (user + "_clone", user):
                        await cur.execute("DROP USER IF EXISTS %s@'%%'", (name,))
        finally:
            conn.close()

    made.drops.append(drop)
    base = {"engine": "mariadb", "host": host, "port": port}
    stored = {
        key: await _store(
            client,
            made,
            f"demo/mariadb/{key}",
            {**base, "username": user, "password": passwords[key]},
        )
        for key, user in names.items()
    }
    made.secrets += [
        {"id": stored["app"], "strategy": "single_user"},
        {"id": stored["alt"], "strategy": "alternating_users", "master_secret": stored["master"]},
    ]
    _say(f"MariaDB/MySQL at {host}:{port}: created logins {', '.join(names.values())}")


async def _undo(made: _Made) -> None:
    for cleanup in [*made.drops, *made.deletes]:
        try:
            await cleanup()
        except Exception as exc:
            log.warning("demo.cleanup_failed", error=str(exc))
