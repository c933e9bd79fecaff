"""The runner's host limits: the circuit breaker and never starving other hosts."""

from __future__ import annotations

import asyncio

import pytest

from rotd.engines import Endpoint, Family
from rotd.errors import Category, DatabaseError, SecretError
from rotd.runner import HostLimits, Lease

DEAD = Endpoint(Family.POSTGRES, "10.0.0.1", 5432, None)
ALIVE = Endpoint(Family.POSTGRES, "10.0.0.2", 5432, None)


def unreachable(endpoint: Endpoint, *, connecting: bool = True) -> SecretError:
    cause = DatabaseError(endpoint.host, endpoint.port, Category.UNREACHABLE, "connection refused")
    cause.connecting = connecting
    error = SecretError("s", "createSecret", Category.UNREACHABLE, str(cause))
    error.__cause__ = cause
    return error


async def fail_on(hosts: HostLimits, endpoint: Endpoint) -> None:
    with pytest.raises(SecretError):
        async with hosts.slot(endpoint):
            raise unreachable(endpoint)


async def test_an_open_breaker_refuses_at_once_without_touching_the_host() -> None:
    hosts = HostLimits(4, breaker_base_s=3600)
    await fail_on(hosts, DEAD)
    with pytest.raises(DatabaseError) as refused:
        async with hosts.slot(DEAD):
            pytest.fail("the body must not run while the breaker is open")
    assert refused.value.category is Category.UNREACHABLE
    assert refused.value.reason.startswith("not tried: the host failed 1 time(s)")
    async with hosts.slot(ALIVE):
        pass  # other hosts are not affected


async def test_one_probe_at_a_time_and_success_closes_the_breaker() -> None:
    hosts = HostLimits(4, breaker_base_s=0)
    await fail_on(hosts, DEAD)
    async with hosts.slot(DEAD):  # the interval has passed: this one is the probe
        with pytest.raises(DatabaseError):
            async with hosts.slot(DEAD):
                pass  # a second caller while the probe is out is refused
    async with hosts.slot(DEAD), hosts.slot(DEAD):
        pass  # the probe succeeded: the breaker is closed


async def test_failed_probes_lengthen_the_interval() -> None:
    hosts = HostLimits(4, breaker_base_s=0)
    await fail_on(hosts, DEAD)
    await fail_on(hosts, DEAD)  # the probe fails too
    hosts.breaker_base_s = 3600
    await fail_on(hosts, DEAD)
    with pytest.raises(DatabaseError) as refused:
        async with hosts.slot(DEAD):
            pass
    assert "failed 3 time(s)" in refused.value.reason


async def test_a_rotation_waiting_for_a_busy_host_gives_its_global_slot_to_others() -> None:
    hosts = HostLimits(1)
    global_slots = asyncio.Semaphore(1)
    busy = asyncio.Event()
    release_busy = asyncio.Event()
    other_done = asyncio.Event()

    async def holder() -> None:
        async with hosts.slot(DEAD):
            busy.set()
            await release_busy.wait()

    async def queued() -> None:
        lease = Lease(global_slots)
        await lease.acquire()
        try:
            async with hosts.slot(DEAD, lease):
                pass
        finally:
            lease.release()

    async def other() -> None:
        lease = Lease(global_slots)
        await lease.acquire()
        try:
            async with hosts.slot(ALIVE, lease):
                other_done.set()
        finally:
            lease.release()

    hold = asyncio.create_task(holder())
    await busy.wait()
    waiting = asyncio.create_task(queued())
    await asyncio.sleep(0)  # let it take the only global slot and queue on the busy host
    await asyncio.wait_for(other(), timeout=5)
    assert other_done.is_set()
    release_busy.set()
    await asyncio.wait_for(asyncio.gather(hold, waiting), timeout=5)
    assert not global_slots.locked()


async def test_a_session_cut_mid_statement_does_not_open_the_breaker() -> None:
    hosts = HostLimits(4, breaker_base_s=3600)
    with pytest.raises(SecretError):
        async with hosts.slot(DEAD):
            raise unreachable(DEAD, connecting=False)
    async with hosts.slot(DEAD):
        pass  # the host answered before the cut: it is not down
