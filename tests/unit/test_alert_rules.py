"""The shipped alert rules (config/prometheus/), checked and unit-tested by Prometheus's own
``promtool``: valid, every alert shown firing and silent, each telling what to run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.promtool import PROMETHEUS, promtool

RULES = PROMETHEUS / "rotd-rules.yml"
RULE_TESTS = PROMETHEUS / "rotd-rules.test.yml"


def alerts(path: Path = RULES) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    names = [rule["alert"] for rule in alerts()]
    assert len(names) >= 10
    for name in names:
        outcomes = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == name]
        assert True in outcomes, f"{name} is never shown firing"
        assert False in outcomes, f"{name} is never shown silent"


def test_every_alert_says_what_to_run() -> None:
    for rule in alerts():
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        commands = re.findall(r"`([^`]+)`", annotations["description"])
        assert commands, f"{rule['alert']} names no command to run"
        if "path" in rule["expr"] or "group_left (path)" in rule["expr"]:
            assert any(c.startswith("rotd doctor -c {{ $labels.path }}") for c in commands) or any(
                c.startswith("rotd validate -c") for c in commands
            ), rule["alert"]


def test_a_broken_rule_fails_its_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: a parked secret alerting at once breaks the 'still silent at
    3 minutes' case."""
    broken = RULES.read_text().replace(
        "(rotd_secret_problem == 1)\n          * on (job, instance) group_left (path) "
        "rotd_inventory_info\n        for: 5m",
        "(rotd_secret_problem == 1)\n          * on (job, instance) group_left (path) "
        "rotd_inventory_info\n        for: 0m",
    )
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0
    assert "alertname: RotdSecretParked, time: 3m" in tested.stdout + tested.stderr
