"""Flask end to end: a real werkzeug server, real HTTP requests, a real OTLP receiver."""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
import threading
from typing import Any

import flask
import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import cxtrace
from design_journeys import DESIGN_JOURNEYS
from flask_app import make_app
from otlp_receiver import Receiver, SpanRecord

JOURNEYS = DESIGN_JOURNEYS  # what the journeys_file fixture writes
APP_BEFORE_INSTRUMENT = make_app()  # built at import, long before any instrument() call


def only_server_span(otlp: Receiver, path: str) -> SpanRecord:
    otlp.wait_for(lambda r: any(s.attributes.get("url.path") == path for s in r.spans))
    spans = [s for s in otlp.spans if s.kind == "SERVER" and s.attributes.get("url.path") == path]
    assert len(spans) == 1, spans
    return spans[0]


def flush(
    handle: cxtrace.Instrumentation,
    otlp: Receiver,
    metric: str = "cx.requests",
    *,
    requests_done: int = 1,
) -> None:
    """Export the metrics once ``requests_done`` server spans arrived.

    A request is recorded when the server closes its body, a moment after the client has
    read it; its span is exported after its metrics were recorded, so waiting for the spans
    first makes the flush complete.
    """
    otlp.wait_for(lambda r: sum(s.kind == "SERVER" for s in r.spans) >= requests_done)
    handle.force_flush()
    otlp.wait_for(lambda r: any(p.metric == metric for p in r.points))


def test_request_becomes_server_span_with_http_and_cx_attributes(
    otlp_any: Receiver, instrument: Any, serve: Any, journeys_file: str
) -> None:
    handle = instrument(otlp_any, env={"CXTRACE_JOURNEYS_FILE": journeys_file})
    base = serve(make_app())

    response = requests.get(
        f"{base}/products/42?color=red",
        headers={"X-Customer-Tier": "Enterprise", "User-Agent": "pytest-ua"},
    )

    assert response.status_code == 200
    assert response.text == "product 42"
    span = only_server_span(otlp_any, "/products/42")
    assert span.name == "GET /products/<int:product_id>"
    assert span.resource["service.name"] == "cxtrace-tests"
    port = int(base.rsplit(":", 1)[1])
    assert span.attributes == {
        "http.request.method": "GET",
        "url.path": "/products/42",
        "url.query": "color=red",
        "url.scheme": "http",
        "http.route": "/products/<int:product_id>",
        "http.response.status_code": 200,
        "server.address": "127.0.0.1",
        "server.port": port,
        "client.address": "127.0.0.1",
        "user_agent.original": "pytest-ua",
        "network.protocol.version": "1.1",
        "cx.segment": "enterprise",
        "cx.journey": "purchase",
        "cx.step": "view_product",
        "cx.step.index": 2,
        "cx.apdex.threshold_ms": 500,
        "cx.satisfaction": "satisfied",
        "cx.satisfaction.score": 1.0,
        "cx.conversion": False,
    }
    assert span.status_code == "UNSET"

    flush(handle, otlp_any)
    assert (
        otlp_any.metric_total(
            "cx.requests",
            **{
                "cx.satisfaction": "satisfied",
                "cx.segment": "enterprise",
                "cx.journey": "purchase",
                "cx.step": "view_product",
                "http.route": "/products/<int:product_id>",
                "http.request.method": "GET",
            },
        )
        == 1
    )
    duration = [p for p in otlp_any.points if p.metric == "http.server.request.duration"]
    assert len(duration) == 1
    assert duration[0].unit == "s"
    assert duration[0].count == 1
    assert duration[0].attributes == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.route": "/products/<int:product_id>",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
        "cx.segment": "enterprise",
        "cx.step": "view_product",
    }
    assert 0 < duration[0].sum < 5
    assert duration[0].bounds[:3] == [0.005, 0.01, 0.025]
    counter = next(p for p in otlp_any.points if p.metric == "cx.requests")
    assert counter.unit == "{request}"
    assert counter.is_monotonic is True


@pytest.mark.parametrize("built", ["before", "after"])
def test_apps_built_before_or_after_instrument_are_traced(
    otlp: Receiver, instrument: Any, serve: Any, built: str
) -> None:
    if built == "before":
        app = APP_BEFORE_INSTRUMENT
        instrument(otlp)
    else:
        instrument(otlp)
        app = make_app()
    base = serve(app)

    assert requests.get(f"{base}/products").text == "all products"

    assert only_server_span(otlp, "/products").name == "GET /products"


