"""Logging set-up and the one place where secret values are removed from what rotd writes.

Every password, hash and secret string that rotd reads or makes is registered with the
process-wide :data:`redactor` before it is used. A structlog processor scrubs every event,
exception text included, so that nothing registered can reach a log line, whatever code path
put it there. Error messages built elsewhere pass through :meth:`Redactor.scrub` too.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

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
