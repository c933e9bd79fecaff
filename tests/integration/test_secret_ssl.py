"""The secret's ``ssl`` never lowers the inventory's ``tls``: against servers that offer no TLS.

The servers here are the machine's own: PostgreSQL on 127.0.0.1:5432 and MariaDB on
127.0.0.1:3306, neither of which offers TLS (checked first, so that the tests cannot pass for
the wrong reason). A rotation that went on in clear would change the login's password there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from rotd.errors import Category
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database, Mariadb, Postgres, pg_quote_literal
from tests.fixtures.postgres import write_ca
from tests.fixtures.rotation import Rotd, assert_ok, one_secret

# The machine's PostgreSQL, without TLS; it trusts loopback logins, so its stored verifier,
# not a login, tells whether a password changed.
PLAIN_POSTGRES = SimpleNamespace(
    host="127.0.0.1", port=5432, superuser="postgres", superuser_password=""
)


@pytest.fixture(params=["postgres", "mariadb"])
async def plain_db(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """A database whose server offers no TLS."""
    database: Database
    if request.param == "postgres":
        database = Postgres(PLAIN_POSTGRES)
        (row,) = await database.execute_as("postgres", "", "SHOW ssl")
        assert row == ("off",), "the machine's PostgreSQL must offer no TLS for this test"
    else:
        database = Mariadb(request.getfixturevalue("mysql_server"))
        server = database.server
        rows = await database.execute_as(
            server.admin_user, server.admin_password, "SHOW VARIABLES LIKE 'have_ssl'"
        )
        assert rows[0][1] != "YES", "the machine's MariaDB must offer no TLS for this test"
    yield database
    await database.cleanup()


async def stored_password(db: Database, user: str) -> object:
    """The server's record of ``user``'s password, to tell whether anything set it."""
    if db.family == "postgres":
        sql = f"SELECT rolpassword FROM pg_authid WHERE rolname = {pg_quote_literal(user)}"
        return await db.execute_as("postgres", "", sql)
    server = db.server  # type: ignore[attr-defined]
    sql = f"SELECT authentication_string FROM mysql.user WHERE User = {pg_quote_literal(user)}"
    return await db.execute_as(server.admin_user, server.admin_password, sql)


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path, _, _ = write_ca(tmp_path, "ssl")
    return str(path)


@pytest.mark.parametrize("ssl", ["required", "on", "verify-full", "REQUIRED", "yes", False])
async def test_a_secret_cannot_turn_the_inventorys_verify_full_off(
    plain_db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer, ca_file: str, ssl: object
) -> None:
    db = plain_db
    user = db.unique()
    await db.create_login(user, "Initial-pass-1")
    name = await secrets.create(user, db.secret(user, "Initial-pass-1", ssl=ssl))
    before = await stored_password(db, user)
    current = await secrets.version(name)

    inv = one_secret(moto, name, "single_user", tls="verify-full", ca_file=ca_file)
    outcome = await rotd.rotate_one(inv)

    assert outcome.error is not None
    assert outcome.error.category is Category.TLS, outcome.error
    assert "verify-full" in outcome.error.reason
    assert await stored_password(db, user) == before  # no ALTER went over the plain socket
    assert await secrets.version(name) == current


async def test_where_the_inventory_says_nothing_the_secrets_ssl_decides(
    plain_db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    db = plain_db
    user = db.unique()
    await db.create_login(user, "Initial-pass-1")
    refused = await secrets.create(user, db.secret(user, "Initial-pass-1", ssl="required"))
    before = await stored_password(db, user)

    outcome = await rotd.rotate_one(one_secret(moto, refused, "single_user"))
    assert outcome.error is not None
    assert outcome.error.category is Category.TLS, outcome.error
    assert await stored_password(db, user) == before

    # ssl false (AWS's boolean) still turns TLS off where the inventory chose nothing.
    other = db.unique()
    await db.create_login(other, "Initial-pass-1")
    plain = await secrets.create(other, db.secret(other, "Initial-pass-1", ssl=False))
    assert_ok(await rotd.rotate_one(one_secret(moto, plain, "single_user")))


async def test_an_unknown_ssl_is_a_bad_secret_that_changes_nothing(
    plain_db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    db = plain_db
    user = db.unique()
    await db.create_login(user, "Initial-pass-1")
    name = await secrets.create(user, db.secret(user, "Initial-pass-1", ssl="enabled"))
    before = await secrets.stages(name)

    outcome = await rotd.rotate_one(one_secret(moto, name, "single_user"))

    assert outcome.error is not None
    assert outcome.error.category is Category.BAD_SECRET
    assert "`ssl`" in outcome.error.reason
    assert "verify-full" in outcome.error.reason  # it names the accepted values
    assert "Initial-pass-1" not in outcome.error.reason
    assert await secrets.stages(name) == before
