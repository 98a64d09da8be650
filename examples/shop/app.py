"""An example storefront instrumented with cxtrace, configured only by the environment.

    CXTRACE_JOURNEYS_FILE=examples/shop/journeys.toml python examples/shop/app.py --port 8000

With ``SHOP_BACKEND_URL`` set, checkout asks the Django backend (examples/backend) for
stock and purchases go through its payment endpoint, over ``requests``.

Two problems are built in so the telemetry has a story to tell (the demo's load generator
sends the X-Customer-Tier header):
- checkout is slow for enterprise customers (their cart has many line items to price);
- about one purchase in five fails for pro customers (a flaky payment provider).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import time
from typing import Any

import requests
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

import cxtrace

app = Flask(__name__)  # built before instrument(): cxtrace patches the class, so it counts
PRODUCTS = {i: {"id": i, "name": f"Product {i}", "price": 10.0 + i} for i in range(1, 21)}
BACKEND = os.environ.get("SHOP_BACKEND_URL", "").rstrip("/")
http = requests.Session()


def tier() -> str:
    return request.headers.get("X-Customer-Tier", "")


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
    time.sleep(random.uniform(0.01, 0.05))
    return jsonify(ok=True), 201


@app.get("/checkout")
def checkout() -> Any:
    if BACKEND:
        http.get(f"{BACKEND}/stock/{random.randint(1, 20)}/", timeout=5).raise_for_status()
    if tier() == "enterprise":
        time.sleep(random.uniform(0.8, 5.0))  # pricing hundreds of line items, one by one
    else:
        time.sleep(random.uniform(0.05, 0.3))
    return jsonify(total=42.0)


@app.post("/orders")
def orders() -> Any:
    flaky = tier() == "pro" and random.random() < 0.2
    value = round(random.uniform(20, 200), 2)
    if BACKEND:
        paid = http.post(f"{BACKEND}/payments/", json={"amount": value, "flaky": flaky}, timeout=5)
        paid.raise_for_status()  # a failed payment is this request's error too
    elif flaky:
        raise RuntimeError("payment provider timed out")
    cxtrace.mark_conversion(value=value, currency="EUR")
    return jsonify(order=random.randint(1000, 9999), value=value), 201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    cxtrace.instrument(service_name="shop")
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
