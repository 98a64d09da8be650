"""Views covering what cxtrace must handle under Django."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator

from django.contrib.auth import login
from django.contrib.auth.models import User
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    StreamingHttpResponse,
)
from django.views import View
from opentelemetry import trace

import cxtrace

TRACER: dict[str, object] = {}  # tests put cxtrace's tracer provider here


def _tracer() -> trace.Tracer:
    provider = TRACER.get("provider")
    if provider is not None:
        return provider.get_tracer("tests.django")  # type: ignore[attr-defined, no-any-return]
    return trace.get_tracer("tests.django")


def product(request: HttpRequest, product_id: int) -> HttpResponse:
    return HttpResponse(f"product {product_id}")


async def async_product(request: HttpRequest, product_id: int) -> HttpResponse:
    await asyncio.sleep(float(request.GET.get("sleep", "0")))
    with _tracer().start_as_current_span("async-work"):
        await asyncio.sleep(0)
    return HttpResponse(f"async product {product_id}")


class ItemView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("class-based")


def item(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(f"item {pk}")


def legacy(request: HttpRequest, code: str) -> HttpResponse:
    return HttpResponse(f"legacy {code}")


def about(request: HttpRequest) -> HttpResponse:
    return HttpResponse("about")


def sleep(request: HttpRequest) -> HttpResponse:
    time.sleep(float(request.GET.get("s", "0")))
    return HttpResponse("slept")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    delay = float(request.GET.get("sleep", "0"))

    def body() -> Iterator[bytes]:
        yield b"first\n"
        time.sleep(delay)
        with _tracer().start_as_current_span("stream-chunk"):
            yield b"second\n"

    return StreamingHttpResponse(body(), content_type="text/plain")


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    delay = float(request.GET.get("sleep", "0"))

    async def body() -> AsyncIterator[bytes]:
        yield b"first\n"
        await asyncio.sleep(delay)
        yield b"second\n"

    return StreamingHttpResponse(body(), content_type="text/plain")


def file_response(request: HttpRequest) -> FileResponse:
    return FileResponse(io.BytesIO(b"x" * 100_000), filename="data.bin")


def boom(request: HttpRequest) -> HttpResponse:
    raise ValueError("sync boom")


async def aboom(request: HttpRequest) -> HttpResponse:
    raise KeyError("async boom")


def do_login(request: HttpRequest) -> HttpResponse:
    user, _ = User.objects.get_or_create(username="alice")
    login(request, user)
    return HttpResponse("logged in")


def me(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.user.get_username() or "anonymous")


def anon(request: HttpRequest) -> HttpResponse:
    return HttpResponse("never looked at the user")


def segment(request: HttpRequest, name: str) -> HttpResponse:
    cxtrace.set_segment(name)
    return HttpResponse("ok")


async def async_segmented(request: HttpRequest) -> HttpResponse:
    """Concurrency probe: yields to the loop, then starts a span and echoes the tier."""
    await asyncio.sleep(float(request.GET.get("sleep", "0.01")))
    with _tracer().start_as_current_span("probe"):
        await asyncio.sleep(0)
    return HttpResponse(request.headers.get("X-Tier", ""))
