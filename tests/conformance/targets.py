"""The suite's servers as :class:`rotd.testing.Target`: PostgreSQL and MariaDB, Redis servers
the tests start, and the host's RabbitMQ through the exec engine. Logins are made and dropped
as an administrator, and checked with the server's own driver or protocol, never the engine
under test."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import struct
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pymysql
import redis

from rotd.engines.redis.acl import NEEDED
from tests.fixtures.databases import Database, Mariadb, Postgres, pg_quote_ident
from tests.fixtures.redis import RedisServer


class DatabaseTarget:
    """A :class:`rotd.testing.Target` over the suite's :class:`Database` helpers."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine

    async def create_login(self, username: str, password: str) -> None:
        await self.db.create_login(username, password)

    async def create_master(self, username: str, password: str) -> None:
        await self.db.create_master(username, password)

    async def grant_access(self, username: str) -> str:
        return await self.db.create_table(username)

    async def has_access(self, username: str, password: str, thing: str) -> bool:
        schema = "public" if isinstance(self.db, Postgres) else "test"
        try:
            await self.db.execute_as(username, password, f"SELECT id FROM {schema}.{thing}")
        except (asyncpg.InsufficientPrivilegeError, pymysql.err.OperationalError) as exc:
            if isinstance(exc, pymysql.err.OperationalError) and exc.args[0] != 1142:
                raise  # anything but "SELECT command denied"
            return False
        return True

    async def drop_login(self, username: str) -> None:
        if not await self.db.user_exists(username):
            return
        if isinstance(self.db, Postgres):
            await self.db.execute(
                f"DROP OWNED BY {pg_quote_ident(username)} CASCADE; "
                f"DROP ROLE {pg_quote_ident(username)}"
            )
        else:
            assert isinstance(self.db, Mariadb)
            for (host,) in await self.db.server.execute(
                "SELECT Host FROM mysql.user WHERE User = %s", (username,)
            ):
                await self.db.execute("DROP USER %s@%s", (username, host))

    async def logs_in(self, username: str, password: str) -> bool:
        return await self.db.logs_in(username, password)

    def secret(self, username: str, password: str) -> dict[str, Any]:
        return self.db.secret(username, password)


# Exactly what docs/redis.md and doctor say a login needs to rotate its own passwords.
REDIS_OWN_RULES = NEEDED.split()


class RedisTarget:
    """redis-server processes the test started (tests/fixtures/redis.py), users kept in an ACL
    file: one node, or a primary and its replicas all listed under ``nodes:``. Logins are
    checked with a bare ``AUTH`` on every node, never through the engine."""

    engine = "redis"

    def __init__(self, primary: RedisServer, *replicas: RedisServer) -> None:
        self.nodes = (primary, *replicas)

    def database_settings(self) -> dict[str, Any]:
        if len(self.nodes) == 1:
            return {}
        return {"nodes": [node.address for node in self.nodes]}

    def _everywhere(self, *args: str) -> None:
        for node in self.nodes:
            node.acl(*args)
            node.save()

    async def create_login(self, username: str, password: str) -> None:
        self._everywhere("SETUSER", username, "on", ">" + password, *REDIS_OWN_RULES)

    async def create_master(self, username: str, password: str) -> None:
        self._everywhere("SETUSER", username, "on", ">" + password, "~*", "&*", "+@all")

    async def grant_access(self, username: str) -> str:
        thing = f"kit{uuid.uuid4().hex[:8]}"
        self._everywhere("SETUSER", username, f"~{thing}:*")
        return thing

    async def has_access(self, username: str, password: str, thing: str) -> bool:
        for node in self.nodes:
            with redis.Redis(port=node.port, username=username, password=password) as client:
                try:
                    client.get(f"{thing}:x")
                except redis.exceptions.NoPermissionError:
                    return False
        return True

    async def drop_login(self, username: str) -> None:
        self._everywhere("DELUSER", username)

    async def logs_in(self, username: str, password: str) -> bool:
        return all(node.logs_in(username, password) for node in self.nodes)

    def secret(self, username: str, password: str) -> dict[str, Any]:
        primary = self.nodes[0]
        return {
            "engine": "redis",
            "host": "127.0.0.1",
            "port": primary.port,
            "username": username,
            "password": password,
        }


RABBITMQ_SCRIPT = Path(__file__).resolve().parents[2] / "config" / "exec" / "rabbitmq"
AMQP_PORT = 5672


