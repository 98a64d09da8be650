"""The cockpit in customers and money (design.md sections 9 and 12), against ground truth.

A real Flask shop (tests/flask_app.py) instrumented by cxtrace with visits on exports to a
real cockpit; shoppers, one ``requests.Session`` each, walk known paths. What each group
did is known here, so every number the cockpit shows (customers reaching each step,
frustrated there, their conversion rate against the others', conversions and value lost,
the headline's sentence) is computed by hand from the design's formulas and compared with
``/api/funnel``, ``/api/costs``, ``/api/summary`` and the rendered page. With visits off the
same page speaks only of requests.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from cxtrace._cockpit.app import Cockpit
from flask_app import make_app

JOURNEYS = """\
[segments]
header = "X-Customer-Tier"
allowed = ["free", "pro", "enterprise"]

[[journeys]]
name = "purchase"
steps = [
  { name = "browse",       route = "/products" },
  { name = "view_product", route = "/products/<int:product_id>" },
  { name = "checkout",     route = "/checkout", apdex_threshold_ms = 40 },
  { name = "purchase",     route = "/orders", method = "POST", conversion = true },
]
"""
SLOW = "0.25"  # over 4 x 40 ms: frustrated at checkout
PRICE = 100.0

# (segment, frustrated at checkout, then bought) -> how many shoppers
CROWD = {
    ("enterprise", True, True): 3,
    ("enterprise", True, False): 7,
    ("enterprise", False, True): 8,
    ("enterprise", False, False): 2,
    # Exactly MIN_COMPARED in each group, buying as often as each other: compared, no loss.
    ("pro", True, True): 2,
    ("pro", True, False): 3,
    ("pro", False, True): 2,
    ("pro", False, False): 3,
    ("free", True, False): 2,  # too few to compare
    ("free", False, True): 6,
    ("free", False, False): 4,
}


@pytest.fixture
def cockpit(tmp_path: Path) -> Iterator[Cockpit]:
    with Cockpit(tmp_path / "cockpit.sqlite3", port=0, otlp_http_port=0, otlp_grpc_port=0) as c:
        yield c


def api(cockpit: Cockpit, view: str) -> Any:
    with urllib.request.urlopen(f"{cockpit.page_url}api/{view}?window=15m", timeout=10) as r:
        return json.load(r)


def shop(
    cockpit: Cockpit, instrument: Any, serve: Callable[[Any], str], journeys_file: str, **env: str
) -> tuple[Any, str]:
    class Target:  # what the `instrument` fixture needs of a receiver
        def env(self) -> dict[str, str]:
            return {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": cockpit.otlp_http_endpoint,
            }

    handle = instrument(Target(), env={"CXTRACE_JOURNEYS_FILE": journeys_file, **env})
    return handle, serve(make_app())


def walk(base: str, segment: str, frustrated: bool, buys: bool) -> int:
    """One customer: browse, look at a product, check out (slowly), maybe buy."""
    tier = {"X-Customer-Tier": segment}
    with requests.Session() as browser:
        made = 0
        for path in ("/products", "/products/3"):
            assert browser.get(base + path, headers=tier).status_code == 200
            made += 1
        checkout = browser.get(
            base + "/checkout", params={"sleep": SLOW if frustrated else "0"}, headers=tier
        )
        assert checkout.status_code == 200
        made += 1
        if buys:
            order = browser.post(base + "/orders", params={"value": PRICE}, headers=tier)
            assert order.status_code == 201
            made += 1
        return made


def run_crowd(base: str) -> int:
    jobs = [key for key, n in CROWD.items() for _ in range(n)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(lambda key: walk(base, *key), jobs))


def settle(cockpit: Cockpit, handle: Any, requests_made: int) -> None:
    """Flush until the cockpit counted every request (each flush exports synchronously)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        handle.force_flush()
        if api(cockpit, "summary")["requests"]["total"] == requests_made:
            return
        time.sleep(0.1)
    raise AssertionError(api(cockpit, "summary"))


