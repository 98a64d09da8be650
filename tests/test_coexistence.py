"""Next to OpenTelemetry's contrib instrumentations: one span per call, in either order."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import cxtrace
import django_server
from flask_app import make_app
from otlp_receiver import Receiver
from test_propagation import ALL, KEY, make_upstream, spans_of

contrib_requests = pytest.importorskip("opentelemetry.instrumentation.requests")


def shared_provider(otlp: Receiver) -> TracerProvider:
    """One provider for contrib and cxtrace, as in an app that set up OpenTelemetry itself."""
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp.endpoint}/v1/traces"))
    )
    return provider


def flush_until_counted(handle: cxtrace.Instrumentation, otlp: Receiver, requests_: int) -> None:
    """contrib ends its span before the body closes and cxtrace counts the request:
    flush until every request is counted (bounded)."""
    deadline = time.monotonic() + 5
    while otlp.metric_total("cx.requests") < requests_ and time.monotonic() < deadline:
        handle.force_flush()


@pytest.fixture
def contrib() -> Iterator[Any]:
    instrumentor = contrib_requests.RequestsInstrumentor()
    yield instrumentor
    # cxtrace first: contrib's uninstrument() unwraps the outermost wrapt proxy on
    # Session.send whoever owns it, and would strip cxtrace's instead of its own.
    cxtrace.uninstrument()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.mark.parametrize("first", ["cxtrace", "contrib"])
def test_one_client_span_per_call_and_cx_baggage_in_either_order(
    otlp: Receiver, instrument: Any, serve: Any, contrib: Any, first: str
) -> None:
    env = {
        "CXTRACE_INTEGRATIONS": ALL,
        "CXTRACE_PROPAGATION_KEY": KEY,
        "CXTRACE_SEGMENT_HEADER": "X-Tier",
    }
    # The order of patching is what the test varies.
    provider = shared_provider(otlp)
    if first == "contrib":
        contrib.instrument(tracer_provider=provider)
        handle = instrument(otlp, env=env, tracer_provider=provider)
    else:
        handle = instrument(otlp, env=env, tracer_provider=provider)
        contrib.instrument(tracer_provider=provider)
    shop = serve(make_upstream())

    seen = requests.get(
        f"{shop}/call", params={"target": f"{shop}/echo"}, headers={"X-Tier": "pro"}
    ).json()

    otlp.wait_for(lambda r: len(spans_of(r, "SERVER")) == 2 and bool(spans_of(r, "CLIENT")))
    handle.force_flush()
    provider.shutdown()
    clients = spans_of(otlp, "CLIENT")
    assert len(clients) == 1, [(s.name, s.scope) for s in clients]
    assert clients[0].attributes.get("cx.segment") == "pro", (clients[0], otlp.spans)
    assert seen["traceparent"].split("-")[2] == clients[0].span_id
    assert "cx.segment=pro" in seen["baggage"].split(",")
    echo = spans_of(otlp, "SERVER", **{"url.path": "/echo"})[0]
    assert echo.parent_span_id == clients[0].span_id
    assert echo.attributes["cx.segment"] == "pro"


contrib_flask = pytest.importorskip("opentelemetry.instrumentation.flask")


@pytest.mark.parametrize("first", ["cxtrace", "contrib"])
def test_flask_one_server_span_enriched_by_cxtrace_in_either_order(
    otlp: Receiver, instrument: Any, serve: Any, first: str
) -> None:
    provider = shared_provider(otlp)
    env = {"CXTRACE_SEGMENT_HEADER": "X-Tier"}
    app = make_app()
    if first == "contrib":
        contrib_flask.FlaskInstrumentor.instrument_app(app, tracer_provider=provider)
        handle = instrument(otlp, env=env, tracer_provider=provider)
    else:
        handle = instrument(otlp, env=env, tracer_provider=provider)
        contrib_flask.FlaskInstrumentor.instrument_app(app, tracer_provider=provider)
    base = serve(app)
    try:
        assert requests.get(f"{base}/products/3", headers={"X-Tier": "pro"}).text == "product 3"
        assert requests.get(f"{base}/boom").status_code == 500
        otlp.wait_for(lambda r: len(spans_of(r, "SERVER")) >= 2)
        flush_until_counted(handle, otlp, 2)
    finally:
        contrib_flask.FlaskInstrumentor.uninstrument_app(app)
        provider.shutdown()

    servers = spans_of(otlp, "SERVER")
    assert len(servers) == 2, [(s.name, s.scope) for s in servers]
    assert not [s for s in otlp.spans if s.kind == "INTERNAL"]
    product = spans_of(otlp, "SERVER", **{"http.route": "/products/<int:product_id>"})[0]
    assert product.scope == "opentelemetry.instrumentation.flask"  # contrib's span ...
    assert product.attributes["cx.segment"] == "pro"  # ... carrying cxtrace's attributes
    assert product.attributes["cx.satisfaction"] == "satisfied"
    boom = spans_of(otlp, "SERVER", **{"http.route": "/boom"})[0]
    assert boom.attributes["cx.satisfaction"] == "frustrated"
    assert boom.attributes["cx.frustration.reason"] == "error"
    assert otlp.metric_total("cx.requests") == 2


contrib_django = pytest.importorskip("opentelemetry.instrumentation.django")


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
@pytest.mark.parametrize("first", ["cxtrace", "contrib"])
def test_django_one_server_span_enriched_by_cxtrace_in_either_order(
    otlp: Receiver, instrument: Any, serve: Any, first: str, server: str
) -> None:
    provider = shared_provider(otlp)
    env = {"CXTRACE_SEGMENT_HEADER": "X-Tier"}
    contrib = contrib_django.DjangoInstrumentor()
    if first == "contrib":
        contrib.instrument(tracer_provider=provider)
        handle = instrument(otlp, env=env, tracer_provider=provider)
    else:
        handle = instrument(otlp, env=env, tracer_provider=provider)
        contrib.instrument(tracer_provider=provider)
    runner = None
    try:
        # A handler built now loads contrib's middleware (DjangoInstrumentor edits settings).
        if server == "wsgi":
            base = serve(WSGIHandler())
        else:
            runner = django_server.Uvicorn(ASGIHandler())
            base = f"http://127.0.0.1:{runner.start_and_wait()}"
        assert requests.get(f"{base}/products/4/", headers={"X-Tier": "pro"}).text == "product 4"
        assert requests.get(f"{base}/boom/").status_code == 500
        otlp.wait_for(lambda r: len(spans_of(r, "SERVER")) >= 2)
        flush_until_counted(handle, otlp, 2)
    finally:
        if runner is not None:
            runner.stop()
        cxtrace.uninstrument()
        contrib.uninstrument()
        provider.shutdown()

    servers = spans_of(otlp, "SERVER")
    assert len(servers) == 2, [(s.name, s.scope) for s in servers]
    product = spans_of(otlp, "SERVER", **{"http.route": "/products/<int:product_id>/"})[0]
    if server == "wsgi":  # contrib's span, enriched; under ASGI cxtrace keeps its own
        assert not [s for s in otlp.spans if s.kind == "INTERNAL"]
        assert product.scope == "opentelemetry.instrumentation.django"
    assert product.attributes["cx.segment"] == "pro"
    assert product.attributes["cx.satisfaction"] == "satisfied"
    boom = spans_of(otlp, "SERVER", **{"http.route": "/boom/"})[0]
    assert boom.attributes["cx.satisfaction"] == "frustrated"
    assert boom.attributes["cx.frustration.reason"] == "error"
    assert otlp.metric_total("cx.requests") == 2


def test_a_provider_made_where_a_collected_one_was_still_gets_cxtraces_processor(
    otlp: Receiver, instrument: Any
) -> None:
    # cxtrace remembers the providers it added its processor to. Keyed by id(), a new
    # provider at a collected one's address was taken for it and got no processor: its
    # spans lacked every cx.* attribute (seen on CI in the client span test above).
    addresses = set()
    for _ in range(50):  # providers come and go, as in a test suite or a reloading app
        provider = TracerProvider(shutdown_on_exit=False)  # no atexit hook holding it
        addresses.add(id(provider))
        instrument(otlp, tracer_provider=provider)
        processors = provider._active_span_processor._span_processors
        assert [p for p in processors if type(p).__name__ == "CxSpanProcessor"]
        cxtrace.shutdown()
        del provider, processors
        gc.collect()
    assert len(addresses) < 50  # addresses were reused: the case this guards did happen
