"""Secrets Manager for the kit: moto's server in a child process, on a free port.

:func:`moto_server` runs :mod:`rotd.testing.secretsmanager` (moto refusing to change an existing
version, as Secrets Manager does) until its block ends. :class:`AwsEndpoint` is what the kit
needs of any Secrets Manager: an endpoint URL and a region.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Protocol

REGION = "us-east-1"
SERVER_MODULE = "rotd.testing.secretsmanager"


class AwsEndpoint(Protocol):
    """Where the kit reaches Secrets Manager."""

    @property
    def endpoint_url(self) -> str: ...

    @property
    def region(self) -> str: ...


@dataclass(frozen=True)
class MotoServer:
    endpoint_url: str
    region: str = REGION


class ServerDidNotStart(RuntimeError):
    def __init__(self, address: str, log_tail: bytes) -> None:
        self.address = address
        super().__init__(f"moto's server did not start on {address}: {log_tail!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, deadline_s: float, proc: subprocess.Popen[Any], log: IO[bytes]
) -> None:
    """Poll until ``host:port`` accepts a connection; raise :class:`ServerDidNotStart` with
    the end of ``log`` if ``proc`` exits or the deadline passes first."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling a port in a starting process
    proc.kill()
    log.seek(0)
    raise ServerDidNotStart(f"{host}:{port}", log.read()[-2000:])


def dummy_credentials(region: str = REGION) -> None:
    """Give this process (and its children) credentials and a region that only moto accepts."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=region,
        AWS_DEFAULT_REGION=region,
    )
    os.environ.pop("AWS_PROFILE", None)


@contextmanager
def moto_server(log: IO[bytes], module: str = SERVER_MODULE) -> Iterator[MotoServer]:
    """moto's server (``module``, run with ``-m``) on a free port until the block ends.

    Its request log goes to ``log``, a file: a pipe nobody reads fills up and blocks the server.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, 30, proc, log)
        yield MotoServer(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
