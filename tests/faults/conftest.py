"""The fault tests' totals, printed at the end of the pytest run that ran them."""

from __future__ import annotations

from typing import Any

from tests.faults.report import TOTALS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TOTALS:
        return
    terminalreporter.section("rotd fault injection totals")
    for heading, lines in TOTALS.items():
        terminalreporter.write_line(heading)
        for line in lines:
            terminalreporter.write_line(f"  {line}")
