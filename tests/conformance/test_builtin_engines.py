"""rotd's own engines through the conformance kit, as any engine author runs it.

PostgreSQL on the throwaway scram-sha-256 cluster, MariaDB on the machine's server; each
target creates and drops logins as an administrator and checks logins with the server's own
driver (never through the engine under test). The kit's Secrets Manager is its plugin's
``kit_aws`` (loaded in ``tests/conftest.py``), exactly as an author's suite would get it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from rotd.testing import Conformance
from tests.conformance.targets import DatabaseTarget
from tests.fixtures.databases import Mariadb, Postgres


class TestPostgres(Conformance):
    @pytest.fixture
    async def target(self, pg_server: Any) -> AsyncIterator[DatabaseTarget]:
        db = Postgres(pg_server)
        yield DatabaseTarget(db)
        await db.cleanup()  # the tables grant_access made


class TestMariadb(Conformance):
    @pytest.fixture
    async def target(self, mysql_server: Any) -> AsyncIterator[DatabaseTarget]:
        db = Mariadb(mysql_server)
        yield DatabaseTarget(db)
        await db.cleanup()
