"""Prints every fault case's audit line at the end of the run (passed or not)."""

from __future__ import annotations

from typing import Any

from tests.faults.audit import AUDIT_LINES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if AUDIT_LINES:
        terminalreporter.section("fault audit: one line per case")
        for line in AUDIT_LINES:
            terminalreporter.write_line(line)
