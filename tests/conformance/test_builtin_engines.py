"""rotd's own engines through the conformance kit, as any engine author runs it.

PostgreSQL on the throwaway scram-sha-256 cluster, MariaDB on the machine's server; each
target creates and drops logins as an administrator and checks logins with the server's own
driver (never through the engine under test). The kit's Secrets Manager is its plugin's
``kit_aws`` (loaded in ``tests/conftest.py``), exactly as an author's suite would get it.
"""

from __future__ import annotations

from typing import Any

import pytest

from rotd.testing import Conformance
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


class TestPostgres(Conformance):
    @pytest.fixture
    def target(self, pg_server: Any) -> DatabaseTarget:
        return DatabaseTarget(Postgres(pg_server))


class TestMariadb(Conformance):
    @pytest.fixture
    def target(self, mysql_server: Any) -> DatabaseTarget:
        return DatabaseTarget(Mariadb(mysql_server))
