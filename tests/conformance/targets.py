"""The suite's PostgreSQL and MariaDB as :class:`rotd.testing.Target`: logins made and dropped
as an administrator, and checked with the server's own driver, never the engine under test."""

from __future__ import annotations

from typing import Any

import asyncpg
import pymysql

from tests.fixtures.databases import Database, Mariadb, Postgres, pg_quote_ident


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
