"""The cockpit's receiver and store, fed by real OpenTelemetry SDK exporters over both
OTLP protocols, and by hand-built payloads where a test needs exact timestamps."""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from cxtrace._cli import default_cockpit_db
from cxtrace._cockpit import Cockpit
from cxtrace._cockpit.decode import CounterPoint, SpanSample
from cxtrace._cockpit.store import _MIGRATIONS, SCHEMA_VERSION, SchemaError, Store
from design_journeys import DESIGN_JOURNEYS
from flask_app import make_app
from otlp_receiver import GRPC_AVAILABLE

if GRPC_AVAILABLE:
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression as GrpcCompression
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
        OTLPMetricExporter as GrpcMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )

MINUTE_NS = 60 * 10**9
REPO = Path(__file__).resolve().parent.parent
JOURNEYS = DESIGN_JOURNEYS  # what the journeys_file fixture writes


@pytest.fixture
def cockpit(tmp_path: Path) -> Iterator[Cockpit]:
    with Cockpit(tmp_path / "cockpit.sqlite3", port=0, otlp_http_port=0, otlp_grpc_port=0) as c:
        yield c


def api(cockpit: Cockpit, view: str, window: str = "15m") -> Any:
    url = f"{cockpit.page_url}api/{view}?window={window}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def cell(grid: dict[str, Any], segment: str, step: str) -> dict[str, Any]:
    columns = [c["step"] for c in grid["columns"]]
    row = next(r for r in grid["rows"] if r["segment"] == segment)
    return dict(row["cells"][columns.index(step)])


def cx(satisfaction: str, segment: str, step: str = "checkout") -> dict[str, str]:
    return {
        "cx.satisfaction": satisfaction,
        "cx.segment": segment,
        "cx.journey": "purchase",
        "cx.step": step,
        "http.route": f"/{step}",
        "http.request.method": "GET",
    }


# ---------------------------------------------------------------------- real SDK exporters


def metric_exporter(protocol: str, cockpit: Cockpit, *, delta: bool) -> Any:
    temporality = {Counter: AggregationTemporality.DELTA} if delta else {}
    if protocol == "grpc":
        return GrpcMetricExporter(
            endpoint=cockpit.otlp_grpc_endpoint,
            insecure=True,
            compression=GrpcCompression.Gzip,
            preferred_temporality=temporality,
        )
    return HttpMetricExporter(
        endpoint=f"{cockpit.otlp_http_endpoint}/v1/metrics",
        compression=HttpCompression.Gzip,
        preferred_temporality=temporality,
    )


def span_exporter(protocol: str, cockpit: Cockpit) -> Any:
    if protocol == "grpc":
        return GrpcSpanExporter(endpoint=cockpit.otlp_grpc_endpoint, insecure=True)
    return HttpSpanExporter(endpoint=f"{cockpit.otlp_http_endpoint}/v1/traces")


def meter_provider(
    protocol: str, cockpit: Cockpit, instance: str, *, delta: bool, service: str = "shop"
) -> Any:
    reader = PeriodicExportingMetricReader(
        metric_exporter(protocol, cockpit, delta=delta), export_interval_millis=3_600_000
    )
    resource = Resource.create({"service.name": service, "service.instance.id": instance})
    return MeterProvider(metric_readers=[reader], resource=resource)


