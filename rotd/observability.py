"""Logs, metrics and health, and the one place where secret values are removed from output.

Every password, hash and secret string that rotd reads or makes is registered with the
process-wide :data:`redactor` before it is used. A structlog processor scrubs every event,
exception text included, so that nothing registered can reach a log line, whatever code path
put it there. Error messages built elsewhere pass through :meth:`Redactor.scrub` too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
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
# A password's runs of this many characters that no encoding changes (letters, digits and
# "-._~") are masked on their own too: a password written in an encoding :func:`encodings` does
# not know, or escaped only in part, still never shows more than a few characters in a row.
FRAGMENT_LENGTH = 8
_FRAGMENT = re.compile(rf"[A-Za-z0-9_.~-]{{{FRAGMENT_LENGTH},}}")
_UNCHANGED = re.compile(r"[A-Za-z0-9_.~-]*")
_PRINTABLE_ASCII = re.compile(r"[ -~]*")
_JSON_HEX = re.compile(r"\\u[0-9a-f]{4}")
# What pymysql's escape_string, which writes aiomysql's literals, makes of a character.
_MYSQL_ESCAPES = str.maketrans(
    {"\0": "\\0", "\n": "\\n", "\r": "\\r", "\x1a": "\\Z", "\\": "\\\\", "'": "\\'", '"': '\\"'}
)
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_PERCENT = tuple(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256))
_PERCENT_LOWER = tuple(chr(b) if b in _UNRESERVED else f"%{b:02x}" for b in range(256))


def encodings(value: str) -> set[str]:
    """Every form in which ``value`` may reach an output: as it is, and as rotd, its libraries
    and the programs it hands secrets to write it: inside JSON (a secret's JSON, and that JSON
    inside JSON), Python reprs of str and bytes, URLs, SQL literals, and aiomysql's wire form.

    Hexadecimal escapes come in both cases. A value of letters, digits and ``-._~`` has one form.
    """
    forms = {value}
    if _UNCHANGED.fullmatch(value):
        return forms
    forms |= _url_forms(value)
    simple = _PRINTABLE_ASCII.fullmatch(value) is not None
    if simple and not any(c in value for c in "\"\\'/"):
        return forms  # JSON, reprs and SQL literals write it as it is
    forms.add(value.translate(_MYSQL_ESCAPES))
    forms.add(value.replace("'", "''"))
    if not value.isascii():
        forms.add(value.encode("utf-8").decode("latin-1"))  # how aiomysql sends a password
    forms |= _repr_forms(value)
    for text in _json_forms(value):
        forms.add(text)
        if text != value:
            forms.add(json.dumps(text)[1:-1])
            forms.add(json.dumps(text, ensure_ascii=False)[1:-1])
            forms |= _repr_forms(text)
    return forms


def _url_forms(value: str) -> set[str]:
    """Percent-encoded UTF-8, as ``quote`` and ``quote_plus`` write it (``/`` kept or not)."""
    data = value.encode("utf-8")
    forms = {"".join([_PERCENT[b] for b in data]), "".join([_PERCENT_LOWER[b] for b in data])}
    if "/" in value:
        forms |= {form.replace("%2F", "/").replace("%2f", "/") for form in forms}
    if " " in value:
        forms |= {form.replace("%20", "+") for form in forms}
    return forms


def _json_forms(value: str) -> set[str]:
    """``value`` inside a JSON string: non-ASCII escaped or not, and with ``/`` escaped as
    some encoders (not Python's) do."""
    escaped = json.dumps(value)[1:-1]
    forms = {escaped, json.dumps(value, ensure_ascii=False)[1:-1]}
    if "\\u" in escaped:
        forms.add(_JSON_HEX.sub(lambda m: "\\u" + m[0][2:].upper(), escaped))
    if "/" in value:
        forms |= {form.replace("/", "\\/") for form in forms}
    return forms


def _repr_forms(value: str) -> set[str]:
    """``value`` inside a Python repr (or ascii) of a longer str or bytes: the repr quotes with
    ``'`` and escapes it, unless the whole text holds ``'`` but no ``"``."""
    data = value.encode("utf-8")
    forms = {repr("\"'" + value)[4:-1], repr(b"\"'" + data)[5:-1]}
    if not value.isascii():
        forms.add(ascii("\"'" + value)[4:-1])
    if '"' not in value:
        forms.add(repr("'" + value)[2:-1])
        forms.add(repr(b"'" + data)[3:-1])
        if not value.isascii():
            forms.add(ascii("'" + value)[2:-1])
    return forms


class Redactor:
    """A bounded set of secret strings, and a scrubber that masks them in any text.

    Each value is registered with every form :func:`encodings` lists, and a password also with
    its long runs of characters no encoding changes. Scrubbing reads the text once: at each
    position it looks the next few characters up among the forms' beginnings, and only where
    one begins does it look for the forms themselves, longest first. Its cost grows with the
    text's length, not with the number of secrets or forms. Where matches overlap, their union
    is masked, so no part of any match stays.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._values: OrderedDict[str, bool] = OrderedDict()  # value -> fragments
        self._forms: dict[str, int] = {}  # form -> how many values have it
        self._starts: dict[str, int] = {}  # a form's first characters -> how many forms
        self._lengths: dict[int, int] = {}  # form length -> how many forms
        self._longest_first: tuple[int, ...] = ()

    def add(self, *values: str | None, fragments: bool = True) -> None:
        """Register secret values. ``fragments=False`` is for values whose pieces are public
        (a hash's or verifier's algorithm name, a secret's JSON keys): those are masked whole,
        in every encoding, but their runs of plain characters are not masked on their own."""
        for value in values:
            if not value or len(value) < MIN_SECRET_LENGTH:
                continue
            if value in self._values:
                self._values.move_to_end(value)
                continue
            self._values[value] = fragments
            changed = self._count(value, fragments, 1)
            if len(self._values) > self._capacity:
                changed |= self._count(*self._values.popitem(last=False), -1)
            if changed:
                self._longest_first = tuple(sorted(self._lengths, reverse=True))

    def _count(self, value: str, fragments: bool, step: int) -> bool:
        """Count the forms of ``value`` in (``step`` 1) or out (-1); whether a length came or
        went. They are worked out again to count them out, rather than kept: less memory."""
        forms = encodings(value)
        if fragments and not _UNCHANGED.fullmatch(value):
            forms.update(_FRAGMENT.findall(value))
        lengths = set(self._lengths)
        for form in forms:
            if len(form) < MIN_SECRET_LENGTH:
                continue
            _bump(self._forms, form, step)
            _bump(self._starts, form[:MIN_SECRET_LENGTH], step)
            _bump(self._lengths, len(form), step)
        return lengths != self._lengths.keys()

    def scrub(self, text: str) -> str:
        """``text`` with every registered value, in any of its forms, replaced by REDACTED."""
        lengths = self._longest_first
        if not lengths or len(text) < lengths[-1]:
            return text
        starts, forms, size = self._starts, self._forms, len(text)
        spans: list[tuple[int, int]] = []
        for i in [
            i
            for i in range(size - MIN_SECRET_LENGTH + 1)
            if text[i : i + MIN_SECRET_LENGTH] in starts
        ]:
            for length in lengths:
                if length <= size - i and text[i : i + length] in forms:
                    spans.append((i, i + length))
                    break
        if not spans:
            return text
        pieces: list[str] = []
        done = 0
        end = -1
        for start, stop in spans:  # in order of their start
            if start > end:
                if end >= 0:
                    pieces.append(REDACTED)
                pieces.append(text[done:start])
                end = stop
            else:
                end = max(end, stop)
            done = end
        pieces.append(REDACTED)
        pieces.append(text[done:])
        return "".join(pieces)

    def scrub_value(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {k: self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub_value(v) for v in value]
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        # Anything else is written as its repr by the renderers (bytes, paths, dataclasses).
        text = repr(value)
        scrubbed = self.scrub(text)
        return value if scrubbed is text else scrubbed


def _bump(counts: dict[Any, int], key: Any, step: int) -> None:
    left = counts.get(key, 0) + step
    if left:
        counts[key] = left
    else:
        del counts[key]


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
# Where in one secret's life a fault can be caught: the stages of ``rotd_unexpected_errors``.
FAULT_STAGES = ("rotation", "hooks", "replication", "planning", "scheduling", "metrics", "events")


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
    account: str = "base"  # the role's account, or base: rotd's own identity
    region: str = ""
    created: float | None = None  # epoch seconds of AWSCURRENT's CreatedDate
    next_due: float | None = None
    last_success: float | None = None
    consecutive_failures: int = 0
    problem: str | None = None  # the category of a failure no retry can fix
    # Replica region -> (in sync after the last rotation, seconds until it was), for a
    # multi-region secret.
    replicas: dict[str, tuple[bool, float | None]] = field(default_factory=dict)
    # The credential age past which the rotation is overdue: from AWSCURRENT's creation to its
    # due time by the schedule, plus the window the rotation may start in.
    max_age: float | None = None


@dataclass(frozen=True)
class DaemonSample:
    """What the daemon says of itself at scrape time, beside its secrets."""

    healthy: bool
    scheduler_running: bool
    open_breakers: tuple[str, ...]  # host:port of each host whose breaker is open
    inventory_path: str
    inventory_loaded: float  # Unix time


BRIDGE_RESULTS = ("done", "skipped", "postponed", "failed", "dropped")


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
        for result in ("applied", "rejected", "failed"):
            self.reloads.labels(result)  # at 0 from the start: see watch_database
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
            "stage (rotation, hooks, planning, scheduling, metrics, events).",
            ["database", "stage"],
            registry=self.registry,
        )
        self.render_success = Gauge(
            "rotd_render_last_success_timestamp_seconds",
            "When each rendered file was last found or made current (epoch seconds).",
            ["path"],
            registry=self.registry,
        )
        self.render_failures = Counter(
            "rotd_render_failures",
            "Renders that failed and left the previous file in place, by file.",
            ["path"],
            registry=self.registry,
        )
        self.render_failing = Gauge(
            "rotd_render_failing",
            "1 while the last render of the file failed, else 0.",
            ["path"],
            registry=self.registry,
        )
        self.render_writes = Counter(
            "rotd_render_writes",
            "Times a rendered file was replaced because its content changed, by file.",
            ["path"],
            registry=self.registry,
        )
        self.replication_failures = Counter(
            "rotd_replication_failures",
            "Verify endpoints (replicas, poolers) that never took a new password within the "
            "bound, by database: replication to them is broken or lagging.",
            ["database"],
            registry=self.registry,
        )
        self.events = Counter(
            "rotd_events",
            "Rotation events for EventBridge, by result: sent; retried (in a failed attempt, "
            "to be tried again); dropped (given up on, or pushed out of a full queue).",
            ["result"],
            registry=self.registry,
        )
        for result in ("sent", "retried", "dropped"):
            self.events.labels(result)  # at 0 from the start, as watch_database does
        self.bridge_messages = Counter(
            "rotd_bridge_messages",
            "Bridge function messages answered, by queue and result: done (its step "
            "performed), skipped (done already, or no longer pending), postponed (another "
            "rotation held the secret), failed (reported to the function), dropped (not to "
            "be acted on).",
            ["queue", "result"],
            registry=self.registry,
        )
        self.bridge_queue_up = Gauge(
            "rotd_bridge_queue_up",
            "1 while the last read of a bridge queue succeeded, 0 while reading it fails.",
            ["queue"],
            registry=self.registry,
        )
        self.secrets: dict[str, SecretStatus] = {}
        self.registry.register(_SecretCollector(self.secrets))
        # Set by the daemon: what it says of itself at each scrape.
        self.daemon: Callable[[], DaemonSample] | None = None
        self.registry.register(_DaemonCollector(self))

    def rotation_finished(
        self, database: str, outcome: str, duration_s: float, category: str | None, transient: bool
    ) -> None:
        self.rotations.labels(database, outcome).inc()
        self.duration.labels(database).observe(duration_s)
        if category is not None:
            self.failures.labels(database, category, str(transient).lower()).inc()

    def unreplicated(self, database: str, endpoints: int) -> None:
        self.replication_failures.labels(database).inc(endpoints)

    def hook_finished(self, database: str, kind: str, result: str) -> None:
        self.hook_runs.labels(database, kind, result).inc()

    def render_finished(self, result: Any) -> None:
        """One render of a file (a :class:`rotd.render.RenderResult`)."""
        self.render_failing.labels(result.path).set(0 if result.ok else 1)
        self.render_failures.labels(result.path)
        self.render_writes.labels(result.path)
        if result.ok:
            self.render_success.labels(result.path).set(result.at)
            if result.changed:
                self.render_writes.labels(result.path).inc()
        else:
            self.render_failures.labels(result.path).inc()

    def bridge_queue(self, queue: str, up: bool) -> None:
        self.bridge_queue_up.labels(queue).set(1 if up else 0)
        if up:
            for result in BRIDGE_RESULTS:
                self.bridge_messages.labels(queue, result)  # at 0, for alerts on increase

    def bridge_message(self, queue: str, result: str) -> None:
        self.bridge_messages.labels(queue, result).inc()

    def events_result(self, result: str, count: int) -> None:
        self.events.labels(result).inc(count)

    def unexpected_error(self, database: str, stage: str) -> None:
        self.unexpected_errors.labels(database, stage).inc()

    def watch_database(self, database: str, hook_kinds: Iterable[str] = ()) -> None:
        """Serve ``database``'s fault counters at 0 before any fault (unexpected errors,
        replication, and the failures of the kinds of hooks it runs), so that an alert on their
        increase fires on the first one rather than on the series appearing."""
        for stage in FAULT_STAGES:
            self.unexpected_errors.labels(database, stage)
        self.replication_failures.labels(database)
        for kind in hook_kinds:
            self.hook_runs.labels(database, kind, "failed")

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
        max_age = GaugeMetricFamily(
            "rotd_secret_max_age_seconds",
            "The credential age past which the rotation is overdue: the schedule's interval "
            "from AWSCURRENT's creation plus the rotation window.",
            labels=labels,
        )
        problem = GaugeMetricFamily(
            "rotd_secret_problem",
            "1 while the secret has a problem no retry can fix, by category.",
            labels=[*labels, "category"],
        )
        # Where each secret lives, as an info metric to join on: adding account and region to
        # every series would have changed the label sets that dashboards and alerts match.
        info = GaugeMetricFamily(
            "rotd_secret_info",
            "1 per secret, with the AWS account (base: rotd's own identity) and region it is in.",
            labels=[*labels, "account", "region"],
        )
        in_sync = GaugeMetricFamily(
            "rotd_secret_replication_in_sync",
            "1 when the replica region had the secret's last rotation within the bound, else 0 "
            "(multi-region secrets only).",
            labels=[*labels, "region"],
        )
        lag = GaugeMetricFamily(
            "rotd_secret_replication_lag_seconds",
            "Seconds from the end of the last rotation until the replica region was in sync.",
            labels=[*labels, "region"],
        )
        now = time.time()
        for status in list(self._secrets.values()):
            key = [status.secret_id, status.database]
            info.add_metric([*key, status.account, status.region], 1)
            for region, (synced, lag_s) in list(status.replicas.items()):
                in_sync.add_metric([*key, region], 1 if synced else 0)
                if lag_s is not None:
                    lag.add_metric([*key, region], lag_s)
            if status.last_success is not None:
                last.add_metric(key, status.last_success)
            if status.next_due is not None:
                due.add_metric(key, status.next_due)
            if status.created is not None:
                age.add_metric(key, max(0.0, now - status.created))
            if status.max_age is not None:
                max_age.add_metric(key, status.max_age)
            failures.add_metric(key, status.consecutive_failures)
            if status.problem is not None:
                problem.add_metric([*key, status.problem], 1)
        yield from (last, due, age, max_age, failures, problem, info, in_sync, lag)


class _DaemonCollector(Collector):
    """The daemon's own gauges, asked of it at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        sample = self._metrics.daemon() if self._metrics.daemon is not None else None
        if sample is None:
            return
        healthy = GaugeMetricFamily(
            "rotd_healthy", "1 while /healthz answers ok: every secret keeps a schedule."
        )
        healthy.add_metric([], int(sample.healthy))
        scheduler = GaugeMetricFamily(
            "rotd_scheduler_running", "1 while the scheduler that starts rotations runs."
        )
        scheduler.add_metric([], int(sample.scheduler_running))
        breakers = GaugeMetricFamily(
            "rotd_host_breaker_open",
            "1 while a database host's circuit breaker is open: rotations on it fail at once "
            "until the next probe.",
            labels=["host"],
        )
        for host in sample.open_breakers:
            breakers.add_metric([host], 1)
        inventory = GaugeMetricFamily(
            "rotd_inventory_info",
            "The inventory the daemon runs, by path; always 1.",
            labels=["path"],
        )
        inventory.add_metric([sample.inventory_path], 1)
        loaded = GaugeMetricFamily(
            "rotd_inventory_loaded_timestamp_seconds",
            "When the inventory in use was loaded, at start or by the last applied reload.",
        )
        loaded.add_metric([], sample.inventory_loaded)
        yield from (healthy, scheduler, breakers, inventory, loaded)


@asynccontextmanager
async def serve_http(
    host: str,
    port: int,
    metrics: Metrics,
    healthy: Callable[[], bool],
    status: Callable[[], Mapping[str, Any]] | None = None,
) -> AsyncIterator[None]:
    """Serve ``/metrics``, ``/healthz`` and, given ``status``, ``/status`` (its document as
    JSON, scrubbed like every log event) from the event loop while inside.

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

    async def status_handler(_request: web.Request) -> web.Response:
        assert status is not None
        document = redactor.scrub_value(status())
        return web.json_response(document, dumps=lambda d: json.dumps(d, indent=1))

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health_handler)
    if status is not None:
        app.router.add_get("/status", status_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        yield
    finally:
        await runner.cleanup()
