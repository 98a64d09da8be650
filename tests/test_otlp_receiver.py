"""The test suite's OTLP receiver, checked against the real OpenTelemetry SDK exporters."""

from __future__ import annotations

import gzip
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otlp_receiver import GRPC_AVAILABLE, PointRecord, Receiver, SpanRecord

HTTP = "http/protobuf"
GRPC = "grpc"
PROTOCOLS = [
    pytest.param(HTTP, id="http"),
    pytest.param(GRPC, id="grpc", marks=pytest.mark.skipif(not GRPC_AVAILABLE, reason="no grpc")),
]
RESOURCE = Resource.create({"service.name": "receiver-test", "deployment.environment": "test"})
# The SDK's default explicit histogram bounds.
DEFAULT_BOUNDS = [0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0]
DEFAULT_BOUNDS += [5000.0, 7500.0, 10000.0]
MALFORMED = b"\xff\xff\xff\xff\xff"  # a field tag whose varint never ends


@pytest.fixture(params=PROTOCOLS)
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    with Receiver(request.param) as started:
        yield started


@pytest.fixture
def http_receiver() -> Iterator[Receiver]:
    with Receiver(HTTP) as started:
        yield started


# --------------------------------------------------------------------------- helpers


def span_exporter(receiver: Receiver, **kwargs: Any) -> Any:
    if receiver.protocol == GRPC:
        module = pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        return module.OTLPSpanExporter(
            endpoint=receiver.endpoint, insecure=True, timeout=5, **kwargs
        )
    module = pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    return module.OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=5, **kwargs)


def metric_exporter(receiver: Receiver, **kwargs: Any) -> Any:
    if receiver.protocol == GRPC:
        module = pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.metric_exporter")
        return module.OTLPMetricExporter(
            endpoint=receiver.endpoint, insecure=True, timeout=5, **kwargs
        )
    module = pytest.importorskip("opentelemetry.exporter.otlp.proto.http.metric_exporter")
    return module.OTLPMetricExporter(
        endpoint=f"{receiver.endpoint}/v1/metrics", timeout=5, **kwargs
    )


def gzip_compression(protocol: str) -> Any:
    if protocol == GRPC:
        grpc = pytest.importorskip("grpc")
        return grpc.Compression.Gzip
    http = pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    return http.Compression.Gzip


def tracer_provider(exporter: Any) -> TracerProvider:
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def emit_span(exporter: Any, name: str = "lonely", **attributes: Any) -> None:
    provider = tracer_provider(exporter)
    try:
        with provider.get_tracer("tests.receiver").start_as_current_span(
            name, attributes=attributes
        ):
            pass
    finally:
        provider.shutdown()


def failing_request(tracer: Any, attributes: dict[str, Any]) -> Any:
    """A SERVER span (child of the current span) with an event and an ERROR status."""
    with tracer.start_as_current_span(
        "GET /checkout", kind=SpanKind.SERVER, attributes=attributes
    ) as server:
        server.add_event("cache.miss", {"cache.key": "cart", "cache.size": 3})
        server.set_status(Status(StatusCode.ERROR, "upstream down"))
    return server


def post(
    receiver: Receiver,
    path: str,
    body: bytes,
    content_type: str = "application/x-protobuf",
    encoding: str | None = None,
) -> tuple[int, bytes, str]:
    """POST raw bytes to the HTTP receiver; (status, body, content type)."""
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    request = urllib.request.Request(
        receiver.endpoint + path, data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(), error.headers.get("Content-Type", "")


def send(receiver: Receiver, signal: str, message: Any) -> None:
    """Send a hand-built Export*ServiceRequest over the receiver's own protocol."""
    if receiver.protocol == HTTP:
        status, _, _ = post(receiver, f"/v1/{signal}", message.SerializeToString())
        assert status == 200
        return
    grpc = pytest.importorskip("grpc")
    services = {
        "traces": ("trace", "TraceServiceStub"),
        "metrics": ("metrics", "MetricsServiceStub"),
        "logs": ("logs", "LogsServiceStub"),
    }
    package, stub_name = services[signal]
    module = pytest.importorskip(
        f"opentelemetry.proto.collector.{package}.v1.{package}_service_pb2_grpc"
    )
    stub = getattr(module, stub_name)
    with grpc.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
        stub(channel).Export(message, timeout=5)


def kv(key: str, value: common_pb2.AnyValue) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=value)


