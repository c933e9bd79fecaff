"""Logs, metrics and health, and the one place where secret values are removed from output.

Every password, hash and secret string that rotd reads or makes is registered with the
process-wide :data:`redactor` before it is used. A structlog processor scrubs every event,
exception text included, so that nothing registered can reach a log line, whatever code path
put it there. Error messages built elsewhere pass through :meth:`Redactor.scrub` too.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REDACTED = "[REDACTED]"
# Shorter values are not registered: masking every "abc" in the logs would make them useless,
# and passwords that short are not worth protecting from a log reader anyway.
MIN_SECRET_LENGTH = 4


class Redactor:
    """A bounded set of secret strings, and a scrubber that masks them in any text.

    Scrubbing looks up every substring of each registered length, so its cost grows with the
    text's length and the number of distinct secret lengths, not with the number of secrets.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._secrets: OrderedDict[str, None] = OrderedDict()
        self._lengths: dict[int, int] = {}

    def add(self, *values: str | None) -> None:
        for value in values:
            if not value or len(value) < MIN_SECRET_LENGTH:
                continue
            if value in self._secrets:
                self._secrets.move_to_end(value)
                continue
            self._secrets[value] = None
            self._lengths[len(value)] = self._lengths.get(len(value), 0) + 1
            if len(self._secrets) > self._capacity:
                old, _ = self._secrets.popitem(last=False)
                self._forget_length(len(old))

    def _forget_length(self, length: int) -> None:
        left = self._lengths[length] - 1
        if left:
            self._lengths[length] = left
        else:
            del self._lengths[length]

    def scrub(self, text: str) -> str:
        if not self._lengths or len(text) < MIN_SECRET_LENGTH:
            return text
        # Longest first, so a hash that contains a password is masked whole.
        for length in sorted(self._lengths, reverse=True):
            if len(text) < length:
                continue
            i = 0
            pieces: list[str] = []
            start = 0
            while i <= len(text) - length:
                if text[i : i + length] in self._secrets:
                    pieces.append(text[start:i])
                    pieces.append(REDACTED)
                    i += length
                    start = i
                else:
                    i += 1
            if pieces:
                pieces.append(text[start:])
                text = "".join(pieces)
        return text

    def scrub_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {k: self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_value(v) for v in value]
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value


redactor = Redactor()


def _render_exception(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Turn ``exc_info`` into text here, so that the scrubber sees tracebacks too."""
    exc_info = event.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        elif isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if exc_info[0] is not None:
            event["exception"] = "".join(traceback.format_exception(*exc_info))
    return event


def _scrub(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        event[key] = redactor.scrub_value(value)
    return event


def processors() -> list[Any]:
    """The processor chain up to (not including) the renderer. Tests reuse it."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _render_exception,
        _scrub,
    ]


