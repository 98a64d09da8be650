"""Django end to end under real servers: werkzeug for WSGI, uvicorn for ASGI.

Every test runs on both, except where its name says why not. Django is set up once per
test process with ``tests/django_project`` (no cxtrace in MIDDLEWARE).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

# First, as it sets Django up; it also brings the django_server fixture.
from django_server import serve_django  # noqa: F401

# isort: split
from django.contrib.auth.models import User
from django.core.handlers import exception
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.core.handlers.wsgi import WSGIHandler
from django.db.backends.signals import connection_created

import cxtrace
from django_project import views
from otlp_receiver import Receiver, SpanRecord

JOURNEYS = """
[segments]
header = "X-Tier"
[[journeys]]
name = "shop"
steps = [
  { name = "view_product", route = "/products/<int:product_id>" },
  { name = "async_view",   route = "async/products/<int:product_id>/" },
  { name = "item",         route = "/api/items/<int:pk>/" },
  { name = "legacy",       path = "/legacy/*" },
]
"""

SQL: list[str] = []  # every statement any Django connection ran, from any thread


def _record_sql(sender: Any, connection: Any, **kwargs: Any) -> None:
    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        SQL.append(sql)
        return execute(sql, params, many, context)

    connection.execute_wrappers.append(wrapper)


connection_created.connect(_record_sql)


def server_span(otlp: Receiver, path: str) -> SpanRecord:
    otlp.wait_for(
        lambda r: any(s.kind == "SERVER" and s.attributes.get("url.path") == path for s in r.spans)
    )
    spans = [s for s in otlp.spans if s.kind == "SERVER" and s.attributes.get("url.path") == path]
    assert len(spans) == 1, spans
    return spans[0]


def flush(handle: cxtrace.Instrumentation, otlp: Receiver, requests_done: int) -> None:
    otlp.wait_for(lambda r: sum(s.kind == "SERVER" for s in r.spans) >= requests_done)
    handle.force_flush()
    otlp.wait_for(lambda r: any(p.metric == "cx.requests" for p in r.points))


ROUTES = [
    ("/products/7/", "/products/<int:product_id>/", "view_product"),
    ("/async/products/8/", "/async/products/<int:product_id>/", "async_view"),
    ("/api/items/3/", "/api/items/<int:pk>/", "item"),
    ("/legacy/1234/", "/legacy/(?P<code>[0-9]+)/", "legacy"),
    ("/cbv/", "/cbv/", None),
    ("/en/about/", "/en/about/", None),
]


@pytest.mark.parametrize(("path", "route", "step"), ROUTES)
def test_routes_come_from_the_resolver_and_match_steps(
    otlp: Receiver,
    instrument: Any,
    django_server: str,
    journeys_file: str,
    path: str,
    route: str,
    step: str | None,
) -> None:
    instrument(otlp, env={"CXTRACE_JOURNEYS_FILE": journeys_file})

    response = requests.get(f"{django_server}{path}", headers={"X-Tier": "pro"})

    assert response.status_code == 200
    span = server_span(otlp, path)
    assert span.name == f"GET {route}"
    assert span.attributes["http.route"] == route
    assert span.attributes["cx.segment"] == "pro"
    assert span.attributes.get("cx.step") == step
    assert span.attributes["cx.satisfaction"] == "satisfied"
    assert span.attributes["http.response.status_code"] == 200


def test_metrics_match_flask_shape(
    otlp: Receiver, instrument: Any, django_server: str, journeys_file: str
) -> None:
    handle = instrument(otlp, env={"CXTRACE_JOURNEYS_FILE": journeys_file})

    for _ in range(3):
        requests.get(f"{django_server}/products/1/", headers={"X-Tier": "enterprise"})

    flush(handle, otlp, 3)
    assert (
        otlp.metric_total(
            "cx.requests",
            **{
                "cx.satisfaction": "satisfied",
                "cx.segment": "enterprise",
                "cx.journey": "shop",
                "cx.step": "view_product",
                "http.route": "/products/<int:product_id>/",
                "http.request.method": "GET",
            },
        )
        == 3
    )
    assert (
        otlp.metric_total(
            "http.server.request.duration",
            **{"http.response.status_code": 200, "cx.step": "view_product"},
        )
        == 3
    )


def test_resolver_404_is_not_an_error(otlp: Receiver, instrument: Any, django_server: str) -> None:
    instrument(otlp)

    assert requests.get(f"{django_server}/nowhere/").status_code == 404

    span = server_span(otlp, "/nowhere/")
    assert span.name == "GET"
    assert "http.route" not in span.attributes
    assert span.attributes["cx.satisfaction"] == "satisfied"
    assert span.status_code == "UNSET"


@pytest.mark.parametrize(
    ("path", "error_type"), [("/boom/", "ValueError"), ("/aboom/", "KeyError")]
)
def test_view_exceptions_become_django_500s_and_frustrated_errors(
    otlp: Receiver, instrument: Any, django_server: str, path: str, error_type: str
) -> None:
    instrument(otlp)

    response = requests.get(f"{django_server}{path}")

    assert response.status_code == 500
    span = server_span(otlp, path)
    assert span.status_code == "ERROR"
    assert span.attributes["error.type"] == error_type
    assert span.attributes["cx.satisfaction"] == "frustrated"
    assert span.attributes["cx.frustration.reason"] == "error"
    assert [name for name, _ in span.events] == ["exception"]


@pytest.mark.parametrize("path", ["/stream/", "/astream/"])
def test_streamed_body_counts_toward_duration(
    otlp: Receiver, instrument: Any, django_server: str, path: str
) -> None:
    instrument(otlp, apdex_threshold_ms=20)

    response = requests.get(f"{django_server}{path}?sleep=0.3")

    assert response.text == "first\nsecond\n"
    span = server_span(otlp, path)
    assert span.duration_s >= 0.3
    assert span.attributes["cx.satisfaction"] == "frustrated"
    assert span.attributes["cx.frustration.reason"] == "slow"


def test_file_response_is_timed_to_its_last_byte(
    otlp: Receiver, instrument: Any, django_server: str
) -> None:
    instrument(otlp)

    response = requests.get(f"{django_server}/file/")

    assert len(response.content) == 100_000
    span = server_span(otlp, "/file/")
    assert span.attributes["http.response.status_code"] == 200


def test_spans_inside_sync_and_async_views_are_children_with_cx_context(
    otlp: Receiver, instrument: Any, django_server: str, journeys_file: str
) -> None:
    handle = instrument(otlp, env={"CXTRACE_JOURNEYS_FILE": journeys_file})
    views.TRACER["provider"] = handle.tracer_provider
    try:
        requests.get(f"{django_server}/async/products/5/", headers={"X-Tier": "free"})
        requests.get(f"{django_server}/stream/")
        server = server_span(otlp, "/async/products/5/")
        otlp.wait_for(
            lambda r: bool(r.spans_named("async-work")) and bool(r.spans_named("stream-chunk"))
        )
    finally:
        views.TRACER.clear()
    child = otlp.spans_named("async-work")[0]
    assert (child.trace_id, child.parent_span_id) == (server.trace_id, server.span_id)
    assert (child.attributes["cx.segment"], child.attributes["cx.step"]) == ("free", "async_view")
    chunk = otlp.spans_named("stream-chunk")[0]
    assert chunk.parent_span_id == server_span(otlp, "/stream/").span_id


def test_authenticated_user_is_hashed_and_never_looked_up_for_us(
    otlp: Receiver, instrument: Any, django_server: str
) -> None:
    instrument(otlp, env={"CXTRACE_USER_HASH_KEY": "k3y"})
    with requests.Session() as browser:
        assert browser.get(f"{django_server}/login/").text == "logged in"
        SQL.clear()
        assert browser.get(f"{django_server}/anon/").text == "never looked at the user"
        sql_for_anon = list(SQL)
        assert browser.get(f"{django_server}/me/").text == "alice"

    assert sql_for_anon == []  # no session read, no user query that the view did not make
    anon = server_span(otlp, "/anon/")
    assert "user.hash" not in anon.attributes
    me = server_span(otlp, "/me/")
    pk = User.objects.get(username="alice").pk
    assert (
        me.attributes["user.hash"] == hmac.new(b"k3y", str(pk).encode(), hashlib.sha256).hexdigest()
    )


def test_set_segment_in_a_view_wins(otlp: Receiver, instrument: Any, django_server: str) -> None:
    instrument(otlp, env={"CXTRACE_SEGMENT_HEADER": "X-Tier"})

    requests.get(f"{django_server}/segment/enterprise/", headers={"X-Tier": "free"})

    assert server_span(otlp, "/segment/enterprise/").attributes["cx.segment"] == "enterprise"


def test_concurrent_requests_keep_their_own_cx_context(
    otlp: Receiver, instrument: Any, django_server: str
) -> None:
    handle = instrument(otlp, env={"CXTRACE_SEGMENT_HEADER": "X-Tier"})
    views.TRACER["provider"] = handle.tracer_provider
    tiers = [f"tier-{i % 7}" for i in range(70)]

    def call(tier: str) -> str:
        return requests.get(f"{django_server}/probe/?sleep=0.02", headers={"X-Tier": tier}).text

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(call, tiers))
        assert answers == tiers
        flush(handle, otlp, 70)
        otlp.wait_for(lambda r: len(r.spans_named("probe")) == 70)
    finally:
        views.TRACER.clear()

    servers = {s.span_id: s for s in otlp.spans if s.kind == "SERVER"}
    for probe in otlp.spans_named("probe"):
        parent = servers[probe.parent_span_id]  # type: ignore[index]
        assert probe.attributes["cx.segment"] == parent.attributes["cx.segment"]
    for i in range(7):
        assert otlp.metric_total("cx.requests", **{"cx.segment": f"tier-{i}"}) == 10


def test_uninstrument_restores_django(otlp: Receiver, instrument: Any, django_server: str) -> None:
    owners: list[tuple[Any, str]] = [
        (WSGIHandler, "__call__"),
        (ASGIHandler, "__call__"),
        (BaseHandler, "resolve_request"),
        (BaseHandler, "get_response"),
        (BaseHandler, "get_response_async"),
        (exception, "response_for_exception"),
    ]
    before = [vars(owner)[name] for owner, name in owners]
    handle = instrument(otlp)
    assert "django" in handle.integrations

    cxtrace.uninstrument()
    requests.get(f"{django_server}/products/1/")
    handle.force_flush()

    assert [vars(owner)[name] for owner, name in owners] == before
    assert otlp.spans == []


def test_a_client_that_goes_away_mid_stream_still_ends_the_request(
    otlp: Receiver, instrument: Any, django_server: str
) -> None:
    instrument(otlp)
    host, port = django_server.rsplit("/", 1)[1].split(":")

    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"GET /stream/?sleep=0.5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while b"first" not in received:  # headers and chunks arrive in any split
            chunk = conn.recv(4096)
            assert chunk, received
            received += chunk
    # the socket is closed before the second chunk: the span must still end

    span = server_span(otlp, "/stream/")
    assert span.attributes["http.response.status_code"] == 200
    assert span.end_ns > span.start_ns