def hex_id(number: int, width: int) -> str:
    return format(number, f"0{width}x")


def latest(points: list[PointRecord], **attrs: object) -> PointRecord:
    matching = [p for p in points if all(p.attributes.get(k) == v for k, v in attrs.items())]
    assert matching, f"no point with {attrs} in {points}"
    return max(matching, key=lambda point: point.time_ns)


# --------------------------------------------------------------------------- traces


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_sdk_spans_are_decoded(receiver: Receiver, compressed: bool) -> None:
    kwargs = {"compression": gzip_compression(receiver.protocol)} if compressed else {}
    provider = tracer_provider(span_exporter(receiver, **kwargs))
    tracer = provider.get_tracer("tests.receiver", "1.2.3")
    attributes = {
        "http.request.method": "GET",
        "cx.secret_probe": "marker-7f3a",
        "cx.pro": True,
        "http.response.status_code": 503,
        "cx.apdex": 0.5,
        "cx.tags": ["a", "b"],
        "cx.ints": [1, 2, 3],
        "cx.floats": [0.25, 1.5],
        "cx.flags": [True, False],
    }
    try:
        with tracer.start_as_current_span("checkout") as parent:
            server = failing_request(tracer, attributes)
    finally:
        provider.shutdown()

    parent_ctx = parent.get_span_context()
    server_ctx = server.get_span_context()
    assert [span.name for span in receiver.spans] == ["GET /checkout", "checkout"]

    (record,) = receiver.spans_named("GET /checkout")
    assert record.kind == "SERVER"
    assert record.trace_id == hex_id(parent_ctx.trace_id, 32)
    assert record.span_id == hex_id(server_ctx.span_id, 16)
    assert record.parent_span_id == hex_id(parent_ctx.span_id, 16)
    assert record.attributes == attributes
    assert isinstance(record.attributes["http.response.status_code"], int)
    assert isinstance(record.attributes["cx.pro"], bool)
    assert record.status_code == "ERROR"
    assert record.status_message == "upstream down"
    assert record.events == [("cache.miss", {"cache.key": "cart", "cache.size": 3})]
    assert 0 < record.start_ns <= record.end_ns
    assert record.duration_s == (record.end_ns - record.start_ns) / 1e9
    assert 0 <= record.duration_s < 5
    assert record.resource["service.name"] == "receiver-test"
    assert record.resource["deployment.environment"] == "test"
    assert record.scope == "tests.receiver"

    (root,) = receiver.spans_named("checkout")
    assert root.kind == "INTERNAL"
    assert root.parent_span_id is None
    assert root.status_code == "UNSET"
    assert root.status_message == ""
    assert root.events == []
    assert root.trace_id == record.trace_id

    # The raw bytes are kept, decompressed, for scanning.
    payloads = receiver.payloads
    assert [signal for signal, _ in payloads] == ["traces", "traces"]
    assert all(b"marker-7f3a" in raw for _, raw in payloads[:1])
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.ParseFromString(payloads[0][1])
    assert request.resource_spans[0].scope_spans[0].spans[0].name == "GET /checkout"
    assert receiver.rejected == 0


