"""Real-user monitoring end to end: a browser's page loads, seen in the cockpit.

Headless Chromium loads pages of a Flask shop (cxtrace with ``CXTRACE_RUM=true``) whose
OTLP goes to a real ``Cockpit``; the cockpit's grid and page then show the browser's
satisfaction beside the server's for the same segment and step (design.md sections 9, 10).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from cxtrace._cockpit import Cockpit
from test_rum import JOURNEYS, make_app


class CockpitTarget:
    """What the ``instrument`` fixture needs of a receiver: the environment pointing at it."""

    def __init__(self, cockpit: Cockpit) -> None:
        self.cockpit = cockpit

    def env(self) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.cockpit.otlp_http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }


@pytest.fixture
def cockpit(tmp_path: Path) -> Iterator[Cockpit]:
    with Cockpit(tmp_path / "cockpit.sqlite3", port=0, otlp_http_port=0, otlp_grpc_port=0) as c:
        yield c


def grid_cell(cockpit: Cockpit, segment: str, step: str) -> dict[str, Any] | None:
    with urllib.request.urlopen(f"{cockpit.page_url}api/grid?window=15m", timeout=10) as r:
        grid = json.load(r)
    columns = [c["step"] for c in grid["columns"]]
    for row in grid["rows"]:
        if row["segment"] == segment and step in columns:
            return dict(row["cells"][columns.index(step)])
    return None


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_the_cockpit_shows_browser_satisfaction_beside_the_server(
    cockpit: Cockpit, instrument: Any, serve: Any, page: Any, tmp_path: Path
) -> None:
    journeys = tmp_path / "journeys.toml"
    journeys.write_text(JOURNEYS)
    handle = instrument(
        CockpitTarget(cockpit),
        env={"CXTRACE_RUM": "true", "CXTRACE_JOURNEYS_FILE": str(journeys)},
    )
    base = serve(make_app())
    page.set_extra_http_headers({"X-Customer-Tier": "enterprise"})

    for path in ("/shop", "/checkout", "/shop"):
        page.goto(f"{base}{path}")
        page.wait_for_load_state("load")
    page.goto("about:blank")  # leaving the last page sends its beacon (pagehide)

    def browser_counted() -> dict[str, Any] | None:
        handle.force_flush()
        browse = grid_cell(cockpit, "enterprise", "browse")
        checkout = grid_cell(cockpit, "enterprise", "checkout")
        if not (browse and checkout and browse.get("browser") and checkout.get("browser")):
            return None
        if browse["browser"]["total"] < 2 or checkout["browser"]["total"] < 1:
            return None
        return {"browse": browse, "checkout": checkout}

    seen = wait_for(browser_counted)
    assert seen, f"no browser counts in the cockpit: {grid_cell(cockpit, 'enterprise', 'browse')}"
    browse, checkout = seen["browse"], seen["checkout"]
    # Two page loads of /shop and one of /checkout, each also one server request.
    assert (browse["browser"]["total"], checkout["browser"]["total"]) == (2, 1)
    assert (browse["total"], checkout["total"]) == (2, 1)
    # On loopback a page loads well inside the browser's T (2.5 s).
    assert browse["browser"]["apdex"] == checkout["browser"]["apdex"] == 1.0

    page.goto(cockpit.page_url)
    assert "Apdex (browser)" in page.inner_text("body")
    page.screenshot(path=str(tmp_path / "cockpit-rum.png"), full_page=True)