def expected(segment: str) -> dict[str, Any]:
    """The design's formulas, by hand, over CROWD."""
    n = {key[1:]: count for key, count in CROWD.items() if key[0] == segment}
    reached = sum(n.values())
    frustrated = n.get((True, True), 0) + n.get((True, False), 0)
    others = reached - frustrated
    rate_f = n.get((True, True), 0) / frustrated if frustrated else None
    rate_o = n.get((False, True), 0) / others if others else None
    return {
        "customers": reached,
        "frustrated": frustrated,
        "rate_f": rate_f,
        "rate_o": rate_o,
        "bought": n.get((True, True), 0) + n.get((False, True), 0),
    }


@pytest.fixture
def crowd_seen(
    cockpit: Cockpit, instrument: Any, serve: Callable[[Any], str], journeys_file: str
) -> Cockpit:
    """The cockpit once the whole CROWD walked a shop with visits on."""
    handle, base = shop(
        cockpit,
        instrument,
        serve,
        journeys_file,
        CXTRACE_VISITS="cookie",
        CXTRACE_VISIT_KEY="cockpit-test",
    )
    settle(cockpit, handle, run_crowd(base))
    return cockpit


def test_the_cockpit_counts_customers_and_what_frustration_cost(crowd_seen: Cockpit) -> None:
    cockpit = crowd_seen

    # The funnel, in customers, per segment.
    funnel = api(cockpit, "funnel")
    assert funnel["unit"] == "customers"
    (journey,) = funnel["journeys"]
    assert journey["steps"] == ["browse", "view_product", "checkout", "purchase"]
    for seg in journey["segments"]:
        truth = expected(seg["segment"])
        by_step = {row["step"]: row for row in seg["steps"]}
        for step in ("browse", "view_product", "checkout"):
            assert by_step[step]["customers"] == truth["customers"], (seg["segment"], step)
        assert by_step["purchase"]["customers"] == truth["bought"]
        assert by_step["checkout"]["frustrated"] == truth["frustrated"]
        assert by_step["purchase"]["drop_off"] == pytest.approx(
            1 - truth["bought"] / truth["customers"], abs=1e-4
        )
        assert seg["conversions"] == truth["bought"]
        assert seg["conversion_rate"] == pytest.approx(truth["bought"] / truth["customers"])
        assert seg["value"] == pytest.approx(truth["bought"] * PRICE)
        assert seg["currency"] == "EUR"
    assert funnel["visits"] == {s: expected(s)["customers"] for s in ("enterprise", "free", "pro")}

    # What frustration cost, per step and segment.
    costs = {(r["segment"], r["step"]): r for r in api(cockpit, "costs")["rows"]}
    assert set(costs) == {("enterprise", "checkout"), ("pro", "checkout"), ("free", "checkout")}
    enterprise = costs[("enterprise", "checkout")]
    truth = expected("enterprise")
    lost = truth["frustrated"] * (truth["rate_o"] - truth["rate_f"])
    assert (enterprise["customers"], enterprise["frustrated"]) == (20, 10)
    assert enterprise["frustrated_slow"] == 10
    assert enterprise["conversion_rate_frustrated"] == pytest.approx(truth["rate_f"])
    assert enterprise["conversion_rate_others"] == pytest.approx(truth["rate_o"])
    assert enterprise["conversions_lost"] == pytest.approx(lost)  # 10 x (0.8 - 0.3) = 5
    assert enterprise["value_lost"] == pytest.approx(lost * PRICE)
    pro = costs[("pro", "checkout")]
    assert pro["comparable"] is True
    assert pro["conversions_lost"] == 0  # they bought as often as the others: no loss
    assert pro["note"] == "the frustrated customers converted as often as the others"
    free = costs[("free", "checkout")]
    assert free["comparable"] is False  # 2 frustrated: too few to compare
    assert free["conversions_lost"] is None
    assert "too few customers to compare: 2 frustrated and 10 others" in free["note"]

    # The headline: the costliest slice first, in customers and money.
    summary = api(cockpit, "summary")
    assert summary["unit"] == "customers"
    texts = [h["text"] for h in summary["headlines"]]
    assert texts[0] == (
        "checkout frustrated 10 of the 20 enterprise customers who reached it; they bought "
        "30% of the time against 80%: about 5 conversions (EUR 500) lost in the last 15 minutes"
    )
    assert texts[1] == (
        "checkout frustrated 5 of the 10 pro customers who reached it; they bought 40% of the "
        "time against 40%: no conversions lost"
    )
    assert texts[2].startswith("checkout frustrated 2 of the 12 free customers who reached it")
    assert "too few to compare" in texts[2]


