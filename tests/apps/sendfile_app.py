"""A Flask app sending one file, for gunicorn's sendfile path; it knows nothing of cxtrace.

cxtrace run -- gunicorn --chdir tests/apps sendfile_app:app   (PAYLOAD_FILE=path)
"""

from __future__ import annotations

import os

from flask import Flask, Response, send_file

app = Flask(__name__)


@app.get("/download")
def download() -> Response:
    return send_file(os.environ["PAYLOAD_FILE"], mimetype="application/octet-stream")
