"""The systemd notification protocol (sd_notify): readiness, reloads, shutdown and the watchdog.

systemd passes the address of a datagram socket in ``NOTIFY_SOCKET``; a service tells it
``READY=1`` once it serves, ``RELOADING=1`` while it swaps its configuration, ``STOPPING=1``
when it drains, and ``WATCHDOG=1`` every so often when ``WatchdogSec=`` is set. Outside systemd
(a container, a terminal, the tests) the variable is absent and every call here does nothing.
Notification is best effort: a failed send is logged once and never raises into the daemon.
Status texts carry counts and states only, never a secret; they pass through the redactor
anyway.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

from rotd.observability import get_logger, redactor

log = get_logger("rotd.notify")


class Notifier:
    """Sends notifications to the service manager, or nothing when there is none.

    After :meth:`reloading`, call :meth:`ready` once the new inventory is in place: systemd
    keeps the unit in the "reloading" state until it hears ``READY=1`` again.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._socket: socket.socket | None = None
        self._closed = False
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd asked for in ``environ``; a no-op one when it asked for none.

        ``NOTIFY_SOCKET`` is a filesystem path or, with a leading ``@``, an abstract socket.
        Other address kinds (``vsock:``) are not supported and yield a no-op notifier.
        """
        raw = environ.get("NOTIFY_SOCKET", "")
        address: str | None
        if raw.startswith("/"):
            address = raw
        elif raw.startswith("@") and len(raw) > 1:
            address = "\0" + raw[1:]
        else:
            if raw:
                log.warning("notify.failed", reason="unsupported NOTIFY_SOCKET", address=raw)
            address = None
        return cls(
            address,
            watchdog_usec=environ.get("WATCHDOG_USEC"),
            watchdog_pid=environ.get("WATCHDOG_PID"),
        )

    @property
    def enabled(self) -> bool:
        """Whether there is a service manager to notify."""
        return self._address is not None and not self._closed

    def ready(self, status: str) -> None:
        """The daemon serves: at start-up, and again when a reload has finished."""
        self._send("READY=1", f"STATUS={_one_line(status)}")

    def reloading(self) -> None:
        """A reload has started; the timestamp is what ``Type=notify-reload`` expects."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self, status: str) -> None:
        """The daemon has begun to drain and will exit."""
        self._send("STOPPING=1", f"STATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        """A one-line state shown by ``systemctl status``."""
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        """Tell the watchdog the daemon is alive."""
        self._send("WATCHDOG=1")

    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of ``WATCHDOG_USEC``; None when there is no watchdog.

        There is none when no socket is set, the period is missing or not a positive integer,
        or ``WATCHDOG_PID`` names another process (the variables were inherited).
        """
        if not self.enabled or not self._watchdog_usec:
            return None
        try:
            period_usec = int(self._watchdog_usec)
            pid = int(self._watchdog_pid) if self._watchdog_pid else None
        except ValueError:
            return None
        if period_usec <= 0 or (pid is not None and pid != os.getpid()):
            return None
        return period_usec / 2 / 1_000_000

    async def watchdog_loop(self) -> None:
        """Ping the watchdog until cancelled; return at once when there is no watchdog.

        It runs on the event loop on purpose: if the loop hangs, the pings stop and systemd
        restarts the service.
        """
        interval_s = self.watchdog_interval_s()
        if interval_s is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval_s)

    def close(self) -> None:
        """Close the socket; later calls do nothing. Safe to call more than once."""
        self._closed = True
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, *fields: str) -> None:
        address = self._address
        if address is None or self._closed:
            return
        message = "\n".join(fields).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            # Unconnected, addressed on every send: a restarted manager re-creates the socket.
            self._socket.sendto(message, address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "notify.failed",
                    reason=f"{type(exc).__name__}: {exc.strerror or exc}",
                    errno=exc.errno,
                )


def _one_line(text: str) -> str:
    # A newline would start a new field, letting a status text set READY=1 or anything else.
    return redactor.scrub(" ".join(text.splitlines()))