def test_exporter_configured_from_env(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    env = receiver.env()
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == receiver.protocol
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://127.0.0.1:{receiver.port}"
    assert receiver.endpoint == env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert ("OTEL_EXPORTER_OTLP_INSECURE" in env) == (receiver.protocol == GRPC)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if receiver.protocol == GRPC:
        module = pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    else:
        module = pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    emit_span(module.OTLPSpanExporter(), "from-env")
    assert [span.name for span in receiver.spans] == ["from-env"]


def test_hand_built_payloads_decode_every_value_type(receiver: Receiver) -> None:
    any_ = common_pb2.AnyValue
    span = trace_pb2.Span(
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        name="consume",
        kind=trace_pb2.Span.SPAN_KIND_CONSUMER,
        start_time_unix_nano=1_000_000_000,
        end_time_unix_nano=3_500_000_000,
        attributes=[
            kv("s", any_(string_value="x")),
            kv("raw", any_(bytes_value=b"\x00\x01")),
            kv("nested", any_(array_value=common_pb2.ArrayValue(values=[any_(int_value=1)]))),
            kv(
                "map",
                any_(
                    kvlist_value=common_pb2.KeyValueList(
                        values=[kv("inner", any_(double_value=2.5)), kv("empty", any_())]
                    )
                ),
            ),
        ],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK),
    )
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=[kv("host", any_(string_value="h"))]),
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope=common_pb2.InstrumentationScope(name="raw"), spans=[span]
                    )
                ],
            )
        ]
    )
    send(receiver, "traces", request)
    assert receiver.spans == [
        SpanRecord(
            name="consume",
            kind="CONSUMER",
            trace_id="000102030405060708090a0b0c0d0e0f",
            span_id="0001020304050607",
            parent_span_id=None,
            attributes={
                "s": "x",
                "raw": b"\x00\x01",
                "nested": [1],
                "map": {"inner": 2.5, "empty": None},
            },
            status_code="OK",
            status_message="",
            events=[],
            start_ns=1_000_000_000,
            end_ns=3_500_000_000,
            resource={"host": "h"},
            scope="raw",
        )
    ]
    assert receiver.spans[0].duration_s == 2.5

    attrs = [kv("k", any_(string_value="v"))]
    metrics = [
        metrics_pb2.Metric(
            name="g",
            unit="By",
            gauge=metrics_pb2.Gauge(
                data_points=[metrics_pb2.NumberDataPoint(as_double=1.5, time_unix_nano=5)]
            ),
        ),
        metrics_pb2.Metric(
            name="updown",
            sum=metrics_pb2.Sum(
                aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_DELTA,
                is_monotonic=False,
                data_points=[metrics_pb2.NumberDataPoint(as_int=-4, attributes=attrs)],
            ),
        ),
        metrics_pb2.Metric(
            name="exp",
            exponential_histogram=metrics_pb2.ExponentialHistogram(
                aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE,
                data_points=[metrics_pb2.ExponentialHistogramDataPoint(count=7, sum=3.5)],
            ),
        ),
        metrics_pb2.Metric(
            name="summary",
            summary=metrics_pb2.Summary(
                data_points=[metrics_pb2.SummaryDataPoint(count=2, sum=9.0, start_time_unix_nano=1)]
            ),
        ),
        metrics_pb2.Metric(
            name="hist",
            histogram=metrics_pb2.Histogram(
                aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_DELTA,
                data_points=[
                    metrics_pb2.HistogramDataPoint(
                        count=3, bucket_counts=[1, 2, 0], explicit_bounds=[1.0, 2.0]
                    )
                ],
            ),
        ),
    ]
    send(
        receiver,
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest(
            resource_metrics=[
                metrics_pb2.ResourceMetrics(
                    scope_metrics=[
                        metrics_pb2.ScopeMetrics(
                            scope=common_pb2.InstrumentationScope(name="m"), metrics=metrics
                        )
                    ]
                )
            ]
        ),
    )
    points = {point.metric: point for point in receiver.points}
    common = {"resource": {}, "scope": "m", "bucket_counts": [], "bounds": []}
    assert points == {
        "g": PointRecord(
            metric="g",
            unit="By",
            kind="gauge",
            attributes={},
            value=1.5,
            count=None,
            sum=None,
            temporality="UNSPECIFIED",
            is_monotonic=None,
            start_ns=0,
            time_ns=5,
            **common,
        ),
        "updown": PointRecord(
            metric="updown",
            unit="",
            kind="sum",
            attributes={"k": "v"},
            value=-4,
            count=None,
            sum=None,
            temporality="DELTA",
            is_monotonic=False,
            start_ns=0,
            time_ns=0,
            **common,
        ),
        "exp": PointRecord(
            metric="exp",
            unit="",
            kind="exponential_histogram",
            attributes={},
            value=None,
            count=7,
            sum=3.5,
            temporality="CUMULATIVE",
            is_monotonic=None,
            start_ns=0,
            time_ns=0,
            **common,
        ),
        "summary": PointRecord(
            metric="summary",
            unit="",
            kind="summary",
            attributes={},
            value=None,
            count=2,
            sum=9.0,
            temporality="UNSPECIFIED",
            is_monotonic=None,
            start_ns=1,
            time_ns=0,
            **common,
        ),
        "hist": PointRecord(
            metric="hist",
            unit="",
            kind="histogram",
            attributes={},
            value=None,
            count=3,
            sum=None,
            bucket_counts=[1, 2, 0],
            bounds=[1.0, 2.0],
            temporality="DELTA",
            is_monotonic=None,
            resource={},
            scope="m",
            start_ns=0,
            time_ns=0,
        ),
    }
    assert isinstance(points["updown"].value, int)
    assert receiver.metric_total("updown", k="v") == -4
    assert receiver.metric_total("exp") == 7
    assert receiver.metric_total("hist") == 3

    # Logs are not decoded, but their payloads are kept for scanning.
    logs = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        log_records=[logs_pb2.LogRecord(body=any_(string_value="log-marker"))]
                    )
                ]
            )
        ]
    )
    send(receiver, "logs", logs)
    signals = [signal for signal, _ in receiver.payloads]
    assert signals == ["traces", "metrics", "logs"]
    assert b"log-marker" in receiver.payloads[-1][1]
    assert receiver.rejected == 0


