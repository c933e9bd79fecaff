"""The shipped Grafana dashboard (config/grafana/): what the on-call engineer needs on it, and
nothing tied to one Grafana's data source. tests/e2e/test_monitoring_metrics.py checks its
metrics against a running rotd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.fixtures.promtool import promtool

DASHBOARD = Path(__file__).parents[2] / "config" / "grafana" / "rotd-dashboard.json"


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_dashboard_shows_what_the_issue_asks() -> None:
    titles = {p["title"] for p in panels()}
    for wanted in (
        "Credential age against its schedule",
        "Outcomes",
        "Rotation duration",
        "Rotations in flight",
        "Parked secrets",
        "Failures by category",
    ):
        assert wanted in titles


def test_every_panel_queries_the_chosen_prometheus_and_says_what_it_shows() -> None:
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert "$job" in target["expr"], panel["title"]
            assert "$instance" in target["expr"], panel["title"]


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, Grafana's variables given values, as a recording rule."""
    rules = [
        {
            "record": f"dashboard:panel_{panel['id']}_{target['refId']}",
            "expr": target["expr"]
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*"),
        }
        for panel in panels()
        for target in panel["targets"]
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout
