"""One benchmark configuration in one fresh process; prints its measurements as one JSON line.

``run.py`` starts this script once per configuration and round. By hand::

    python tests/bench/target.py server --framework flask --config cxtrace --requests 20000
    python tests/bench/target.py server --framework django --config cxtrace --profile
    python tests/bench/target.py server --framework flask --config cxtrace+visits --profile
    python tests/bench/target.py client --config contrib
    python tests/bench/target.py memory --framework flask --requests 100000
    python tests/bench/target.py import --framework django
    python tests/bench/target.py serve    # the client benchmark's loopback server

Every configuration builds the same telemetry pipeline, used or not: a TracerProvider with a
BatchSpanProcessor into an exporter that only counts spans, and a MeterProvider whose reader
(an InMemoryMetricReader: recorded, never exported unless collected) is attached only where
metrics are part of the configuration. With ``--otlp URL`` (server mode) the same pipeline
exports through the SDK's OTLP/HTTP exporters to a receiver in another process instead.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import webapps
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from webapps import FloorMiddleware, WsgiApp

HERE = Path(__file__).resolve().parent
JOURNEYS_FILE = HERE / "journeys.toml"
# cxtrace-unsampled: cxtrace with a sampler that drops every span (what recording costs).
# cxtrace+visits: visits on, every request from a returning customer (a valid cookie, the
# step already reached: read, verify, observe, no Set-Cookie); cxtrace+visits-new: visits on,
# no cookie (every request starts a visit: a new id, encode, sign, Set-Cookie).
VISIT_CONFIGS = ("cxtrace+visits", "cxtrace+visits-new")
SERVER_CONFIGS = (
    "bare",
    "contrib",
    "contrib+metrics",
    "floor",
    "cxtrace",
    *VISIT_CONFIGS,
    "cxtrace-unsampled",
)
# `run.py --breakdown`: also with no metric reader, or unsampled and no reader.
BREAKDOWN_CONFIGS = ("cxtrace-noreader", "cxtrace-neither")
CLIENT_CONFIGS = ("bare", "contrib", "contrib+metrics", "cxtrace")
FRAMEWORKS = ("flask", "django")
# What a cxtrace span of the benchmarked request must carry (checked, and reported).
CX_KEYS = ("cx.segment", "cx.journey", "cx.step", "cx.satisfaction", "http.route")
# The visit configurations: a key for the bench only (not a secret), the default cookie name.
VISIT_KEY = "cxtrace-bench-visit-key-not-a-secret"
VISIT_COOKIE = "cx_visit"


class CountingExporter(SpanExporter):
    """Counts spans; keeps the attributes of the first one so the runner can check them."""

    def __init__(self) -> None:
        self.count = 0
        self.first: Optional[dict[str, Any]] = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.first is None and spans:
            span = spans[0]
            self.first = {"name": span.name, **dict(span.attributes or {})}
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class CountingOtlpExporter(CountingExporter):
    """The SDK's OTLP/HTTP span exporter, counting what it exported successfully."""

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        self.otlp = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.otlp.export(spans)
        if result is SpanExportResult.SUCCESS:
            super().export(spans)
        return result

    def shutdown(self) -> None:
        self.otlp.shutdown()


