"""Marks every test here ``fault_suite``, so `make faults` selects them with the tests marked
``faults`` elsewhere. Their audit lines are printed by tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.fault_suite)
