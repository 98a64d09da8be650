"""An example storefront instrumented with cxtrace, configured only by the environment.

    CXTRACE_JOURNEYS_FILE=examples/shop/journeys.toml python examples/shop/app.py --port 8000
    # or with zero code: cxtrace run -- python examples/shop/app.py --port 8000

With ``SHOP_BACKEND_URL`` set, checkout asks the Django backend (examples/backend) to
check stock and price the cart, and purchases go through its payment endpoint, both over
``requests``. ``cxtrace demo`` runs both, with visits on, plus shoppers sending the
``X-Customer-Tier`` header (free, pro, enterprise).

The story the telemetry tells: enterprise customers order in bulk, and the backend prices
a cart line by line, so checkout is slow for them (and only for them). An order is worth
its cart's total, so their orders are the shop's largest. About one payment in fifty is
declined for everyone, so errors show up too.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import time
from typing import Any

import requests
from flask import Flask, Response, g, jsonify, request, session
from werkzeug.serving import make_server

import cxtrace

app = Flask(__name__)  # built before instrument(): cxtrace patches the class, so it counts
app.secret_key = "example-only"  # signs the session cookie that holds the cart
PRODUCTS = {i: {"id": i, "name": f"Product {i}", "price": 10.0 + i} for i in range(1, 21)}
PRICE_PER_LINE = 19.9  # the flat price without a backend; the backend quotes the same
BACKEND = os.environ.get("SHOP_BACKEND_URL", "").rstrip("/")
http = requests.Session()


@app.before_request
def start_clock() -> None:
    g.started = time.perf_counter()


@app.after_request
def server_timing(response: Response) -> Response:
    """Say how long this app's code took: ``Server-Timing: app;dur=<ms>`` (browsers'
    developer tools show it).

    cxtrace's time for the request contains this one (it starts before Flask dispatches and
    ends as the headers go out), so when this says a checkout took over 4 T, cxtrace judged
    it slow too: the demo's shoppers rely on that.
    """
    started = g.get("started")
    if started is not None:
        took_us = math.floor((time.perf_counter() - started) * 1e6)  # down: never more
        response.headers["Server-Timing"] = f"app;dur={took_us / 1000:.3f}"
    return response


@app.get("/products")
def products() -> Any:
    return jsonify(list(PRODUCTS.values()))


@app.get("/products/<int:product_id>")
def product(product_id: int) -> Any:
    if product_id not in PRODUCTS:
        return jsonify(error="no such product"), 404
    time.sleep(random.uniform(0.005, 0.03))
    return jsonify(PRODUCTS[product_id])


@app.post("/cart")
def add_to_cart() -> Any:
    """Add ``lines`` line items (default 1) to the cart kept in the session cookie."""
    body = request.get_json(silent=True) or {}
    lines = max(1, min(int(body.get("lines", 1)), 1000))
    session["lines"] = session.get("lines", 0) + lines
    time.sleep(random.uniform(0.01, 0.05))
    return jsonify(lines=session["lines"]), 201


@app.get("/checkout")
def checkout() -> Any:
    lines = session.get("lines", 0)
    if not lines:
        return jsonify(error="the cart is empty"), 409
    if BACKEND:
        quote = http.post(f"{BACKEND}/pricing/", json={"lines": lines}, timeout=30)
        quote.raise_for_status()
        total = float(quote.json()["total"])
    else:  # on its own, the shop quotes a flat price
        total = round(lines * PRICE_PER_LINE, 2)
    session["total"] = total  # what the order will be worth
    return jsonify(lines=lines, total=total)


@app.post("/orders")
def orders() -> Any:
    lines = session.pop("lines", 0)
    quoted = session.pop("total", None)
    if not lines:
        return jsonify(error="the cart is empty"), 409
    value = float(quoted) if quoted is not None else round(lines * PRICE_PER_LINE, 2)
    declined = random.random() < 0.02
    if BACKEND:
        paid = http.post(
            f"{BACKEND}/payments/", json={"amount": value, "declined": declined}, timeout=10
        )
        paid.raise_for_status()  # a failed payment is this request's error too
    elif declined:
        raise RuntimeError("payment declined by the provider")
    cxtrace.mark_conversion(value=value, currency="EUR")
    return jsonify(order=random.randint(1000, 9999), value=value), 201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    # The service name comes from OTEL_SERVICE_NAME when set. Under `cxtrace run` this
    # interpreter is instrumented already and the call returns that handle.
    cxtrace.instrument(service_name=os.environ.get("OTEL_SERVICE_NAME") or "shop")
    server = make_server(args.host, args.port, app, threaded=True)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"shop listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        cxtrace.shutdown()  # flush spans and metrics before the process ends


if __name__ == "__main__":
    main()