def test_app_whose_wsgi_app_was_replaced_by_middleware_is_traced(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    instrument(otlp)
    app = make_app()
    inner = app.wsgi_app

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        environ["HTTP_X_SEEN_BY"] = "middleware"
        return inner(environ, start_response)

    app.wsgi_app = middleware  # type: ignore[method-assign]
    base = serve(app)

    assert requests.get(f"{base}/products/1").status_code == 200
    assert only_server_span(otlp, "/products/1").name == "GET /products/<int:product_id>"


def test_steps_thresholds_and_methods_come_from_the_journeys_file(
    otlp: Receiver, instrument: Any, serve: Any, journeys_file: str
) -> None:
    handle = instrument(otlp, env={"CXTRACE_JOURNEYS_FILE": journeys_file})
    base = serve(make_app())

    requests.post(f"{base}/cart")
    requests.get(f"{base}/checkout")
    requests.post(f"{base}/orders")
    requests.get(f"{base}/health")

    cart = only_server_span(otlp, "/cart")
    assert (cart.attributes["cx.step"], cart.attributes["cx.step.index"]) == ("add_to_cart", 3)
    checkout = only_server_span(otlp, "/checkout")
    assert checkout.attributes["cx.apdex.threshold_ms"] == 1000
    order = only_server_span(otlp, "/orders")
    assert order.attributes["cx.step"] == "purchase"
    assert order.attributes["cx.apdex.threshold_ms"] == 2000
    assert order.attributes["cx.conversion"] is True
    health = only_server_span(otlp, "/health")
    assert "cx.step" not in health.attributes
    assert "cx.journey" not in health.attributes
    assert health.attributes["cx.segment"] == "unknown"

    flush(handle, otlp, "cx.conversions", requests_done=4)
    assert (
        otlp.metric_total(
            "cx.conversions",
            **{"cx.journey": "purchase", "cx.step": "purchase", "cx.segment": "unknown"},
        )
        == 1
    )


def test_a_failed_conversion_step_is_not_a_conversion(
    otlp: Receiver, instrument: Any, serve: Any, journeys_file: str
) -> None:
    handle = instrument(otlp, env={"CXTRACE_JOURNEYS_FILE": journeys_file})
    base = serve(make_app())

    assert requests.post(f"{base}/orders?status=402").status_code == 402
    assert requests.post(f"{base}/orders?value=49.9").status_code == 201

    spans = sorted(
        (
            s
            for s in otlp.wait_for(lambda r: len(r.spans_named("POST /orders")) == 2)
            or otlp.spans_named("POST /orders")
        ),
        key=lambda s: s.start_ns,
    )
    assert spans[0].attributes["cx.conversion"] is False
    assert spans[1].attributes["cx.conversion"] is True
    assert spans[1].attributes["cx.conversion.value"] == 49.9
    assert spans[1].attributes["cx.conversion.currency"] == "EUR"
    flush(handle, otlp, "cx.conversions", requests_done=2)
    assert otlp.metric_total("cx.conversions") == 1


def test_segments_are_bounded_by_the_allowlist(otlp: Receiver, instrument: Any, serve: Any) -> None:
    handle = instrument(
        otlp, env={"CXTRACE_SEGMENT_HEADER": "X-Tier", "CXTRACE_SEGMENTS": "free,pro,enterprise"}
    )
    base = serve(make_app())

    for tier in ["pro", "PRO", "platinum", "x" * 500, ""]:
        requests.get(f"{base}/products", headers={"X-Tier": tier})
    requests.get(f"{base}/products")

    otlp.wait_for(lambda r: len(r.spans_named("GET /products")) == 6)
    segments = sorted(s.attributes["cx.segment"] for s in otlp.spans_named("GET /products"))
    assert segments == ["other", "other", "pro", "pro", "unknown", "unknown"]
    flush(handle, otlp, requests_done=6)
    assert otlp.metric_total("cx.requests", **{"cx.segment": "pro"}) == 2
    assert otlp.metric_total("cx.requests", **{"cx.segment": "other"}) == 2


def test_without_allowlist_at_most_fifty_distinct_segments_reach_the_metrics(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    handle = instrument(otlp, env={"CXTRACE_SEGMENT_HEADER": "X-Tier"})
    base = serve(make_app())

    with requests.Session() as http:
        for i in range(120):
            http.get(f"{base}/health", headers={"X-Tier": f"tier-{i}"})

    flush(handle, otlp, requests_done=120)
    seen = {p.attributes["cx.segment"] for p in otlp.points if p.metric == "cx.requests"}
    assert len(seen) == 51
    assert "other" in seen
    assert otlp.metric_total("cx.requests") == 120
    assert otlp.metric_total("cx.requests", **{"cx.segment": "other"}) == 70


def test_code_beats_resolver_beats_header_for_the_segment(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    def from_query(request: Any) -> str | None:
        assert isinstance(request, flask.Request)
        return request.args.get("tier")

    instrument(otlp, env={"CXTRACE_SEGMENT_HEADER": "X-Tier"}, segment=from_query)
    base = serve(make_app())

    requests.get(f"{base}/products", headers={"X-Tier": "free"})
    requests.get(f"{base}/products/1?tier=pro", headers={"X-Tier": "free"})
    requests.get(f"{base}/segment/enterprise?tier=pro", headers={"X-Tier": "free"})

    assert only_server_span(otlp, "/products").attributes["cx.segment"] == "free"
    assert only_server_span(otlp, "/products/1").attributes["cx.segment"] == "pro"
    assert only_server_span(otlp, "/segment/enterprise").attributes["cx.segment"] == "enterprise"


def test_user_hash_is_exported_only_with_a_key(
    otlp: Receiver, instrument: Any, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    instrument(otlp, env={"CXTRACE_USER_HASH_KEY": "s3cret"})
    base = serve(make_app())

    requests.get(f"{base}/user/alice-123")

    span = only_server_span(otlp, "/user/alice-123")
    expected = hmac.new(b"s3cret", b"alice-123", hashlib.sha256).hexdigest()
    assert span.attributes["user.hash"] == expected
    assert all(b"alice-123" not in raw.replace(b"/user/alice-123", b"") for _, raw in otlp.payloads)


def test_without_a_key_no_user_identity_leaves_and_one_warning_is_logged(
    otlp: Receiver, instrument: Any, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    instrument(otlp)
    base = serve(make_app())

    with caplog.at_level(logging.WARNING, logger="cxtrace"):
        requests.get(f"{base}/user/bob")
        requests.get(f"{base}/user/carol")

    otlp.wait_for(lambda r: len(r.spans_named("GET /user/<user_id>")) == 2)
    assert all("user.hash" not in s.attributes for s in otlp.spans)
    warnings = [r for r in caplog.records if "CXTRACE_USER_HASH_KEY" in r.getMessage()]
    assert len(warnings) == 1


def test_secret_query_values_are_redacted(otlp: Receiver, instrument: Any, serve: Any) -> None:
    instrument(otlp)
    base = serve(make_app())

    requests.get(f"{base}/products?q=shoes&access_token=tok-123&password=hunter2&api_key=k9")

    span = only_server_span(otlp, "/products")
    assert span.attributes["url.query"] == (
        "q=shoes&access_token=REDACTED&password=REDACTED&api_key=REDACTED"
    )
    for _, raw in otlp.payloads:
        assert b"tok-123" not in raw
        assert b"hunter2" not in raw


def test_streamed_body_counts_toward_duration(otlp: Receiver, instrument: Any, serve: Any) -> None:
    handle = instrument(otlp, env={"CXTRACE_APDEX_THRESHOLD_MS": "10"})
    base = serve(make_app())

    response = requests.get(f"{base}/stream?sleep=0.3")

    assert response.text == "first\nsecond\n"
    span = only_server_span(otlp, "/stream")
    assert span.duration_s >= 0.3
    assert span.attributes["cx.satisfaction"] == "frustrated"
    assert span.attributes["cx.frustration.reason"] == "slow"
    flush(handle, otlp)
    histogram = next(p for p in otlp.points if p.metric == "http.server.request.duration")
    assert histogram.sum is not None
    assert histogram.sum >= 0.3


def test_a_streamed_body_runs_inside_its_request(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    handle = instrument(otlp)
    app = make_app()
    app.config["TRACER"] = handle.tracer_provider.get_tracer("tests")
    base = serve(app)

    assert requests.get(f"{base}/stream-work").text == "started\ndone\n"

    server = only_server_span(otlp, "/stream-work")
    otlp.wait_for(lambda r: bool(r.spans_named("render-chunk")))
    chunk = otlp.spans_named("render-chunk")[0]
    assert (chunk.trace_id, chunk.parent_span_id) == (server.trace_id, server.span_id)
    assert server.attributes["cx.segment"] == "streamed"


def test_a_middleware_wrapping_an_in_memory_body_runs_inside_its_request(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    # cxtrace re-enters no context for a body Flask already holds in memory, unless WSGI
    # middleware sits between Flask.__call__ and the response: its chunks may run code.
    handle = instrument(otlp)
    tracer = handle.tracer_provider.get_tracer("tests")
    app = make_app()
    inner = app.wsgi_app

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        body = inner(environ, start_response)

        def chunks() -> Any:
            try:
                for chunk in body:
                    with tracer.start_as_current_span("middleware-chunk"):
                        yield chunk
            finally:
                body.close()

        return chunks()

    app.wsgi_app = middleware  # type: ignore[method-assign]
    base = serve(app)

    assert requests.get(f"{base}/products").text == "all products"

    server = only_server_span(otlp, "/products")
    otlp.wait_for(lambda r: bool(r.spans_named("middleware-chunk")))
    chunk = otlp.spans_named("middleware-chunk")[0]
    assert (chunk.trace_id, chunk.parent_span_id) == (server.trace_id, server.span_id)


def test_an_error_while_streaming_makes_the_request_an_error(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    instrument(otlp)
    base = serve(make_app())

    with pytest.raises(requests.RequestException):
        requests.get(f"{base}/stream-boom").raise_for_status()

    span = only_server_span(otlp, "/stream-boom")
    assert span.attributes["cx.satisfaction"] == "frustrated"
    assert span.attributes["cx.frustration.reason"] == "error"
    assert span.attributes["error.type"] == "OSError"
    assert span.status_code == "ERROR"


@pytest.mark.parametrize(
    ("sleep_s", "satisfaction", "score", "reason"),
    [
        (0.0, "satisfied", 1.0, None),
        (0.15, "tolerating", 0.5, "slow"),
        (0.5, "frustrated", 0.0, "slow"),
    ],
)
def test_apdex_follows_duration_against_t_and_4t(
    otlp: Receiver,
    instrument: Any,
    serve: Any,
    sleep_s: float,
    satisfaction: str,
    score: float,
    reason: str | None,
) -> None:
    # T = 100 ms: tolerating up to 400 ms. Sleeps sit well inside each band.
    handle = instrument(otlp, apdex_threshold_ms=100)
    base = serve(make_app())

    requests.get(f"{base}/sleep?s={sleep_s}")

    span = only_server_span(otlp, "/sleep")
    assert span.attributes["cx.apdex.threshold_ms"] == 100
    assert span.attributes["cx.satisfaction"] == satisfaction
    assert span.attributes["cx.satisfaction.score"] == score
    assert span.attributes.get("cx.frustration.reason") == reason
    flush(handle, otlp)
    assert otlp.metric_total("cx.requests", **{"cx.satisfaction": satisfaction}) == 1


def test_unhandled_exception_is_recorded_and_the_app_still_answers_its_500(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    uninstrumented = serve(make_app())
    expected = requests.get(f"{uninstrumented}/boom")
    handle = instrument(otlp)
    base = serve(make_app())

    response = requests.get(f"{base}/boom")

    assert (
        (response.status_code, response.text)
        == (expected.status_code, expected.text)
        == (500, expected.text)
    )
    span = only_server_span(otlp, "/boom")
    assert span.status_code == "ERROR"
    assert span.attributes["error.type"] == "ValueError"
    assert span.attributes["cx.satisfaction"] == "frustrated"
    assert span.attributes["cx.frustration.reason"] == "error"
    assert [name for name, _ in span.events] == ["exception"]
    assert span.events[0][1]["exception.message"] == "boom"
    flush(handle, otlp)
    duration = next(p for p in otlp.points if p.metric == "http.server.request.duration")
    assert duration.attributes["error.type"] == "ValueError"
    assert duration.attributes["http.response.status_code"] == 500


def test_the_apps_own_error_handler_keeps_its_response(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    instrument(otlp)
    base = serve(make_app())

    response = requests.get(f"{base}/teapot")

    assert (response.status_code, response.text) == (418, "I'm a teapot: handled by the app")
    span = only_server_span(otlp, "/teapot")
    assert span.attributes["cx.satisfaction"] == "satisfied"
    assert span.status_code == "UNSET"
    assert [name for name, _ in span.events] == ["exception"]


def test_http_errors_below_500_are_not_frustrating_unless_configured(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    instrument(otlp, env={"CXTRACE_FRUSTRATED_STATUS": "429,500-599"})
    base = serve(make_app())

    assert requests.get(f"{base}/gone").status_code == 410
    assert requests.get(f"{base}/busy").status_code == 429
    assert requests.get(f"{base}/missing").status_code == 404

    gone = only_server_span(otlp, "/gone")
    assert gone.attributes["cx.satisfaction"] == "satisfied"
    busy = only_server_span(otlp, "/busy")
    assert busy.attributes["cx.satisfaction"] == "frustrated"
    assert busy.attributes["cx.frustration.reason"] == "error"
    assert busy.attributes["error.type"] == "429"
    missing = only_server_span(otlp, "/missing")
    assert missing.name == "GET"
    assert "http.route" not in missing.attributes
    assert missing.attributes["http.response.status_code"] == 404


def test_code_steps_beat_route_rules(
    otlp: Receiver, instrument: Any, serve: Any, journeys_file: str
) -> None:
    instrument(otlp, env={"CXTRACE_JOURNEYS_FILE": journeys_file})
    base = serve(make_app())

    requests.get(f"{base}/decorated")
    requests.get(f"{base}/with-step")

    decorated = only_server_span(otlp, "/decorated")
    assert (
        decorated.attributes["cx.journey"],
        decorated.attributes["cx.step"],
        decorated.attributes["cx.step.index"],
    ) == ("purchase", "checkout", 4)
    assert decorated.attributes["cx.apdex.threshold_ms"] == 1000
    with_step = only_server_span(otlp, "/with-step")
    assert with_step.attributes["cx.step"] == "add_to_cart"
    assert with_step.attributes["cx.journey"] == "purchase"


def test_spans_started_inside_the_request_carry_its_cx_context(
    otlp: Receiver, instrument: Any, serve: Any, journeys_file: str
) -> None:
    handle = instrument(
        otlp, env={"CXTRACE_JOURNEYS_FILE": journeys_file, "CXTRACE_SEGMENT_HEADER": "X-Tier"}
    )
    app = make_app()
    app.config["TRACER"] = handle.tracer_provider.get_tracer("tests")
    base = serve(app)

    requests.get(f"{base}/child", headers={"X-Tier": "pro"})

    server = only_server_span(otlp, "/child")
    otlp.wait_for(lambda r: bool(r.spans_named("load-from-db")))
    child = otlp.spans_named("load-from-db")[0]
    assert child.parent_span_id == server.span_id
    assert child.trace_id == server.trace_id
    assert child.attributes["cx.segment"] == "pro"


def test_incoming_traceparent_continues_the_callers_trace(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    instrument(otlp)
    base = serve(make_app())
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    requests.get(f"{base}/products", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})

    span = only_server_span(otlp, "/products")
    assert (span.trace_id, span.parent_span_id) == (trace_id, parent_id)


def test_excluded_urls_are_neither_traced_nor_counted(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    handle = instrument(otlp, env={"CXTRACE_EXCLUDED_URLS": "^/health$,/static/.*"})
    base = serve(make_app())

    assert requests.get(f"{base}/health").text == "ok"
    requests.get(f"{base}/products")

    flush(handle, otlp)
    only_server_span(otlp, "/products")
    assert not [s for s in otlp.spans if s.attributes.get("url.path") == "/health"]
    assert otlp.metric_total("cx.requests") == 1


@pytest.mark.expect_internal_error
def test_a_resolver_that_raises_changes_nothing_but_its_attribute(
    otlp: Receiver,
    instrument: Any,
    serve: Any,
    caplog: pytest.LogCaptureFixture,
    internal_errors: list[Any],
) -> None:
    def broken(request: Any) -> str:
        raise RuntimeError("resolver bug")

    instrument(otlp, segment=broken, user=broken, env={"CXTRACE_USER_HASH_KEY": "k"})
    base = serve(make_app())

    with caplog.at_level(logging.DEBUG, logger="cxtrace"):
        responses = [requests.get(f"{base}/products/{i}") for i in range(3)]

    assert [(r.status_code, r.text) for r in responses] == [(200, f"product {i}") for i in range(3)]
    otlp.wait_for(lambda r: len(r.spans_named("GET /products/<int:product_id>")) == 3)
    assert {s.attributes["cx.segment"] for s in otlp.spans} == {"unknown"}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "cxtrace"]
    assert len(warnings) == 2  # one per cause and site (segment, user), not one per request
    assert {site for site, _ in internal_errors} == {"segment resolver", "user resolver"}


def test_providers_the_app_passes_are_used_and_nothing_is_built(otlp: Receiver, serve: Any) -> None:
    resource = Resource.create({"service.name": "apps-own"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp.endpoint}/v1/traces"))
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{otlp.endpoint}/v1/metrics"), export_interval_millis=60_000
    )
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)

    handle = cxtrace.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    base = serve(make_app())
    requests.get(f"{base}/products")
    span = only_server_span(otlp, "/products")
    cxtrace.shutdown()

    assert handle.tracer_provider is tracer_provider
    assert handle.meter_provider is meter_provider
    assert span.resource["service.name"] == "apps-own"
    otlp.wait_for(lambda r: any(p.metric == "cx.requests" for p in r.points))
    # shutdown() flushed the app's providers but did not shut them down: they still work.
    tracer_provider.get_tracer("app").start_span("after").end()
    otlp.wait_for(lambda r: bool(r.spans_named("after")))
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_uninstrument_restores_flask_and_stops_tracing(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    originals = {
        name: vars(flask.Flask)[name]
        for name in (
            "__call__",
            "full_dispatch_request",
            "handle_exception",
            "handle_user_exception",
        )
    }
    handle = instrument(otlp)
    assert vars(flask.Flask)["__call__"] is not originals["__call__"]
    base = serve(make_app())

    cxtrace.uninstrument()
    requests.get(f"{base}/products")
    handle.force_flush()

    assert {name: vars(flask.Flask)[name] for name in originals} == originals
    assert otlp.spans == []
    assert cxtrace.instrument() is not handle  # and it can be instrumented again


def test_instrument_is_idempotent(otlp: Receiver, instrument: Any) -> None:
    first = instrument(otlp)
    assert cxtrace.instrument(apdex_threshold_ms=5) is first
    assert "flask" in first.integrations


def test_cxtrace_enabled_false_installs_nothing(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    original = vars(flask.Flask)["__call__"]
    handle = instrument(
        otlp, env={"CXTRACE_ENABLED": "false", "CXTRACE_APDEX_THRESHOLD_MS": "not even checked"}
    )

    assert handle.enabled is False
    assert vars(flask.Flask)["__call__"] is original


def test_bad_configuration_raises_config_error_naming_the_variable(
    otlp: Receiver, instrument: Any
) -> None:
    with pytest.raises(cxtrace.ConfigError) as info:
        instrument(otlp, env={"CXTRACE_APDEX_THRESHOLD_MS": "fast"})

    assert str(info.value) == (
        "CXTRACE_APDEX_THRESHOLD_MS='fast': expected a positive number of milliseconds"
    )
    assert "__call__" not in [
        type(v).__name__
        for v in vars(flask.Flask).values()
        if type(v).__name__ == "FunctionWrapper"
    ]


def test_instrument_logs_one_info_line_and_a_warning_per_missing_integration(
    otlp: Receiver,
    instrument: Any,
    caplog: pytest.LogCaptureFixture,
    journeys_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "django", None)  # as if Django were not installed
    with caplog.at_level(logging.INFO, logger="cxtrace"):
        instrument(
            otlp, integrations=["flask", "django"], env={"CXTRACE_JOURNEYS_FILE": journeys_file}
        )
        cxtrace.instrument()

    ours = [r for r in caplog.records if r.name == "cxtrace"]
    infos = [r.getMessage() for r in ours if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert "flask" in infos[0]
    assert "purchase (5 steps)" in infos[0]
    assert "traces:otlp/http/protobuf" in infos[0]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "django is not installed" in warnings[0]


def test_concurrent_instrument_calls_patch_once_and_share_one_handle(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    barrier = threading.Barrier(16)
    handles: list[cxtrace.Instrumentation] = []

    def call() -> None:
        barrier.wait()
        handles.append(cxtrace.instrument())

    instrument_env = instrument  # env and teardown only; the threads call instrument()
    first = instrument_env(otlp)
    cxtrace.uninstrument()
    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(handles) == 16
    assert len({id(h) for h in handles}) == 1
    assert handles[0] is not first
    patched = vars(flask.Flask)["__call__"]
    assert type(patched).__name__ == "FunctionWrapper"
    assert type(patched.__wrapped__).__name__ != "FunctionWrapper"  # wrapped exactly once
    base = serve(make_app())
    requests.get(f"{base}/products")
    assert only_server_span(otlp, "/products").name == "GET /products"
