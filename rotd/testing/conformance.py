"""The engine contract as tests: subclass :class:`Conformance` and give it a ``target``.

Every test runs rotd's real runner against the author's live server and a Secrets Manager
(moto's server, from :mod:`rotd.testing.plugin`), and checks what an application would see:

- single user: the new AWSCURRENT logs in, the old password is refused (still accepted as
  AWSPREVIOUS where the engine declares ``several_passwords``, or its session says once
  connected that this server and login keep several, and refused one rotation later), other
  keys are kept;
- alternating users (``mirror_user``): the clone is created, logs in and has what the
  original was granted (grants made after it exists too), the previous login keeps working,
  the next rotation comes back to the original;
- a witness logging in with AWSCURRENT throughout rotations, each held right after setSecret,
  is never refused (single user without several passwords: only while the database
  already holds AWSPENDING's password, which it must see);
- a rotation whose connection is lost right after a step did its work (createSecret's write,
  setSecret's statement, testSecret's login, finishSecret's move) is resumed and converges on
  a working AWSCURRENT and no unfinished AWSPENDING;
- with ``rotation_lock``, a second rotation of the same secret at the same time is refused
  ``locked``; without it the second finishes and the first gives way; either way the two
  make exactly one new version;
- no password reaches a rendered log line or an error message.

A strategy the engine does not declare is checked as refused before anything changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from rotd.errors import Category, ConfigErrors
from rotd.inventory import Inventory
from rotd.protocol import Outcome
from rotd.testing.aws import AwsEndpoint
from rotd.testing.faults import Cut, CuttingEngine, CuttingStore, Pause
from rotd.testing.kit import ALTERNATING, KEPT_KEY, SINGLE, Kit, open_kit
from rotd.testing.target import Target
from rotd.testing.witness import Witness

# Where a cut lands: the boundary (engine or store) and the method, per strategy. Single user
# on an engine with several_passwords calls set_passwords instead (see _method).
CUTS = {
    "createSecret": ("store", {SINGLE: "put_pending", ALTERNATING: "put_pending"}),
    "setSecret": ("engine", {SINGLE: "set_own_password", ALTERNATING: "mirror_user"}),
    "testSecret": ("engine", {SINGLE: "run_test", ALTERNATING: "run_test"}),
    "finishSecret": ("store", {SINGLE: "move_current", ALTERNATING: "move_current"}),
}
DEADLINE_S = 60.0


async def until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` when the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {deadline_s:.0f}s"
        await asyncio.sleep(0.01)  # polling a condition, not waiting for time to pass


def _method(kit: Kit, step: str, strategy: str) -> str:
    """The method whose return ends ``step``'s work at the boundary, for this engine."""
    method = CUTS[step][1][strategy]
    if method == "set_own_password" and kit.capabilities.several_passwords:
        return "set_passwords"
    return method


def _ok(outcome: Outcome) -> None:
    assert outcome.error is None, f"{outcome.error} ({outcome.error.category})"


