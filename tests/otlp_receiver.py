"""A real, in-process OTLP receiver for the test suite.

``Receiver`` listens on 127.0.0.1 (a free port) and speaks either OTLP/HTTP with
protobuf bodies or OTLP/gRPC, like an OpenTelemetry Collector would.  Every
accepted payload is decoded into plain, frozen records (``SpanRecord``,
``PointRecord``) that tests can assert on, and the raw (decompressed) bytes are
kept so tests can scan them for data that must never leave the process.

    with Receiver("grpc") as receiver:
        run_app(env=receiver.env())
        receiver.wait_for(lambda r: bool(r.spans_named("GET /checkout")))

Faults, for the reliability tests: ``fail_with(503)`` (HTTP) or
``fail_with("UNAVAILABLE")`` (gRPC) answers every export with that error until
``fail_with(None)``; ``partial_success(rejected=3)`` accepts payloads but answers with an
OTLP partial success; ``Receiver(protocol, port=N)`` binds a port chosen beforehand, so
an app can be pointed at a collector that only comes up later.

Only the standard library, ``opentelemetry-proto`` and (for gRPC) ``grpcio``
are used; ``grpcio`` is imported only when it is installed.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, TypeVar

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

try:  # gRPC is optional, exactly as it is for cxtrace itself.
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
except ImportError:  # pragma: no cover - depends on the environment
    grpc = None  # type: ignore[assignment,unused-ignore]
    logs_service_pb2_grpc = None  # type: ignore[assignment]
    metrics_service_pb2_grpc = None  # type: ignore[assignment]
    trace_service_pb2_grpc = None  # type: ignore[assignment]

__all__ = ["GRPC_AVAILABLE", "PROTOCOLS", "PointRecord", "Receiver", "SpanRecord"]

PROTOCOLS = ("http/protobuf", "grpc")
GRPC_AVAILABLE = grpc is not None

_R = TypeVar("_R", bound="Receiver")
_log = logging.getLogger(__name__)

# The largest request body the HTTP endpoint accepts (compressed or not).
_MAX_BODY = 64 * 1024 * 1024


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SpanRecord:
    """One span as the receiver saw it."""

    name: str
    kind: str  # "SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER", "UNSPECIFIED"
    trace_id: str  # lowercase hex
    span_id: str  # lowercase hex
    parent_span_id: str | None  # lowercase hex; None when the span has no parent
    attributes: dict[str, object]
    status_code: str  # "UNSET" | "OK" | "ERROR"
    status_message: str
    events: list[tuple[str, dict[str, object]]]
    start_ns: int
    end_ns: int
    resource: dict[str, object]
    scope: str

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True)
class PointRecord:
    """One metric data point as the receiver saw it."""

    metric: str
    unit: str
    kind: str  # "sum" | "gauge" | "histogram" | "exponential_histogram" | "summary"
    attributes: dict[str, object]
    value: float | int | None  # sum and gauge points
    count: int | None  # histogram, exponential histogram and summary points
    sum: float | None  # histogram, exponential histogram and summary points
    bucket_counts: list[int]  # explicit-bucket histograms only
    bounds: list[float]  # explicit-bucket histograms only
    temporality: str  # "CUMULATIVE" | "DELTA" | "UNSPECIFIED"
    is_monotonic: bool | None  # sums only
    resource: dict[str, object]
    scope: str
    start_ns: int
    time_ns: int
    # explicit-bucket histograms: (value, trace_id hex, span_id hex) of each exemplar
    exemplars: tuple[tuple[float, str, str], ...] = ()


# --------------------------------------------------------------------------- decoding


def _enum_name(enum: Any, number: int, prefix: str) -> str:
    try:
        name = str(enum.Name(number))
    except ValueError:  # a value newer than our copy of the proto
        return str(number)
    return name.removeprefix(prefix)


def _any_value(value: common_pb2.AnyValue) -> object:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    # string_value, bool_value, int_value, double_value, bytes_value
    result: object = getattr(value, which)
    return result


def _attributes(pairs: Any) -> dict[str, object]:
    return {pair.key: _any_value(pair.value) for pair in pairs}


def _hex(raw: bytes) -> str:
    return raw.hex()


def _decode_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[SpanRecord]:
    records = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                records.append(
                    SpanRecord(
                        name=span.name,
                        kind=_enum_name(trace_pb2.Span.SpanKind, span.kind, "SPAN_KIND_"),
                        trace_id=_hex(span.trace_id),
                        span_id=_hex(span.span_id),
                        parent_span_id=_hex(span.parent_span_id) if span.parent_span_id else None,
                        attributes=_attributes(span.attributes),
                        status_code=_enum_name(
                            trace_pb2.Status.StatusCode, span.status.code, "STATUS_CODE_"
                        ),
                        status_message=span.status.message,
                        events=[(ev.name, _attributes(ev.attributes)) for ev in span.events],
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        resource=dict(resource),
                        scope=scope,
                    )
                )
    return records


def _temporality(number: int) -> str:
    return _enum_name(metrics_pb2.AggregationTemporality, number, "AGGREGATION_TEMPORALITY_")


def _number_value(point: metrics_pb2.NumberDataPoint) -> float | int | None:
    which = point.WhichOneof("value")
    if which is None:
        return None
    number: float | int = getattr(point, which)
    return number


def _decode_points(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[PointRecord]:
    records: list[PointRecord] = []
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                records.extend(_metric_points(metric, resource, scope))
    return records


def _metric_points(
    metric: metrics_pb2.Metric, resource: dict[str, object], scope: str
) -> list[PointRecord]:
    kind = metric.WhichOneof("data")
    # Per data type: its points, and the fields that differ from one type to another.
    points: Any = ()
    temporality = "UNSPECIFIED"
    is_monotonic = None
    if kind == "sum":
        points = metric.sum.data_points
        temporality = _temporality(metric.sum.aggregation_temporality)
        is_monotonic = metric.sum.is_monotonic
    elif kind == "gauge":
        points = metric.gauge.data_points
    elif kind == "histogram":
        points = metric.histogram.data_points
        temporality = _temporality(metric.histogram.aggregation_temporality)
    elif kind == "exponential_histogram":
        points = metric.exponential_histogram.data_points
        temporality = _temporality(metric.exponential_histogram.aggregation_temporality)
    elif kind == "summary":
        points = metric.summary.data_points
    # else: no data, or a data type newer than our copy of the proto

    records = []
    for point in points:
        numeric = kind in ("sum", "gauge")
        has_sum = kind == "summary" or (not numeric and point.HasField("sum"))
        records.append(
            PointRecord(
                metric=metric.name,
                unit=metric.unit,
                kind=str(kind),
                attributes=_attributes(point.attributes),
                value=_number_value(point) if numeric else None,
                count=None if numeric else point.count,
                sum=point.sum if has_sum else None,
                bucket_counts=list(point.bucket_counts) if kind == "histogram" else [],
                bounds=list(point.explicit_bounds) if kind == "histogram" else [],
                temporality=temporality,
                is_monotonic=is_monotonic,
                resource=dict(resource),
                scope=scope,
                start_ns=point.start_time_unix_nano,
                time_ns=point.time_unix_nano,
                exemplars=tuple(
                    (e.as_double, _hex(e.trace_id), _hex(e.span_id)) for e in point.exemplars
                )
                if kind == "histogram"
                else (),
            )
        )
    return records


def _freeze(value: object) -> object:
    """A hashable stand-in for a decoded attribute value."""
    if isinstance(value, dict):
        return tuple(sorted((key, _freeze(item)) for key, item in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


# --------------------------------------------------------------------------- receiver

_Signal = tuple[str, Any, Any]  # (signal name, request class, response class)

_HTTP_PATHS: dict[str, _Signal] = {
    "/v1/traces": (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


class _RejectedError(Exception):
    """A payload the receiver refuses; carries the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return body
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate
    except (OSError, EOFError, zlib.error) as error:
        raise _RejectedError(400, f"cannot decompress {encoding} body: {error}") from error
    raise _RejectedError(415, f"unsupported Content-Encoding {encoding!r}")