def configure_logging(*, json: bool | None = None, level: str = "info") -> None:
    """Configure structlog once: JSON lines unless stderr is a terminal, then readable text."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_plain_exception)
    )
    structlog.configure(
        processors=[*processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _plain_exception(sio: Any, exc_info: Any) -> None:  # pragma: no cover - exceptions pre-rendered
    sio.write("\n" + "".join(traceback.format_exception(*exc_info)))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


UNEXPECTED_ERROR = "unexpected_error.caught"


def log_unexpected(logger: Any, stage: str, exc: BaseException, **fields: Any) -> None:
    """Log an exception no code path expected, caught at one secret's boundary: the one event
    ``unexpected_error.caught``, with ``stage`` and the traceback (scrubbed like every event)."""
    logger.error(
        UNEXPECTED_ERROR,
        stage=stage,
        error=f"{type(exc).__name__}: {exc}",
        action="a fault in rotd itself: report it with this event's exception",
        exc_info=exc,
        **fields,
    )


# --- metrics and health -------------------------------------------------------------------------


@dataclass
class SecretStatus:
    """What the metrics say about one secret; the daemon keeps one per secret up to date."""

    secret_id: str
    database: str
    created: float | None = None  # epoch seconds of AWSCURRENT's CreatedDate
    next_due: float | None = None
    last_success: float | None = None
    consecutive_failures: int = 0
    problem: str | None = None  # the category of a failure no retry can fix


class Metrics:
    """rotd's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rotations = Counter(
            "rotd_rotations",
            "Rotations finished, by database and outcome (succeeded, resumed, failed).",
            ["database", "outcome"],
            registry=self.registry,
        )
        self.failures = Counter(
            "rotd_rotation_failures",
            "Failed rotations by database, error category and whether a retry may fix it.",
            ["database", "category", "transient"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "rotd_rotation_duration_seconds",
            "Duration of one rotation, all four steps.",
            ["database"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "rotd_rotations_in_flight", "Rotations in flight now.", registry=self.registry
        )
        self.reloads = Counter(
            "rotd_reloads", "Inventory reloads by result.", ["result"], registry=self.registry
        )
        self.hook_runs = Counter(
            "rotd_hook_runs",
            "on_rotated hooks run, by database, kind (exec, webhook) and result "
            "(succeeded, failed), retries included in one run.",
            ["database", "kind", "result"],
            registry=self.registry,
        )
        self.unexpected_errors = Counter(
            "rotd_unexpected_errors",
            "Exceptions rotd did not expect, caught at one secret's boundary, by database and "
            "stage (rotation, hooks, planning, scheduling, metrics).",
            ["database", "stage"],
            registry=self.registry,
        )
        self.secrets: dict[str, SecretStatus] = {}
        self.registry.register(_SecretCollector(self.secrets))

    def rotation_finished(
        self, database: str, outcome: str, duration_s: float, category: str | None, transient: bool
    ) -> None:
        self.rotations.labels(database, outcome).inc()
        self.duration.labels(database).observe(duration_s)
        if category is not None:
            self.failures.labels(database, category, str(transient).lower()).inc()

    def hook_finished(self, database: str, kind: str, result: str) -> None:
        self.hook_runs.labels(database, kind, result).inc()

    def unexpected_error(self, database: str, stage: str) -> None:
        self.unexpected_errors.labels(database, stage).inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _SecretCollector(Collector):
    """Per-secret gauges computed at scrape time, so that the credential age is always fresh."""

    def __init__(self, secrets: Mapping[str, SecretStatus]) -> None:
        self._secrets = secrets

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["secret_id", "database"]
        last = GaugeMetricFamily(
            "rotd_secret_last_success_timestamp_seconds",
            "When rotd last rotated the secret successfully (Unix time).",
            labels=labels,
        )
        due = GaugeMetricFamily(
            "rotd_secret_next_due_timestamp_seconds",
            "When the secret is next due for rotation (Unix time).",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "rotd_secret_credential_age_seconds",
            "Age of the AWSCURRENT version of the secret.",
            labels=labels,
        )
        failures = GaugeMetricFamily(
            "rotd_secret_consecutive_failures",
            "Failed rotation attempts since the last success.",
            labels=labels,
        )
        problem = GaugeMetricFamily(
            "rotd_secret_problem",
            "1 while the secret has a problem no retry can fix, by category.",
            labels=[*labels, "category"],
        )
        now = time.time()
        for status in list(self._secrets.values()):
            key = [status.secret_id, status.database]
            if status.last_success is not None:
                last.add_metric(key, status.last_success)
            if status.next_due is not None:
                due.add_metric(key, status.next_due)
            if status.created is not None:
                age.add_metric(key, max(0.0, now - status.created))
            failures.add_metric(key, status.consecutive_failures)
            if status.problem is not None:
                problem.add_metric([*key, status.problem], 1)
        yield from (last, due, age, failures, problem)


@asynccontextmanager
async def serve_http(
    host: str, port: int, metrics: Metrics, healthy: Callable[[], bool]
) -> AsyncIterator[None]:
    """Serve ``/metrics`` and ``/healthz`` from the event loop while inside.

    ``/healthz`` is answered by the same loop that runs the scheduler, so a stuck loop shows
    as a failing health check, not as a healthy one.
    """
    from aiohttp import web  # only the daemon serves HTTP; keep other commands quick to start

    async def metrics_handler(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health_handler(_request: web.Request) -> web.Response:
        if healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="unhealthy\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        yield
    finally:
        await runner.cleanup()