@pytest.mark.asyncio
class Conformance:
    """Subclass it as ``Test<Engine>`` in a test module and override the ``target`` fixture.

    The ``kit_aws`` fixture comes from ``rotd.testing.plugin`` (or your own override).
    """

    @pytest.fixture
    def target(self) -> Target:
        pytest.fail("override the `target` fixture with your engine's rotd.testing.Target")

    @pytest_asyncio.fixture
    async def kit(self, target: Target, kit_aws: AwsEndpoint) -> AsyncIterator[Kit]:
        async with open_kit(target, kit_aws) as kit:
            yield kit
            leaks = await kit.leaks()
            assert not leaks, leaks

    async def _pair(self, kit: Kit, strategy: str) -> tuple[str, str | None]:
        """A login's secret and, for alternating users, its master's secret."""
        _, _, secret = await kit.login()
        master = await kit.master() if strategy == ALTERNATING else None
        return secret, master

    async def _refused_undeclared(self, kit: Kit, strategy: str) -> None:
        """A strategy the engine does not declare is refused, and nothing changes: by the
        inventory's validation when its database names the engine (``engine:``), else by the
        rotation."""
        secret, _ = await self._pair(kit, SINGLE)
        before = await kit.stages(secret)
        inventory: Inventory | None = None
        try:
            inventory = kit.inventory(secret, strategy)
        except ConfigErrors as exc:
            invalid = str(exc)
        if inventory is None:
            assert "lacks the capability" in invalid, invalid
        else:
            outcome = await kit.rotate(inventory)
            assert outcome.error is not None, f"{strategy} rotated without the capability"
            assert outcome.error.category is Category.UNSUPPORTED, outcome.error
        assert await kit.stages(secret) == before, (
            "the refused rotation changed the secret's labels"
        )
        assert await kit.current_logs_in(secret), "AWSCURRENT stopped logging in"

    async def test_single_user_rotation(self, kit: Kit) -> None:
        if not kit.declares(SINGLE):
            await self._refused_undeclared(kit, SINGLE)
            return
        username, password, secret = await kit.login()
        old_version, _ = await kit.value(secret, stage="AWSCURRENT")
        assert await kit.target.logs_in(username, password), "the new login does not log in"
        inventory = kit.inventory(secret, SINGLE)
        several = await kit.several_passwords(secret)

        first = await kit.rotate(inventory)
        _ok(first)
        version, current = await kit.value(secret, stage="AWSCURRENT")
        assert version == first.version_id != old_version, (
            "AWSCURRENT is not on the rotation's new version"
        )
        assert current["username"] == username, "single_user changed the username"
        assert current["password"] != password, "the password did not change"
        assert current[KEPT_KEY] == "kept", "a key rotd does not know was lost"
        assert await kit.logs_in(current), "the new AWSCURRENT does not log in"
        stages = await kit.stages(secret)
        assert stages[old_version] == ["AWSPREVIOUS"], "the old version is not AWSPREVIOUS"
        old_accepted = await kit.target.logs_in(username, password)
        if several:
            assert old_accepted, "several passwords declared or granted, yet AWSPREVIOUS is refused"
        else:
            assert not old_accepted, "the old password still logs in after the rotation"

        second = await kit.rotate(inventory)
        _ok(second)
        assert await kit.current_logs_in(secret), (
            "AWSCURRENT does not log in after a second rotation"
        )
        _, previous = await kit.value(secret, stage="AWSPREVIOUS")
        assert previous["password"] == current["password"], "AWSPREVIOUS is not the first's"
        previous_accepted = await kit.logs_in(previous)
        if several:
            assert previous_accepted, (
                "several passwords declared or granted, yet AWSPREVIOUS is refused"
            )
            assert not await kit.target.logs_in(username, password), (
                "a password older than AWSPREVIOUS still logs in"
            )
        else:
            assert not previous_accepted, "the replaced password still logs in"
        assert await kit.unfinished(secret) == [], "an unfinished AWSPENDING was left"

    async def test_alternating_users_rotation(self, kit: Kit) -> None:
        if not kit.declares(ALTERNATING):
            await self._refused_undeclared(kit, ALTERNATING)
            return
        username, password, secret = await kit.login()
        master = await kit.master()
        inventory = kit.inventory(secret, ALTERNATING, master)
        early = await kit.target.grant_access(username)

        first = await kit.rotate(inventory)
        _ok(first)
        assert (first.old_username, first.new_username) == (username, username + "_clone")
        _, clone = await kit.value(secret, stage="AWSCURRENT")
        assert clone["username"] == username + "_clone", "AWSCURRENT is not the clone"
        assert clone[KEPT_KEY] == "kept", "a key rotd does not know was lost"
        assert await kit.logs_in(clone), "the clone does not log in"
        assert await kit.has_access(clone, early), "the clone lacks what the original has"
        assert await kit.target.logs_in(username, password), "the previous login stopped working"

        second = await kit.rotate(inventory)
        _ok(second)
        assert (second.old_username, second.new_username) == (username + "_clone", username)
        _, back = await kit.value(secret, stage="AWSCURRENT")
        assert back["username"] == username, "the second rotation did not come back to the original"
        assert await kit.logs_in(back), "the original does not log in with its new password"
        assert await kit.logs_in(clone), "the clone (now AWSPREVIOUS) stopped working"
        if not kit.capabilities.several_passwords:
            refused = not await kit.target.logs_in(username, password)
            assert refused, "the original's first password still logs in"

        # Granted to the original after the clone exists: mirrored at the next rotation to it.
        late = await kit.target.grant_access(username)
        _ok(await kit.rotate(inventory))
        _, clone = await kit.value(secret, stage="AWSCURRENT")
        assert clone["username"] == username + "_clone", "the third rotation is not to the clone"
        assert await kit.has_access(clone, early), "the clone lost what the original has"
        assert await kit.has_access(clone, late), "the clone lacks a grant made since it exists"
        assert await kit.unfinished(secret) == [], "an unfinished AWSPENDING was left"

    @pytest.mark.parametrize("strategy", [SINGLE, ALTERNATING])
    async def test_a_witness_logs_in_throughout(self, kit: Kit, strategy: str) -> None:
        """Three rotations, each held right after setSecret's statement (the instant the
        database holds the new password and AWSCURRENT still the old one) while the witness
        logs in a few times."""
        if not kit.declares(strategy):
            await self._refused_undeclared(kit, strategy)
            return
        secret, master = await self._pair(kit, strategy)
        inventory = kit.inventory(secret, strategy, master)
        several = strategy == SINGLE and await kit.several_passwords(secret)
        witness = Witness(kit.target, kit.client, secret)
        stop = asyncio.Event()
        watching = asyncio.create_task(witness.run(stop))
        try:
            await until(witness.first_accepted.is_set, "login of the witness")
            for _ in range(3):
                await self._rotate_watched(kit, inventory, strategy, witness)
            seen = witness.accepted
            await until(lambda: witness.accepted > seen, "login after the last rotation")
        finally:
            stop.set()
            await watching
        counts = {
            "accepted": witness.accepted,
            "window": witness.window,
            "refused": witness.refused,
        }
        assert witness.refused == 0, f"AWSCURRENT and AWSPENDING both refused: {counts}"
        if strategy == ALTERNATING or several:
            assert witness.window == 0, f"AWSCURRENT refused mid-rotation: {counts}"
        else:
            # The database holds only the pending password until finishSecret: the witness
            # must have seen that, or it was not watching.
            assert witness.window > 0, f"the witness never saw the single-user window: {counts}"

    async def _rotate_watched(
        self, kit: Kit, inventory: Inventory, strategy: str, witness: Witness
    ) -> None:
        """One rotation, held after setSecret until the witness logged in a few times."""
        # Alternating users mirror the clone, and set the original's password on the way back.
        also = ("set_password",) if strategy == ALTERNATING else ()
        pause = Pause(_method(kit, "setSecret", strategy), also)
        engine = CuttingEngine(kit.engine, pause=pause)
        rotation = asyncio.create_task(kit.rotate(inventory, engine=engine))
        try:
            await until(lambda: pause.reached.is_set() or rotation.done(), "setSecret")
            if not rotation.done():
                seen = witness.logins
                await until(lambda: witness.logins >= seen + 3, "witness logins")
        finally:
            pause.release.set()
            outcome = await rotation
        _ok(outcome)
        assert pause.reached.is_set(), f"rotd never called {pause.method} in setSecret"

    @pytest.mark.parametrize("step", list(CUTS))
    @pytest.mark.parametrize("strategy", [SINGLE, ALTERNATING])
    async def test_a_rotation_cut_after_a_step_resumes_and_converges(
        self, kit: Kit, strategy: str, step: str
    ) -> None:
        if not kit.declares(strategy):
            await self._refused_undeclared(kit, strategy)
            return
        secret, master = await self._pair(kit, strategy)
        inventory = kit.inventory(secret, strategy, master)
        old_version, _ = await kit.value(secret, stage="AWSCURRENT")
        boundary = CUTS[step][0]
        cut = Cut(_method(kit, step, strategy))
        if boundary == "engine":
            first = await kit.rotate(inventory, engine=CuttingEngine(kit.engine, cut=cut))
        else:
            first = await kit.rotate(inventory, store=CuttingStore(kit.store, cut))
        assert cut.done, f"rotd never called {cut.method} in {step}"
        assert first.error is not None, "the lost answer went unnoticed"
        assert first.error.transient, f"a lost connection is not retried: {first.error}"
        token = first.version_id

        second = await kit.rotate(inventory)
        _ok(second)
        version, current = await kit.value(secret, stage="AWSCURRENT")
        assert await kit.logs_in(current), "AWSCURRENT does not log in after the resume"
        assert await kit.unfinished(secret) == [], "an unfinished AWSPENDING was left"
        if step != "finishSecret":
            assert second.resumed, "the next attempt did not resume the cut rotation"
            assert version == token, "the cut rotation was restarted under a new version"
        assert old_version != version, "AWSCURRENT never moved"
        if strategy == ALTERNATING:
            # The login applications held before the last rotation keeps working.
            _, previous = await kit.value(secret, stage="AWSPREVIOUS")
            assert await kit.logs_in(previous), "AWSPREVIOUS stopped working"

    async def test_two_rotations_at_once_make_one_version(self, kit: Kit) -> None:
        strategy = SINGLE if kit.declares(SINGLE) else ALTERNATING
        secret, master = await self._pair(kit, strategy)
        inventory = kit.inventory(secret, strategy, master)
        before = await kit.history(secret)
        pause = Pause("try_lock")
        first = asyncio.create_task(
            kit.rotate(inventory, engine=CuttingEngine(kit.engine, pause=pause))
        )
        try:
            await asyncio.wait_for(pause.reached.wait(), DEADLINE_S)
            other = await kit.rotate(inventory)
        finally:
            pause.release.set()
            held = await first
        if kit.capabilities.rotation_lock:
            assert other.error is not None, "a second rotation ran beside one holding the lock"
            assert other.error.category is Category.LOCKED, other.error
            _ok(held)
        else:
            # No lock: the second runs to the end; the first then finds AWSCURRENT moved
            # under it and gives way (locked) or finds nothing left to do, writing nothing.
            _ok(other)
            assert held.error is None or held.error.category is Category.LOCKED, held.error
        assert len(await kit.history(secret)) == len(before) + 1, "not exactly one new version"
        assert await kit.current_logs_in(secret), "AWSCURRENT does not log in"
        assert await kit.unfinished(secret) == [], "an unfinished AWSPENDING was left"

    async def test_no_secret_in_logs_or_errors(self, kit: Kit) -> None:
        """Rotations that succeed, fail on a refused login and are cut midway: the kit's
        fixture then finds no password the kit saw in any rendered log line or error."""
        strategy = SINGLE if kit.declares(SINGLE) else ALTERNATING
        secret, master = await self._pair(kit, strategy)
        inventory = kit.inventory(secret, strategy, master)
        _ok(await kit.rotate(inventory))
        cut = Cut("run_test")
        cut_short = await kit.rotate(inventory, engine=CuttingEngine(kit.engine, cut=cut))
        assert cut_short.error is not None, "a rotation cut after testSecret reported success"
        _ok(await kit.rotate(inventory))
        # A secret whose password the server does not hold: the rotation fails as refused.
        username = kit.username()
        await kit.target.create_login(username, kit.password())
        wrong = await kit.create_secret(username, kit.password())
        refused = await kit.rotate(kit.inventory(wrong, strategy, master))
        assert refused.error is not None, (
            "a rotation with a password the server does not hold succeeded"
        )
        assert refused.error.category is Category.AUTH, refused.error
        assert kit.lines, "no log line was captured"
        leaks = await kit.leaks()
        assert not leaks, leaks
