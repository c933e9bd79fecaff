"""The systemd notification protocol, against a real datagram socket: rotd.notify."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rotd.notify import Notifier
from rotd.observability import REDACTED, redactor


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    """A bound datagram socket standing in for systemd's notification socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    with sock:
        yield sock


def receive(sock: socket.socket, timeout_s: float = 2.0) -> str:
    sock.settimeout(timeout_s)
    return sock.recv(4096).decode()


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)
    return False


def notifier_for(sock: socket.socket, **extra: str) -> Notifier:
    return Notifier.from_environ({"NOTIFY_SOCKET": sock.getsockname(), **extra})


def test_each_message_arrives_as_one_datagram(manager: socket.socket) -> None:
    notifier = notifier_for(manager)
    notifier.ready("serving 12 secrets")
    assert receive(manager) == "READY=1\nSTATUS=serving 12 secrets"
    notifier.status("3 rotations in flight")
    assert receive(manager) == "STATUS=3 rotations in flight"
    notifier.stopping("draining 3 rotations")
    assert receive(manager) == "STOPPING=1\nSTATUS=draining 3 rotations"
    notifier.watchdog()
    assert receive(manager) == "WATCHDOG=1"
    notifier.close()


def test_reloading_carries_the_monotonic_clock(manager: socket.socket) -> None:
    notifier = notifier_for(manager)
    before_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = receive(manager).split("\n")
    assert first == "RELOADING=1"
    name, value = second.split("=")
    assert name == "MONOTONIC_USEC"
    assert before_usec <= int(value) <= after_usec
    notifier.close()


def test_a_status_text_cannot_add_fields(manager: socket.socket) -> None:
    notifier = notifier_for(manager)
    notifier.status("ok\nREADY=1\r\nWATCHDOG=1")
    assert receive(manager) == "STATUS=ok READY=1 WATCHDOG=1"
    notifier.close()


def test_a_registered_secret_never_reaches_the_manager(manager: socket.socket) -> None:
    redactor.add("notify-test-secret-value")
    notifier = notifier_for(manager)
    notifier.status("failed with notify-test-secret-value")
    assert receive(manager) == f"STATUS=failed with {REDACTED}"
    notifier.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux's")
def test_an_abstract_socket_is_reached_through_a_leading_at() -> None:
    name = f"rotd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("serving 1 secret")
        assert receive(sock) == "READY=1\nSTATUS=serving 1 secret"
        notifier.close()


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}])
async def test_without_a_socket_everything_is_a_no_op(environ: dict[str, str]) -> None:
    notifier = Notifier.from_environ({**environ, "WATCHDOG_USEC": "20000"})
    assert not notifier.enabled
    with capture_logs() as logs:
        notifier.ready("x")
        notifier.reloading()
        notifier.stopping("x")
        notifier.status("x")
        notifier.watchdog()
        assert notifier.watchdog_interval_s() is None
        await asyncio.wait_for(notifier.watchdog_loop(), timeout=1)
        notifier.close()
    assert logs == []


def test_an_unsupported_address_is_reported_and_ignored() -> None:
    with capture_logs() as logs:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert [entry["event"] for entry in logs] == ["notify.failed"]


def test_send_failures_are_swallowed_after_one_warning(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with capture_logs() as logs:
        notifier.ready("x")
        notifier.status("y")
        notifier.watchdog()
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [
        ("notify.failed", "warning")
    ]
    notifier.close()


def test_nothing_is_sent_after_close(manager: socket.socket) -> None:
    notifier = notifier_for(manager)
    notifier.close()
    notifier.close()
    notifier.ready("x")
    assert not notifier.enabled
    assert nothing_waiting(manager)


@pytest.mark.parametrize(
    ("extra", "expected_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "20000", "WATCHDOG_PID": str(os.getpid())}, 0.01),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({}, None),
    ],
)
def test_the_watchdog_interval_is_half_the_period(
    manager: socket.socket, extra: dict[str, str], expected_s: float | None
) -> None:
    notifier = notifier_for(manager, **extra)
    assert notifier.watchdog_interval_s() == expected_s
    notifier.close()


async def test_the_watchdog_loop_pings_until_cancelled(manager: socket.socket) -> None:
    notifier = notifier_for(manager, WATCHDOG_USEC="20000")
    manager.setblocking(False)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(notifier.watchdog_loop())
    try:
        pings = 0
        async with asyncio.timeout(5):
            while pings < 5:
                message = await loop.sock_recv(manager, 4096)
                assert message == b"WATCHDOG=1"
                pings += 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()
