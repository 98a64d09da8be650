"""A WSGI app for gunicorn; it uses the OpenTelemetry API but knows nothing of cxtrace.

    cxtrace run -- gunicorn --chdir tests/apps --workers 2 [--preload] gunicorn_app:app

``/work/<n>`` answers with the pid of the worker that served it. Under ``--preload`` the
module (and its tracer) is loaded once, in the master, before the workers fork.
"""

from __future__ import annotations

import os
import time

from flask import Flask
from opentelemetry import trace

# Taken at import: with --preload, in the master, from the providers of the master.
TRACER = trace.get_tracer("tests.gunicorn_app")

with TRACER.start_as_current_span("app loaded"):
    pass  # one span per process that loads the app

app = Flask(__name__)


@app.get("/work/<int:n>")
def work(n: int) -> str:
    with TRACER.start_as_current_span("work"):
        time.sleep(0.02)  # long enough that concurrent requests spread over the workers
    with trace.get_tracer("tests.late").start_as_current_span("late work"):
        pass  # a tracer taken from the global provider after the fork
    return str(os.getpid())