# --------------------------------------------------------------------------- metrics


def test_sdk_cumulative_metrics(receiver: Receiver) -> None:
    reader = PeriodicExportingMetricReader(
        metric_exporter(receiver), export_interval_millis=3_600_000
    )
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    try:
        meter = provider.get_meter("tests.metrics", "0.1")
        counter = meter.create_counter("cx.requests", unit="{request}")
        histogram = meter.create_histogram("cx.duration", unit="s")
        pro = {"cx.segment": "pro", "http.route": "/a"}
        free = {"cx.segment": "free", "http.route": "/a"}
        counter.add(2, pro)
        counter.add(1, free)
        histogram.record(0.25, pro)
        histogram.record(7.5, pro)
        assert provider.force_flush()
        counter.add(3, pro)
        assert provider.force_flush()

        assert receiver.metric_total("cx.requests") == 6  # latest pro (5) + latest free (1)
        assert receiver.metric_total("cx.requests", **{"cx.segment": "pro"}) == 5
        assert receiver.metric_total("cx.requests", **{"cx.segment": "free"}) == 1
        assert receiver.metric_total("cx.requests", **{"http.route": "/a"}) == 6
        assert receiver.metric_total("cx.requests", **{"cx.segment": "enterprise"}) == 0
        assert receiver.metric_total("cx.requests", nope="x") == 0
        assert receiver.metric_total("cx.duration", **{"cx.segment": "pro"}) == 2
        assert receiver.metric_total("no.such.metric") == 0

        counts = [p for p in receiver.points if p.metric == "cx.requests"]
        assert len(counts) == 4  # two flushes, two attribute sets each
        point = latest(counts, **{"cx.segment": "pro"})
        assert point.kind == "sum"
        assert point.unit == "{request}"
        assert point.value == 5
        assert isinstance(point.value, int)
        assert point.attributes == pro
        assert point.temporality == "CUMULATIVE"
        assert point.is_monotonic is True
        assert point.count is None
        assert point.resource["service.name"] == "receiver-test"
        assert point.scope == "tests.metrics"
        assert 0 < point.start_ns <= point.time_ns

        hist = latest([p for p in receiver.points if p.metric == "cx.duration"])
        assert hist.kind == "histogram"
        assert hist.unit == "s"
        assert hist.attributes == pro
        assert hist.count == 2
        assert hist.sum == pytest.approx(7.75)
        assert hist.value is None
        assert hist.bounds == DEFAULT_BOUNDS
        assert hist.bucket_counts == [0, 1, 1] + [0] * 13  # (0, 5] and (5, 10]
        assert hist.temporality == "CUMULATIVE"
        assert hist.is_monotonic is None
        assert [signal for signal, _ in receiver.payloads] == ["metrics", "metrics"]
    finally:
        provider.shutdown()


