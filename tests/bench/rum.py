"""What real-user monitoring costs per response: ``python tests/bench/rum.py``.

1. The injection alone, on a typical 20 KB HTML page: finding ``</head>``, signing the
   page's token (HMAC-SHA256), building the tags and splicing them in (timeit).
2. Whole requests through a Flask app's WSGI callable, in process (no sockets), with
   ``CXTRACE_RUM`` off and on, in alternating rounds: a 20 KB HTML page (injected) and a
   small JSON response (RUM on, nothing to inject). Span and metric exporters are ``none``.

Prints medians in microseconds. A benchmark, not a test: nothing here judges the numbers.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
import timeit
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

os.environ.update(
    OTEL_TRACES_EXPORTER="none",
    OTEL_METRICS_EXPORTER="none",
    CXTRACE_INTEGRATIONS="flask",
)

import flask
from opentelemetry.sdk.trace import TracerProvider
from werkzeug.test import EnvironBuilder

import cxtrace
from cxtrace._core.config import load_settings
from cxtrace._core.privacy import SegmentGate
from cxtrace._core.rum import injection_point
from cxtrace._telemetry.rum import RumRecorder

PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>Product</title>"
    '<link rel="stylesheet" href="/static/site.css"><script src="/static/app.js" defer></script>'
    "</head><body><main>"
    + "<article><h2>A product</h2><p>Worth buying, for reasons listed at length.</p></article>"
    * 240
    + "</main></body></html>"
).encode()
ROUNDS = 6
PER_ROUND = 2000


def injection_us() -> tuple[float, float]:
    """(find </head> only, the whole injection) per page, median of 7 timeit repeats."""
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415

    provider = TracerProvider()
    rum = RumRecorder(load_settings({}), provider, MeterProvider(), "bench", SegmentGate(None))
    span = provider.get_tracer("bench").start_span("GET /products")
    state = SimpleNamespace(
        span=span, segment="pro", step=None, route="/products/<int:id>", method="GET",
        path="/products/42",
    )  # fmt: skip

    def whole() -> bytes:
        at = injection_point(PAGE)
        assert at is not None
        tag = rum.page_tag(state, None)
        assert tag is not None
        return PAGE[:at] + tag.encode("ascii") + PAGE[at:]

    n = 2000
    find = min(timeit.repeat(lambda: injection_point(PAGE), number=n, repeat=7)) / n
    total = statistics.median(timeit.repeat(whole, number=n, repeat=7)) / n
    return find * 1e6, total * 1e6


def app() -> flask.Flask:
    application = flask.Flask("bench")

    @application.get("/page")
    def page() -> flask.Response:
        return flask.Response(PAGE, mimetype="text/html")

    @application.get("/data")
    def data() -> flask.Response:
        return flask.jsonify(items=list(range(100)))

    return application


def environ(path: str) -> dict[str, Any]:
    builder = EnvironBuilder(path=path, base_url="http://localhost:8000")
    try:
        env: dict[str, Any] = builder.get_environ()
    finally:
        builder.close()
    env["wsgi.input"] = io.BytesIO(b"")
    return env


def run(application: flask.Flask, path: str, n: int) -> list[int]:
    base = environ(path)
    timings = []
    for _ in range(n):
        env = base.copy()
        start = time.perf_counter_ns()
        body = application(env, lambda status, headers, exc_info=None: None)
        b"".join(body)
        body.close()  # type: ignore[attr-defined]
        timings.append(time.perf_counter_ns() - start)
    return timings


def requests_us() -> dict[tuple[str, str], float]:
    application = app()
    pooled: dict[tuple[str, str], list[int]] = {}
    for _ in range(ROUNDS):
        for rum in ("off", "on"):
            os.environ["CXTRACE_RUM"] = "true" if rum == "on" else "false"
            cxtrace.instrument()
            for path in ("/page", "/data"):
                run(application, path, 200)  # warm-up
                pooled.setdefault((rum, path), []).extend(run(application, path, PER_ROUND))
            cxtrace.shutdown()
    return {key: statistics.median(values) / 1000 for key, values in pooled.items()}


def main() -> None:
    print(f"page: {len(PAGE)} bytes")
    find, whole = injection_us()
    print(f"injection, find </head> only:             {find:7.1f} us")
    print(f"injection, whole (find + sign + splice):  {whole:7.1f} us")
    medians = requests_us()
    for path in ("/page", "/data"):
        off, on = medians[("off", path)], medians[("on", path)]
        print(
            f"request {path:6} RUM off {off:7.1f} us   RUM on {on:7.1f} us   "
            f"difference {on - off:+6.1f} us"
        )


if __name__ == "__main__":
    main()