PROTOCOLS = [
    "http/protobuf",
    pytest.param(
        "grpc", marks=pytest.mark.skipif(not GRPC_AVAILABLE, reason="grpcio not installed")
    ),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_counts_from_cumulative_delta_and_restarted_processes_add_up_exactly(
    cockpit: Cockpit, protocol: str
) -> None:
    # Process a: cumulative (the SDK default), exported twice: the second export repeats
    # the first's counts, which must not be counted again.
    a = meter_provider(protocol, cockpit, "a", delta=False)
    requests_a = a.get_meter("shop").create_counter("cx.requests")
    conversions_a = a.get_meter("shop").create_counter("cx.conversions")
    requests_a.add(7, cx("satisfied", "pro"))
    requests_a.add(3, cx("frustrated", "pro"))
    a.force_flush()
    requests_a.add(2, cx("satisfied", "pro"))
    conversions_a.add(2, {"cx.segment": "pro", "cx.journey": "purchase", "cx.step": "purchase"})
    a.force_flush()
    a.shutdown()
    # Process a restarts with the same identity: a new start time, its counter back at 0.
    a2 = meter_provider(protocol, cockpit, "a", delta=False)
    a2.get_meter("shop").create_counter("cx.requests").add(6, cx("satisfied", "pro"))
    a2.force_flush()
    a2.shutdown()
    # Process b: delta temporality, a second process of the same service.
    b = meter_provider(protocol, cockpit, "b", delta=True)
    requests_b = b.get_meter("shop").create_counter("cx.requests")
    requests_b.add(4, cx("tolerating", "enterprise"))
    requests_b.add(5, cx("satisfied", "pro"))
    b.force_flush()
    requests_b.add(5, cx("frustrated", "enterprise"))
    b.force_flush()
    b.shutdown()

    grid = api(cockpit, "grid")
    pro = cell(grid, "pro", "checkout")
    assert (pro["satisfied"], pro["tolerating"], pro["frustrated"]) == (7 + 2 + 6 + 5, 0, 3)
    enterprise = cell(grid, "enterprise", "checkout")
    assert (enterprise["satisfied"], enterprise["tolerating"], enterprise["frustrated"]) == (
        0,
        4,
        5,
    )
    assert enterprise["apdex"] == pytest.approx((0 + 4 / 2) / 9, abs=1e-4)
    summary = api(cockpit, "summary")
    assert summary["requests"]["total"] == 20 + 3 + 9
    assert summary["headlines"][0]["text"] == (
        "checkout: 56% of enterprise requests frustrating (Apdex 0.22)"
    )
    funnel = api(cockpit, "funnel")["journeys"][0]
    pro_funnel = next(s for s in funnel["segments"] if s["segment"] == "pro")
    assert pro_funnel["conversions"] == 2
    assert api(cockpit, "health")["rejected"] == {}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_spans_give_reasons_examples_thresholds_and_conversion_value(
    cockpit: Cockpit, protocol: str
) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(span_exporter(protocol, cockpit)))
    tracer = provider.get_tracer("test")
    # Spans are kept by the minute they ended in: let every one end before the query's
    # "now", or a run in a minute's last seconds puts the slow ones past the window.
    now = time.time_ns() - 10_000_000_000
    trace_ids: dict[str, list[str]] = {"error": [], "slow": []}

    def server_span(duration_ms: int, attrs: dict[str, Any], error: bool = False) -> str:
        span = tracer.start_span(
            "GET /checkout", kind=SpanKind.SERVER, attributes=attrs, start_time=now
        )
        if error:
            span.set_status(Status(StatusCode.ERROR, "500"))
        span.end(end_time=now + duration_ms * 1_000_000)
        return format(span.get_span_context().trace_id, "032x")

    base = {"cx.segment": "enterprise", "cx.journey": "purchase", "cx.step.index": 4}
    checkout = {**base, "cx.step": "checkout", "cx.apdex.threshold_ms": 1000}
    for _ in range(3):
        trace_ids["error"].append(
            server_span(
                80,
                {**checkout, "cx.satisfaction": "frustrated", "cx.frustration.reason": "error"},
                error=True,
            )
        )
    for duration in (5200, 6100):
        trace_ids["slow"].append(
            server_span(
                duration,
                {**checkout, "cx.satisfaction": "frustrated", "cx.frustration.reason": "slow"},
            )
        )
    server_span(300, {**checkout, "cx.satisfaction": "satisfied"})
    purchase = {
        **base,
        "cx.step": "purchase",
        "cx.step.index": 5,
        "cx.satisfaction": "satisfied",
        "cx.conversion": True,
        "cx.conversion.currency": "EUR",
    }
    server_span(200, {**purchase, "cx.conversion.value": 99.5})
    server_span(200, {**purchase, "cx.conversion.value": 20.25})
    with tracer.start_as_current_span("an internal span without a verdict"):
        pass
    provider.shutdown()

    reasons = api(cockpit, "reasons")
    row = next(r for r in reasons["rows"] if r["step"] == "checkout")
    assert (row["frustrated_error"], row["frustrated_slow"], row["tolerating"]) == (3, 2, 0)
    slowest = api(cockpit, "slowest")
    top = slowest["slowest"][0]
    assert (top["step"], top["segment"], top["spans"]) == ("checkout", "enterprise", 6)
    assert top["max_ms"] == pytest.approx(6100, abs=1)
    assert [x["trace_id"] for x in top["examples"][:2]] == trace_ids["slow"][::-1]
    failing = slowest["failing"][0]
    assert failing["errors"] == 3
    assert sorted(x["trace_id"] for x in failing["examples"]) == sorted(trace_ids["error"])
    funnel = api(cockpit, "funnel")["journeys"][0]["segments"][0]
    assert (funnel["value"], funnel["currency"]) == (119.75, "EUR")
    grid = api(cockpit, "grid")
    assert [(c["step"], c["index"], c["threshold_ms"]) for c in grid["columns"]] == []  # no metrics
    # The steps' T and order are known from the spans: the headline uses them.
    with cockpit.store.reader() as conn:
        steps = dict(conn.execute("SELECT step, threshold_ms FROM steps").fetchall())
    assert steps["checkout"] == 1000