class Pipeline:
    """The same exporter setup for every configuration.

    ``otlp``: the base URL of an OTLP/HTTP receiver (``receiver.py``, another process):
    spans then go through a BatchSpanProcessor into the SDK's OTLP/HTTP exporter, and
    metrics (where on) through a PeriodicExportingMetricReader with its OTLP/HTTP
    exporter at the SDK's default interval (exported at shutdown in a run this short).
    """

    # instructions.py sets this: no export thread, so instruction counts repeat exactly.
    span_processor: Any = BatchSpanProcessor

    def __init__(self, *, metrics: bool, sampled: bool = True, otlp: str = "") -> None:
        resource = Resource.create({"service.name": "cxtrace-bench"})
        self.exporter = CountingOtlpExporter(otlp) if otlp else CountingExporter()
        sampler = ALWAYS_ON if sampled else ALWAYS_OFF
        self.tracer_provider = TracerProvider(resource=resource, sampler=sampler)
        self.tracer_provider.add_span_processor(self.span_processor(self.exporter))
        self.reader: Optional[Any] = None
        readers: list[Any] = []
        if metrics and otlp:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
                OTLPMetricExporter,
            )
            from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
                PeriodicExportingMetricReader,
            )

            exporter = OTLPMetricExporter(endpoint=f"{otlp}/v1/metrics")
            readers.append(PeriodicExportingMetricReader(exporter))
        elif metrics:
            self.reader = InMemoryMetricReader()
            readers.append(self.reader)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)

    def finish(self) -> dict[str, Any]:
        self.tracer_provider.force_flush()
        points: dict[str, float] = {}
        if self.reader is not None:
            data = self.reader.get_metrics_data()
            for rm in data.resource_metrics if data is not None else ():
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        total = 0.0
                        for point in metric.data.data_points:
                            value = getattr(point, "value", None)  # a sum, else a histogram
                            total += value if value is not None else getattr(point, "count", 0)
                        points[metric.name] = total
        result = {
            "spans": self.exporter.count,
            "first_span": self.exporter.first,
            "metrics": points,
        }
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        return result


def _start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    return None


