"""The cockpit's OTLP receiver: HTTP/protobuf (``/v1/traces``, ``/v1/metrics``, ``/v1/logs``)
and gRPC (TraceService, MetricsService, LogsService ``Export``).

What any OpenTelemetry SDK sends is accepted; what the cockpit does not show (logs, other
metrics, spans without a verdict) is acknowledged and dropped. A payload it cannot read is
refused with the protocol's error, never stored in part, and logged once per cause:

    HTTP 415  a Content-Type other than application/x-protobuf (OTLP/JSON included)
              or a Content-Encoding other than gzip / identity
    HTTP 413  a body (or its gunzipped form) over ``MAX_BODY_BYTES``; refused from the
              Content-Length alone, before reading it
    HTTP 411  no Content-Length
    HTTP 400  not a protobuf export request (truncated, garbage), or a broken gzip stream
    HTTP 503  the cockpit is stopping
    gRPC      INVALID_ARGUMENT for an undecodable message, RESOURCE_EXHAUSTED for an
              oversized one, UNAVAILABLE while stopping

Ingest never raises into the server loop: the worst a sender can do is get an error back.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Final

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from cxtrace._cockpit.decode import counter_points, span_samples, trace_spans
from cxtrace._cockpit.store import Store, StoreClosedError

__all__ = [
    "MAX_BODY_BYTES",
    "Ingest",
    "RejectedError",
    "grpc_available",
    "otlp_http_handler",
    "start_grpc",
    "start_http",
]

_log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 20 * 1024 * 1024
PROTOBUF: Final = "application/x-protobuf"

TRACES: Final = "traces"
METRICS: Final = "metrics"
LOGS: Final = "logs"
_HTTP_PATHS: Final = {"/v1/traces": TRACES, "/v1/metrics": METRICS, "/v1/logs": LOGS}
_GRPC_SERVICES: Final = {
    "opentelemetry.proto.collector.trace.v1.TraceService": TRACES,
    "opentelemetry.proto.collector.metrics.v1.MetricsService": METRICS,
    "opentelemetry.proto.collector.logs.v1.LogsService": LOGS,
}


class RejectedError(Exception):
    """A payload the receiver refuses: an HTTP status and the reason sent back."""

    def __init__(self, status: int, cause: str, detail: str = "") -> None:
        super().__init__(f"{cause}{': ' + detail if detail else ''}")
        self.status = status
        self.cause = cause  # stable text, one log line per distinct cause


class Ingest:
    """Decodes export requests and hands them to the store; counts what it refused."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self.rejected: dict[str, int] = {}
        self.accepted = {TRACES: 0, METRICS: 0, LOGS: 0}
        self._unforeseen = False  # its traceback is logged once

    def export(self, signal: str, raw: bytes) -> bytes:
        """Store one serialized export request; returns the serialized (empty) response."""
        try:
            if signal == TRACES:
                traces = trace_service_pb2.ExportTraceServiceRequest()
                traces.ParseFromString(raw)
                self.store.add_spans(span_samples(traces))
                self.store.add_trace_spans(trace_spans(traces))
                response: bytes = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            elif signal == METRICS:
                metrics = metrics_service_pb2.ExportMetricsServiceRequest()
                metrics.ParseFromString(raw)
                self.store.add_points(counter_points(metrics))
                response = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            else:
                logs_service_pb2.ExportLogsServiceRequest().ParseFromString(raw)
                response = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
        except DecodeError as exc:
            raise RejectedError(400, f"malformed OTLP {signal} protobuf", str(exc)) from exc
        except StoreClosedError as exc:
            raise RejectedError(503, "the cockpit is stopping") from exc
        except sqlite3.Error as exc:
            # The transaction rolled back: what was stored before is untouched.
            raise RejectedError(503, "cannot write the cockpit database", str(exc)) from exc
        except Exception as exc:  # a payload we did not foresee: refuse it, serve on
            if not self._unforeseen:
                self._unforeseen = True
                _log.warning("cockpit could not read an OTLP %s payload", signal, exc_info=True)
            raise RejectedError(400, f"unreadable OTLP {signal} payload", repr(exc)) from exc
        with self._lock:
            self.accepted[signal] += 1
        return response

    def refused(self, error: RejectedError, where: str) -> None:
        """Count a refusal; WARNING the first time for each cause, DEBUG after."""
        with self._lock:
            seen = self.rejected.get(error.cause, 0)
            self.rejected[error.cause] = seen + 1
        _log.log(
            logging.DEBUG if seen else logging.WARNING,
            "cockpit refused an OTLP payload (%s): %s",
            where,
            error,
        )


