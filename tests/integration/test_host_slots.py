"""A host slot's kept session, against the real servers: reused only as the same login and
only while it answers, closed when it is not taken in time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from rotd.engines import Endpoint, Login, Session, Tls, TlsMode, all_engines
from rotd.errors import DatabaseError
from rotd.runner import HostSlot, Runner
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database, pg_quote_literal
from tests.fixtures.deadlines import until
from tests.fixtures.rotation import Rotd, assert_ok, make_login, make_master, one_secret


def endpoint(db: Database) -> Endpoint:
    return Endpoint(db.engine, db.host, db.port, db.dbname, Tls(TlsMode.DISABLE))


async def master_login(db: Database) -> Login:
    user = db.unique("m")
    await db.create_master(user, "Master-pass-1")
    return Login(endpoint(db), user, "Master-pass-1")


async def open_session(login: Login) -> tuple[Session, AsyncExitStack]:
    owner = AsyncExitStack()
    engine = all_engines()[login.endpoint.engine]
    session = await owner.enter_async_context(engine.connect(login, timeout_s=10))
    return session, owner


async def works(session: Session) -> bool:
    try:
        await session.ping()
    except DatabaseError:
        return False
    return True


async def sessions_of(db: Database, login: Login) -> int:
    """The login's sessions on the server, other than the one asking."""
    if db.family == "postgres":
        sql = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE usename = current_user AND pid <> pg_backend_pid()"
        )
    else:
        sql = (
            "SELECT count(*) FROM information_schema.processlist "
            "WHERE user = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND id <> CONNECTION_ID()"
        )
    ((count,),) = await db.execute_as(login.username, login.password, sql)
    return int(count)


def no_sessions(db: Database, login: Login) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await sessions_of(db, login) == 0

    return check


async def kill_sessions(db: Database, login: Login) -> None:
    if db.family == "postgres":
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE usename = {pg_quote_literal(login.username)}"
        )
    else:
        await db.execute(f"KILL USER '{login.username}'")


async def test_the_same_login_takes_the_kept_session(db: Database) -> None:
    login = await master_login(db)
    slot = HostSlot(60, set())
    session, owner = await open_session(login)
    slot.keep(login, session, owner)

    taken = await slot.take(login)

    assert taken is not None
    assert taken[0] is session
    assert await works(session)
    assert await slot.take(login) is None, "a kept session is handed out once"
    await owner.aclose()


async def test_another_login_closes_the_kept_session(db: Database) -> None:
    login = await master_login(db)
    other = await master_login(db)
    slot = HostSlot(60, set())
    session, owner = await open_session(login)
    slot.keep(login, session, owner)

    assert await slot.take(other) is None
    assert not await works(session)
    await until(no_sessions(db, login), "the server to end the closed session", 10)


async def test_a_kept_session_the_server_ended_is_not_handed_out(db: Database) -> None:
    login = await master_login(db)
    slot = HostSlot(60, set())
    session, owner = await open_session(login)
    slot.keep(login, session, owner)
    await kill_sessions(db, login)
    await until(no_sessions(db, login), "the server to end the killed session", 10)

    assert await slot.take(login) is None


async def test_a_kept_session_not_taken_in_time_is_closed(db: Database) -> None:
    login = await master_login(db)
    closing: set[asyncio.Task[None]] = set()
    slot = HostSlot(0.05, closing)
    session, owner = await open_session(login)
    slot.keep(login, session, owner)

    await until(no_sessions(db, login), "the idle session to be closed", 10)
    assert not await works(session)
    assert await slot.take(login) is None


async def test_the_session_kept_after_a_rotation_holds_no_rotation_lock(
    db: Database, secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    """The master session outlives the rotation on its slot: the secret's lock must not."""
    _, name = await make_login(db, secrets)
    master = await make_master(db, secrets)
    inv = one_secret(moto, name, "alternating_users", master)
    runner = Runner(rotd.store, all_engines(), max_concurrent=1, max_concurrent_per_host=1)
    try:
        assert_ok(await runner.rotate_one(inv.secrets[0]))
        master_value = await secrets.value(master)
        login = Login(endpoint(db), master_value["username"], master_value["password"])
        assert await sessions_of(db, login) == 1, "the master session is kept for reuse"
        arn = (await secrets.describe(name))["ARN"]
        session, owner = await open_session(login)
        async with owner:
            assert await session.try_lock(arn), "the kept session still holds the lock"
    finally:
        await runner.hosts.close_idle()
    await until(no_sessions(db, login), "the server to end the closed session", 10)
