"""Reading a daemon's ``/status`` back for ``rotd status --daemon``: the address, and the rows."""

from __future__ import annotations

from typing import Any

import pytest

from rotd.daemonstatus import DaemonUnreachable, reports, status_url


@pytest.mark.parametrize(
    ("given", "asked"),
    [
        ("http://127.0.0.1:9464", "http://127.0.0.1:9464/status"),
        ("http://127.0.0.1:9464/", "http://127.0.0.1:9464/status"),
        ("127.0.0.1:9464", "http://127.0.0.1:9464/status"),
        ("https://rotd.internal/status", "https://rotd.internal/status"),
        ("http://proxy/rotd/", "http://proxy/rotd/status"),
    ],
)
def test_the_status_address_is_made_from_the_listen_address(given: str, asked: str) -> None:
    assert status_url(given) == asked


def test_only_http_is_asked() -> None:
    with pytest.raises(DaemonUnreachable, match="http://HOST:PORT"):
        status_url("file:///etc/passwd")


def row(secret_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "secret_id": secret_id,
        "database": "orders",
        "account": "111111111111",
        "region": "eu-west-1",
        "strategy": "single_user",
        "engine": "postgres",
        "username": "app",
        "last_rotated": "2026-11-01T00:00:00+00:00",
        "next_due": "2026-12-01T00:00:00+00:00",
        "unfinished": None,
        "problem": None,
        "rotating": None,
        "last_outcome": None,
        "retry_at": None,
        "consecutive_failures": 0,
        "overdue": False,
        "max_age_s": 2_678_400.0,
    }
    return {**base, **fields}


def test_each_row_says_what_the_daemon_is_doing_about_the_secret() -> None:
    failed = {"outcome": "failed", "category": "unreachable", "step": "createSecret"}
    document = {
        "secrets": [
            row("a"),
            row(
                "b",
                rotating={"step": "testSecret", "started_at": "T0", "attempt": 2},
            ),
            row("c", retry_at="T1", consecutive_failures=2, last_outcome=failed),
            row("d", problem={"category": "auth", "reason": "password refused"}),
            row("e", overdue=True),
        ]
    }
    lines = [report.line() for report in reports(document)]
    assert lines[0].endswith("next=2026-12-01T00:00:00+00:00  ok")
    assert lines[1].endswith("ok; rotating: testSecret since T0 (attempt 2)")
    assert lines[2].endswith("ok; retry at T1 after 2 failure(s): unreachable at createSecret")
    assert lines[3].endswith("PROBLEM: auth: password refused")
    assert lines[4].endswith(
        "ok; OVERDUE: credential older than its schedule and window allow (31 days)"
    )
    assert lines[0].startswith(
        "a  db=orders aws=111111111111/eu-west-1 engine=postgres strategy=single_user user=app "
    )


def test_a_bridged_row_says_so_and_has_no_due_time_of_rotds() -> None:
    (report,) = reports({"secrets": [row("a", rotation="bridge", next_due=None)]})
    assert report.rotation == "bridge"
    assert report.line().startswith(
        "a  db=orders aws=111111111111/eu-west-1 engine=postgres strategy=single_user "
        "rotation=bridge user=app last=2026-11-01T00:00:00+00:00 next=-  ok"
    )
