"""The benchmark's OTLP receiver: OTLP/HTTP with protobuf bodies, in a process of its own.

``run.py`` starts it once per run and points every configuration that exports (all but
``bare``) at it with the SDK's real OTLP/HTTP exporters. Like a collector it reads and
decodes every request (``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest``)
and answers with the protobuf response; unlike the test suite's receiver
(``tests/otlp_receiver.py``) it keeps nothing but counts, so a run of a million spans
needs no memory. ``GET /counts`` returns them as JSON.

    python tests/bench/receiver.py     # prints its port, serves until killed
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

_counts = {"spans": 0, "points": 0, "trace_requests": 0, "metric_requests": 0, "errors": 0}
_lock = threading.Lock()


def _count_spans(body: bytes) -> tuple[int, bytes]:
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    return spans, trace_service_pb2.ExportTraceServiceResponse().SerializeToString()


def _count_points(body: bytes) -> tuple[int, bytes]:
    request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
    points = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                points += len(getattr(metric, kind).data_points) if kind else 0
    return points, metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporters' sessions expect

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path == "/v1/traces":
                count, answer = _count_spans(body)
                key, requests = "spans", "trace_requests"
            elif self.path == "/v1/metrics":
                count, answer = _count_points(body)
                key, requests = "points", "metric_requests"
            else:
                self._reply(404, b"")
                return
        except Exception:  # a bad payload is counted and answered 400
            with _lock:
                _counts["errors"] += 1
            self._reply(400, b"")
            return
        with _lock:
            _counts[key] += count
            _counts[requests] += 1
        self._reply(200, answer, "application/x-protobuf")

    def do_GET(self) -> None:
        if self.path != "/counts":
            self._reply(404, b"")
            return
        with _lock:
            answer = json.dumps(_counts).encode()
        self._reply(200, answer, "application/json")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    sys.stdout.write(f"{server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
