"""Deployment-shaped runs: apps as their own processes, configured only by the environment.

These prove what in-process tests cannot: providers built from ``OTEL_*`` and installed
globally, the protocol chosen by ``OTEL_EXPORTER_OTLP_PROTOCOL``, the flush at exit, and
an app that set up its own global providers before calling ``instrument()``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
import requests

from otlp_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"

Launch = Callable[[list[str], dict[str, str]], tuple["subprocess.Popen[str]", str]]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """``launch(argv, env) -> (process, base URL)`` for a server printing 'listening on URL'."""
    procs: list[subprocess.Popen[str]] = []

    def start(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("CXTRACE_", "OTEL_"))}
        log = tmp_path / f"server-{len(procs)}.log"
        proc = subprocess.Popen(
            [sys.executable, *argv],
            env={**clean, **env},
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, log.read_text()
        return proc, line.rsplit(" ", 1)[1].strip()

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_shop_configured_only_by_environment_exports_over_either_protocol(
    otlp_any: Receiver, launch: Launch
) -> None:
    shop, base = launch(
        [str(SHOP / "app.py"), "--port", "0"],
        {
            **otlp_any.env(),
            "CXTRACE_JOURNEYS_FILE": str(SHOP / "journeys.toml"),
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        },
    )

    assert requests.get(f"{base}/products", headers={"X-Customer-Tier": "enterprise"}).ok
    assert requests.post(f"{base}/cart", headers={"X-Customer-Tier": "free"}).status_code == 201
    assert requests.get(f"{base}/products/99").status_code == 404

    # Spans leave within the batch delay; metrics (interval 60 s) only at the exit flush.
    otlp_any.wait_for(lambda r: len(r.spans) == 3, timeout=10)
    assert not any(p.metric == "cx.requests" for p in otlp_any.points)
    shop.terminate()
    assert shop.wait(timeout=20) == 0
    otlp_any.wait_for(lambda r: any(p.metric == "cx.requests" for p in r.points))

    browse = otlp_any.spans_named("GET /products")[0]
    assert browse.resource["service.name"] == "shop"
    assert browse.resource["deployment.environment"] == "test"
    assert (browse.attributes["cx.step"], browse.attributes["cx.segment"]) == (
        "browse",
        "enterprise",
    )
    assert otlp_any.metric_total("cx.requests") == 3
    assert (
        otlp_any.metric_total("cx.requests", **{"cx.step": "add_to_cart", "cx.segment": "free"})
        == 1
    )
    assert otlp_any.metric_total("http.server.request.duration") == 3


APP_WITH_ITS_OWN_PROVIDERS = textwrap.dedent("""
    import sys
    from flask import Flask
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from werkzeug.serving import make_server

    import cxtrace

    endpoint = sys.argv[1]
    resource = Resource.create({"service.name": "configured-by-the-app"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces")))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint + "/v1/metrics"))
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader], resource=resource))

    handle = cxtrace.instrument()
    assert handle.tracer_provider is tracer_provider, handle.tracer_provider

    app = Flask(__name__)

    @app.get("/hello")
    def hello():
        with trace.get_tracer("app").start_as_current_span("app-work"):
            return "hi"

    server = make_server("127.0.0.1", 0, app)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.handle_request()
    cxtrace.shutdown()
    trace.get_tracer_provider().shutdown()
    metrics.get_meter_provider().shutdown()
""")


def test_an_app_with_its_own_global_providers_keeps_them(
    otlp: Receiver, launch: Launch, tmp_path: Path
) -> None:
    script = tmp_path / "own_providers.py"
    script.write_text(APP_WITH_ITS_OWN_PROVIDERS)
    # If cxtrace built its own providers, they would export to this dead endpoint instead.
    proc, base = launch(
        [str(script), otlp.endpoint], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    )

    assert requests.get(f"{base}/hello").text == "hi"
    assert proc.wait(timeout=20) == 0

    otlp.wait_for(lambda r: len(r.spans) == 2 and any(p.metric == "cx.requests" for p in r.points))
    server = otlp.spans_named("GET /hello")[0]
    work = otlp.spans_named("app-work")[0]
    assert server.resource["service.name"] == "configured-by-the-app"
    assert work.parent_span_id == server.span_id
    assert work.attributes["cx.segment"] == "unknown"  # cxtrace's processor joined theirs
    assert otlp.metric_total("cx.requests") == 1
