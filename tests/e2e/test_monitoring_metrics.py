"""Every metric the shipped alert rules and dashboard use is one a real ``rotd run`` serves:
a renamed metric breaks this test, not the on-call engineer's alerts."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, free_tcp_port

Start = Callable[..., RotdProcess]
CONFIG = Path(__file__).parents[2] / "config"
METRIC = re.compile(r"\brotd_[a-z0-9_]+")
# The samples a family of each type serves (a counter's _created is never queried).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def rule_expressions() -> list[str]:
    document = yaml.safe_load((CONFIG / "prometheus" / "rotd-rules.yml").read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((CONFIG / "grafana" / "rotd-dashboard.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    expressions += [
        v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    return [e for e in expressions if isinstance(e, str)]


def served(port: int) -> set[str]:
    """The series names ``/metrics`` serves, declared families without samples included."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_metric_of_the_rules_and_the_dashboard_is_served(
    secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    missing = secrets.name("missing")
    listen = free_tcp_port()
    path = write_inventory(
        tmp_path / "inv.yaml", moto, [{"id": missing}], daemon={"listen": f"127.0.0.1:{listen}"}
    )
    process = rotd_process("run", "-c", str(path))
    process.wait_for_event("rotation.parked", 60)
    names = served(listen)
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0

    by_rules = {m for e in rule_expressions() for m in METRIC.findall(e)}
    by_dashboard = {m for e in dashboard_expressions() for m in METRIC.findall(e)}
    assert len(by_rules) >= 10, by_rules
    assert len(by_dashboard) >= 12, by_dashboard
    unknown: dict[str, Any] = {
        "rules": sorted(by_rules - names),
        "dashboard": sorted(by_dashboard - names),
    }
    assert unknown == {"rules": [], "dashboard": []}, f"not served by rotd: {unknown}"
