"""The logins and secrets a fault test rotates, and the inventories that route rotd to them.

A :class:`Fleet` makes, in PostgreSQL and MariaDB alike, a master login and any number of
logins of each strategy, each with its secret (unique names; the ``Database`` helpers and the
``secrets`` fixture remove them) and a table only the original login may read, so that a
clone that lost a privilege shows. Secrets hold the servers' real addresses, which the
witnesses use; the inventories route rotd through the test's TCP proxies instead, with the
``databases[].host/port`` override, and to Secrets Manager through the HTTP fault proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.faults.witness import Target
from tests.fixtures.aws import Secrets
from tests.fixtures.databases import Database
from tests.fixtures.rotation import make_login, make_master

__all__ = ["Fleet", "Member"]

SINGLE = "single_user"
ALTERNATING = "alternating_users"


@dataclass(frozen=True)
class Member:
    """One rotated secret."""

    secret_id: str
    database: str  # the inventory's database name: "postgres" or "mariadb"
    strategy: str
    group: str  # which inventories list it
    target: Target
    user: str
    table: str

    @property
    def alternating(self) -> bool:
        return self.strategy == ALTERNATING


@dataclass
class Fleet:
    databases: dict[str, Database]  # by inventory database name
    secrets: Secrets
    members: list[Member] = field(default_factory=list)
    masters: dict[str, str] = field(default_factory=dict)  # database name -> master secret

    async def add_masters(self) -> None:
        for database, db in self.databases.items():
            self.masters[database] = await make_master(db, self.secrets)

    async def add(self, database: str, strategy: str, group: str) -> Member:
        db = self.databases[database]
        user, name = await make_login(db, self.secrets)
        table = await db.create_table(owner_grant_to=user)
        member = Member(
            secret_id=name,
            database=database,
            strategy=strategy,
            group=group,
            target=Target(name, db.family, strategy, db.host, db.port, db.dbname),
            user=user,
            table=table,
        )
        self.members.append(member)
        return member

    def in_groups(self, *groups: str) -> list[Member]:
        return [m for m in self.members if m.group in groups]

    def by_id(self) -> dict[str, Member]:
        return {m.secret_id: m for m in self.members}

    def routed(
        self, routes: dict[str, tuple[str, int]], members: list[Member]
    ) -> list[dict[str, Any]]:
        """An inventory's databases, one per engine, reached at ``routes[name]`` (the proxy)."""
        databases = []
        for name, (host, port) in routes.items():
            entries = [
                {"id": m.secret_id, "strategy": m.strategy}
                | ({"master_secret": self.masters[name]} if m.alternating else {})
                for m in members
                if m.database == name
            ]
            if entries:
                databases.append(
                    {"name": name, "host": host, "port": port, "tls": "disable", "secrets": entries}
                )
        return databases
