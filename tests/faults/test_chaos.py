"""The database fault schedule's dice, without a database: every kind of connection fault is
injected in every run, whatever the seed draws."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from tests.faults.chaos import DatabaseFaults

# A CI run's seed (1665917393) whose database faults drew no proxy cut in 29 faults: the
# generator DatabaseFaults got from it.
FAULTS_SEED = 1665917393


def dice(seed: int) -> DatabaseFaults:
    rng = random.Random(seed)
    rng.random()  # the HTTP proxy's generator comes first
    nothing: Any = None
    proxies: Any = {"postgres": None, "mariadb": None}
    return DatabaseFaults(random.Random(rng.random()), nothing, "", 0, proxies)


def replay(faults: DatabaseFaults, n: int, hits: int = 1) -> Counter[str]:
    """The kinds of the first ``n`` faults, each cut or kill hitting ``hits`` connections and
    each outage taking the database with the fewest away (as the run counts them)."""
    drawn: Counter[str] = Counter()
    for _ in range(n):
        faults.rng.uniform(0.8, 2.4)  # the wait before each fault
        kind = faults.next_kind()
        drawn[kind] += 1
        faults.counts[kind] += 1
        if kind == "outage":
            name = min(("postgres", "mariadb"), key=lambda p: faults.counts[f"outage_{p}"])
            faults.counts[f"outage_{name}"] += 1
            faults.rng.random()
            faults.rng.random()
            faults.rng.uniform(1.0, 3.0)
        else:
            effect = {"pg_terminate": "pg_terminate_backends", "mysql_kill": "mysql_kill_threads"}
            faults.counts[effect.get(kind, "proxy_cut_connections")] += hits
    return drawn


def test_the_seed_that_drew_no_proxy_cut_now_cuts_connections() -> None:
    drawn = replay(dice(FAULTS_SEED), 29)
    assert drawn["proxy_cut"] >= 2, drawn
    assert min(drawn[k] for k in ("pg_terminate", "mysql_kill", "outage")) >= 2, drawn


def test_every_seed_injects_every_kind_early() -> None:
    for seed in range(200):
        drawn = replay(dice(seed), 16)
        assert all(drawn[kind] >= 1 for kind in ("pg_terminate", "mysql_kill", "proxy_cut")), (
            seed,
            drawn,
        )


def test_a_cut_that_hits_nothing_is_owed_again() -> None:
    """A cut aimed when rotd had no connection open reset nothing: it is drawn again."""
    drawn = replay(dice(FAULTS_SEED), 29, hits=0)
    assert drawn["proxy_cut"] >= 5, drawn