def _gunzip(body: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise RejectedError(400, "broken gzip body", str(exc)) from exc
    if len(raw) > MAX_BODY_BYTES:
        raise RejectedError(413, f"gunzipped body over {MAX_BODY_BYTES} bytes")
    if not inflater.eof:
        raise RejectedError(400, "truncated gzip body")
    return raw


# ---------------------------------------------------------------------- HTTP


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR lets a restarted cockpit bind while old connections sit in TIME_WAIT;
    # a port someone listens on still fails. Not on Windows, where it would share the port.
    allow_reuse_address = os.name != "nt"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is not the cockpit's problem.
        _log.debug("connection from %s failed", client_address, exc_info=True)


def otlp_http_handler(ingest: Ingest) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers at stop
        timeout = 30  # seconds a sender may take to send its request
        server_version = "cxtrace-cockpit"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # refusals are logged once per cause by Ingest

        def do_POST(self) -> None:
            signal = _HTTP_PATHS.get(self.path.split("?", 1)[0])
            if signal is None:
                self._answer(404, b"unknown OTLP path\n", "text/plain")
                return
            try:
                raw = self._read()
                response = ingest.export(signal, raw)
            except RejectedError as exc:
                ingest.refused(exc, f"HTTP {self.path}")
                self._answer(exc.status, f"{exc}\n".encode(), "text/plain")
                return
            self._answer(200, response, PROTOBUF)

        def do_GET(self) -> None:
            self._answer(405, b"OTLP endpoints take POST\n", "text/plain")

        def _read(self) -> bytes:
            media = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if media != PROTOBUF:
                raise RejectedError(415, "Content-Type must be application/x-protobuf", media)
            encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("identity", "", "gzip"):
                raise RejectedError(415, "Content-Encoding must be gzip or identity", encoding)
            length_text = self.headers.get("Content-Length")
            if length_text is None:
                raise RejectedError(411, "Content-Length required")
            try:
                length = int(length_text)
            except ValueError:
                raise RejectedError(400, "bad Content-Length", length_text) from None
            if length < 0:
                raise RejectedError(400, "bad Content-Length", length_text)
            if length > MAX_BODY_BYTES:
                raise RejectedError(413, f"body over {MAX_BODY_BYTES} bytes")
            body = self.rfile.read(length)
            if len(body) < length:
                raise RejectedError(400, "body shorter than its Content-Length")
            return _gunzip(body) if encoding == "gzip" else body

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the sender left; nothing to tell it
            # An unread body stays unread: HTTP/1.0, the connection closes after this.
            self.close_connection = True

    return Handler


def start_http(
    host: str,
    port: int,
    handler: type[BaseHTTPRequestHandler],
    name: str,
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Bind ``host:port`` (OSError when taken) and serve in a daemon thread."""
    server = _QuietServer((host, port), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=name, daemon=True
    )
    thread.start()
    return server, thread


# ---------------------------------------------------------------------- gRPC


def start_grpc(ingest: Ingest, host: str, port: int) -> tuple[Any, int]:
    """Serve the OTLP gRPC services on ``host:port``; returns (server, bound port).

    Raises ImportError without grpcio, OSError when the port cannot be bound. Messages
    are handed over as bytes (no deserializer), so an undecodable one is answered with
    INVALID_ARGUMENT by us rather than INTERNAL by grpcio.
    """
    import grpc  # noqa: PLC0415 - optional dependency, only the cockpit needs it

    def exporter(signal: str) -> Callable[[bytes, Any], bytes]:
        def export(raw: bytes, context: Any) -> bytes:
            try:
                return ingest.export(signal, raw)
            except RejectedError as exc:
                ingest.refused(exc, f"gRPC {signal}")
                code = (
                    grpc.StatusCode.UNAVAILABLE
                    if exc.status == 503
                    else grpc.StatusCode.INVALID_ARGUMENT
                )
                context.abort(code, str(exc))
                raise  # unreachable: abort() raises

        return export

    handlers = [
        grpc.method_handlers_generic_handler(
            service, {"Export": grpc.unary_unary_rpc_method_handler(exporter(signal))}
        )
        for service, signal in _GRPC_SERVICES.items()
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=4, thread_name_prefix="cockpit-otlp-grpc"),
        handlers=handlers,
        options=[
            ("grpc.so_reuseport", 0),  # a port in use must fail, not be shared
            ("grpc.max_receive_message_length", MAX_BODY_BYTES),
        ],
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if port:
        # grpcio reports a taken port on stderr from C++ and then returns 0; a plain bind
        # first gives the one-line reason (the port cannot be taken in between: a
        # listener holds it, or it was free a moment ago).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            if os.name != "nt":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot listen on {address} for OTLP/gRPC: {exc.strerror}"
                ) from exc
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio >= 1.57 raises instead of returning 0
        raise OSError(f"cannot listen on {address} for OTLP/gRPC: {exc}") from exc
    if not bound:
        raise OSError(f"cannot listen on {address} for OTLP/gRPC (port in use?)")
    server.start()
    return server, bound


def grpc_available() -> bool:
    try:
        import grpc  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True