def test_flask_app_instrumented_by_cxtrace_shows_exact_counts(
    cockpit: Cockpit, instrument: Any, serve: Any, journeys_file: str
) -> None:

    class Target:  # what the `instrument` fixture needs of a receiver
        def env(self) -> dict[str, str]:
            return {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": cockpit.otlp_http_endpoint,
            }

    handle = instrument(Target(), env={"CXTRACE_JOURNEYS_FILE": journeys_file})
    base = serve(make_app())
    sent = {"free": 5, "pro": 3, "enterprise": 4}
    with requests.Session() as session:
        for segment, n in sent.items():
            for _ in range(n):
                r = session.get(f"{base}/checkout", headers={"X-Customer-Tier": segment})
                assert r.status_code == 200
        r = session.post(f"{base}/orders?value=42.5", headers={"X-Customer-Tier": "pro"})
        assert r.status_code == 201
        assert session.get(f"{base}/health").status_code == 200

    def counts() -> dict[str, int]:
        grid = api(cockpit, "grid")
        if not any(c["step"] == "checkout" for c in grid["columns"]):
            return {}
        totals = {r["segment"]: cell(grid, r["segment"], "checkout")["total"] for r in grid["rows"]}
        return {segment: n for segment, n in totals.items() if n}

    # A request is counted when the server closes its body, just after the client read it:
    # flush until the last one is in (each flush is a synchronous export).
    def pro_funnel() -> dict[str, Any]:
        journeys = api(cockpit, "funnel")["journeys"]
        segments = journeys[0]["segments"] if journeys else []
        return next((s for s in segments if s["segment"] == "pro"), {})

    deadline = time.monotonic() + 10
    handle.force_flush()

    def health_checks() -> int:
        grid = api(cockpit, "grid")
        rows = [r for r in grid["rows"] if r["segment"] == "unknown"]
        return cell(grid, "unknown", "/health")["total"] if rows else 0

    def done() -> bool:
        return counts() == sent and pro_funnel().get("value") == 42.5 and health_checks() == 1

    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
        handle.force_flush()
    assert counts() == sent
    grid = api(cockpit, "grid")
    assert cell(grid, "unknown", "/health")["total"] == 1  # no step: shown under its route
    checkout = next(c for c in grid["columns"] if c["step"] == "checkout")
    assert (checkout["index"], checkout["threshold_ms"]) == (4, 1000)
    pro = pro_funnel()
    assert (pro["conversions"], pro["value"], pro["currency"]) == (1, 42.5, "EUR")


# ---------------------------------------------------------------------- hand-built payloads


def attribute(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def metrics_payload(
    points: list[tuple[float, int, int]],
    *,
    segment: str = "pro",
    cumulative: bool = True,
    instance: str = "a",
    metric: str = "cx.requests",
    satisfaction: str = "satisfied",
) -> bytes:
    """Counter points (value, start_ns, time_ns) of one series (default: cx.requests,
    satisfied, checkout)."""
    temporality = (
        metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        if cumulative
        else metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    )
    data = [
        metrics_pb2.NumberDataPoint(
            attributes=[attribute(k, v) for k, v in cx(satisfaction, segment).items()],
            start_time_unix_nano=start,
            time_unix_nano=end,
            as_double=value,
        )
        for value, start, end in points
    ]
    request = metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource_pb2.Resource(
                    attributes=[
                        attribute("service.name", "shop"),
                        attribute("service.instance.id", instance),
                    ]
                ),
                scope_metrics=[
                    metrics_pb2.ScopeMetrics(
                        metrics=[
                            metrics_pb2.Metric(
                                name=metric,
                                sum=metrics_pb2.Sum(
                                    data_points=data,
                                    aggregation_temporality=temporality,
                                    is_monotonic=True,
                                ),
                            )
                        ]
                    )
                ],
            )
        ]
    )
    return request.SerializeToString()


