"""A Flask app that knows nothing of cxtrace: ``cxtrace run`` instruments it from outside.

    cxtrace run -- python tests/apps/plain_flask.py

Serves on a free loopback port and prints ``listening on URL`` once ready. Like most
scripts it leaves SIGTERM to its default action, which ends the process at once.
"""

from __future__ import annotations

import sys

from flask import Flask
from werkzeug.serving import make_server

app = Flask(__name__)


@app.get("/products/<int:product_id>")
def product(product_id: int) -> str:
    return f"product {product_id}"


@app.get("/modules")
def modules() -> str:
    """Whether cxtrace is loaded in this process (it should be: by ``cxtrace run``)."""
    return "cxtrace" if "cxtrace" in sys.modules else "none"


def main() -> None:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
