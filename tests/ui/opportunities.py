"""Driving the opportunities page (arbitrage/web/) in headless Chromium: shared by its browser test
and scripts/screenshot_ui.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page


def open_list(page: Page, url: str, query: str = "", timeout_s: float = 30.0) -> int:
    """Load the list (``query``: its query string); return how many opportunities it shows."""
    page.goto(f"{url}/{'?' + query if query else ''}", timeout=timeout_s * 1000)
    page.wait_for_selector("table.opportunities tbody", timeout=timeout_s * 1000)
    return page.locator("tbody#rows tr[data-alert-id]").count()


def open_detail(page: Page, url: str, asin: str, timeout_s: float = 30.0) -> dict[str, int]:
    """Load an ASIN's page; return the chart's points per series (``"DE buy"`` → n)."""
    page.goto(f"{url}/product/{asin}", timeout=timeout_s * 1000)
    page.wait_for_selector("svg#price-chart g.series", timeout=timeout_s * 1000)
    counts: dict[str, int] = {}
    for group in page.locator("svg#price-chart g.series").all():
        label = f"{group.get_attribute('data-market')} {group.get_attribute('data-side')}"
        counts[label] = group.locator("circle.point").count()
    return counts
