"""The cockpit's trace view and example visits, from two real services on loopback.

A Flask storefront calls a Django backend through ``requests``; both are instrumented by
cxtrace (visits on, signed propagation) and export to a real cockpit. Any example trace id
then opens that trace's spans from both services as a waterfall (``/api/traces/<id>``,
``/trace/<id>`` in Chromium), and ``/api/visits`` lists a frustrated customer's requests
in order. Bad and unknown ids get 400 and 404 with a reason.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from flask import Flask, request
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from cxtrace._cockpit.app import Cockpit
from cxtrace._cockpit.decode import trace_spans

pytest.importorskip("django")

JOURNEYS = """\
[segments]
header = "X-Customer-Tier"

[[journeys]]
name = "purchase"
steps = [
  { name = "view_product", route = "/products/<int:product_id>" },
  { name = "checkout",     route = "/checkout", apdex_threshold_ms = 40 },
]
"""


@pytest.fixture
def cockpit(tmp_path: Path) -> Iterator[Cockpit]:
    with Cockpit(tmp_path / "cockpit.sqlite3", port=0, otlp_http_port=0, otlp_grpc_port=0) as c:
        yield c


def get(cockpit: Cockpit, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(cockpit.page_url + path.lstrip("/"), timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def storefront(backend: str) -> Flask:
    app = Flask("storefront")

    @app.get("/products/<int:product_id>")
    def product(product_id: int) -> str:
        return requests.get(f"{backend}/products/{product_id}/", timeout=5).text

    @app.get("/checkout")
    def checkout() -> str:
        time.sleep(float(request.args.get("sleep", "0")))
        return "checkout"

    return app


@pytest.fixture
def shopped(
    cockpit: Cockpit, instrument: Any, serve: Callable[[Any], str], journeys_file: str
) -> tuple[Cockpit, str]:
    """A free customer viewed a product and left content; then a pro customer viewed a
    product (two services) and was frustrated at checkout."""
    import django_server  # noqa: PLC0415 - sets Django up

    class Target:
        def env(self) -> dict[str, str]:
            return {"OTEL_EXPORTER_OTLP_ENDPOINT": cockpit.otlp_http_endpoint}

    handle = instrument(
        Target(),
        env={
            "CXTRACE_JOURNEYS_FILE": journeys_file,
            "CXTRACE_INTEGRATIONS": "flask,django,requests",
            "CXTRACE_PROPAGATION_KEY": "trace-view",
            "CXTRACE_VISITS": "cookie",
            "CXTRACE_VISIT_KEY": "trace-view",
        },
    )
    shop = serve(storefront(serve(django_server.WSGI_APP)))
    with requests.Session() as content:
        assert content.get(f"{shop}/products/2", headers={"X-Customer-Tier": "free"}).ok
    with requests.Session() as browser:
        tier = {"X-Customer-Tier": "pro"}
        assert browser.get(f"{shop}/products/4", headers=tier).text == "product 4"
        assert browser.get(f"{shop}/checkout?sleep=0.2", headers=tier).status_code == 200
        visit_cookie = browser.cookies["cx_visit"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        handle.force_flush()
        status, found = get(cockpit, "/api/visits?window=15m")
        if status == 200 and found["visits"] and len(found["visits"][0]["requests"]) == 3:
            break
        time.sleep(0.1)
    assert visit_cookie
    return cockpit, shop


def test_an_example_trace_opens_its_spans_from_every_service(
    shopped: tuple[Cockpit, str],
) -> None:
    cockpit, _ = shopped
    status, found = get(cockpit, "/api/visits?window=15m")
    assert status == 200
    view = next(r for r in found["visits"][0]["requests"] if r["step"] == "view_product")
    status, trace = get(cockpit, f"/api/traces/{view['trace_id']}")
    assert status == 200
    assert trace["services"] == ["cxtrace-tests"]  # both apps run in this test's process
    # The test's own call (requests is instrumented), the storefront, its call, the backend.
    assert [(s["depth"], s["kind"], s["name"]) for s in trace["spans"]] == [
        (0, "CLIENT", "GET"),
        (1, "SERVER", "GET /products/<int:product_id>"),
        (2, "CLIENT", "GET"),
        (3, "SERVER", "GET /products/<int:product_id>/"),
    ]
    assert trace["missing_parents"] == []
    assert trace["note"] is None
    root = trace["spans"][1]
    keys = [k for k, _ in root["attributes"]]
    assert keys[: keys.index(next(k for k in keys if not k.startswith("cx.")))] == sorted(
        k for k in keys if k.startswith("cx.")
    )  # cx.* first
    assert dict(root["attributes"])["cx.step"] == "view_product"


def test_a_frustrated_customers_visit_lists_its_requests_in_order(
    shopped: tuple[Cockpit, str],
) -> None:
    cockpit, _ = shopped
    status, found = get(cockpit, "/api/visits?window=15m&segment=pro&step=checkout")
    assert status == 200
    (visit,) = found["visits"]
    steps = [(r["service"], r["step"], r["satisfaction"]) for r in visit["requests"]]
    assert [s[1:] for s in steps] == [
        ("view_product", "satisfied"),
        ("view_product", "satisfied"),  # the backend's request, in the same visit
        ("checkout", "frustrated"),
    ]
    assert visit["requests"][2]["reason"] == "slow"
    assert visit["requests"][2]["duration_ms"] >= 200
    times = [r["time_ns"] for r in visit["requests"]]
    assert times == sorted(times)
    # The free customer's visit had no frustrated request: not listed, with or without a slice.
    status, none = get(cockpit, "/api/visits?window=15m&segment=free")
    assert (status, none["visits"]) == (200, [])
    assert len(get(cockpit, "/api/visits?window=15m")[1]["visits"]) == 1


def test_the_trace_page_is_a_waterfall(shopped: tuple[Cockpit, str], page: Any) -> None:
    cockpit, _ = shopped
    _, found = get(cockpit, "/api/visits?window=15m")
    trace_id = found["visits"][0]["requests"][0]["trace_id"]
    page.goto(cockpit.page_url + "?window=15m")
    link = page.locator(f'#visits a[href="/trace/{trace_id}"]').first
    link.click()
    page.wait_for_selector(".trace-view")
    assert page.locator(".trace-view").get_attribute("data-trace-id") == trace_id
    assert page.locator("details.span").count() == 4
    page.locator("details.span summary").nth(1).click()
    assert "cx.step" in page.locator("details.span .attrs").nth(1).inner_text()


@pytest.mark.parametrize(
    ("trace_id", "status"),
    [("not-a-trace", 400), ("ab" * 17, 400), ("0" * 31 + "g", 400), ("0" * 32, 404)],
)
def test_bad_and_unknown_trace_ids_get_400_and_404_with_a_reason(
    cockpit: Cockpit, trace_id: str, status: int
) -> None:
    got, body = get(cockpit, f"/api/traces/{trace_id}")
    assert got == status
    assert "expected 32 hexadecimal digits" in body["error"] or "no span of trace" in body["error"]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{cockpit.page_url}trace/{trace_id}", timeout=10)
    assert info.value.code == status


def test_a_span_whose_parent_never_arrived_is_said_so(cockpit: Cockpit) -> None:
    trace_id, parent = bytes.fromhex("11" * 16), bytes.fromhex("22" * 8)
    span = trace_pb2.Span(
        trace_id=trace_id,
        span_id=bytes.fromhex("33" * 8),
        parent_span_id=parent,  # sampled away upstream
        name="GET /backend",
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=time.time_ns() - 5_000_000,
        end_time_unix_nano=time.time_ns(),
    )
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(span)
    cockpit.store.add_trace_spans(trace_spans(request))
    status, trace = get(cockpit, f"/api/traces/{'11' * 16}")
    assert status == 200
    assert trace["missing_parents"] == ["22" * 8]
    assert trace["note"].startswith("1 span(s) name a parent the cockpit never received")
    assert trace["spans"][0]["depth"] == 0


def test_the_spans_kept_are_bounded_newest_first(cockpit: Cockpit) -> None:
    request = trace_service_pb2.ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    now = time.time_ns()
    for n in range(30):
        spans.append(
            trace_pb2.Span(
                trace_id=n.to_bytes(16, "big"),
                span_id=(n + 1).to_bytes(8, "big"),
                name=f"span {n}",
                start_time_unix_nano=now - 1000,
                end_time_unix_nano=now,
            )
        )
    cockpit.store.add_trace_spans(trace_spans(request), keep=10)
    assert cockpit.store.table_rows()["spans"] == 10
    assert get(cockpit, f"/api/traces/{(29).to_bytes(16, 'big').hex()}")[0] == 200
    assert get(cockpit, f"/api/traces/{(5).to_bytes(16, 'big').hex()}")[0] == 404