class RabbitmqTarget:
    """The RabbitMQ on this host through the exec engine and the shipped script
    (config/exec/rabbitmq). Users, vhosts and permissions are made with ``rabbitmqctl`` (root,
    the node's cookie), each in one ``import_definitions`` run (every run starts an Erlang VM,
    a second or more); logins are checked with an AMQP 0-9-1 login of the target's own."""

    engine = "exec"

    def __init__(self, *, mirror: bool = True) -> None:
        self.mirror = mirror
        self.vhosts: list[str] = []
        self.users: set[str] = set()  # made here, or by the mirror command as <user>_clone

    def database_settings(self) -> dict[str, Any]:
        commands: dict[str, Any] = {
            "set_password": [str(RABBITMQ_SCRIPT), "set"],
            "test_login": [str(RABBITMQ_SCRIPT), "test"],
            "timeout": "60s",
        }
        if self.mirror:
            commands["mirror_user"] = [str(RABBITMQ_SCRIPT), "mirror"]
        return {"engine": "exec", "exec": commands}

    async def create_login(self, username: str, password: str) -> None:
        self.users.add(username)
        if self.mirror:
            self.users.add(username + "_clone")
        await self._add_user(username, password, f"^{username}-.*", ".*", ".*")

    async def create_master(self, username: str, password: str) -> None:
        # rabbitmqctl acts with the node's cookie: the master only has to log in (opening
        # "/"). It is never mirrored, so it has no clone to delete.
        self.users.add(username)
        await self._add_user(username, password, "^$", "^$", "^$")

    async def _add_user(self, username: str, password: str, *rights: str) -> None:
        """The user with its password, and ``rights`` (configure, write, read) on "/"."""
        user = {
            "name": username,
            "password_hash": rabbitmq_password_hash(password),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": [],
        }
        await import_definitions(
            {"users": [user], "permissions": [permission(username, "/", *rights)]}
        )

    async def grant_access(self, username: str) -> str:
        vhost = f"rkv{uuid.uuid4().hex[:10]}"
        self.vhosts.append(vhost)
        everything = permission(username, vhost, ".*", ".*", ".*")
        await import_definitions({"vhosts": [{"name": vhost}], "permissions": [everything]})
        return vhost

    async def has_access(self, username: str, password: str, thing: str) -> bool:
        return await amqp_logs_in(username, password, vhost=thing)

    async def drop_login(self, username: str) -> None:
        # Only names that may exist: each rabbitmqctl run costs over a second.
        if username in self.users:
            await rabbitmqctl("delete_user", username, check=False)

    async def logs_in(self, username: str, password: str) -> bool:
        return await amqp_logs_in(username, password)

    def secret(self, username: str, password: str) -> dict[str, Any]:
        return {
            "engine": "rabbitmq",  # any name: the database's engine: exec decides
            "host": "127.0.0.1",
            "port": AMQP_PORT,
            "username": username,
            "password": password,
            "vhost": "/",
        }

    async def cleanup(self) -> None:
        for vhost in self.vhosts:
            await rabbitmqctl("delete_vhost", vhost, check=False)


async def rabbitmqctl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run ``rabbitmqctl -q``; the password, if any, on its standard input."""
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    data = (stdin + "\n").encode() if stdin is not None else b""
    out, err = await asyncio.wait_for(proc.communicate(data), 60)
    if check and proc.returncode != 0:
        raise AssertionError(f"rabbitmqctl {args[0]} exited {proc.returncode}: {err.decode()}")
    return out.decode()


async def import_definitions(definitions: dict[str, Any]) -> None:
    """Users, vhosts and permissions in one ``rabbitmqctl import_definitions``, on its stdin."""
    await rabbitmqctl("import_definitions", "--format", "json", stdin=json.dumps(definitions))


def permission(user: str, vhost: str, configure: str, write: str, read: str) -> dict[str, str]:
    return {"user": user, "vhost": vhost, "configure": configure, "write": write, "read": read}


def rabbitmq_password_hash(password: str) -> str:
    """RabbitMQ's default password hash: a 32-bit salt, then SHA-256 of salt and password."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _shortstr(text: str) -> bytes:
    data = text.encode()
    return struct.pack("B", len(data)) + data


def _longstr(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _frame(class_id: int, method_id: int, args: bytes) -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


async def _method(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """The next method frame: (class, method, arguments); IncompleteReadError on a close."""
    while True:
        kind, _channel, size = struct.unpack(">BHI", await reader.readexactly(7))
        payload = (await reader.readexactly(size + 1))[:-1]
        if kind == 1:
            class_id, method_id = struct.unpack(">HH", payload[:4])
            return class_id, method_id, payload[4:]


async def amqp_logs_in(username: str, password: str, *, vhost: str = "/") -> bool:
    """An AMQP 0-9-1 PLAIN login opening ``vhost``: False when the broker refuses it
    (ACCESS_REFUSED, NOT_ALLOWED), AssertionError for anything else."""
    reader, writer = await asyncio.open_connection("127.0.0.1", AMQP_PORT)
    try:
        writer.write(b"AMQP\x00\x00\x09\x01")
        assert (await _method(reader))[:2] == (10, 10), "not AMQP 0-9-1"  # Start
        # Makes the broker say why it refuses instead of closing the socket.
        capabilities = _shortstr("authentication_failure_close") + b"t\x01"
        properties = _shortstr("capabilities") + b"F" + _longstr(capabilities)
        response = b"\x00" + username.encode() + b"\x00" + password.encode()
        start_ok = _longstr(properties) + _shortstr("PLAIN") + _longstr(response)
        writer.write(_frame(10, 11, start_ok + _shortstr("en_US")))
        for expected in ((10, 30), (10, 41)):  # Tune, then Open-Ok
            class_id, method_id, args = await _method(reader)
            if (class_id, method_id) == (10, 50):  # Close: the broker refused
                code = struct.unpack(">H", args[:2])[0]
                assert code in (403, 530), f"the broker closed the connection with {code}"
                return False
            assert (class_id, method_id) == expected, (class_id, method_id)
            if expected == (10, 30):
                channel_max, frame_max, _ = struct.unpack(">HIH", args[:8])
                writer.write(_frame(10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
                writer.write(_frame(10, 40, _shortstr(vhost) + _shortstr("") + b"\x00"))
        writer.write(_frame(10, 50, struct.pack(">H", 200) + _shortstr("bye") + b"\0" * 4))
        await _method(reader)  # Close-Ok
        return True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
