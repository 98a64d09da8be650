"""The shop the visit tests' shoppers walk; of cxtrace it calls only ``mark_conversion``.

    cxtrace run -- gunicorn --chdir tests/apps --workers 2 visit_shop:app

The purchase journey of design.md section 3 (tests/test_visits_shoppers.py's journeys
file maps these routes), with knobs the shoppers turn so they know what each request was:

- ``GET /checkout?fail=1`` answers 503 (frustrated, reason ``error``);
  ``?slow=S`` sleeps S seconds first (frustrated, reason ``slow``, when S is over 4T).
- ``POST /orders?value=V`` is a purchase worth V EUR; ``?fail=1`` answers 500 (no purchase).
- ``GET /login`` sets the shop's own session cookie, as a login would.
- ``GET /pid`` names the process that served it.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, request
from opentelemetry import trace

import cxtrace

app = Flask(__name__)
TRACER = trace.get_tracer("tests.visit_shop")


@app.get("/products")
def products() -> str:
    return "all products"


@app.get("/products/<int:product_id>")
def product(product_id: int) -> str:
    with TRACER.start_as_current_span("load product"):
        return f"product {product_id}"


@app.post("/cart")
def cart() -> tuple[str, int]:
    return "added", 201


@app.get("/checkout")
def checkout() -> tuple[str, int]:
    time.sleep(float(request.args.get("slow", "0")))
    if request.args.get("fail"):
        return "checkout is down", 503
    return "checkout", 200


@app.post("/orders")
def orders() -> tuple[str, int]:
    if request.args.get("fail"):
        return "order failed", 500
    cxtrace.mark_conversion(value=float(request.args.get("value", "0")), currency="EUR")
    return "ordered", 201


@app.get("/login")
def login() -> Response:
    response = Response("welcome back")
    response.set_cookie("shop_session", "opaque-session-token", httponly=True)
    return response


@app.get("/pid")
def pid() -> str:
    return str(os.getpid())