def post(
    endpoint: str,
    body: bytes,
    *,
    path: str = "/v1/metrics",
    content_type: str = "application/x-protobuf",
    headers: dict[str, str] | None = None,
) -> int:
    request = urllib.request.Request(
        endpoint + path,
        data=body,
        headers={"Content-Type": content_type, **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def total(cockpit: Cockpit, segment: str = "pro", window: str = "15m") -> int:
    grid = api(cockpit, "grid", window)
    if not grid["rows"]:
        return 0
    return int(cell(grid, segment, "checkout")["total"])


def test_cumulative_resets_late_points_and_restarts_of_the_cockpit(tmp_path: Path) -> None:
    now = time.time_ns()
    start = now - 5 * MINUTE_NS
    db = tmp_path / "c.sqlite3"
    with Cockpit(db, port=0, otlp_http_port=0, otlp_grpc_port=None) as cockpit:
        endpoint = cockpit.otlp_http_endpoint
        assert post(endpoint, metrics_payload([(10, start, now - 4 * MINUTE_NS)])) == 200
        assert post(endpoint, metrics_payload([(15, start, now - 3 * MINUTE_NS)])) == 200
        # A retry of an older point arrives late: nothing more to count.
        assert post(endpoint, metrics_payload([(12, start, now - 3 * MINUTE_NS - 1)])) == 200
        # The value goes down with the same start time: the SDK reset its counter.
        assert post(endpoint, metrics_payload([(4, start, now - 2 * MINUTE_NS)])) == 200
        assert total(cockpit) == 10 + 5 + 4
        # Delta points of another process just add up; zero and negative ones are ignored.
        delta = metrics_payload(
            [(3, now - MINUTE_NS, now), (0, now, now)], cumulative=False, instance="b"
        )
        assert post(endpoint, delta) == 200
        assert total(cockpit) == 22
        before = api(cockpit, "grid")
    # The cockpit restarts: same numbers, and the series remember their last value.
    with Cockpit(db, port=0, otlp_http_port=0, otlp_grpc_port=None) as cockpit:
        assert api(cockpit, "grid") == before
        assert post(cockpit.otlp_http_endpoint, metrics_payload([(9, start, now - 1)])) == 200
        assert total(cockpit) == 22 + 5


def test_browser_page_loads_show_beside_server_requests(cockpit: Cockpit) -> None:
    now = time.time_ns()
    endpoint = cockpit.otlp_http_endpoint
    window = (now - MINUTE_NS, now)
    for metric, satisfaction, n in (
        ("cx.requests", "satisfied", 8),
        ("cx.page_loads", "satisfied", 3),
        ("cx.page_loads", "frustrated", 1),
    ):
        payload = metrics_payload(
            [(n, *window)], cumulative=False, metric=metric, satisfaction=satisfaction
        )
        assert post(endpoint, payload) == 200
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(span_exporter("http/protobuf", cockpit)))
    span = provider.get_tracer("rum").start_span(
        "browser.page_load",
        attributes={
            **cx("frustrated", "pro"),
            "cx.frustration.reason": "slow",
            "cx.apdex.threshold_ms": 2500,
        },
        start_time=now - 12_000_000_000,
    )
    span.end(end_time=now)  # ended before the query's "now": inside the window
    provider.shutdown()

    checkout = cell(api(cockpit, "grid"), "pro", "checkout")
    assert checkout["total"] == 8  # the server's view is unchanged...
    browser = checkout["browser"]  # ...and the browser's sits beside it
    assert (browser["satisfied"], browser["frustrated"], browser["apdex"]) == (3, 1, 0.75)
    summary = api(cockpit, "summary")
    assert (summary["requests"]["total"], summary["browser"]["total"]) == (8, 4)
    assert api(cockpit, "reasons")["rows"] == []  # page loads are not server requests
    with cockpit.store.reader() as conn:
        assert conn.execute("SELECT spans, max_ms FROM page_load_stats").fetchall() == [
            (1, 12000.0)
        ]
        page_t = conn.execute("SELECT page_threshold_ms FROM steps").fetchall()
    assert page_t == [(2500,)]


def test_customers_are_counted_where_they_arrive_not_again_downstream(cockpit: Cockpit) -> None:
    # The storefront (shop) calls a backend for every checkout: both count the request.
    for service, n in (("shop", 6), ("backend", 6)):
        provider = meter_provider("http/protobuf", cockpit, "1", delta=True, service=service)
        provider.get_meter("m").create_counter("cx.requests").add(n, cx("satisfied", "pro"))
        provider.shutdown()
    shop = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    backend = TracerProvider(resource=Resource.create({"service.name": "backend"}))
    for provider in (shop, backend):
        provider.add_span_processor(SimpleSpanProcessor(span_exporter("http/protobuf", cockpit)))
    attrs = {**cx("satisfied", "pro"), "cx.apdex.threshold_ms": 1000}
    with shop.get_tracer("t").start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as span:
        span.set_attributes(attrs)
        # The backend's server span continues the storefront's trace (its parent is remote).
        with backend.get_tracer("t").start_as_current_span(
            "POST /price", kind=SpanKind.SERVER, attributes=attrs
        ):
            pass
    shop.shutdown()
    backend.shutdown()

    assert total(cockpit) == 6  # the customer's requests, once
    services = api(cockpit, "services")
    assert (services["services"], services["downstream"]) == (["backend", "shop"], ["backend"])
    everything = f"{cockpit.page_url}api/grid?window=15m&service=all"
    with urllib.request.urlopen(everything, timeout=10) as response:
        assert cell(json.load(response), "pro", "checkout")["total"] == 12
    only = f"{cockpit.page_url}api/slowest?window=15m&service=backend"
    with urllib.request.urlopen(only, timeout=10) as response:
        assert json.load(response)["slowest"][0]["spans"] == 1
    with urllib.request.urlopen(cockpit.page_url, timeout=10) as response:
        page = response.read().decode()
    assert "Counted where customers arrive: shop." in page


# ---------------------------------------------------------------------- the headline


def send_checkouts(cockpit: Cockpit, slices: dict[str, tuple[int, int, int]]) -> None:
    """Checkout requests of the last minute: segment -> (satisfied, tolerating, frustrated)."""
    now = time.time_ns()
    for segment, counts in slices.items():
        for satisfaction, n in zip(("satisfied", "tolerating", "frustrated"), counts):
            if n:
                payload = metrics_payload(
                    [(n, now - MINUTE_NS, now)],
                    cumulative=False,
                    segment=segment,
                    satisfaction=satisfaction,
                )
                assert post(cockpit.otlp_http_endpoint, payload) == 200


def headline_segments(cockpit: Cockpit) -> list[str]:
    return [h["segment"] for h in api(cockpit, "summary")["headlines"]]


# Each case is played under both namings, so that the order of the names never decides.
NAMINGS = [("enterprise", "pro"), ("pro", "enterprise")]


@pytest.mark.parametrize(("worst", "other"), NAMINGS)
@pytest.mark.parametrize(
    ("worst_counts", "other_counts"),
    [
        pytest.param((0, 6, 2), (60, 0, 40), id="fewer-frustrated"),
        pytest.param((0, 10, 0), (30, 0, 20), id="none-frustrated"),
    ],
)
def test_the_headline_leads_with_the_lowest_apdex_not_the_most_frustrated_requests(
    cockpit: Cockpit,
    worst: str,
    other: str,
    worst_counts: tuple[int, int, int],
    other_counts: tuple[int, int, int],
) -> None:
    # worst: Apdex 0.38 / 0.5 with 2 / 0 frustrated; other: Apdex 0.6 with 40 / 20 frustrated
    # (a larger share too).
    send_checkouts(cockpit, {worst: worst_counts, other: other_counts})

    headlines = api(cockpit, "summary")["headlines"]

    assert [h["segment"] for h in headlines] == [worst, other]
    assert headlines[0]["frustrated"] < headlines[1]["frustrated"]
    assert headlines[0]["apdex"] < headlines[1]["apdex"]


@pytest.mark.parametrize(("more", "fewer"), NAMINGS)
def test_at_equal_apdex_the_slice_with_more_frustrated_requests_comes_first(
    cockpit: Cockpit, more: str, fewer: str
) -> None:
    # Both Apdex 0.5 exactly: half satisfied and half frustrated, or all tolerating.
    send_checkouts(cockpit, {more: (5, 0, 5), fewer: (0, 10, 0)})

    headlines = api(cockpit, "summary")["headlines"]

    assert [(h["segment"], h["apdex"], h["frustrated"]) for h in headlines] == [
        (more, 0.5, 5),
        (fewer, 0.5, 0),
    ]


def test_slices_tied_on_apdex_and_frustration_go_by_name_and_three_are_shown(
    cockpit: Cockpit,
) -> None:
    send_checkouts(cockpit, dict.fromkeys(("pro", "free", "partner", "enterprise"), (2, 0, 3)))

    assert headline_segments(cockpit) == ["enterprise", "free", "partner"]


def test_the_headline_needs_five_requests_and_an_apdex_below_0_94(cockpit: Cockpit) -> None:
    send_checkouts(
        cockpit,
        {
            "four-requests": (0, 0, 4),  # Apdex 0, but too few to speak of
            "five-requests": (4, 0, 1),  # Apdex 0.8
            "apdex-0.94": (47, 0, 3),  # exactly "satisfied"
            "apdex-0.93": (93, 0, 7),
        },
    )

    assert headline_segments(cockpit) == ["five-requests", "apdex-0.93"]


# ---------------------------------------------------------------------- hostile payloads


def test_hostile_http_payloads_are_refused_and_stored_data_survives(
    cockpit: Cockpit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cxtrace._cockpit")
    endpoint = cockpit.otlp_http_endpoint
    now = time.time_ns()
    good = metrics_payload([(5, now - MINUTE_NS, now)], cumulative=False)
    assert post(endpoint, good) == 200
    before = api(cockpit, "grid")

    assert post(endpoint, good[:-3]) == 400  # truncated protobuf
    assert post(endpoint, b"\xff" * 64) == 400  # garbage
    assert post(endpoint, b'{"resourceMetrics": []}', content_type="application/json") == 415
    assert post(endpoint, good, headers={"Content-Encoding": "br"}) == 415
    assert post(endpoint, b"not gzip", headers={"Content-Encoding": "gzip"}) == 400
    bomb = gzip.compress(b"\0" * (30 * 1024 * 1024))  # 30 KB that inflate to 30 MB
    assert post(endpoint, bomb, headers={"Content-Encoding": "gzip"}) == 413
    assert post(endpoint, b"", path="/v1/logs") == 200  # logs: accepted, not shown
    # Well-formed but unusable numbers are skipped, not stored: NaN, negative, absurd sizes,
    # timestamps SQLite cannot hold.
    for value, at in ((math.nan, now), (-4, now), (1e300, now), (1, 2**64 - 1), (1, 0)):
        assert post(endpoint, metrics_payload([(value, now - MINUTE_NS, at)])) == 200
    far_future = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        spans=[
                            trace_pb2.Span(
                                trace_id=b"\1" * 16,
                                span_id=b"\2" * 8,
                                name="GET /checkout",
                                start_time_unix_nano=now,
                                end_time_unix_nano=2**64 - 1,
                                attributes=[attribute("cx.satisfaction", "frustrated")],
                            )
                        ]
                    )
                ]
            )
        ]
    )
    assert post(endpoint, far_future.SerializeToString(), path="/v1/traces") == 200
    assert post(endpoint, good, path="/v1/nothing") == 404

    # 50 MB announced: refused from the headers alone, before any of the body is sent.
    host, port = endpoint.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 52428800\r\n\r\n"
        )
        status_line = sock.makefile("rb").readline()
    assert status_line.split()[1] == b"413"

    assert api(cockpit, "grid") == before
    assert api(cockpit, "health")["rows"]["examples"] == 0
    with urllib.request.urlopen(cockpit.page_url, timeout=10) as page:
        assert page.status == 200
    rejected = api(cockpit, "health")["rejected"]
    assert sum(rejected.values()) == 7
    assert rejected["Content-Type must be application/x-protobuf"] == 1
    # Logged once per cause: a second JSON payload adds a count, not a warning.
    warnings = len(caplog.records)
    assert warnings == len(rejected) == 6  # truncated and garbage share a cause
    assert post(endpoint, b"{}", content_type="application/json") == 415
    assert len(caplog.records) == warnings
    assert api(cockpit, "health")["rejected"]["Content-Type must be application/x-protobuf"] == 2


