"""Drive N requests through an instrumented Flask app in-process; print what memory did.

    python tests/apps/memory_load.py REQUESTS [CHECKPOINT ...]

Configured only by the environment (tests/test_memory.py points the real OTLP exporter at a
closed port, with the SDK's default batch queue). Requests go through the WSGI callable,
as a server would call it, each with its own path, query and segment header, so nothing
that grows per distinct value can hide. After each checkpoint (a request count) it
records RSS, the batch queue length and the sizes of cxtrace's bounded tables; at the end
it prints them as one JSON line.
"""

from __future__ import annotations

import gc
import io
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cxtrace
from flask_app import make_app


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def batch_queues(handle: cxtrace.Instrumentation) -> list[Any]:
    """The span queues of the batch processors cxtrace built (SDK internals, read only)."""
    queues = []
    pipeline = handle.tracer_provider._active_span_processor
    for processor in pipeline._span_processors:
        inner = getattr(processor, "_batch_processor", processor)  # SDK >= 1.3x keeps it here
        queue = getattr(inner, "_queue", None)
        if queue is None:
            queue = getattr(inner, "queue", None)  # older SDKs
        if queue is not None:
            queues.append(queue)
    return queues


def main() -> None:
    total = int(sys.argv[1])
    checkpoints = sorted({int(n) for n in sys.argv[2:]} | {total})
    handle = cxtrace.instrument()
    recorder = handle._recorder
    assert recorder is not None
    app = make_app()
    queues = batch_queues(handle)
    assert queues, "no batch span processor found"

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        return None

    points = []
    max_queue = 0
    done = 0
    for target in checkpoints:
        while done < target:
            environ = {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": f"/products/{done}",
                "QUERY_STRING": f"q={done}&token=t{done}",
                "SERVER_NAME": "shop.test",
                "SERVER_PORT": "80",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "REMOTE_ADDR": "127.0.0.1",
                "HTTP_X_TIER": f"tier-{done}",  # a new segment value every request
                "HTTP_TRACEPARENT": f"00-{done + 1:032x}-{done + 1:016x}-01",
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(b""),
                "wsgi.errors": sys.stderr,
            }
            body = app(environ, start_response)
            for _chunk in body:
                pass
            body.close()  # type: ignore[attr-defined]
            done += 1
            if done % 1000 == 0:
                max_queue = max(max_queue, *(len(q) for q in queues))
        gc.collect()
        points.append(
            {
                "requests": done,
                "rss": rss_bytes(),
                "queue": max(len(q) for q in queues),
                "tally_keys": len(recorder.requests_tally._counts),
                "segments": len(recorder.segments._names),
                "segment_cache": len(recorder.segments._cache),
                "gc_objects": len(gc.get_objects()),
            }
        )
    print(json.dumps({"points": points, "max_queue": max_queue}), flush=True)
    os._exit(0)  # the collector is down on purpose: skip the (bounded) flush at exit


if __name__ == "__main__":
    main()
