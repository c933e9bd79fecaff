"""rotd's own engines as their entry points name them: what each is and can do, as data.

The driver is imported when an engine first connects, not when it is looked up: reading a
secret's default port, or validating an inventory of thousands of secrets, imports neither
asyncpg, aiomysql nor redis-py.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractAsyncContextManager

from rotd.engines import SECRET_KEYS, Capabilities, Engine, EngineInfo, Login, Session

POSTGRES = EngineInfo(
    Capabilities(
        single_user=True,
        mirror_user=True,
        rotation_lock=True,
        tls=True,
        tls_require_verifies_ca=True,
        permission_checks=True,
    ),
    default_port=5432,
    default_dbname="postgres",
    max_username_length=63,
)

MYSQL = EngineInfo(
    Capabilities(
        single_user=True,
        mirror_user=True,
        rotation_lock=True,
        tls=True,
        permission_checks=True,
    ),
    default_port=3306,
    max_username_length=80,  # MariaDB's; MySQL's is 32, which its sessions check
)

REDIS = EngineInfo(
    Capabilities(
        single_user=True,
        mirror_user=True,
        rotation_lock=True,  # a key with an expiry, weaker than a session lock (README)
        tls=True,
        several_passwords=True,
        permission_checks=True,
    ),
    default_port=6379,
    secret_keys=SECRET_KEYS - {"dbname"},  # docs/redis.md: dbname is not used
)


class _Deferred:
    """A built-in engine that imports its module (and driver) on its first connection."""

    def __init__(self, info: EngineInfo, module: str, name: str) -> None:
        self.info = info
        self._module = module
        self._name = name
        self._engine: Engine | None = None

    def connect(self, login: Login, *, timeout_s: float) -> AbstractAsyncContextManager[Session]:
        if self._engine is None:
            self._engine = getattr(importlib.import_module(self._module), self._name)()
        assert self._engine is not None
        return self._engine.connect(login, timeout_s=timeout_s)


def postgres() -> Engine:
    """PostgreSQL and Aurora PostgreSQL, on asyncpg."""
    return _Deferred(POSTGRES, "rotd.engines.postgres", "PostgresEngine")


def mysql() -> Engine:
    """MySQL, MariaDB and Aurora MySQL, on aiomysql."""
    return _Deferred(MYSQL, "rotd.engines.mysql", "MysqlEngine")


def redis() -> Engine:
    """Redis and Valkey, on redis-py's asyncio client."""
    return _Deferred(REDIS, "rotd.engines.redis", "RedisEngine")
