"""The benchmark's report: it prints the parts a run measured, and only those."""

from __future__ import annotations

from typing import Any

from bench.run import RUN_FIGURES, TARGET_SM_CALLS, report, summarize

VERSIONS = ("python", "rotd", "postgresql", "mariadb", "moto", "aioboto3", "asyncpg", "aiomysql")


def scale_only() -> dict[str, Any]:
    """What ``python -m bench.run --no-rotations --scales 100 --runs 1`` measures."""
    return {
        "started": "2024-05-01T12:00:00+00:00",
        "loadavg_at_start": [0.25, 0.2, 0.1],
        "versions": {name: "1.0" for name in VERSIONS},
        "machine": {"cpus": 4, "cpu_model": "Test CPU"},
        "fixture_s": 0.1,
        "scale_fixture_s": 2.0,
        "scale": {
            "100": {
                "validate": [{"wall_s": 0.4, "cpu_s": 0.35, "peak_rss_mb": 60.0}],
                "run": [{"ready_s": 0.9, "rss_ready_mb": 70.0, "sighup_applied_s": 0.05}],
            }
        },
        "logins_dropped": 0,
        "n": 1000,
        "runs": 1,
        "sm_latency_ms": 25.0,
        "db_rtt_ms": 2.0,
        "scales": [100],
        "quick": False,
    }


def with_rotations() -> dict[str, Any]:
    run: dict[str, Any] = {figure: 1.0 for figure in RUN_FIGURES}
    run |= {
        "latency_ms": {"p50": 10.0, "p95": 20.0, "p99": 30.0},
        "failed": 0,
        "sm_calls_per_rotation": {kind: {"total": 4.0} for kind in TARGET_SM_CALLS},
        "db": {"postgres": {"per_rotation": 2.0, "peak_open": 3}},
    }
    return scale_only() | {
        "limits": {
            "max_concurrent": 16,
            "max_concurrent_per_host": 4,
            "max_write_tps": 40.0,
            "max_write_tps_is_default": True,
        },
        "pbkdf2_4096_cpu_ms": 3.0,
        "rotd_startup_cpu_s": 0.5,
        "floor_startup_cpu_s": 0.2,
        "loadavg_after_rotations": [1.5, 1.0, 0.5],
        "rotation": {"bare": {"rotd, default limits": [run]}},
    }


def test_a_run_without_rotations_reports_its_scale_figures_and_nothing_else() -> None:
    results = scale_only()
    text = report(results, summarize(results))

    assert text.startswith("rotd benchmark: inventory scale only, no rotation runs; 1 run(s)")
    assert "== inventory scale" in text
    assert "load average at start 0.25\n" in text
    assert "validate < " in text  # the scale targets are still judged
    for part in ("limits:", "PBKDF2", "latency mode", "floor start-up", "== bare ==", "nan"):
        assert part not in text


def test_a_run_with_rotations_reports_every_part() -> None:
    results = with_rotations()
    text = report(results, summarize(results))

    assert text.startswith("rotd benchmark: N=1000 secrets (500 PostgreSQL, 500 MariaDB;")
    for part in (
        "limits: max_concurrent 16, max_concurrent_per_host 4 (2 hosts)",
        "PBKDF2-SHA256 x4096",
        "latency mode: +25 ms",
        "floor start-up (an empty plan): 0.20 s CPU; load average at start 0.25, after the"
        " rotation runs 1.50",
        "== bare ==",
        "== inventory scale",
        "== targets ==",
    ):
        assert part in text


def test_the_scale_runs_report_start_up_calls_and_ready_with_latency() -> None:
    results = scale_only()
    bare = {"ready_s": 0.9, "rss_ready_mb": 70.0, "sighup_applied_s": 0.05}
    results["scale"]["100"]["run"] = [bare | {"startup_calls_total": 7}]
    results["scale"]["100"]["latency"] = [bare | {"ready_s": 1.4, "startup_calls_total": 12}]
    summary = summarize(results)
    text = report(results, summary)

    assert "SM calls to READY" in text
    assert "+25ms" in text
    verdicts = {t["target"]: (t["value"], t["verdict"]) for t in summary["targets"]}
    assert verdicts["Secrets Manager calls to READY <= 1 per 10 secrets at 100 secrets"] == (
        12,
        "missed",
    )
    assert verdicts[
        "rotd run READY < 10 s with +25 ms per call at 100 secrets (target: 10000)"
    ] == (
        1.4,
        "met",
    )
