"""An HTML page for gunicorn that knows nothing of cxtrace (tests/test_rum_run.py).

    cxtrace run -- gunicorn --chdir tests/apps --workers 2 rum_app:app

``/page`` says which worker served it.
"""

from __future__ import annotations

import os
import time

from flask import Flask

app = Flask(__name__)


@app.get("/page")
def page() -> str:
    time.sleep(0.02)  # long enough that concurrent requests spread over the workers
    return f"<html><head><title>{os.getpid()}</title></head><body>worker</body></html>"
