"""Headless Chromium for browser tests: Debian's ``chromium`` driven by Playwright.

Playwright's own browser download is not used (``executable_path`` points at the system
Chromium that ``.ci/run`` installs with apt). Where Chromium or Playwright is missing the
browser tests are skipped locally, and fail under ``CI=true``: CI must never go green by
skipping them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests need {reason} (CI installs it: see .ci/run)", pytrace=False)
    pytest.skip(f"browser tests need {reason}")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A launched Playwright ``Browser`` (one per test module; pages are per test).

    Not session-wide: Playwright's sync API keeps an asyncio loop on the main thread while
    it is started, and Django then refuses ORM calls there (SynchronousOnlyOperation) in
    whatever test module runs next.
    """
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:
        _unavailable("the playwright package")
    path = chromium_path()
    if path is None:
        _unavailable("Debian's chromium (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context and page; closed after the test."""
    context = chromium.new_context(viewport={"width": 1366, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()