def test_sdk_delta_metrics(receiver: Receiver) -> None:
    delta = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    exporter = metric_exporter(receiver, preferred_temporality=delta)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    try:
        meter = provider.get_meter("tests.metrics")
        counter = meter.create_counter("cx.requests")
        histogram = meter.create_histogram("cx.duration")
        counter.add(2, {"cx.segment": "pro"})
        counter.add(1, {"cx.segment": "free"})
        histogram.record(1.0)
        assert provider.force_flush()
        counter.add(3, {"cx.segment": "pro"})
        histogram.record(2.0)
        histogram.record(3.0)
        assert provider.force_flush()

        pro_points = [
            p for p in receiver.points
            if p.metric == "cx.requests" and p.attributes == {"cx.segment": "pro"}
        ]  # fmt: skip
        assert [p.value for p in pro_points] == [2, 3]
        assert {p.temporality for p in receiver.points} == {"DELTA"}
        assert receiver.metric_total("cx.requests") == 6
        assert receiver.metric_total("cx.requests", **{"cx.segment": "pro"}) == 5
        assert receiver.metric_total("cx.duration") == 3
    finally:
        provider.shutdown()


def test_metric_total_keeps_streams_apart_by_resource_and_scope(http_receiver: Receiver) -> None:
    """Two services reporting the same cumulative counter are two streams, not one."""

    def export(service: str, scope: str, value: int, time_ns: int) -> None:
        request = metrics_service_pb2.ExportMetricsServiceRequest(
            resource_metrics=[
                metrics_pb2.ResourceMetrics(
                    resource=resource_pb2.Resource(
                        attributes=[kv("service.name", common_pb2.AnyValue(string_value=service))]
                    ),
                    scope_metrics=[
                        metrics_pb2.ScopeMetrics(
                            scope=common_pb2.InstrumentationScope(name=scope),
                            metrics=[
                                metrics_pb2.Metric(
                                    name="hits",
                                    sum=metrics_pb2.Sum(
                                        aggregation_temporality=(
                                            metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
                                        ),
                                        is_monotonic=True,
                                        data_points=[
                                            metrics_pb2.NumberDataPoint(
                                                as_int=value, time_unix_nano=time_ns
                                            )
                                        ],
                                    ),
                                )
                            ],
                        )
                    ],
                )
            ]
        )
        send(http_receiver, "metrics", request)

    export("a", "s", 5, time_ns=20)
    export("a", "s", 3, time_ns=10)  # arrives late: older, so ignored
    export("b", "s", 7, time_ns=10)
    export("a", "other", 1, time_ns=10)
    assert http_receiver.metric_total("hits") == 5 + 7 + 1


# --------------------------------------------------------------------------- HTTP transport


def test_http_gzip_body_is_decompressed(http_receiver: Receiver) -> None:
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                scope_spans=[
                    trace_pb2.ScopeSpans(spans=[trace_pb2.Span(name="zipped", span_id=b"\x01" * 8)])
                ]
            )
        ]
    )
    raw = request.SerializeToString()
    status, body, content_type = post(
        http_receiver, "/v1/traces", gzip.compress(raw), encoding="gzip"
    )
    assert (status, content_type) == (200, "application/x-protobuf")
    assert body == trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
    assert http_receiver.payloads == [("traces", raw)]
    assert [span.name for span in http_receiver.spans] == ["zipped"]


