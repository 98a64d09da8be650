"""The benchmarked apps and the hand-written minimal span middleware (the "floor").

Both apps serve one route, ``/products/<int:product_id>``, returning a short string. The
Django project is configured in code (``settings.configure``): this module is its URLconf.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Tracer

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

SEGMENT_HEADER = "X-Customer-Tier"
PATHS = {"flask": "/products/42", "django": "/products/42/"}


def environ_for(framework: str) -> dict[str, Any]:
    """A GET of the product page as a WSGI server would hand it over (copy it per request)."""
    from werkzeug.test import EnvironBuilder  # noqa: PLC0415 - Flask's dependency

    builder = EnvironBuilder(
        path=PATHS[framework],
        base_url="http://localhost:8000",
        headers=[("User-Agent", "cxtrace-bench/1"), ("Accept", "*/*"), (SEGMENT_HEADER, "pro")],
        environ_base={"REMOTE_ADDR": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1"},
    )
    try:
        environ: dict[str, Any] = builder.get_environ()
    finally:
        builder.close()
    environ["wsgi.input"] = io.BytesIO(b"")
    return environ


# ----------------------------------------------------------------------------- Flask


def flask_app() -> WsgiApp:
    from flask import Flask  # noqa: PLC0415

    app = Flask("bench")

    @app.get("/products/<int:product_id>")
    def product(product_id: int) -> str:
        return f"product {product_id}"

    return app


# ----------------------------------------------------------------------------- Django


def _product(request: Any, product_id: int) -> Any:
    from django.http import HttpResponse  # noqa: PLC0415

    return HttpResponse(f"product {product_id}")


urlpatterns: list[Any] = []


def configure_django() -> None:
    """Settings of a small project: one route, no database, two stock middleware."""
    import django  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415
    from django.urls import path  # noqa: PLC0415

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only-not-a-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.common.CommonMiddleware",
        ],
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    urlpatterns[:] = [path("products/<int:product_id>/", _product)]
    django.setup()


def django_app() -> WsgiApp:
    from django.core.wsgi import get_wsgi_application  # noqa: PLC0415

    return get_wsgi_application()  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- the floor


class _EnvironGetter(Getter[dict[str, Any]]):
    def get(self, carrier: dict[str, Any], key: str) -> Optional[list[str]]:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier: dict[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


_GETTER = _EnvironGetter()


class FloorMiddleware:
    """The least a correct "one server span per request" WSGI middleware does.

    Extract the W3C context from the environ, start a SERVER span named after the method
    with three attributes, make it current while the app runs, and end it when the server
    closes the body (the request is done when the last byte was sent, not when the app
    returned). No route, no status, no metrics, no error handling.
    """

    def __init__(self, app: WsgiApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ["REQUEST_METHOD"]
        span = self.tracer.start_span(
            method,
            context=propagate.extract(environ, getter=_GETTER),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": environ["PATH_INFO"],
                "url.scheme": environ["wsgi.url_scheme"],
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            body = self.app(environ, start_response)
        except BaseException:
            span.end()
            raise
        finally:
            context.detach(token)
        return _EndOnClose(body, span)


class _EndOnClose:
    __slots__ = ("_body", "_span")

    def __init__(self, body: Iterable[bytes], span: trace.Span) -> None:
        self._body = body
        self._span = span

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._span.end()
