"""The kit fails an engine that breaks the contract: each test gives it PostgreSQL's engine
with one defect (a wrapper around the real engine, on the real server) and expects the kit's
test for that part of the contract to fail. A kit that passed these engines would prove
nothing about the ones it passes. PostgreSQL serves unless the defect shows only on MariaDB.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest

from rotd.engines import Capabilities, EngineInfo, Login, Session
from rotd.errors import Category, DatabaseError
from rotd.testing import Conformance, CuttingEngine, CuttingSession, Kit
from rotd.testing.aws import AwsEndpoint
from rotd.testing.kit import SINGLE, open_kit
from tests.conformance.targets import DatabaseTarget, RedisTarget
from tests.fixtures.databases import Database, Mariadb, Postgres
from tests.fixtures.redis import RedisServer


class ForgetsPassword(CuttingSession):
    async def set_own_password(self, new_password: str) -> None:
        pass


class LockAlwaysFree(CuttingSession):
    async def try_lock(self, key: str) -> bool:
        return True


class ReplacesPasswords(CuttingSession):
    """Claims several passwords, but keeps only the newest one."""

    async def set_passwords(self, username: str, passwords: Sequence[str]) -> None:
        await self.set_own_password(passwords[0])


class KeepsEveryPassword(CuttingSession):
    """Adds the passwords it is given and never removes one."""

    given: ClassVar[dict[str, list[str]]] = {}

    async def set_passwords(self, username: str, passwords: Sequence[str]) -> None:
        kept = self.given.setdefault(username, [])
        kept[:0] = [p for p in passwords if p not in kept]
        await super().set_passwords(username, kept)


class MirrorsOnce(CuttingSession):
    """Mirrors the original when it creates the clone, and only sets its password after."""

    created: ClassVar[set[str]] = set()

    async def mirror_user(self, original: str, clone: str, new_password: str) -> None:
        if clone in self.created:
            await self.set_password(clone, new_password)
            return
        await super().mirror_user(original, clone, new_password)
        self.created.add(clone)


class Defective(CuttingEngine):
    """The real engine, with sessions of ``session`` and these capabilities changed."""

    def __init__(
        self, engine: Any, session: type[CuttingSession] = CuttingSession, **capabilities: bool
    ) -> None:
        super().__init__(engine)
        self.session = session
        self.capabilities = capabilities

    @property
    def info(self) -> EngineInfo:
        info = super().info
        caps = dataclasses.replace(info.capabilities, **self.capabilities)
        return dataclasses.replace(info, capabilities=caps)

    def capabilities_for(self, settings: Mapping[str, Any]) -> Capabilities:
        return dataclasses.replace(super().capabilities_for(settings), **self.capabilities)

    @asynccontextmanager
    async def _connect(self, login: Login, timeout_s: float) -> AsyncIterator[Session]:
        async with self._engine.connect(login, timeout_s=timeout_s) as session:
            yield self.session(session, login, None, None)


class RefusalAsServerError(Defective):
    """Reports a refused password as a server fault: rotd cannot tell it tried a stale one."""

    @asynccontextmanager
    async def _connect(self, login: Login, timeout_s: float) -> AsyncIterator[Session]:
        try:
            async with super()._connect(login, timeout_s) as session:
                yield session
        except DatabaseError as exc:
            if exc.category is Category.AUTH:
                raise DatabaseError(exc.host, exc.port, Category.SERVER, exc.reason) from None
            raise


class PasswordInErrors(Defective):
    """Says which password was refused."""

    @asynccontextmanager
    async def _connect(self, login: Login, timeout_s: float) -> AsyncIterator[Session]:
        try:
            async with super()._connect(login, timeout_s) as session:
                yield session
        except DatabaseError as exc:
            reason = f"{exc.reason} (password {login.password})"
            raise DatabaseError(exc.host, exc.port, exc.category, reason) from None


@pytest.fixture(params=["postgres"])
async def kit(request: pytest.FixtureRequest, kit_aws: AwsEndpoint) -> AsyncIterator[Kit]:
    db: Database
    if request.param == "postgres":
        db = Postgres(request.getfixturevalue("pg_server"))
    else:
        db = Mariadb(request.getfixturevalue("mysql_server"))
    async with open_kit(DatabaseTarget(db), kit_aws) as kit:
        yield kit
    await db.cleanup()


@pytest.fixture
async def redis_kit(
    redis_servers: Callable[..., RedisServer], kit_aws: AwsEndpoint
) -> AsyncIterator[Kit]:
    async with open_kit(RedisTarget(redis_servers("aclfile")), kit_aws) as kit:
        yield kit


async def test_a_password_never_removed_fails_the_single_user_test(redis_kit: Kit) -> None:
    """several_passwords keeps AWSCURRENT and AWSPREVIOUS, not every password ever set."""
    redis_kit.engine = Defective(redis_kit.engine, KeepsEveryPassword)
    with pytest.raises(AssertionError, match="a password older than AWSPREVIOUS still logs in"):
        await Conformance().test_single_user_rotation(redis_kit)


async def test_a_password_that_never_changes_fails_the_single_user_test(kit: Kit) -> None:
    kit.engine = Defective(kit.engine, ForgetsPassword)
    with pytest.raises(AssertionError):
        await Conformance().test_single_user_rotation(kit)


# A PostgreSQL clone is a member of the original and so inherits later grants by itself;
# MariaDB copies privileges, so there the clone must be mirrored again at every rotation.
@pytest.mark.parametrize("kit", ["mariadb"], indirect=True)
async def test_a_clone_not_mirrored_again_fails_the_alternating_test(kit: Kit) -> None:
    kit.engine = Defective(kit.engine, MirrorsOnce)
    with pytest.raises(AssertionError, match="the clone lacks a grant made since it exists"):
        await Conformance().test_alternating_users_rotation(kit)


async def test_a_lock_that_excludes_nothing_fails_the_lock_test(kit: Kit) -> None:
    kit.engine = Defective(kit.engine, LockAlwaysFree)
    with pytest.raises(AssertionError, match="beside one holding the lock"):
        await Conformance().test_two_rotations_at_once_make_one_version(kit)


async def test_a_refused_login_reported_as_a_server_fault_fails_the_resume_test(
    kit: Kit,
) -> None:
    kit.engine = RefusalAsServerError(kit.engine)
    with pytest.raises(AssertionError):
        await Conformance().test_a_rotation_cut_after_a_step_resumes_and_converges(
            kit, SINGLE, "setSecret"
        )


async def test_a_password_in_an_error_fails_the_secrets_test(kit: Kit) -> None:
    kit.engine = PasswordInErrors(kit.engine)
    with pytest.raises(AssertionError, match="an error holds a password"):
        await Conformance().test_no_secret_in_logs_or_errors(kit)


@pytest.mark.parametrize("strategy", [SINGLE])
async def test_several_passwords_claimed_without_them_fails_the_witness(
    kit: Kit, strategy: str
) -> None:
    kit.engine = Defective(kit.engine, ReplacesPasswords, several_passwords=True)
    with pytest.raises(AssertionError, match="AWSCURRENT refused mid-rotation"):
        await Conformance().test_a_witness_logs_in_throughout(kit, strategy)


async def test_an_engine_without_mirror_user_passes_by_refusing_alternating_users(
    kit: Kit,
) -> None:
    """The other side: what an engine does not declare is checked as refused, not failed."""
    kit.engine = Defective(kit.engine, mirror_user=False)
    await Conformance().test_alternating_users_rotation(kit)


async def test_an_engine_without_a_lock_passes_when_the_version_id_fences(kit: Kit) -> None:
    """Without ``rotation_lock`` two rotations at once still make one version."""
    kit.engine = Defective(kit.engine, LockAlwaysFree, rotation_lock=False)
    await Conformance().test_two_rotations_at_once_make_one_version(kit)