def test_http_rejects_malformed_payloads_and_keeps_going(http_receiver: Receiver) -> None:
    status, _, _ = post(http_receiver, "/v1/traces", MALFORMED)
    assert status == 400
    assert http_receiver.rejected == 1

    status, _, _ = post(http_receiver, "/v1/metrics", b"not gzip at all", encoding="gzip")
    assert status == 400
    assert http_receiver.rejected == 2

    status, _, _ = post(http_receiver, "/v1/logs", b"{}", content_type="application/json")
    assert status == 415
    assert http_receiver.rejected == 3
    assert http_receiver.payloads == []

    emit_span(span_exporter(http_receiver), "after-garbage")
    assert [span.name for span in http_receiver.spans] == ["after-garbage"]
    assert http_receiver.rejected == 3


def test_http_unknown_path_is_404(http_receiver: Receiver) -> None:
    status, _, _ = post(http_receiver, "/v1/spans", b"")
    assert status == 404
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(http_receiver.endpoint + "/v1/traces", timeout=5)
    info.value.close()
    assert info.value.code == 405
    assert http_receiver.rejected == 0
    assert http_receiver.payloads == []


# --------------------------------------------------------------------------- waiting, lifecycle


def test_wait_for_wakes_up_when_data_arrives(receiver: Receiver) -> None:
    exporter = span_exporter(receiver)
    timer = threading.Timer(0.1, emit_span, args=(exporter, "late"))
    started = time.monotonic()
    timer.start()
    try:
        receiver.wait_for(lambda r: bool(r.spans_named("late")), timeout=5)
    finally:
        timer.join()
    assert time.monotonic() - started < 3


def test_wait_for_times_out_with_what_was_received(receiver: Receiver) -> None:
    emit_span(span_exporter(receiver), "seen-span")
    send(
        receiver,
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest(
            resource_metrics=[
                metrics_pb2.ResourceMetrics(
                    scope_metrics=[
                        metrics_pb2.ScopeMetrics(
                            metrics=[
                                metrics_pb2.Metric(
                                    name="seen.metric",
                                    gauge=metrics_pb2.Gauge(
                                        data_points=[metrics_pb2.NumberDataPoint(as_int=1)]
                                    ),
                                )
                            ]
                        )
                    ]
                )
            ]
        ),
    )
    started = time.monotonic()
    with pytest.raises(AssertionError) as info:
        receiver.wait_for(lambda r: bool(r.spans_named("never")), timeout=0.2)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.5
    message = str(info.value)
    assert "seen-span" in message
    assert "seen.metric" in message


def test_clear_forgets_everything(receiver: Receiver) -> None:
    emit_span(span_exporter(receiver), "old")
    if receiver.protocol == HTTP:
        post(receiver, "/v1/traces", MALFORMED)
        assert receiver.rejected == 1
    receiver.clear()
    assert (receiver.spans, receiver.points, receiver.payloads, receiver.rejected) == (
        [],
        [],
        [],
        0,
    )
    emit_span(span_exporter(receiver), "new")
    assert [span.name for span in receiver.spans] == ["new"]


def test_snapshots_are_copies(receiver: Receiver) -> None:
    emit_span(span_exporter(receiver), "one")
    receiver.spans.clear()
    receiver.payloads.clear()
    assert len(receiver.spans) == 1
    assert len(receiver.payloads) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_lifecycle(protocol: str) -> None:
    receiver = Receiver(protocol)
    assert receiver.protocol == protocol
    with pytest.raises(RuntimeError):
        receiver.endpoint  # noqa: B018 - not started yet
    receiver.stop()  # stopping a receiver that never started is harmless
    assert receiver.start() is receiver
    try:
        assert receiver.port > 0
        with pytest.raises(RuntimeError):
            receiver.start()
    finally:
        started = time.monotonic()
        receiver.stop()
        receiver.stop()
        assert time.monotonic() - started < 1.0
    if protocol == HTTP:
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(receiver.endpoint + "/v1/traces", timeout=2)
    with Receiver(protocol) as again:
        assert again.port > 0
        assert again.port != 0


def test_unknown_protocol_is_rejected() -> None:
    with pytest.raises(ValueError, match="protocol"):
        Receiver("http/json")
