"""Rendered files kept current by real ``rotd run`` and ``rotd render`` processes."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_daemon import _get, pending_secret
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, free_tcp_port, run

Start = Callable[..., RotdProcess]
LOGIN = {"engine": "postgres", "host": "db.internal", "port": 5432, "username": "app"}
TEMPLATE = "PASSWORD={{ password }}\n"


def counting(calls: Path) -> list[str]:
    """An ``on_change`` argv that appends one line per run to ``calls``."""
    script = f"open({str(calls)!r}, 'a').write('changed' + chr(10))"
    return [sys.executable, "-c", script]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def reads(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def lines(path: Path) -> int:
    return len(reads(path).splitlines())


async def put_current(secrets: Secrets, name: str, value: dict[str, Any]) -> None:
    async with secrets.client() as client:
        await client.put_secret_value(SecretId=name, SecretString=json.dumps(value))


def write_render_inventory(
    path: Path, moto: MotoServer, render: list[dict[str, Any]], listen: int | None = None
) -> Path:
    daemon = {"listen": f"127.0.0.1:{listen}"} if listen else None
    write_inventory(path, moto, databases=[], daemon=daemon)
    document = json.loads(path.read_text())
    document["render"] = render
    path.write_text(json.dumps(document))
    return path


async def test_rotd_run_follows_changes_made_elsewhere_and_reloads_entries(
    secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    name = await secrets.create("run", {**LOGIN, "password": "First-pass-1"})
    target, calls = tmp_path / "app.env", tmp_path / "calls"
    entry = {
        "secret": name,
        "path": str(target),
        "template": TEMPLATE,
        "refresh": "1s",
        "on_change": counting(calls),
    }
    port = free_tcp_port()
    inventory = write_render_inventory(tmp_path / "inv.yaml", moto, [entry], listen=port)
    process = rotd_process("run", "-c", str(inventory), "--log-level", "debug")
    process.wait_for_event("daemon.ready", 30)
    assert target.read_text() == "PASSWORD=First-pass-1\n"  # written before ready
    wait_until(lambda: lines(calls) == 1, 10, "on_change after the first write")

    # Another process rotates the secret, twice: each change is rendered within refresh and
    # runs on_change once.
    for n, password in enumerate(["Second-pass-2", "Third-pass-3"], start=2):
        await put_current(secrets, name, {**LOGIN, "password": password})
        expected = f"PASSWORD={password}\n"
        wait_until(lambda: reads(target) == expected, 10, password)  # noqa: B023
        wait_until(lambda: lines(calls) >= n, 10, f"on_change {n}")  # noqa: B023
    # Two refreshes later that found nothing new: still exactly one run per change.
    seen = len(process.named("render.unchanged"))
    process.wait_for_event("render.unchanged", 10, count=seen + 2)
    assert lines(calls) == 3
    assert len(process.named("render.written")) == 3

    # A reload that breaks the template: the old file stays, the failure is reported.
    document = json.loads(inventory.read_text())
    document["render"][0]["template"] = "PASSWORD={{ no_such_key }}\n"
    inventory.write_text(json.dumps(document))
    process.send(signal.SIGHUP)
    (failed, *_) = process.wait_for_event("render.failed", 10)
    assert failed["stage"] == "template"
    assert target.read_text() == "PASSWORD=Third-pass-3\n"
    assert lines(calls) == 3
    metrics = _get(port, "/metrics")[1]
    label = f'{{path="{target}"}}'
    assert f"rotd_render_writes_total{label} 3.0" in metrics
    assert f"rotd_render_failing{label} 1.0" in metrics
    failures = re.search(rf"^rotd_render_failures_total{re.escape(label)} (\S+)$", metrics, re.M)
    assert failures is not None
    assert float(failures.group(1)) >= 1  # one per refresh since the reload
    assert f"rotd_render_last_success_timestamp_seconds{label}" in metrics

    process.send(signal.SIGTERM)
    assert process.wait(30) == 0
    log = "".join(process.lines)
    for password in ("First-pass-1", "Second-pass-2", "Third-pass-3"):
        assert password not in log


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_rotd_run_renders_at_once_after_its_own_rotation(
    db: Database, secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    """An unfinished rotation resumes at start; the file follows at once, not at refresh."""
    name, entry = await pending_secret(db, secrets, alternating=False)
    target = tmp_path / "db.env"
    inventory = write_inventory(tmp_path / "inv.yaml", moto, [entry])
    document = json.loads(inventory.read_text())
    document["render"] = [
        {"secret": name, "path": str(target), "template": TEMPLATE, "refresh": "1h"}
    ]
    inventory.write_text(json.dumps(document))

    process = rotd_process("run", "-c", str(inventory))
    process.wait_for_event("rotation.resumed", 60)
    current = await secrets.value(name)
    wait_until(
        lambda: reads(target) == f"PASSWORD={current['password']}\n", 10, "the rotated password"
    )
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0
    assert current["password"] not in "".join(process.lines)


async def test_rotd_render_once_writes_every_file_and_fails_for_one_that_cannot_be(
    secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    name = await secrets.create("once", {**LOGIN, "password": "Once-pass-1"})
    good, bad = tmp_path / "good.json", tmp_path / "bad.env"
    bad.write_text("OLD=kept\n")
    inventory = write_render_inventory(
        tmp_path / "inv.yaml",
        moto,
        [
            {"secret": name, "path": str(good)},
            {"secret": secrets.name("absent"), "path": str(bad)},
        ],
    )
    code, out, err = run(rotd_process, "render", "-c", str(inventory), "--once")
    assert code == 1, err
    assert json.loads(good.read_text())["password"] == "Once-pass-1"
    assert bad.read_text() == "OLD=kept\n"
    assert f"{good}  <- {name}  written" in out
    assert f"{bad}  <- {secrets.name('absent')}  FAILED read:" in out
    assert "Once-pass-1" not in out + err
    code, out, _ = run(rotd_process, "status", "-c", str(inventory))
    assert code == 1
    assert f"render {good}  <- {name} version=" in out
    assert f"render {bad}  <- {secrets.name('absent')} version=- modified=-  PROBLEM: " in out

    inventory = write_render_inventory(
        tmp_path / "inv.yaml", moto, [{"secret": name, "path": str(good)}]
    )
    code, out, _ = run(rotd_process, "render", "-c", str(inventory), "--once")
    assert code == 0
    assert f"{good}  <- {name}  unchanged" in out
    await put_current(secrets, name, {**LOGIN, "password": "Once-pass-2"})
    code, out, _ = run(rotd_process, "status", "-c", str(inventory), "--json")
    assert code == 1
    (report,) = [json.loads(line) for line in out.splitlines()]
    assert report["path"] == str(good)
    assert report["problem"].startswith("stale: AWSCURRENT")
    assert "Once-pass-2" not in out


async def test_rotd_render_keeps_files_current_without_rotating(
    secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    name = await secrets.create("keep", {**LOGIN, "password": "Keep-pass-1"})
    target = tmp_path / "keep.env"
    inventory = write_render_inventory(
        tmp_path / "inv.yaml",
        moto,
        [{"secret": name, "path": str(target), "template": TEMPLATE, "refresh": "1s"}],
    )
    process = rotd_process("render", "-c", str(inventory))
    process.wait_for_event("render.ready", 30)
    assert target.read_text() == "PASSWORD=Keep-pass-1\n"
    await put_current(secrets, name, {**LOGIN, "password": "Keep-pass-2"})
    wait_until(lambda: reads(target) == "PASSWORD=Keep-pass-2\n", 10, "the new password")

    # SIGHUP: an entry added to the inventory is rendered at once.
    added = tmp_path / "added.json"
    document = json.loads(inventory.read_text())
    document["render"].append({"secret": name, "path": str(added), "refresh": "1h"})
    inventory.write_text(json.dumps(document))
    process.send(signal.SIGHUP)
    process.wait_for_event("reload.applied", 10)
    wait_until(lambda: "Keep-pass-2" in reads(added), 10, "the added entry's file")

    process.send(signal.SIGTERM)
    assert process.wait(30) == 0
    assert len(await secrets.stages(name)) == 2, "nothing but the test wrote a version"