def _one(app: WsgiApp, environ: dict[str, Any]) -> tuple[str, bytes, list[tuple[str, str]]]:
    """One request, checked: a benchmark of a broken app measures nothing.

    Returns the status, the body and the response headers ``start_response`` received.
    """
    seen: list[str] = []
    sent: list[tuple[str, str]] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        seen.append(status)
        sent.extend(headers)

    env = environ.copy()
    env["wsgi.input"] = io.BytesIO(b"")
    body = app(env, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (seen[0] if seen else ""), data, sent


def drive(app: WsgiApp, environ: dict[str, Any], n: int, *, timed: bool = True) -> list[int]:
    """n requests through the WSGI callable; the time of each in ns (environ copy excluded)."""
    clock = time.perf_counter_ns
    timings = [0] * n if timed else []
    start_response = _start_response
    for i in range(n):
        env = environ.copy()
        env["wsgi.input"] = io.BytesIO(b"")
        t0 = clock()
        body = app(env, start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        if timed:
            timings[i] = clock() - t0
    return timings


def build_server(framework: str, config: str, otlp: str = "") -> tuple[WsgiApp, Pipeline]:
    """The app of ``framework`` instrumented as ``config`` says."""
    pipeline = Pipeline(
        metrics=config not in {"contrib", "cxtrace-noreader", "cxtrace-neither"},
        sampled=config not in {"cxtrace-unsampled", "cxtrace-neither"},
        otlp=otlp if config != "bare" else "",
    )
    tp, mp = pipeline.tracer_provider, pipeline.meter_provider
    if framework == "django":
        webapps.configure_django()
    if config.startswith("cxtrace"):
        os.environ["CXTRACE_JOURNEYS_FILE"] = str(JOURNEYS_FILE)
        os.environ["CXTRACE_INTEGRATIONS"] = framework
        if config in VISIT_CONFIGS:
            os.environ["CXTRACE_VISITS"] = "cookie"
            os.environ["CXTRACE_VISIT_KEY"] = VISIT_KEY
        import cxtrace  # noqa: PLC0415

        cxtrace.instrument(tracer_provider=tp, meter_provider=mp)
    if config in {"contrib", "contrib+metrics"} and framework == "django":
        from opentelemetry.instrumentation.django import DjangoInstrumentor  # noqa: PLC0415

        DjangoInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    app = webapps.flask_app() if framework == "flask" else webapps.django_app()
    if config in {"contrib", "contrib+metrics"} and framework == "flask":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor  # noqa: PLC0415

        FlaskInstrumentor.instrument_app(  # type: ignore[no-untyped-call]
            app, tracer_provider=tp, meter_provider=mp
        )
    if config == "floor":
        app = FloorMiddleware(app, tp.get_tracer("floor"))
    return app, pipeline


# ----------------------------------------------------------------------------- visits


def _visit_cookie(headers: list[tuple[str, str]]) -> Optional[str]:
    """The value of the ``cx_visit`` cookie a response sets, if it sets one."""
    for name, value in headers:
        if name.lower() == "set-cookie":
            cookie_name, _, rest = value.partition("=")
            if cookie_name == VISIT_COOKIE:
                return rest.split(";", 1)[0]
    return None


def visit_environ(
    app: WsgiApp, environ: dict[str, Any], config: str, pipeline: Pipeline
) -> tuple[dict[str, Any], int]:
    """The environ to benchmark a visit configuration with, and the requests this made.

    A first request without a cookie must answer with a ``Set-Cookie: cx_visit=...``.
    ``cxtrace+visits`` then sends that value back, as a browser would after its first
    response (``Cookie: cx_visit=<value>``), and checks the common path: the state does
    not change on a repeat of the same step, so no ``Set-Cookie``. ``cxtrace+visits-new``
    keeps the environ without a cookie. Either way the spans of these requests are flushed
    and forgotten, so the span the runner checks is a benchmarked one.
    """
    name = f"{config} ({environ.get('PATH_INFO')})"
    status, _, headers = _one(app, environ)
    value = _visit_cookie(headers)
    if not status.startswith("200") or not value:
        raise SystemExit(f"{name}: no {VISIT_COOKIE} cookie set without one: {headers!r}")
    made = 1
    if config == "cxtrace+visits":
        environ = {**environ, "HTTP_COOKIE": f"{VISIT_COOKIE}={value}"}
        status, _, headers = _one(app, environ)
        if not status.startswith("200") or _visit_cookie(headers) is not None:
            raise SystemExit(
                f"{name}: a returning customer's repeat request answered {status} {headers!r} "
                "(expected 200 and no Set-Cookie: the common path)"
            )
        made += 1
    pipeline.tracer_provider.force_flush()
    pipeline.exporter.first = None
    return environ, made


def check_visits(config: str, result: dict[str, Any], requests: int, fresh: int) -> None:
    """Fail the run when visits silently did nothing: the benchmarked spans carry a visit
    id (``cx.visit.new`` as the configuration says) and ``cx.visits`` counted the requests
    that came without a cookie (``fresh`` of ``requests``), and no others."""
    if config not in VISIT_CONFIGS:
        return
    span = result["first_span"] or {}
    new = config == "cxtrace+visits-new"
    visits = result["metrics"].get("cx.visits", 0.0)
    expected = requests if new else fresh
    problems = []
    if not span.get("cx.visit.id") or span.get("cx.visit.new") is not new:
        problems.append(
            f"the span carries cx.visit.id={span.get('cx.visit.id')!r}, "
            f"cx.visit.new={span.get('cx.visit.new')!r} (expected an id and {new})"
        )
    if visits != expected:
        problems.append(f"cx.visits counted {visits:,.0f}, expected {expected:,}")
    if problems:
        raise SystemExit(f"{config}: visits did not run as benchmarked: {'; '.join(problems)}")


# ----------------------------------------------------------------------------- modes


def server(args: argparse.Namespace) -> dict[str, Any]:
    app, pipeline = build_server(args.framework, args.config, args.otlp)
    environ = webapps.environ_for(args.framework)
    status, body, _ = _one(app, environ)
    if not status.startswith("200") or body != b"product 42":
        raise SystemExit(f"{args.framework}/{args.config}: unexpected response {status} {body!r}")
    made = 1
    if args.config in VISIT_CONFIGS:
        environ, prepared = visit_environ(app, environ, args.config, pipeline)
        made += prepared
    drive(app, environ, args.warmup, timed=False)
    if args.profile:
        profile(app, environ, args.requests)
        return {}
    timings = drive(app, environ, args.requests)
    requests = args.requests + args.warmup + made
    result = {"timings": timings, "requests": requests, **pipeline.finish()}
    # without a cookie: the first request and visit_environ's (both of them for -new)
    check_visits(args.config, result, requests, fresh=2)
    return result


def untimed(args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up and n requests, nothing timed, a SimpleSpanProcessor: for instructions.py."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415

    Pipeline.span_processor = SimpleSpanProcessor
    app, pipeline = build_server(args.framework, args.config)
    environ = webapps.environ_for(args.framework)
    made = 0
    if args.config in VISIT_CONFIGS:
        environ, made = visit_environ(app, environ, args.config, pipeline)
    drive(app, environ, args.warmup + args.requests, timed=False)
    result = pipeline.finish()
    check_visits(args.config, result, args.warmup + args.requests + made, fresh=1)
    return {}


def profile(app: WsgiApp, environ: dict[str, Any], n: int) -> None:
    """cProfile the loop; cxtrace's and OpenTelemetry's functions by cumulative time.

    The profiler slows calls down (a lot for small functions): read the shares, not the µs.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    drive(app, environ, n, timed=False)
    profiler.disable()
    stats = pstats.Stats(profiler)
    for package in ("cxtrace", "opentelemetry"):
        rows = []
        marker = f"{os.sep}{package}{os.sep}"
        for (filename, line, func), (_cc, calls, own, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if marker in filename:
                where = filename.rsplit(marker, 1)[1]
                rows.append((cum, own, calls, f"{package}/{where}:{line}({func})"))
        rows.sort(reverse=True)
        print(
            f"\ncProfile, {n} requests; {package} only; per request: cumulative µs, own µs, calls"
        )
        for cum, own, calls, name in rows[:25]:
            print(f"{cum / n * 1e6:9.2f} {own / n * 1e6:8.2f} {calls / n:6.1f}  {name}")


def serve(args: argparse.Namespace) -> dict[str, Any]:
    """The loopback server of the client benchmark: prints its port, serves until killed."""
    from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: PLC0415

    class Handler(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection for the whole run

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            return None

    def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    srv = make_server("127.0.0.1", 0, hello, threaded=True, request_handler=Handler)
    sys.stdout.write(f"{srv.port}\n")
    sys.stdout.flush()
    srv.serve_forever()
    return {}


def _calls(session: Any, url: str, warmup: int, n: int) -> list[int]:
    clock = time.perf_counter_ns
    for _ in range(warmup):
        session.get(url).content  # noqa: B018 - read the body, as callers do
    timings = [0] * n
    for i in range(n):
        t0 = clock()
        session.get(url).content  # noqa: B018
        timings[i] = clock() - t0
    return timings


def canned_adapter() -> Any:
    """A requests transport that answers ``200 ok`` without a socket."""
    from requests.adapters import BaseAdapter  # noqa: PLC0415
    from requests.models import Response  # noqa: PLC0415
    from requests.structures import CaseInsensitiveDict  # noqa: PLC0415

    class Canned(BaseAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Response:
            response = Response()
            response.status_code = 200
            response.reason = "OK"
            response._content = b"ok"
            response.headers = CaseInsensitiveDict({"Content-Length": "2"})
            response.url = request.url
            response.request = request
            return response

        def close(self) -> None:
            return None

    return Canned()


def client(args: argparse.Namespace) -> dict[str, Any]:
    """Outbound ``requests`` calls (keep-alive session), outside any server request.

    First through a transport adapter that answers without a socket (what instrumenting
    ``Session.send`` costs, as precisely as the server benchmark), then to a loopback
    server. That server runs in a process of its own: in this one its thread competed with
    the client for the GIL, and the medians of identical runs differed by up to 50%.
    """
    import requests  # noqa: PLC0415

    config = args.config
    pipeline = Pipeline(metrics=config != "contrib")
    tp, mp = pipeline.tracer_provider, pipeline.meter_provider
    if config == "cxtrace":
        os.environ["CXTRACE_INTEGRATIONS"] = "requests"
        import cxtrace  # noqa: PLC0415

        cxtrace.instrument(tracer_provider=tp, meter_provider=mp)
    elif config in {"contrib", "contrib+metrics"}:
        from opentelemetry.instrumentation.requests import RequestsInstrumentor  # noqa: PLC0415

        RequestsInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)

    with requests.Session() as session:
        session.mount("http://bench.invalid/", canned_adapter())
        timings = _calls(session, "http://bench.invalid/products/42", args.warmup, args.requests)
    server_process = subprocess.Popen(
        [sys.executable, __file__, "serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server_process.stdout is not None
        url = f"http://127.0.0.1:{int(server_process.stdout.readline())}/products/42"
        with requests.Session() as session:
            loopback = _calls(session, url, args.warmup, args.requests)
    finally:
        server_process.kill()
        server_process.wait()
    return {
        "timings": timings,
        "loopback_timings": loopback,
        "requests": 2 * (args.requests + args.warmup),
        **pipeline.finish(),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """RSS, gc-tracked objects and allocated blocks after each quarter of n cxtrace requests.

    Each point is taken with the span queue flushed and after a ``gc.collect()``, so what
    differs between points is what the requests left behind. ``sys.getallocatedblocks()``
    counts the interpreter's live memory blocks: a leak grows it; RSS also moves with how
    the allocator's arenas happen to be laid out.
    """
    app, pipeline = build_server(args.framework, "cxtrace")
    environ = webapps.environ_for(args.framework)
    quarter = args.requests // 4
    points = []
    for step in range(1, 5):
        drive(app, environ, quarter, timed=False)
        pipeline.tracer_provider.force_flush()
        gc.collect()
        points.append(
            {
                "requests": step * quarter,
                "rss": _rss_bytes(),
                "objects": len(gc.get_objects()),
                "blocks": sys.getallocatedblocks(),
            }
        )
    return {"points": points, **pipeline.finish()}


def import_time(args: argparse.Namespace) -> dict[str, Any]:
    """``import cxtrace`` and ``instrument()``, the framework and the OTel SDK already loaded."""
    pipeline = Pipeline(metrics=True)
    if args.framework == "django":
        webapps.configure_django()
    else:
        import flask  # noqa: F401, PLC0415
    os.environ["CXTRACE_JOURNEYS_FILE"] = str(JOURNEYS_FILE)
    os.environ["CXTRACE_INTEGRATIONS"] = args.framework
    t0 = time.perf_counter_ns()
    import cxtrace  # noqa: PLC0415

    t1 = time.perf_counter_ns()
    cxtrace.instrument(
        tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider
    )
    t2 = time.perf_counter_ns()
    pipeline.finish()
    return {"import_ns": t1 - t0, "instrument_ns": t2 - t1}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "mode", choices=["server", "untimed", "client", "memory", "import", "serve"]
    )
    parser.add_argument("--framework", choices=FRAMEWORKS, default="flask")
    parser.add_argument("--config", default="cxtrace")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--profile", action="store_true", help="server mode: cProfile instead")
    parser.add_argument(
        "--otlp", default="", help="server mode: export to this OTLP/HTTP base URL (receiver.py)"
    )
    args = parser.parse_args(argv)
    allowed = CLIENT_CONFIGS if args.mode == "client" else SERVER_CONFIGS + BREAKDOWN_CONFIGS
    if args.config not in allowed:
        parser.error(f"--config {args.config!r}: expected one of {', '.join(allowed)}")
    run = {
        "server": server,
        "untimed": untimed,
        "client": client,
        "serve": serve,
        "memory": memory,
        "import": import_time,
    }
    result = run[args.mode](args)
    if result:
        sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
