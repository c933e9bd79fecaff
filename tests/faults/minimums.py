"""What one run of the fault test must have done before its invariants may be believed.

Invariants checked over a run in which the proxies stopped faulting, no process was killed or
every witness login failed would hold without proving anything. :data:`FLOORS` is the least of
each measure a run must reach (kills in each phase, each kind of database and Secrets Manager
fault, processes alive at once and rotations that met a rival, witness logins accepted per
secret, successful and resumed rotations), and :data:`CEILINGS` the most of each kind of error
a run may meet: witness errors that no fault of the test explains, and errors of the fault
injection itself. Each measure is a plain number named after what it counts; :func:`shortfalls`
compares a run's measures with both and says what fell short, so ``test_minimums`` can check it
on made-up totals.

The floors sit below the least that six runs (random seeds, two cores shared with other work)
measured: SIGKILLs 3-11 in phase 1 and 2-6 in phase 2, 2-11 of them in the middle of a
rotation; samples with two processes alive 247-316, with three 196-239 (five a second);
PostgreSQL backends terminated 4-23, MariaDB threads killed 8-18, live connections reset 1-26
(the 1 before a cut waited for traffic), outages 1-5 of each database; 9-32 of each Secrets
Manager fault kind; 106-189 logins accepted by the least busy witness; 14-24 rotations
finished, 6-19 resumed, 8-21 that met a rival, 9-17 versions made by daemons in phase 2; 6-12
``/metrics`` scrapes; no witness error at all; 0-4 injection errors. The least were often
reached only because the test keeps injecting past its planned end, within a limit, while a
floor is short: a slow machine makes a longer run rather than a failed one. The floors catch a
run that injected nothing of a kind, or whose witnesses saw nothing; they are not a quota.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CEILINGS", "FLOORS", "REACHED_BY_INJECTING", "shortfalls"]

FLOORS: dict[str, int] = {
    # The process kinds and their kills.
    "SIGKILLs in phase 1 (rotd rotate)": 2,
    "SIGKILLs in phase 2 (rotd run)": 1,
    "SIGKILLs of a process that had begun a rotation": 1,
    "samples with two processes alive at once": 50,
    "samples with three processes alive at once": 25,
    # Each kind of database fault, counted by what it hit.
    "PostgreSQL backends terminated": 2,
    "MariaDB threads killed": 2,
    "proxy resets of live connections": 2,
    "PostgreSQL outages": 1,
    "MariaDB outages": 1,
    # Each kind of Secrets Manager fault.
    "Secrets Manager throttle": 4,
    "Secrets Manager error_500": 4,
    "Secrets Manager stall": 4,
    "Secrets Manager cut_before": 4,
    "Secrets Manager cut_after": 4,
    # What the witnesses and rotd did.
    "fewest witness logins accepted for one secret": 30,
    "successful rotations": 6,
    "resumed rotations": 2,
    "rotations that met a rival (failed locked, or skipped)": 3,
    "versions created by daemons in phase 2": 3,
    "/metrics scrapes": 2,
}

CEILINGS: dict[str, int] = {
    # A witness connects straight to the database and to moto, around every proxy: no fault
    # of the test stands in its way, so an error other than a refused login is unexplained.
    "witness errors, unexplained": 0,
    # A login that timed out on a machine too busy to answer in time: tolerated, a few.
    "witness logins timed out": 10,
    # Errors of the injection itself: a MariaDB thread that ended before its KILL, a /metrics
    # scrape of a daemon that was just killed, a SIGTERM that needed a SIGKILL after it.
    "injection errors": 30,
}

# The floors that more time under faults can still reach, so the test keeps injecting while
# one of them is short; the others are settled by the time the last phase of faults begins.
REACHED_BY_INJECTING = frozenset(FLOORS) - {
    "SIGKILLs in phase 1 (rotd rotate)",
}


def shortfalls(
    measured: Mapping[str, float],
    floors: Mapping[str, int] = FLOORS,
    ceilings: Mapping[str, int] = CEILINGS,
) -> list[str]:
    """What in ``measured`` is below its floor or above its ceiling, one sentence each; a
    measure that is missing counts as 0, so a total that stopped being counted shows."""
    short = [
        f"{name}: {measured.get(name, 0):g}, at least {least} expected"
        for name, least in floors.items()
        if measured.get(name, 0) < least
    ]
    over = [
        f"{name}: {measured.get(name, 0):g}, at most {most} allowed"
        for name, most in ceilings.items()
        if measured.get(name, 0) > most
    ]
    return short + over
