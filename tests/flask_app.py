"""A small Flask app exercising what cxtrace must handle; tests serve it on loopback."""

from __future__ import annotations

import time

from flask import Flask, Response, abort, request, stream_with_context
from opentelemetry import trace

import cxtrace


def make_app() -> Flask:
    app = Flask(__name__)

    @app.get("/products")
    def products() -> str:
        return "all products"

    @app.get("/products/<int:product_id>")
    def product(product_id: int) -> str:
        return f"product {product_id}"

    @app.post("/cart")
    def add_to_cart() -> tuple[str, int]:
        return "added", 201

    @app.get("/checkout")
    def checkout() -> str:
        delay = float(request.args.get("sleep", "0"))
        time.sleep(delay)
        return "checkout"

    @app.post("/orders")
    def orders() -> tuple[str, int]:
        status = int(request.args.get("status", "201"))
        if "value" in request.args:
            cxtrace.mark_conversion(value=float(request.args["value"]), currency="eur")
        return "order", status

    @app.get("/sleep")
    def sleep() -> str:
        time.sleep(float(request.args.get("s", "0")))
        return "slept"

    @app.get("/stream")
    def stream() -> Response:
        delay = float(request.args.get("sleep", "0"))

        def body():  # type: ignore[no-untyped-def]
            yield "first\n"
            time.sleep(delay)
            yield "second\n"

        return Response(stream_with_context(body()), mimetype="text/plain")

    @app.get("/stream-work")
    def stream_work() -> Response:
        tracer = app.config.get("TRACER") or trace.get_tracer("tests.flask_app")

        def body():  # type: ignore[no-untyped-def]
            yield "started\n"
            with tracer.start_as_current_span("render-chunk"):
                cxtrace.set_segment("streamed")
            yield "done\n"

        return Response(body(), mimetype="text/plain")

    @app.get("/stream-boom")
    def stream_boom() -> Response:
        def body():  # type: ignore[no-untyped-def]
            yield "partial\n"
            raise OSError("disk went away mid-stream")

        return Response(body(), mimetype="text/plain")

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("boom")

    @app.get("/teapot")
    def teapot() -> str:
        raise LookupError("handled by the app")

    @app.errorhandler(LookupError)
    def lookup_error(exc: LookupError) -> tuple[str, int]:
        return "I'm a teapot: " + str(exc), 418

    @app.get("/gone")
    def gone() -> str:
        abort(410)

    @app.get("/busy")
    def busy() -> tuple[str, int]:
        return "slow down", 429

    @app.get("/segment/<name>")
    def segment(name: str) -> str:
        cxtrace.set_segment(name)
        return "ok"

    @app.get("/user/<user_id>")
    def user(user_id: str) -> str:
        cxtrace.set_user(user_id)
        return "hello"

    @app.get("/decorated")
    @cxtrace.step("checkout", journey="purchase")
    def decorated() -> str:
        return "decorated"

    @app.get("/with-step")
    def with_step() -> str:
        with cxtrace.step("add_to_cart"):
            return "context manager"

    @app.get("/child")
    def child() -> str:
        # The test hands over the provider cxtrace exports with (see test_child_spans_...).
        tracer = app.config.get("TRACER") or trace.get_tracer("tests.flask_app")
        with tracer.start_as_current_span("load-from-db"):
            pass
        return "child"

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app
