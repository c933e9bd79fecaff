"""The Redis engine against real redis-server processes and moto's server.

Each test starts its own servers (tests/fixtures/redis.py) with an ACL file, users in a config
file, or nothing that survives a restart, and rotates secrets through rotd's runner.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rexc
from structlog.testing import capture_logs

from rotd import strategies
from rotd.doctor import Level, diagnose
from rotd.engines import Endpoint, Login, Tls, TlsMode, all_engines, lock_key
from rotd.engines import redis as redis_engine
from rotd.engines.redis import lock as redis_lock
from rotd.engines.redis import nodes as redis_nodes
from rotd.errors import Category, DatabaseError
from rotd.secretstore import connection_for
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.redis import ADMIN_PASSWORD, RedisServer
from tests.fixtures.rotation import Rotd, assert_ok, inventory

INITIAL = "Initial-pass-1"
APP_RULES = ("~app:*", "resetchannels", "-@all", "+get", "+set", "+ping")


def sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def unique(prefix: str = "u") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def secret_value(server: RedisServer, user: str, password: str) -> dict[str, Any]:
    return {
        "engine": "redis",
        "host": "127.0.0.1",
        "port": server.port,
        "username": user,
        "password": password,
        "extra_key": "kept",
    }


async def make_app(
    server: RedisServer, secrets: Secrets, *rules: str, port: int | None = None
) -> tuple[str, str]:
    user = unique()
    server.create_user(user, INITIAL, *(rules or APP_RULES))
    value = secret_value(server, user, INITIAL)
    if port is not None:
        value["port"] = port
    return user, await secrets.create(user, value)


async def make_master(server: RedisServer, secrets: Secrets, *others: RedisServer) -> str:
    user = unique("m")
    for each in (server, *others):
        each.create_user(user, "Master-pass-1", "~*", "&*", "+@all")
    return await secrets.create(user, secret_value(server, user, "Master-pass-1"))


def one_secret(
    moto: MotoServer,
    name: str,
    strategy: str = "single_user",
    master: str | None = None,
    nodes: list[RedisServer] | None = None,
) -> Any:
    body = "databases:\n  - name: cache\n"
    if nodes:
        body += "    nodes: [" + ", ".join(n.address for n in nodes) + "]\n"
    body += f"    secrets:\n      - id: {name}\n        strategy: {strategy}\n"
    if master:
        body += f"        master_secret: {master}\n"
    return inventory(moto, body)


def hashes(server: RedisServer, user: str) -> set[str]:
    return set(server.user(user).get("passwords", []))


async def test_single_user_via_master_keeps_current_and_previous_logging_in(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    server = redis_servers("aclfile")
    user, name = await make_app(server, secrets)
    master = await make_master(server, secrets)
    inv = one_secret(moto, name, master=master)
    rules = server.rules(user)

    first = await rotd.rotate_one(inv)
    assert_ok(first)
    current = await secrets.value(name)
    assert current["username"] == user
    assert current["extra_key"] == "kept"
    assert server.logs_in(user, current["password"])
    assert server.logs_in(user, INITIAL), "AWSPREVIOUS must keep logging in"
    assert hashes(server, user) == {sha(current["password"]), sha(INITIAL)}

    second = await rotd.rotate_one(inv)
    assert_ok(second)
    newest = await secrets.value(name)
    previous = await secrets.value(name, "AWSPREVIOUS")
    assert previous["password"] == current["password"]
    assert server.logs_in(user, newest["password"])
    assert server.logs_in(user, previous["password"])
    assert not server.logs_in(user, INITIAL), "the password older than AWSPREVIOUS is removed"
    assert hashes(server, user) == {sha(newest["password"]), sha(previous["password"])}
    # The user's own rules are untouched.
    assert server.rules(user) == rules


async def test_single_user_with_its_own_acl_permissions_needs_no_master(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    server = redis_servers("config")
    user, name = await make_app(server, secrets, "~*", "+@all")
    outcome = await rotd.rotate_one(one_secret(moto, name))
    assert_ok(outcome)
    current = await secrets.value(name)
    assert server.logs_in(user, current["password"])
    assert server.logs_in(user, INITIAL)
    # Persisted with CONFIG REWRITE: the config file holds the hashes, never the password.
    text = server.config.read_text()
    assert sha(current["password"]) in text
    assert current["password"] not in text


async def test_an_application_holding_awscurrent_is_never_refused_during_rotations(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    server = redis_servers("aclfile")
    user, name = await make_app(server, secrets)
    master = await make_master(server, secrets)
    inv = one_secret(moto, name, master=master)
    refused: list[str] = []
    logins = 0
    done = asyncio.Event()

    async def witness() -> None:
        nonlocal logins
        while not done.is_set():
            password = (await secrets.value(name))["password"]
            client = aioredis.Redis(port=server.port, username=user, password=password)
            try:
                await client.ping()
                logins += 1
            except Exception as exc:
                refused.append(type(exc).__name__)
            finally:
                await client.aclose()

    task = asyncio.create_task(witness())
    try:
        for _ in range(3):
            assert_ok(await rotd.rotate_one(inv))
    finally:
        done.set()
        await task
    assert logins > 0
    assert refused == []


async def test_passwords_reach_the_server_only_as_sha256_hashes(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    server = redis_servers("aclfile")
    sent = bytearray()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", server.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool) -> None:
            try:
                while data := await src.read(65536):
                    if record:
                        sent.extend(data)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    proxy = await asyncio.start_server(forward, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        _, name = await make_app(server, secrets, port=port)
        master = await make_master(server, secrets)
        assert_ok(await rotd.rotate_one(one_secret(moto, name, master=master)))
    finally:
        proxy.close()
        await proxy.wait_closed()
    new = (await secrets.value(name))["password"]
    data = bytes(sent)
    assert b"SETUSER" in data
    assert b"#" + sha(new).encode() in data
    assert b">" + new.encode() not in data
    # The plain password is sent only to log in (testSecret), never in an ACL command.
    at = data.find(new.encode())
    while at != -1:
        assert b"AUTH" in data[max(0, at - 80) : at]
        at = data.find(new.encode(), at + 1)


async def test_the_password_survives_a_restart_of_the_server(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    for persistence in ("aclfile", "config"):
        server = redis_servers(persistence)
        user, name = await make_app(server, secrets)
        master = await make_master(server, secrets)
        assert_ok(await rotd.rotate_one(one_secret(moto, name, master=master)))
        current = await secrets.value(name)
        server.restart()
        assert server.logs_in(user, current["password"]), persistence
        assert server.logs_in(user, INITIAL), persistence


async def test_a_server_that_cannot_persist_users_is_refused_before_anything_changes(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    server = redis_servers("none")
    user, name = await make_app(server, secrets)
    master = await make_master(server, secrets)
    before = await secrets.version(name)

    outcome = await rotd.rotate_one(one_secret(moto, name, master=master))

    assert outcome.error is not None
    assert outcome.error.category is Category.UNSUPPORTED
    assert "aclfile" in str(outcome.error)
    assert await secrets.version(name) == before
    stages = await secrets.stages(name)
    assert stages == {before: ["AWSCURRENT"]}, "no pending version is written"
    assert hashes(server, user) == {sha(INITIAL)}


async def test_alternating_users_mirror_every_rule_including_removals(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    server = redis_servers("aclfile")
    user, name = await make_app(
        server, secrets, "~app:*", "%R~ro:*", "&news", "-@all", "+get", "+set", "(~sel:* +hget)"
    )
    master = await make_master(server, secrets)
    inv = one_secret(moto, name, "alternating_users", master)
    clone = user + "_clone"

    assert_ok(await rotd.rotate_one(inv))
    current = await secrets.value(name)
    assert current["username"] == clone
    assert server.rules(clone) == server.rules(user)
    assert "(~sel:* resetchannels -@all +hget)" in " ".join(server.rules(clone))
    assert server.logs_in(clone, current["password"])
    assert server.logs_in(user, INITIAL)

    server.acl("SETUSER", user, "-set", "resetkeys", "~app:*")  # rights taken from the original
    assert_ok(await rotd.rotate_one(inv))  # back to the original
    assert_ok(await rotd.rotate_one(inv))  # the clone again: mirrored anew
    assert (await secrets.value(name))["username"] == clone
    assert server.rules(clone) == server.rules(user)
    assert "+set" not in server.rules(clone)
    assert "%R~ro:*" not in server.rules(clone)


async def test_every_node_gets_the_password(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    a, b = redis_servers("aclfile"), redis_servers("config")
    user, name = await make_app(a, secrets)
    b.create_user(user, INITIAL, *APP_RULES)
    master = await make_master(a, secrets, b)

    assert_ok(await rotd.rotate_one(one_secret(moto, name, master=master, nodes=[a, b])))

    current = await secrets.value(name)
    for node in (a, b):
        assert node.logs_in(user, current["password"]), node.address
        assert node.logs_in(user, INITIAL), node.address
        node.restart()
        assert node.logs_in(user, current["password"]), node.address


async def test_a_node_down_fails_transiently_before_anything_moves(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    a, b = redis_servers("aclfile"), redis_servers("aclfile")
    user, name = await make_app(a, secrets)
    b.create_user(user, INITIAL, *APP_RULES)
    master = await make_master(a, secrets, b)
    before = await secrets.version(name)
    b.stop()

    outcome = await rotd.rotate_one(one_secret(moto, name, master=master, nodes=[a, b]))

    assert outcome.error is not None
    assert outcome.error.category is Category.UNREACHABLE
    assert outcome.error.transient
    assert b.address in str(outcome.error)
    assert await secrets.stages(name) == {before: ["AWSCURRENT"]}
    assert hashes(a, user) == {sha(INITIAL)}


async def test_a_cut_after_the_add_leaves_at_most_three_passwords_and_converges(
    redis_servers: Callable[..., RedisServer],
    secrets: Secrets,
    rotd: Rotd,
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = redis_servers("aclfile")
    user, name = await make_app(server, secrets)
    master = await make_master(server, secrets)
    inv = one_secret(moto, name, master=master)
    assert_ok(await rotd.rotate_one(inv))  # now AWSCURRENT and AWSPREVIOUS both log in
    add_pending = strategies.add_pending

    async def add_then_cut(*args: Any) -> None:
        await add_pending(*args)
        raise DatabaseError("127.0.0.1", server.port, Category.UNREACHABLE, "cut by the test")

    monkeypatch.setattr(strategies, "add_pending", add_then_cut)
    cut = await rotd.rotate_one(inv)
    assert cut.error is not None
    assert len(hashes(server, user)) == 3
    current = await secrets.value(name)
    assert server.logs_in(user, current["password"])

    monkeypatch.setattr(strategies, "add_pending", add_pending)
    resumed = await rotd.rotate_one(inv)
    assert_ok(resumed)
    assert resumed.resumed
    newest = await secrets.value(name)
    assert hashes(server, user) == {sha(newest["password"]), sha(current["password"])}


async def test_a_cut_after_finish_is_a_warning_and_the_next_rotation_converges(
    redis_servers: Callable[..., RedisServer],
    secrets: Secrets,
    rotd: Rotd,
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = redis_servers("aclfile")
    user, name = await make_app(server, secrets)
    master = await make_master(server, secrets)
    inv = one_secret(moto, name, master=master)
    assert_ok(await rotd.rotate_one(inv))
    keep = strategies.keep_passwords

    async def refuse_after_finish(session: Any, username: str, kept: Any) -> None:
        if len(kept) == 2:  # finishSecret's: the new AWSCURRENT and AWSPREVIOUS only
            raise DatabaseError("127.0.0.1", server.port, Category.UNREACHABLE, "cut by the test")
        await keep(session, username, kept)

    monkeypatch.setattr(strategies, "keep_passwords", refuse_after_finish)
    with capture_logs() as events:
        assert_ok(await rotd.rotate_one(inv))
    assert [e for e in events if e["event"] == "rotation.passwords_kept"]
    assert len(hashes(server, user)) == 3

    monkeypatch.setattr(strategies, "keep_passwords", keep)
    assert_ok(await rotd.rotate_one(inv))
    current = await secrets.value(name)
    previous = await secrets.value(name, "AWSPREVIOUS")
    assert hashes(server, user) == {sha(current["password"]), sha(previous["password"])}


@pytest.fixture
async def two_sessions(
    redis_servers: Callable[..., RedisServer],
) -> AsyncIterator[tuple[RedisServer, Any, Any]]:
    server = redis_servers("aclfile")
    endpoint = Endpoint("redis", "127.0.0.1", server.port, None)
    login = Login(endpoint, "admin", ADMIN_PASSWORD)
    engine = all_engines()["redis"]
    async with engine.connect(login, timeout_s=5) as one, engine.connect(login, timeout_s=5) as two:
        yield server, one, two


async def test_the_lock_excludes_others_and_only_its_owner_releases_it(
    two_sessions: tuple[RedisServer, Any, Any],
) -> None:
    server, one, two = two_sessions
    arn = "arn:aws:secretsmanager:us-east-1:1:secret:" + unique()
    assert await one.try_lock(arn)
    assert await one.try_lock(arn), "taking it again renews it"
    assert not await two.try_lock(arn)
    await one.unlock(arn)
    assert await two.try_lock(arn)
    # An owner that lost its lock (expired, taken by another) never deletes the new owner's.
    key = lock_key(arn)[1]
    with server.admin() as admin:
        admin.set(key, "someone-else")
        await two.unlock(arn)
        assert admin.get(key) == "someone-else"
        admin.delete(key)


async def test_the_lock_is_renewed_while_held(
    two_sessions: tuple[RedisServer, Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, one, _ = two_sessions
    monkeypatch.setattr(redis_lock, "LOCK_TTL_S", 0.6)
    arn = "arn:aws:secretsmanager:us-east-1:1:secret:" + unique()
    assert await one.try_lock(arn)
    key = lock_key(arn)[1]
    deadline = time.monotonic() + 10
    renewals, last = 0, 10_000
    with server.admin() as admin:
        while renewals < 3 and time.monotonic() < deadline:
            ttl = admin.pttl(key)
            assert ttl > 0, "the lock expired while held"
            if ttl > last:
                renewals += 1
            last = ttl
            await asyncio.sleep(0.02)
    assert renewals >= 3
    assert await one.try_lock(arn)
    await one.unlock(arn)


async def test_login_errors_are_categorised(
    redis_servers: Callable[..., RedisServer],
) -> None:
    server = redis_servers("aclfile")
    engine = all_engines()["valkey"]
    endpoint = Endpoint("valkey", "127.0.0.1", server.port, None)
    with pytest.raises(DatabaseError) as refused:
        async with engine.connect(Login(endpoint, "admin", "wrong"), timeout_s=5):
            pass
    assert refused.value.category is Category.AUTH
    assert "wrong" not in str(refused.value)
    server.stop()
    with pytest.raises(DatabaseError) as down:
        async with engine.connect(Login(endpoint, "admin", ADMIN_PASSWORD), timeout_s=5):
            pass
    assert down.value.category is Category.UNREACHABLE
    with pytest.raises(DatabaseError) as bad_name:
        async with engine.connect(Login(endpoint, "bad name", "x"), timeout_s=5):
            pass
    assert bad_name.value.category is Category.BAD_SECRET


async def doctor_checks(inv: Any, secret_id: str) -> dict[str, Any]:
    checks = await diagnose(inv, inv.secrets, connection_for(inv))
    return {c.name: c for c in checks if c.secret_id == secret_id}


async def test_doctor_checks_login_permissions_persistence_and_every_node(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, moto: MotoServer
) -> None:
    a, b = redis_servers("aclfile"), redis_servers("config")
    user, name = await make_app(a, secrets)
    b.create_user(user, INITIAL, *APP_RULES)
    master = await make_master(a, secrets, b)
    inv = one_secret(moto, name, master=master, nodes=[a, b])
    stages = await secrets.stages(name)

    found = await doctor_checks(inv, name)
    assert found["db.login"].level is Level.OK
    assert found["master.reset_password"].level is Level.OK, found["master.reset_password"].line()
    assert "db.own_password" not in found  # the master changes the passwords
    assert await secrets.stages(name) == stages
    assert hashes(a, user) == hashes(b, user) == {sha(INITIAL)}

    # Without a master, the application user may not run ACL SETUSER: doctor says how to fix.
    own = await doctor_checks(one_secret(moto, name, nodes=[a, b]), name)
    assert own["db.own_password"].level is Level.FAIL
    assert "+acl|setuser" in (own["db.own_password"].fix or "")

    b.stop()
    down = await doctor_checks(inv, name)
    assert down["db.reachable"].level is Level.FAIL
    assert b.address in down["db.reachable"].detail


async def test_doctor_fails_a_server_that_cannot_persist_users(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, moto: MotoServer
) -> None:
    server = redis_servers("none")
    _, name = await make_app(server, secrets)
    master = await make_master(server, secrets)
    found = await doctor_checks(one_secret(moto, name, master=master), name)
    verdict = found["master.reset_password"]
    assert verdict.level is Level.FAIL
    assert "aclfile" in (verdict.fix or "")


async def test_tls_verifies_the_server_and_the_rotation_goes_through_it(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    server = redis_servers("aclfile", tls=True)
    assert server.ca_file is not None
    engine = all_engines()["redis"]
    verified = Endpoint(
        "redis", "localhost", server.port, None, Tls(TlsMode.VERIFY_FULL, str(server.ca_file))
    )
    async with engine.connect(Login(verified, "admin", ADMIN_PASSWORD), timeout_s=5) as session:
        assert await session.tls_in_use()
    # Another CA did not sign the server's certificate: refused as a TLS failure.
    other = redis_servers("aclfile", tls=True)
    assert other.ca_file is not None
    wrong = Endpoint(
        "redis", "localhost", server.port, None, Tls(TlsMode.VERIFY_CA, str(other.ca_file))
    )
    with pytest.raises(DatabaseError) as refused:
        async with engine.connect(Login(wrong, "admin", ADMIN_PASSWORD), timeout_s=5):
            pass
    assert refused.value.category is Category.TLS

    user = unique()
    server.create_user(user, INITIAL, *APP_RULES)
    value = secret_value(server, user, INITIAL) | {"host": "localhost", "ssl": "verify-full"}
    name = await secrets.create(user, value)
    master = unique("m")
    server.create_user(master, "Master-pass-1", "~*", "&*", "+@all")
    master_value = secret_value(server, master, "Master-pass-1") | {"host": "localhost"}
    master_name = await secrets.create(master, master_value)
    body = (
        "databases:\n  - name: cache\n    tls: verify-full\n"
        f"    ca_file: {server.ca_file}\n    secrets:\n      - id: {name}\n"
        f"        master_secret: {master_name}\n"
    )
    assert_ok(await rotd.rotate_one(inventory(moto, body)))
    assert server.logs_in(user, (await secrets.value(name))["password"])


async def test_a_node_lost_midway_is_resumed_until_every_node_agrees(
    redis_servers: Callable[..., RedisServer],
    secrets: Secrets,
    rotd: Rotd,
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = redis_servers("aclfile"), redis_servers("config")
    user, name = await make_app(a, secrets)
    b.create_user(user, INITIAL, *APP_RULES)
    master = await make_master(a, secrets, b)
    inv = one_secret(moto, name, master=master, nodes=[a, b])
    read_hashes = redis_engine.RedisSession._hashes
    reads: list[str] = []

    async def b_dies_after_a_changed(self: Any, node: Any, username: str) -> list[str]:
        reads.append(node.address)
        if node.address == b.address and reads.count(b.address) == 2:
            b.stop()  # the first read was the check before any change; now a has been told
        return await read_hashes(self, node, username)

    monkeypatch.setattr(redis_engine.RedisSession, "_hashes", b_dies_after_a_changed)
    cut = await rotd.rotate_one(inv)
    assert cut.error is not None
    assert cut.error.transient
    assert len(hashes(a, user)) == 2, "a holds the pending password besides the current one"
    assert (await secrets.value(name))["password"] == INITIAL, "AWSCURRENT has not moved"

    monkeypatch.setattr(redis_engine.RedisSession, "_hashes", read_hashes)
    b.start()
    resumed = await rotd.rotate_one(inv)
    assert_ok(resumed)
    assert resumed.resumed
    newest = await secrets.value(name)
    for node in (a, b):
        assert hashes(node, user) == {sha(newest["password"]), sha(INITIAL)}, node.address


def test_a_hash_the_server_quotes_back_never_reaches_an_error() -> None:
    digest = sha("Some-password-1")
    said = rexc.ResponseError(
        f"Error in ACL SETUSER modifier '!{digest}': The password you are trying to remove "
        "from the user does not exist"
    )
    endpoint = Endpoint("redis", "127.0.0.1", 6379, None)
    node = redis_nodes.Node("127.0.0.1", 6379, None)
    error = redis_nodes.translate(
        said, node, endpoint, doing="set the passwords", user="app", timeout_s=5
    )
    assert error.category is Category.SERVER
    assert digest not in str(error)
    assert "<hash>" in str(error)


async def test_the_test_query_is_a_command_and_its_refusal_fails_the_test(
    redis_servers: Callable[..., RedisServer],
) -> None:
    server = redis_servers("aclfile")
    user = unique()
    server.create_user(user, INITIAL, *APP_RULES)
    endpoint = Endpoint("redis", "127.0.0.1", server.port, None)
    async with all_engines()["redis"].connect(Login(endpoint, user, INITIAL), timeout_s=5) as s:
        await s.run_test("GET app:health")
        with pytest.raises(DatabaseError) as refused:
            await s.run_test("GET other:key")  # outside the user's key patterns
    assert refused.value.category is Category.TEST_FAILED


async def test_an_unusable_pending_version_is_dropped_when_the_master_adds_passwords(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    server = redis_servers("aclfile")
    user, name = await make_app(server, secrets)
    master = await make_master(server, secrets)
    stale = await secrets.put_pending(name, {"engine": "redis"})  # no username: unusable

    with capture_logs() as events:
        outcome = await rotd.rotate_one(one_secret(moto, name, master=master))

    assert_ok(outcome)
    assert outcome.version_id != stale
    assert "stale AWSPENDING removed; starting a new rotation" in [
        e.get("case") for e in events if e["event"] == "rotation.recovering"
    ]
    assert "AWSPENDING" not in (await secrets.stages(name)).get(stale, [])
    assert server.logs_in(user, (await secrets.value(name))["password"])
    assert server.logs_in(user, INITIAL)


async def test_in_a_cluster_the_lock_goes_to_the_node_serving_its_key(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    a = redis_servers("aclfile", cluster=True)
    b = redis_servers("aclfile", cluster=True)
    user, name = await make_app(a, secrets)
    b.create_user(user, INITIAL, *APP_RULES)
    master = await make_master(a, secrets, b)
    arn = (await secrets.describe(name))["ARN"]
    with a.admin() as admin_a, b.admin() as admin_b:
        # The lock key's slot is served by b, the second node: a answers MOVED for it.
        slot = admin_a.execute_command("CLUSTER", "KEYSLOT", lock_key(arn)[1])
        for low, high in ((0, slot - 1), (slot + 1, 16383)):
            if low <= high:
                admin_a.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
        admin_b.execute_command("CLUSTER", "ADDSLOTS", slot)
        admin_a.execute_command("CLUSTER", "MEET", "127.0.0.1", b.port, b.cluster_port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [c.execute_command("CLUSTER", "INFO") for c in (admin_a, admin_b)]
            if all("cluster_state:ok" in str(state) for state in states):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"the cluster did not form: {states}")

    outcome = await rotd.rotate_one(one_secret(moto, name, master=master, nodes=[a, b]))

    assert_ok(outcome)
    current = await secrets.value(name)
    for node in (a, b):
        assert hashes(node, user) == {sha(current["password"]), sha(INITIAL)}, node.address


async def test_a_primary_and_its_replica_both_get_the_password(
    redis_servers: Callable[..., RedisServer], secrets: Secrets, rotd: Rotd, moto: MotoServer
) -> None:
    primary, replica = redis_servers("aclfile"), redis_servers("aclfile")
    user, name = await make_app(primary, secrets)
    replica.create_user(user, INITIAL, *APP_RULES)
    master = await make_master(primary, secrets, replica)
    await replica.replicate(primary)

    assert_ok(
        await rotd.rotate_one(one_secret(moto, name, master=master, nodes=[primary, replica]))
    )

    current = await secrets.value(name)
    for node in (primary, replica):
        assert hashes(node, user) == {sha(current["password"]), sha(INITIAL)}, node.address
    replica.restart()
    assert replica.logs_in(user, current["password"])
