"""The totals of the fault tests, kept for the end of the pytest run.

Each test adds its lines under its own heading; ``tests/faults/conftest.py`` prints them all
in the terminal summary, so they show in CI output without ``-s``.
"""

from __future__ import annotations

__all__ = ["TOTALS", "add"]

TOTALS: dict[str, list[str]] = {}


def add(heading: str, lines: list[str]) -> None:
    TOTALS[heading] = list(lines)
