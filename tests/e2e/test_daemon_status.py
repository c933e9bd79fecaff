"""The running daemon's live state: ``GET /status`` and ``rotd status --daemon`` against a real
``rotd run`` with a rotation held in flight, a retry scheduled, a secret parked and a host's
breaker open."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.inventory import write_inventory
from tests.fixtures.process import RotdProcess, free_tcp_port, run

Start = Callable[..., RotdProcess]
PASSWORDS = ("Initial-pass-1", "Pending-pass-5", "Stranded-pass-7")


def get_status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        body = response.read().decode()
    for password in PASSWORDS:
        assert password not in body
    loaded: dict[str, Any] = json.loads(body)
    return loaded


async def status_when(
    port: int, what: str, condition: Callable[[dict[str, Any]], bool], timeout_s: float = 60
) -> dict[str, Any]:
    """Poll ``/status`` until ``condition`` holds of it; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = get_status(port)
        if condition(status):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"/status never showed {what}; last:\n{json.dumps(status, indent=1)}")
        await asyncio.sleep(0.1)  # polling a real process, with the deadline above


def by_id(status: dict[str, Any], key: str) -> dict[str, Any]:
    return {row["secret_id"]: row for row in status[key]}


async def test_status_shows_rotations_in_flight_retries_parked_secrets_and_open_breakers(
    secrets: Secrets, moto: MotoServer, tmp_path: Path, rotd_process: Start
) -> None:
    gate = tmp_path / "gate"
    held = await secrets.create(
        "held", {"engine": "gate", "host": "127.0.0.1", "username": "app", "password": PASSWORDS[0]}
    )
    await secrets.put_pending(
        held, {"engine": "gate", "host": "127.0.0.1", "username": "app", "password": PASSWORDS[1]}
    )
    down_port = free_tcp_port()
    stranded = await secrets.create(
        "stranded",
        {
            "engine": "postgres",
            "host": "127.0.0.1",
            "port": down_port,
            "username": "app",
            "password": PASSWORDS[2],
            "dbname": "postgres",
        },
    )
    await secrets.put_pending(
        stranded,
        {
            "engine": "postgres",
            "host": "127.0.0.1",
            "port": down_port,
            "username": "app",
            "password": PASSWORDS[1],
            "dbname": "postgres",
        },
    )
    missing = secrets.name("missing")
    listen = free_tcp_port()
    path = write_inventory(
        tmp_path / "inv.yaml",
        moto,
        databases=[
            {
                "name": "held",
                "engine": "exec",
                "exec": {
                    # setSecret waits until the test opens the gate: a rotation held mid-step.
                    "set_password": ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done"],
                    "test_login": ["true"],
                    "timeout": "120s",
                },
                "secrets": [{"id": held}, {"id": missing}],
            },
            {
                "name": "downdb",
                "host": "127.0.0.1",
                "port": down_port,
                "secrets": [{"id": stranded}],
            },
        ],
        daemon={"listen": f"127.0.0.1:{listen}"},
    )
    process = rotd_process("run", "-c", str(path))
    process.wait_for_event("daemon.ready", 60)

    def settled(status: dict[str, Any]) -> bool:
        flight = by_id(status, "in_flight").get(held)
        return (
            flight is not None
            and flight["step"] == "setSecret"
            and stranded in by_id(status, "retries")
            and missing in by_id(status, "parked")
            and bool(status["breakers"])
        )

    status = await status_when(
        listen, "the held rotation, the retry, the parked secret, the breaker", settled
    )
    assert status["version"] == 1
    assert status["inventory"]["path"] == str(path)
    assert status["inventory"]["secrets"] == 3
    assert status["daemon"]["healthy"] is True
    flight = by_id(status, "in_flight")[held]
    assert flight["attempt"] == 1
    assert flight["database"] == "held"
    assert flight["version_id"] == await secrets.version(held, "AWSPENDING")
    rows = by_id(status, "secrets")
    assert rows[held]["rotating"]["step"] == "setSecret"
    assert rows[held]["username"] == "app"
    assert rows[held]["engine"] == "exec"
    retry = by_id(status, "retries")[stranded]
    assert retry["category"] == "unreachable"
    assert retry["failures"] >= 1
    assert rows[stranded]["last_outcome"]["outcome"] == "failed"
    assert rows[stranded]["last_outcome"]["step"] == "createSecret"
    parked = by_id(status, "parked")[missing]
    assert parked["category"] == "not_found"
    assert "Secrets Manager" in parked["reason"]
    (breaker,) = status["breakers"]
    assert breaker["host"] == f"127.0.0.1:{down_port}"
    assert breaker["failures"] >= 1

    # rotd status --daemon prints today's table from it, and fails for the parked secret.
    code, out, err = run(rotd_process, "status", "--daemon", f"http://127.0.0.1:{listen}")
    assert code == 1, err
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(secrets.prefix)}
    assert (
        f"db=held aws=base/{moto.region} engine=exec strategy=single_user user=app" in lines[held]
    )
    assert "rotating: setSecret since" in lines[held]
    assert "PROBLEM: not_found:" in lines[missing]
    assert "retry at " in lines[stranded]
    assert "unreachable at createSecret" in lines[stranded]
    assert f"host 127.0.0.1:{down_port}: breaker OPEN" in out
    assert f"inventory {path} loaded" in out
    code, out, _ = run(rotd_process, "status", "--daemon", f"127.0.0.1:{listen}", "--json")
    (held_json,) = [json.loads(line) for line in out.splitlines() if held in line]
    assert held_json["activity"].startswith("rotating: setSecret since")
    for password in PASSWORDS:
        assert password not in out

    # Opened, the gate lets the rotation finish: /status says so.
    gate.touch()
    process.wait_for_event("rotation.resumed", 60)
    status = await status_when(
        listen,
        "the held rotation finished",
        lambda s: (
            held not in by_id(s, "in_flight")
            and (by_id(s, "secrets")[held]["last_outcome"] or {}).get("outcome") == "resumed"
        ),
    )
    row = by_id(status, "secrets")[held]
    assert row["rotating"] is None
    assert row["last_outcome"]["attempt"] == 1
    assert row["consecutive_failures"] == 0
    assert row["retry_at"] is None
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0


def test_status_says_when_the_daemon_cannot_be_reached(rotd_process: Start) -> None:
    url = f"http://127.0.0.1:{free_tcp_port()}"
    code, out, err = run(rotd_process, "status", "--daemon", url)
    assert code == 69
    assert out == ""
    assert f"cannot read the daemon's status at {url}/status" in err
    assert "is `rotd run` running there" in err


def test_status_takes_an_inventory_or_a_daemon_not_both(
    rotd_process: Start, tmp_path: Path
) -> None:
    code, _, err = run(rotd_process, "status", "-c", str(tmp_path / "x.yaml"), "--daemon", "x:1")
    assert code == 2
    assert "give either -c INVENTORY or --daemon URL" in err
