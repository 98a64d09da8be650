"""With visits on, the host's response changes by our header only (design.md section 12).

The same calls as tests/test_host_view.py (a page with the app's own cookie, a file the
server sends with sendfile, a streamed body), made bare and then with
``CXTRACE_VISITS=cookie``: what ``start_response`` got, or the ASGI messages, must be the
bare ones plus exactly one ``Set-Cookie`` (and ``cx-visit``) header at the end; the
returned object and its body stay the app's own. Also: ``Secure`` on https, and a request
whose app crashed before any header still counts in its visit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test.utils import override_settings
from gunicorn.http.wsgi import FileWrapper
from werkzeug.test import EnvironBuilder

import cxtrace
from otlp_receiver import Receiver
from test_host_view import FILE, PAYLOAD, AsgiCall, BoomError, Call, make_flask, payload_file  # noqa: F401

JOURNEYS = """\
[[journeys]]
name = "purchase"
steps = [
  { name = "browse", path = "/page/" },
  { name = "crash",  path = "/boom/" },
]
"""

VISITS = {"CXTRACE_VISITS": "cookie", "CXTRACE_VISIT_KEY": "host-key"}


@pytest.fixture
def pair(
    otlp: Receiver,
    instrument: Callable[..., cxtrace.Instrumentation],
    payload_file: Path,  # noqa: F811 - the fixture imported above
    journeys_file: str,
) -> Iterator[Callable[[str], tuple[Callable[..., Any], Callable[..., Any]]]]:
    """``pair(framework)`` -> (bare call, call with visits on)."""
    FILE[:] = [payload_file]
    override = override_settings(ROOT_URLCONF="test_host_view", DEBUG_PROPAGATE_EXCEPTIONS=True)
    override.enable()
    apps = {"django": WSGIHandler(), "flask": make_flask(), "django-asgi": ASGIHandler()}
    traced: list[str] = []

    def for_framework(framework: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        app = apps[framework]
        kind = AsgiCall if framework == "django-asgi" else Call

        def bare(url: str, **kw: Any) -> Any:
            assert not traced, "bare calls come first"
            return kind(app, url, **kw)

        def with_visits(url: str, **kw: Any) -> Any:
            if not traced:
                instrument(otlp, env={**VISITS, "CXTRACE_JOURNEYS_FILE": journeys_file})
            traced.append(url)
            return kind(app, url, **kw)

        return bare, with_visits

    yield for_framework
    override.disable()


def added_header(bare: list[tuple[str, Any]], traced: list[tuple[str, Any]]) -> list[Any]:
    """What ``traced`` holds beyond ``bare``, checking that it only appends."""
    assert traced[: len(bare)] == bare  # every header the app set, in its order
    return traced[len(bare) :]


def check_ours(added: list[tuple[Any, Any]], *, secure: bool = False) -> None:
    names = [name.lower() if isinstance(name, str) else name.decode() for name, _ in added]
    assert names == ["set-cookie", "cx-visit"]  # neither came in: both answers
    cookie = added[0][1] if isinstance(added[0][1], str) else added[0][1].decode()
    visit = added[1][1] if isinstance(added[1][1], str) else added[1][1].decode()
    assert cookie == f"cx_visit={visit}; HttpOnly; SameSite=Lax; Path=/" + (
        "; Secure" if secure else ""
    )


@pytest.mark.parametrize("framework", ["flask", "django"])
@pytest.mark.parametrize("url", ["/page/", "/download/", "/stream/"])
def test_a_wsgi_response_gains_our_headers_and_nothing_else(
    framework: str, url: str, pair: Any
) -> None:
    bare_call, traced_call = pair(framework)
    kw = {"file_wrapper": True} if url == "/download/" else {}
    bare, traced = bare_call(url, **kw), traced_call(url, **kw)
    assert traced.result.__class__ is bare.result.__class__  # the app's own object, proxied
    if url == "/download/":
        assert isinstance(traced.result, FileWrapper)  # still sent with sendfile(2)
    assert traced.started[0][0] == bare.started[0][0]  # the status
    check_ours(added_header(bare.started[0][1], traced.started[0][1]))
    assert traced.body() == bare.body()
    if url == "/page/":  # the app's own cookie is still there, untouched
        cookies = [v for k, v in traced.started[0][1] if k == "Set-Cookie"]
        assert len(cookies) == 2  # the app's, then ours
        assert "app_session=s3cr3t" in cookies[0]


@pytest.mark.parametrize("url", ["/page/", "/download/", "/stream/"])
def test_an_asgi_response_gains_our_headers_and_nothing_else(url: str, pair: Any) -> None:
    bare_call, traced_call = pair("django-asgi")
    bare, traced = bare_call(url), traced_call(url)
    assert len(traced.sent) == len(bare.sent)
    start_bare, start_traced = bare.sent[0], traced.sent[0]
    assert {k: v for k, v in start_traced.items() if k != "headers"} == {
        k: v for k, v in start_bare.items() if k != "headers"
    }
    check_ours(added_header(list(start_bare["headers"]), list(start_traced["headers"])))
    assert traced.sent[1:] == bare.sent[1:]  # every body message as the app sent it


@pytest.mark.parametrize(
    ("base_url", "headers", "secure"),
    [
        ("https://shop.example", {}, True),
        ("http://shop.example", {"X-Forwarded-Proto": "https"}, True),  # a TLS proxy in front
        ("http://shop.example", {"X-Forwarded-Proto": "HTTPS, http"}, True),
        ("http://shop.example", {"Forwarded": 'for=1.2.3.4;proto="https", proto=http'}, True),
        ("http://shop.example", {"X-Forwarded-Proto": "http, https"}, False),  # first hop
        ("http://shop.example", {"Forwarded": "for=1.2.3.4;proto=http, proto=https"}, False),
        ("http://shop.example", {}, False),
    ],
)
def test_a_customer_on_https_gets_a_secure_cookie(
    pair: Any, base_url: str, headers: dict[str, str], secure: bool
) -> None:
    _, traced_call = pair("flask")
    traced_call("/page/")  # instruments
    app = make_flask()
    environ = EnvironBuilder(path="/page/", base_url=base_url, headers=headers).get_environ()
    started: list[Any] = []
    body = app(environ, lambda status, headers, exc_info=None: started.append(headers))
    assert b"".join(body) == b"page"
    body.close()
    check_ours(started[0][-2:], secure=secure)


def test_a_crash_before_any_header_still_counts_in_the_visit(otlp: Receiver, pair: Any) -> None:
    _, traced_call = pair("flask")
    with pytest.raises(BoomError):
        traced_call("/boom/")  # the exception reaches the server: no start_response at all
    cxtrace.instrument().force_flush()  # idempotent: the handle the call above made
    otlp.wait_for(lambda r: r.metric_total("cx.visits") == 1)
    assert otlp.metric_total("cx.visit.steps", **{"cx.step": "crash"}) == 1
    assert (
        otlp.metric_total(
            "cx.visit.frustrations", **{"cx.step": "crash", "cx.frustration.reason": "error"}
        )
        == 1
    )
