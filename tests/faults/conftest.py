"""Marks every test here ``fault_suite`` (so `make faults` selects them with the tests marked
``faults`` elsewhere) and prints every fault case's audit line at the end of the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.faults.audit import AUDIT_LINES

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.fault_suite)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if AUDIT_LINES:
        terminalreporter.section("fault audit: one line per case")
        for line in AUDIT_LINES:
            terminalreporter.write_line(line)
