"""HTML pages for the real-user-monitoring tests (tests/test_rum_django.py)."""

from __future__ import annotations

import gzip
import secrets
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.template import Context, Engine

import cxtrace

PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>{title}</title></head>"
    "<body><h1>{title}</h1><p>" + "A product worth buying. " * 40 + "</p></body></html>"
)
SEEN: list[str] = []  # paths the project's views handled


def page(request: HttpRequest) -> HttpResponse:
    SEEN.append(request.path)
    return HttpResponse(PAGE.format(title="django page"))


def csp(request: HttpRequest) -> HttpResponse:
    nonce = secrets.token_urlsafe(16)
    html = PAGE.format(title="csp").replace(
        "</head>", f"<script nonce=\"{nonce}\">document.title = 'inline ran';</script></head>"
    )
    response = HttpResponse(html)
    response["Content-Security-Policy"] = f"script-src 'nonce-{nonce}'; default-src 'self'"
    return response


_TEMPLATE = Engine().from_string(
    "<html><head><title>t</title>{{ rum_snippet }}</head><body>template</body></html>"
)


def template(request: HttpRequest) -> HttpResponse:
    # A callable in the context is called by the template: rum_snippet() with no nonce.
    return HttpResponse(_TEMPLATE.render(Context({"rum_snippet": cxtrace.rum_snippet})))


def data(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"html": "<html><head></head></html>"})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield b"<html><head><title>streamed</title></head>"
        yield b"<body>streamed</body></html>"

    return StreamingHttpResponse(chunks(), content_type="text/html")


def gzipped(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(gzip.compress(PAGE.format(title="gz").encode(), mtime=0))
    response["Content-Encoding"] = "gzip"
    return response


def nohead(request: HttpRequest) -> HttpResponse:
    return HttpResponse("<!doctype html><title>t</title><p>no head end tag</p>")
