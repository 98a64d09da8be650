"""A WSGI app for concurrent load; it knows nothing of cxtrace (``cxtrace run`` adds it).

    cxtrace run -- gunicorn --chdir tests/apps --worker-class gthread --threads 32 load_app:app

``/echo/<n>`` and ``POST /cart/<n>`` sleep a little inside a span of their own, then answer
with ``n`` and the ``X-Tier`` header they were sent, so a test can tell whether any span
or metric point of a request carries another request's context.
"""

from __future__ import annotations

import time

from flask import Flask, request
from opentelemetry import trace

app = Flask(__name__)


def _work(n: int) -> str:
    with trace.get_tracer("tests.load_app").start_as_current_span("work"):
        time.sleep(float(request.args.get("sleep", "0.01")))
    return f"{n} {request.headers.get('X-Tier', '')}"


@app.get("/echo/<int:n>")
def echo(n: int) -> str:
    return _work(n)


@app.post("/cart/<int:n>")
def cart(n: int) -> tuple[str, int]:
    return _work(n), 201