def test_the_page_shows_customers_and_money(crowd_seen: Cockpit, page: Any) -> None:
    cockpit = crowd_seen
    page.goto(cockpit.page_url + "?window=15m")
    first = page.locator("#summary li.headline").first
    assert first.get_attribute("data-unit") == "customers"
    assert first.inner_text().startswith("checkout frustrated 10 of the 20 enterprise customers")
    assert page.locator("#summary [data-customers]").get_attribute("data-customers") == str(
        sum(expected(s)["customers"] for s in ("enterprise", "free", "pro"))
    )
    cell = page.locator('#funnel td[data-segment="enterprise"][data-step="checkout"]')
    assert (cell.get_attribute("data-customers"), cell.get_attribute("data-frustrated")) == (
        "20",
        "10",
    )
    row = page.locator('#costs tr[data-segment="enterprise"][data-step="checkout"]')
    assert float(row.get_attribute("data-lost") or "nan") == pytest.approx(5.0)
    assert float(row.get_attribute("data-value-lost") or "nan") == pytest.approx(500.0)
    assert "500.00 EUR" in row.inner_text()


# What the page may say about customers without counting any: names, not numbers.
NOT_COUNTS = (
    "Customer Experience Cockpit",
    "What customers feel",
    "where customers arrive",
    "serve the same customers' requests",
)


def page_text(page: Any) -> str:
    """Every text a reader sees: the visible text and every hover title."""
    titles = page.eval_on_selector_all("[title]", "els => els.map(e => e.title)")
    return page.locator("body").inner_text() + "\n" + "\n".join(titles)


def test_without_visits_no_text_calls_a_request_count_customers(
    cockpit: Cockpit, instrument: Any, serve: Callable[[Any], str], journeys_file: str, page: Any
) -> None:
    handle, base = shop(cockpit, instrument, serve, journeys_file)
    settle(cockpit, handle, run_crowd(base))
    assert api(cockpit, "summary")["unit"] == "requests"
    assert api(cockpit, "funnel")["unit"] == "requests"
    assert api(cockpit, "costs")["rows"] == []
    page.goto(cockpit.page_url + "?window=15m")
    text = page_text(page)
    assert "requests frustrating" in text  # the headline, in requests
    for phrase in NOT_COUNTS:
        text = text.replace(phrase, "")
    assert not re.findall(r"[^\n]*customer[^\n]*", text, flags=re.IGNORECASE)


@pytest.mark.parametrize(("width", "height"), [(1400, 900), (390, 844)], ids=["desktop", "phone"])
def test_the_page_fits_a_desktop_and_a_phone(
    crowd_seen: Cockpit, page: Any, width: int, height: int, tmp_path: Path
) -> None:
    page.set_viewport_size({"width": width, "height": height})
    page.goto(crowd_seen.page_url + "?window=15m")
    # Nothing wider than the screen: wide tables scroll inside their card, not the page.
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    wide = page.evaluate(
        """() => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
        .filter(e => !e.closest('.scroll'))
        .slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id + ' '
        + Math.round(e.getBoundingClientRect().right))"""
    )
    assert overflow <= 0, f"the page is {overflow} px wider than a {width} px screen: {wide}"
    for section in ("#summary", "#costs", "#funnel", "#visits"):
        box = page.locator(section).bounding_box()
        assert box is not None, section
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= width + 1, section
    headline = page.locator("#summary li.headline").first
    assert headline.is_visible()
    assert headline.bounding_box()["width"] <= width  # type: ignore[index]
    page.screenshot(path=str(tmp_path / f"cockpit-{width}.png"), full_page=True)