@pytest.mark.skipif(not GRPC_AVAILABLE, reason="grpcio not installed")
def test_garbage_grpc_gets_invalid_argument_and_stored_data_survives(cockpit: Cockpit) -> None:
    now = time.time_ns()
    good = metrics_payload([(5, now - MINUTE_NS, now)], cumulative=False)
    assert cockpit.otlp_grpc_endpoint is not None
    target = cockpit.otlp_grpc_endpoint.removeprefix("http://")
    with grpc.insecure_channel(target) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
        )
        assert export(good, timeout=10) == b""
        before = api(cockpit, "grid")
        for garbage in (b"\x0a\xff\xff\xff\xff\x0f", good[:-3]):
            with pytest.raises(grpc.RpcError) as caught:
                export(garbage, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as caught:
            export(b"\x0a" + b"\0" * (21 * 1024 * 1024), timeout=20)  # over 20 MB
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        traces = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as caught:
            traces(b"\xff\xff\xff", timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert api(cockpit, "grid") == before
    assert total(cockpit) == 5


# ---------------------------------------------------------------------- durability


def cockpit_process(db: Path, *extra: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``cxtrace cockpit`` on ephemeral ports; returns it and its announced endpoints."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cxtrace",
            "cockpit",
            "--db",
            str(db),
            "--port",
            "0",
            "--otlp-http-port",
            "0",
            "--otlp-grpc-port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(4)]
    announced = {}
    for line in lines:
        assert line.startswith("cxtrace cockpit: "), (lines, process.stderr)
        words = line.split()
        announced[words[2] if len(words) > 3 else "page"] = (
            words[-1] if len(words) <= 3 else words[3]
        )
    return process, announced


def test_cli_prints_endpoints_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    process, announced = cockpit_process(tmp_path / "c.sqlite3")
    try:
        assert announced["page"].startswith("http://127.0.0.1:")
        assert announced["OTLP/HTTP"].startswith("http://127.0.0.1:")
        assert announced["OTLP/gRPC"].startswith("http://127.0.0.1:")
        now = time.time_ns()
        payload = metrics_payload([(3, now - MINUTE_NS, now)], cumulative=False)
        assert post(announced["OTLP/HTTP"], payload) == 200
        with urllib.request.urlopen(announced["page"] + "api/summary", timeout=10) as response:
            assert json.load(response)["requests"]["total"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert out.strip().endswith("cxtrace cockpit: stopped")


def test_killed_mid_ingest_keeps_every_acknowledged_request(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite3"
    process, announced = cockpit_process(db)
    endpoint = announced["OTLP/HTTP"]
    acknowledged = 0
    sent = 0
    stop = threading.Event()

    def sender() -> None:
        nonlocal acknowledged, sent
        while not stop.is_set():
            now = time.time_ns()
            payload = metrics_payload([(1, now - 1000, now)], cumulative=False)
            sent += 1
            try:
                if post(endpoint, payload) == 200:
                    acknowledged += 1
            except OSError:
                return

    thread = threading.Thread(target=sender)
    thread.start()
    deadline = time.monotonic() + 20
    while acknowledged < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()  # SIGKILL: no chance to finish anything
    process.wait(timeout=10)
    stop.set()
    thread.join(timeout=10)
    assert acknowledged >= 60
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with Cockpit(db, port=0, otlp_http_port=0, otlp_grpc_port=None) as cockpit:
        stored = total(cockpit)
    # Every acknowledged request is there; at most the one in flight was lost or kept.
    assert acknowledged <= stored <= sent


# ---------------------------------------------------------------------- schema and retention


def test_a_version_1_database_is_upgraded_without_losing_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(_MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    minute = time.time_ns() // MINUTE_NS
    conn.execute(
        "INSERT INTO requests VALUES (?, 'shop', 'pro', 'purchase', 'checkout', 'satisfied', 41)",
        (minute,),
    )
    conn.execute(
        "INSERT INTO examples (end_ns, service, segment, journey, step, satisfaction, reason,"
        " trace_id, span_id, duration_ms, is_error, http_status) VALUES"
        " (?, 'shop', 'pro', 'purchase', 'checkout', 'frustrated', 'slow', 'ab', 'cd', 9000, 0,"
        " 200)",
        (time.time_ns(),),
    )
    conn.execute("INSERT INTO steps VALUES ('purchase', 'checkout', 4, 1000, ?)", (time.time_ns(),))
    conn.commit()
    conn.close()

    with Cockpit(db, port=0, otlp_http_port=0, otlp_grpc_port=None) as cockpit:
        assert total(cockpit) == 41
        with cockpit.store.reader() as reader:
            assert reader.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert reader.execute("SELECT source, trace_id FROM examples").fetchall() == [
                ("server", "ab")
            ]
            assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            # The hourly rollup (version 3) was filled from the minutes already stored.
            hourly = reader.execute("SELECT sum(count) FROM requests_hourly").fetchone()[0]
            assert hourly == 41
        for window in ("15m", "24h", "7d"):
            assert api(cockpit, "summary", window)["requests"]["total"] == 41


def test_a_database_from_a_newer_cockpit_or_another_program_is_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer than this cockpit"):
        Store(newer, retention_s=60)
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(SchemaError, match="not a cockpit database"):
        Store(junk, retention_s=60)


def test_prune_drops_what_is_older_than_the_retention(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.sqlite3", retention_s=3600)
    now = 1_800_000_000 * 10**9  # explicit clock: no sleeping

    def point(at_ns: int, series: str) -> CounterPoint:
        return CounterPoint(
            "cx.requests",
            series,
            True,
            at_ns - MINUTE_NS,
            at_ns,
            5.0,
            "shop",
            "pro",
            "purchase",
            "checkout",
            "satisfied",
        )

    def span(at_ns: int) -> SpanSample:
        return SpanSample(
            "server",
            "shop",
            "pro",
            "purchase",
            "checkout",
            4,
            "frustrated",
            "slow",
            1000,
            "ab" * 16,
            "cd" * 8,
            at_ns,
            5000.0,
            False,
            200,
            None,
            "",
            True,
        )

    old, recent = now - 2 * 3600 * 10**9, now - 10 * MINUTE_NS
    assert store.add_points([point(old, "s-old"), point(recent, "s-new")]) == 2
    assert store.add_spans([span(old), span(recent)]) == 2
    deleted = store.prune(now)
    rows = store.table_rows()
    store.close()
    assert deleted == 6  # the old request and span buckets (minute + hour), example, series
    assert rows["requests"] == rows["requests_hourly"] == 1
    assert rows["span_stats"] == rows["span_stats_hourly"] == 1
    assert rows["examples"] == 1
    assert rows["series"] == 1
    assert rows["steps"] == 1  # seen recently too


# ---------------------------------------------------------------------- command line


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cxtrace", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        check=False,
    )


def test_cli_help_and_bad_arguments() -> None:
    helped = run_cli("cockpit", "--help")
    assert helped.returncode == 0
    for flag in ("--host", "--port", "--otlp-http-port", "--otlp-grpc-port", "--db", "--retention"):
        assert flag in helped.stdout
    for bad in (["--retention", "soon"], ["--port", "70000"], ["--nope"]):
        result = run_cli("cockpit", *bad)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_port_in_use_exits_2_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for flag in ("--port", "--otlp-http-port", "--otlp-grpc-port"):
            ports = {"--port": "0", "--otlp-http-port": "0", "--otlp-grpc-port": "0", flag: port}
            args = [x for pair in ports.items() for x in pair]
            result = run_cli("cockpit", "--db", str(tmp_path / "c.sqlite3"), *args)
            assert result.returncode == 2, result
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, lines
            assert lines[0].startswith(f"cxtrace cockpit: error: {flag}:")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG layout is Linux's")
def test_default_database_lives_in_the_users_data_directory(tmp_path: Path) -> None:
    assert default_cockpit_db({"XDG_DATA_HOME": str(tmp_path)}) == (
        tmp_path / "cxtrace" / "cockpit.sqlite3"
    )
    assert default_cockpit_db({}) == Path.home() / ".local/share/cxtrace/cockpit.sqlite3"
