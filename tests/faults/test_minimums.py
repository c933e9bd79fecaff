"""The verdict of ``tests.faults.minimums`` on made-up totals: a run that did what it must
passes, and the runs of the mutations described in ``test_faults`` (no fault injected, every
witness at a closed port) fail, as does a run whose totals stopped being counted."""

from __future__ import annotations

from tests.faults.minimums import CEILINGS, FLOORS, REACHED_BY_INJECTING, shortfalls

FAULTS = [name for name in FLOORS if "SIGKILL" in name or "outage" in name.lower()]
FAULTS += [name for name in FLOORS if name.startswith("Secrets Manager")]
FAULTS += ["PostgreSQL backends terminated", "MariaDB threads killed"]
FAULTS += ["proxy resets of live connections"]


def a_good_run() -> dict[str, float]:
    measured: dict[str, float] = {name: least * 3 for name, least in FLOORS.items()}
    measured |= {name: 0 for name in CEILINGS}
    return measured


def test_a_run_that_did_what_it_must_passes() -> None:
    assert shortfalls(a_good_run()) == []


def test_a_run_at_its_floors_and_ceilings_passes() -> None:
    assert shortfalls(dict(FLOORS) | dict(CEILINGS)) == []


def test_a_run_without_fault_injection_fails_on_every_fault_floor() -> None:
    # What ROTD_FAULTS_MUTATION=no-injection measures: rotations, logins, no faults at all.
    measured = a_good_run() | {name: 0 for name in FAULTS}
    short = shortfalls(measured)
    assert len(short) == len(FAULTS)
    for name in FAULTS:
        assert any(line.startswith(f"{name}: 0, at least") for line in short), name


def test_a_run_whose_witnesses_all_errored_fails() -> None:
    # What ROTD_FAULTS_MUTATION=closed-witness measures: every witness login unreachable.
    measured = a_good_run() | {
        "witness errors, unexplained": 4000,
        "fewest witness logins accepted for one secret": 0,
    }
    assert shortfalls(measured) == [
        f"fewest witness logins accepted for one secret: 0, at least "
        f"{FLOORS['fewest witness logins accepted for one secret']} expected",
        "witness errors, unexplained: 4000, at most 0 allowed",
    ]


def test_one_unexplained_witness_error_fails() -> None:
    measured = a_good_run() | {"witness errors, unexplained": 1}
    assert shortfalls(measured) == ["witness errors, unexplained: 1, at most 0 allowed"]


def test_too_many_injection_errors_fail() -> None:
    measured = a_good_run() | {"injection errors": CEILINGS["injection errors"] + 1}
    assert len(shortfalls(measured)) == 1


def test_a_measure_no_longer_counted_fails() -> None:
    measured = a_good_run()
    del measured["resumed rotations"]
    assert shortfalls(measured) == [
        f"resumed rotations: 0, at least {FLOORS['resumed rotations']} expected"
    ]


def test_only_floors_the_run_can_still_reach_extend_it() -> None:
    assert set(FLOORS) > REACHED_BY_INJECTING
    assert "SIGKILLs in phase 1 (rotd rotate)" not in REACHED_BY_INJECTING
