"""Real-user monitoring with Django, under WSGI (werkzeug) and ASGI (uvicorn), in Chromium.

The pages are ``tests/django_project/rum_views.py``; every test runs on both servers.
"""

from __future__ import annotations

from typing import Any

import requests

# First, as it sets Django up; it also brings the django_server fixture.
from django_server import serve_django  # noqa: F401

# isort: split
from django_project import rum_views
from otlp_receiver import Receiver
from test_rum import fetch_raw, page_loads, post, server_span, token_of

UNTOUCHED = ("/rum/data/", "/rum/stream/", "/rum/gzip/", "/rum/nohead/")
RUM_ENV = {"CXTRACE_RUM": "true", "CXTRACE_SEGMENT_HEADER": "X-Tier"}


def test_a_django_page_load_becomes_a_browser_span_in_the_page_trace(
    otlp: Receiver, instrument: Any, django_server: str, page: Any
) -> None:
    handle = instrument(otlp, env=RUM_ENV)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Security Policy" in m.text else None)
    page.set_extra_http_headers({"X-Tier": "pro"})

    page.goto(f"{django_server}/rum/page/?q=private")
    page.goto(f"{django_server}/rum/csp/")  # leaving the first page sends its beacon
    assert page.title() == "inline ran"  # the page's own nonce'd script still runs
    page.goto("about:blank")
    otlp.wait_for(lambda r: len(page_loads(r)) == 2, timeout=10)

    assert violations == []
    for path in ("/rum/page/", "/rum/csp/"):
        server = server_span(otlp, path)
        (browser,) = [s for s in page_loads(otlp) if s.attributes["url.path"] == path]
        assert browser.trace_id == server.trace_id
        assert browser.parent_span_id == server.span_id
        attrs = browser.attributes
        assert attrs["cx.segment"] == "pro"
        assert attrs["http.route"] == path
        ttfb, dcl, load = (
            float(attrs["cx.rum.ttfb_ms"]),  # type: ignore[arg-type]
            float(attrs["cx.rum.dom_content_loaded_ms"]),  # type: ignore[arg-type]
            float(attrs["cx.rum.load_ms"]),  # type: ignore[arg-type]
        )
        assert 0 <= ttfb <= dcl <= load < 10_000
        assert attrs["cx.satisfaction"] in ("satisfied", "tolerating", "frustrated")
        assert not any("private" in str(v) for v in attrs.values())
    handle.force_flush()
    otlp.wait_for(lambda r: any(p.metric == "cx.page_loads" for p in r.points))
    assert otlp.metric_total("cx.page_loads", **{"cx.segment": "pro"}) == 2


def test_the_django_endpoint_drops_bad_beacons_before_the_project_sees_them(
    otlp: Receiver, instrument: Any, django_server: str
) -> None:
    instrument(otlp, env=RUM_ENV)
    html = requests.get(f"{django_server}/rum/page/", headers={"X-Tier": "free"}, timeout=5).text
    token = token_of(html)
    beacon = {"v": 1, "cx": token, "ttfb": 3, "load": 30, "end": 40}
    rum_views.SEEN.clear()

    forged = dict(beacon, cx=token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"))
    assert post(django_server, forged) == 400
    assert post(django_server, b"x" * 5000) == 413
    assert post(django_server, b"{nope") == 400
    assert post(django_server, beacon) == 204
    assert post(django_server, beacon) == 400
    script = requests.get(f"{django_server}/_cxtrace/rum.js", timeout=5)
    assert script.status_code == 200
    assert "sendBeacon" in script.text

    otlp.wait_for(lambda r: bool(page_loads(r)))
    assert len(page_loads(otlp)) == 1
    assert page_loads(otlp)[0].attributes["cx.segment"] == "free"
    assert rum_views.SEEN == []
    assert not [s for s in otlp.spans if str(s.attributes.get("url.path")).startswith("/_c")]


def test_django_responses_that_must_not_change_are_byte_identical(
    otlp: Receiver, instrument: Any, django_server: str
) -> None:
    before = {path: fetch_raw(django_server + path) for path in UNTOUCHED}
    instrument(otlp, env=RUM_ENV)
    after = {path: fetch_raw(django_server + path) for path in UNTOUCHED}
    assert after == before
    body, headers = fetch_raw(f"{django_server}/rum/page/")
    assert b'<script src="/_cxtrace/rum.js" async data-cx="' in body
    if headers["Content-Length"] is not None:
        assert headers["Content-Length"] == str(len(body))
    template = requests.get(f"{django_server}/rum/template/", timeout=5).text
    assert template.count("/_cxtrace/rum.js") == 1  # the template's own, not injected again
    assert '<script src="/_cxtrace/rum.js" async data-cx="' in template