class Receiver:
    """An OTLP endpoint (HTTP/protobuf or gRPC) that records what it is sent."""

    def __init__(self, protocol: str = "http/protobuf", *, port: int = 0) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
        if protocol == "grpc" and grpc is None:
            raise ValueError("protocol 'grpc' needs grpcio, which is not installed")
        self.protocol = protocol
        self.port = 0
        self._wanted_port = port
        self.rejected = 0
        self.failed = 0  # exports answered with the fault set by fail_with()
        self._fault: int | str | None = None
        self._partial_rejected = 0
        self._changed = threading.Condition(threading.Lock())
        self._generation = 0
        self._spans: list[SpanRecord] = []
        self._points: list[PointRecord] = []
        self._payloads: list[tuple[str, bytes]] = []
        self._http_server: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc_server: Any = None

    def __repr__(self) -> str:
        return f"Receiver({self.protocol!r}, port={self.port})"

    # ------------------------------------------------------------------ lifecycle

    def start(self: _R) -> _R:
        """Bind a free loopback port and start serving; ready when this returns."""
        if self._http_server is not None or self._grpc_server is not None:
            raise RuntimeError(f"{self!r} is already running")
        if self.protocol == "grpc":
            self._start_grpc()
        else:
            self._start_http()
        return self

    def stop(self) -> None:
        """Stop serving promptly.  Safe to call more than once, or before start()."""
        http_server, self._http_server = self._http_server, None
        http_thread, self._http_thread = self._http_thread, None
        grpc_server, self._grpc_server = self._grpc_server, None
        if http_server is not None:
            http_server.shutdown()
            http_server.server_close()
        if http_thread is not None:
            http_thread.join(timeout=5)
        if grpc_server is not None:
            grpc_server.stop(grace=None).wait(timeout=5)

    def __enter__(self: _R) -> _R:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if not self.port:
            raise RuntimeError(f"{self!r} has not been started")
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point an OTLP exporter at this receiver."""
        env = {
            "OTEL_EXPORTER_OTLP_PROTOCOL": self.protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
        }
        if self.protocol == "grpc":
            env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
        return env

    # ------------------------------------------------------------------ faults

    def fail_with(self, fault: int | str | None) -> None:
        """Answer every export with this error: an HTTP status (HTTP receiver) or a gRPC
        status code name such as ``"UNAVAILABLE"`` (gRPC receiver); None: accept again."""
        if fault is not None:
            wanted = int if self.protocol == "http/protobuf" else str
            if not isinstance(fault, wanted):
                raise TypeError(f"{self!r}: fail_with() takes a {wanted.__name__} or None")
            if isinstance(fault, str) and grpc is not None:
                getattr(grpc.StatusCode, fault)  # AttributeError for a misspelt code
        with self._changed:
            self._fault = fault

    def partial_success(self, rejected: int) -> None:
        """Accept payloads but answer with an OTLP partial success rejecting ``rejected``
        items (0: plain success again)."""
        with self._changed:
            self._partial_rejected = rejected

    def _current_fault(self) -> int | str | None:
        with self._changed:
            fault = self._fault
            if fault is not None:
                self.failed += 1
                self._generation += 1
                self._changed.notify_all()
            return fault

    def _response(self, signal: str, response_class: Any) -> Message:
        with self._changed:
            rejected = self._partial_rejected
        response: Message = response_class()
        if rejected:
            field = {"traces": "rejected_spans", "metrics": "rejected_data_points"}.get(
                signal, "rejected_log_records"
            )
            partial = getattr(response, "partial_success")  # noqa: B009 - untyped proto field
            setattr(partial, field, rejected)
            partial.error_message = "receiver: partial success on purpose"
        return response

    # ------------------------------------------------------------------ results

    @property
    def spans(self) -> list[SpanRecord]:
        with self._changed:
            return list(self._spans)

    @property
    def points(self) -> list[PointRecord]:
        with self._changed:
            return list(self._points)

    @property
    def payloads(self) -> list[tuple[str, bytes]]:
        """(signal, decompressed request bytes) for every accepted payload, in order."""
        with self._changed:
            return list(self._payloads)

    def spans_named(self, name: str) -> list[SpanRecord]:
        return [span for span in self.spans if span.name == name]

    def metric_total(self, metric: str, **attrs: object) -> float:
        """Total of a counter (or a histogram's count) over matching attribute sets.

        A point matches when its attributes include every ``attrs`` item.  Cumulative
        (and gauge/summary) streams contribute their latest point; delta streams
        contribute every point.
        """
        latest: dict[object, PointRecord] = {}
        total = 0.0
        for point in self.points:
            if point.metric != metric:
                continue
            if any(point.attributes.get(key, _MISSING) != want for key, want in attrs.items()):
                continue
            if point.temporality == "DELTA":
                total += _point_amount(point)
                continue
            stream = (
                _freeze(point.resource),
                point.scope,
                point.metric,
                _freeze(point.attributes),
            )
            current = latest.get(stream)
            if current is None or point.time_ns >= current.time_ns:
                latest[stream] = point
        return total + sum(_point_amount(point) for point in latest.values())

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate(self)`` is true; AssertionError after ``timeout`` s.

        Wakes up on every accepted payload (no polling).
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                generation = self._generation
            if predicate(self):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(self._timeout_message(predicate, timeout))

            def changed(seen: int = generation) -> bool:
                return self._generation != seen

            with self._changed:
                self._changed.wait_for(changed, remaining)

    def clear(self) -> None:
        """Forget everything received so far (spans, points, payloads, rejected)."""
        with self._changed:
            self._spans.clear()
            self._points.clear()
            self._payloads.clear()
            self.rejected = 0

    def _timeout_message(self, predicate: Callable[[Receiver], bool], timeout: float) -> str:
        with self._changed:
            span_names = [span.name for span in self._spans]
            metric_names = sorted({point.metric for point in self._points})
            signals = [signal for signal, _ in self._payloads]
            rejected = self.rejected
        name = getattr(predicate, "__name__", repr(predicate))
        return (
            f"{self!r}: condition {name} not met within {timeout} s; "
            f"spans received: {span_names}; metrics received: {metric_names}; "
            f"payloads: {len(signals)} ({', '.join(sorted(set(signals))) or 'none'}); "
            f"rejected: {rejected}"
        )

    # ------------------------------------------------------------------ ingestion

    def _accept(self, signal: str, request: Message, raw: bytes) -> None:
        """Decode a parsed request and record it.  Raises if it cannot be decoded."""
        spans: list[SpanRecord] = []
        points: list[PointRecord] = []
        if signal == "traces":
            assert isinstance(request, trace_service_pb2.ExportTraceServiceRequest)
            spans = _decode_spans(request)
        elif signal == "metrics":
            assert isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest)
            points = _decode_points(request)
        with self._changed:
            self._spans.extend(spans)
            self._points.extend(points)
            self._payloads.append((signal, raw))
            self._generation += 1
            self._changed.notify_all()

    def _reject(self) -> None:
        with self._changed:
            self.rejected += 1
            self._generation += 1
            self._changed.notify_all()

    def _ingest_http(self, path: str, content_type: str, encoding: str, body: bytes) -> bytes:
        """Handle one POST body; returns the serialized response or raises _RejectedError."""
        signal, request_class, response_class = _HTTP_PATHS[path]
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/x-protobuf":
            raise _RejectedError(415, f"unsupported Content-Type {content_type!r}")
        raw = _decompress(body, encoding)
        request = request_class()
        try:
            request.ParseFromString(raw)
        except DecodeError as error:
            raise _RejectedError(400, f"malformed {signal} payload: {error}") from error
        self._accept(signal, request, raw)
        serialized: bytes = self._response(signal, response_class).SerializeToString()
        return serialized

    # ------------------------------------------------------------------ HTTP

    def _start_http(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self._wanted_port), _make_handler(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-receiver-http-{self.port}",
            daemon=True,
        )
        thread.start()
        self._http_server, self._http_thread = server, thread

    # ------------------------------------------------------------------ gRPC

    def _start_grpc(self) -> None:
        assert grpc is not None
        server = grpc.server(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-receiver-grpc")
        )
        # The generated registration functions are untyped.
        add_trace = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
        add_metrics = metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server
        add_logs = logs_service_pb2_grpc.add_LogsServiceServicer_to_server
        add_trace(_TraceServicer(self), server)  # type: ignore[no-untyped-call,unused-ignore]
        add_metrics(_MetricsServicer(self), server)  # type: ignore[no-untyped-call,unused-ignore]
        add_logs(_LogsServicer(self), server)  # type: ignore[no-untyped-call,unused-ignore]
        port = server.add_insecure_port(f"127.0.0.1:{self._wanted_port}")
        if not port:
            raise RuntimeError("gRPC server could not bind a loopback port")
        server.start()
        self.port = port
        self._grpc_server = server

    def _export_grpc(self, signal: str, request: Message, context: Any, response: Message) -> Any:
        fault = self._current_fault()
        if fault is not None:
            context.abort(getattr(grpc.StatusCode, str(fault)), f"receiver: {fault} on purpose")
        response = self._response(signal, type(response))
        try:
            self._accept(signal, request, request.SerializeToString())
        except Exception as error:
            _log.exception("OTLP receiver could not decode a gRPC %s request", signal)
            self._reject()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {signal}: {error}")
        return response


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _point_amount(point: PointRecord) -> float:
    if point.kind in ("sum", "gauge"):
        return float(point.value or 0)
    return float(point.count or 0)


def _make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so no handler thread outlives stop()
        # waiting on a kept-alive connection.
        protocol_version = "HTTP/1.0"
        timeout = 10  # seconds a client may take to send its request

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in _HTTP_PATHS:
                self._drain_body()
                self._answer(404, b"not found\n", "text/plain")
                return
            fault = receiver._current_fault()
            if fault is not None:
                self._drain_body()
                self._answer(int(fault), f"receiver: {fault} on purpose\n".encode(), "text/plain")
                return
            try:
                body = self._read_body()
                response = receiver._ingest_http(
                    path,
                    self.headers.get("Content-Type", ""),
                    self.headers.get("Content-Encoding", ""),
                    body,
                )
            except _RejectedError as error:
                receiver._reject()
                self._answer(error.status, f"{error.reason}\n".encode(), "text/plain")
                return
            except Exception as error:  # never let a bad request kill the server
                _log.exception("OTLP receiver could not handle a POST to %s", path)
                receiver._reject()
                self._answer(400, f"bad request: {error}\n".encode(), "text/plain")
                return
            self._answer(200, response, "application/x-protobuf")

        def do_GET(self) -> None:
            status = 405 if self.path.split("?", 1)[0] in _HTTP_PATHS else 404
            self._answer(status, b"POST only\n" if status == 405 else b"not found\n", "text/plain")

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunked()
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                raise _RejectedError(400, "invalid Content-Length") from None
            if length < 0:
                raise _RejectedError(400, "invalid Content-Length")
            if length > _MAX_BODY:
                raise _RejectedError(413, "request body too large")
            return self.rfile.read(length)

        def _read_chunked(self) -> bytes:
            body = bytearray()
            while True:
                size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise _RejectedError(400, "invalid chunked encoding") from None
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return bytes(body)
                if len(body) + size > _MAX_BODY:
                    raise _RejectedError(413, "request body too large")
                body += self.rfile.read(size)
                self.rfile.readline(1024)  # CRLF after the chunk

        def _drain_body(self) -> None:
            with contextlib.suppress(_RejectedError):
                self._read_body()

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client went away; nothing to tell it

    return _Handler


if grpc is not None:

    class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc,unused-ignore]
        def __init__(self, receiver: Receiver) -> None:
            self._receiver = receiver

        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC naming
            return self._receiver._export_grpc(
                "traces", request, context, trace_service_pb2.ExportTraceServiceResponse()
            )

    class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc,unused-ignore]
        def __init__(self, receiver: Receiver) -> None:
            self._receiver = receiver

        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC naming
            return self._receiver._export_grpc(
                "metrics", request, context, metrics_service_pb2.ExportMetricsServiceResponse()
            )

    class _LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc,unused-ignore]
        def __init__(self, receiver: Receiver) -> None:
            self._receiver = receiver

        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC naming
            return self._receiver._export_grpc(
                "logs", request, context, logs_service_pb2.ExportLogsServiceResponse()
            )
