"""Debian's chromium driven by Playwright, as every browser test starts it (never a downloaded browser)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NEEDS_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)")


@contextmanager
def chromium_page(timeout_ms: float | None = None) -> Iterator[Any]:
    """One page of a headless chromium, 1400 x 900, closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            if timeout_ms is not None:
                page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()


def screenshot(page: Any, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


def close_toasts(page: Any) -> None:
    """Close Prefect's toasts, as a person clicks their X: an error's ("Oops. Something went
    wrong.") or another's that has not faded yet. The toast's countdown ring lies over its X, so
    a pointer click there lands on the ring (Playwright waits 90 s, "subtree intercepts pointer
    events", seen in a fresh-clone run): the click is sent to the button itself. A toast that
    fades away meanwhile is left to go."""
    from playwright.sync_api import Error

    for close in page.locator(".p-toast__close-btn").all():
        try:
            if close.is_visible():
                close.dispatch_event("click", timeout=5_000)
        except Error:
            continue
