"""requests and CX propagation between real services on loopback.

An upstream Flask service calls downstream services (Django, or a Flask echo) through
``requests``; both run in this process under werkzeug, instrumented once. Calls to hosts
that do not resolve here (``api.internal``) go through ``proxy``, a stand-in on loopback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from flask import Flask, jsonify, request
from opentelemetry import baggage, propagate
from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import Getter, TextMapPropagator, default_getter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

import cxtrace
from cxtrace._core.baggage import inbound_cx, sign
from otlp_receiver import Receiver, SpanRecord

pytest.importorskip("django")
import django_server

KEY = "propagation-secret"
ALL = "flask,django,requests"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

JOURNEYS = """
[segments]
header = "X-Tier"
[[journeys]]
name = "purchase"
steps = [{ name = "checkout", route = "/call" }]
"""


def make_upstream() -> Flask:
    app = Flask("upstream")

    @app.get("/call")
    def call() -> Any:
        target = request.args["target"]
        # Through an HTTP proxy, a call to any host reaches a server on loopback.
        proxies = {"http": request.args["proxy"]} if "proxy" in request.args else None
        token = None
        if "tenant" in request.args:  # the app's own baggage, which must survive
            token = otel_context.attach(baggage.set_baggage("tenant", request.args["tenant"]))
        try:
            if request.args.get("session"):
                with requests.Session() as http:
                    answer = http.get(target, timeout=5, proxies=proxies)
            else:
                answer = requests.get(target, timeout=5, proxies=proxies)
        finally:
            if token is not None:
                otel_context.detach(token)
        return answer.text, answer.status_code

    @app.get("/echo")
    def echo() -> Any:
        return jsonify(
            traceparent=request.headers.get("traceparent"),
            baggage=request.headers.get("baggage"),
            otel_baggage=dict(baggage.get_all()),
            authorization=request.headers.get("Authorization"),
        )

    return app


def proxy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app standing in for an HTTP proxy: it answers every request itself with the
    host the client asked for (the absolute URI's) and the propagation headers it sent."""
    body = json.dumps(
        {
            "host": environ.get("HTTP_HOST"),
            "traceparent": environ.get("HTTP_TRACEPARENT"),
            "baggage": environ.get("HTTP_BAGGAGE"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def spans_of(otlp: Receiver, kind: str, **attrs: object) -> list[SpanRecord]:
    """Spans of ``kind`` with ``attrs``; CLIENT ones only from inside a served request.

    The test itself calls the services with requests, which is instrumented too: its
    own client spans have no parent and are left out.
    """
    return [
        s
        for s in otlp.spans
        if s.kind == kind
        and (kind != "CLIENT" or s.parent_span_id is not None)
        and all(s.attributes.get(k) == v for k, v in attrs.items())
    ]


def test_a_backend_sees_which_segment_and_step_it_serves(
    otlp: Receiver, instrument: Any, serve: Any, journeys_file: str
) -> None:
    handle = instrument(
        otlp,
        env={
            "CXTRACE_INTEGRATIONS": ALL,
            "CXTRACE_PROPAGATION_KEY": KEY,
            "CXTRACE_JOURNEYS_FILE": journeys_file,
        },
    )
    backend = serve(django_server.WSGI_APP)
    shop = serve(make_upstream())

    response = requests.get(
        f"{shop}/call",
        params={"target": f"{backend}/products/9/"},
        headers={"X-Tier": "enterprise"},
    )

    assert response.text == "product 9"
    otlp.wait_for(lambda r: len(spans_of(r, "SERVER")) == 2 and len(spans_of(r, "CLIENT")) == 1)
    upstream = spans_of(otlp, "SERVER", **{"url.path": "/call"})[0]
    client = spans_of(otlp, "CLIENT")[0]
    downstream = spans_of(otlp, "SERVER", **{"url.path": "/products/9/"})[0]
    assert client.name == "GET"
    assert client.parent_span_id == upstream.span_id
    assert client.attributes["url.full"] == f"{backend}/products/9/"
    assert client.attributes["server.address"] == "127.0.0.1"
    assert client.attributes["http.response.status_code"] == 200
    assert (client.attributes["cx.segment"], client.attributes["cx.step"]) == (
        "enterprise",
        "checkout",
    )
    assert (downstream.trace_id, downstream.parent_span_id) == (client.trace_id, client.span_id)
    assert downstream.attributes["cx.segment"] == "enterprise"
    assert (downstream.attributes["cx.journey"], downstream.attributes["cx.step"]) == (
        "purchase",
        "checkout",
    )
    handle.force_flush()
    otlp.wait_for(
        lambda r: (
            r.metric_total("cx.requests", **{"http.route": "/products/<int:product_id>/"}) == 1
        )
    )
    assert (
        otlp.metric_total(
            "cx.requests",
            **{
                "http.route": "/products/<int:product_id>/",
                "cx.segment": "enterprise",
                "cx.step": "checkout",
            },
        )
        == 1
    )


def test_a_conversion_is_counted_by_the_service_where_it_happens_not_downstream(
    otlp: Receiver, instrument: Any, serve: Any, tmp_path: Path
) -> None:
    journeys = tmp_path / "journeys.toml"
    journeys.write_text(JOURNEYS.replace('"/call" }', '"/call", conversion = true }'))
    handle = instrument(
        otlp,
        env={
            "CXTRACE_INTEGRATIONS": ALL,
            "CXTRACE_PROPAGATION_KEY": KEY,
            "CXTRACE_JOURNEYS_FILE": str(journeys),
        },
    )
    backend = serve(django_server.WSGI_APP)
    shop = serve(make_upstream())

    response = requests.get(
        f"{shop}/call", params={"target": f"{backend}/products/9/"}, headers={"X-Tier": "pro"}
    )

    assert response.text == "product 9"
    otlp.wait_for(lambda r: len(spans_of(r, "SERVER")) == 2)
    upstream = spans_of(otlp, "SERVER", **{"url.path": "/call"})[0]
    downstream = spans_of(otlp, "SERVER", **{"url.path": "/products/9/"})[0]
    assert upstream.attributes["cx.conversion"] is True
    # The backend serves the caller's conversion step (verified), but the customer
    # converted once, at the shop: counting it again would double every funnel.
    assert downstream.attributes["cx.step"] == "checkout"
    assert downstream.attributes["cx.conversion"] is False
    handle.force_flush()
    otlp.wait_for(lambda r: r.metric_total("cx.requests") == 2)
    assert otlp.metric_total("cx.conversions") == 1
    assert otlp.metric_total("cx.conversions", **{"cx.segment": "pro", "cx.step": "checkout"}) == 1


@pytest.mark.parametrize("session", [False, True], ids=["requests.get", "Session.get"])
def test_outbound_headers_keep_the_callers_baggage_and_sign_ours(
    otlp: Receiver, instrument: Any, serve: Any, journeys_file: str, session: bool
) -> None:
    instrument(
        otlp,
        env={
            "CXTRACE_INTEGRATIONS": ALL,
            "CXTRACE_PROPAGATION_KEY": KEY,
            "CXTRACE_JOURNEYS_FILE": journeys_file,
        },
    )
    shop = serve(make_upstream())

    seen = requests.get(
        f"{shop}/call",
        params={"target": f"{shop}/echo", "tenant": "acme", "session": "1" if session else ""},
        headers={"X-Tier": "pro"},
    ).json()

    members = seen["baggage"].split(",")
    assert members[0] == "tenant=acme"
    assert "cx.segment=pro" in members
    assert "cx.step=checkout" in members
    assert any(m.startswith("cx.sig=") for m in members)
    otlp.wait_for(lambda r: bool(spans_of(r, "CLIENT")) and bool(spans_of(r, "SERVER")))
    client = spans_of(otlp, "CLIENT")
    assert seen["traceparent"].split("-")[2] == client[0].span_id
    # The echo endpoint verified it (same key) and keeps cx.* out of the app's baggage.
    assert seen["otel_baggage"] == {"tenant": "acme"}
    echo = spans_of(otlp, "SERVER", **{"url.path": "/echo"})
    assert echo[0].attributes["cx.segment"] == "pro"


def test_cx_goes_only_to_hosts_in_propagate_to(
    otlp: Receiver, instrument: Any, serve: Any, journeys_file: str
) -> None:
    instrument(
        otlp,
        env={
            "CXTRACE_INTEGRATIONS": ALL,
            "CXTRACE_PROPAGATION_KEY": KEY,
            "CXTRACE_JOURNEYS_FILE": journeys_file,
            "CXTRACE_PROPAGATE_TO": "*.internal,10.*",
        },
    )
    shop = serve(make_upstream())

    seen = requests.get(
        f"{shop}/call",
        params={"target": f"{shop}/echo", "tenant": "acme"},
        headers={"X-Tier": "pro"},
    ).json()

    assert seen["traceparent"] is not None
    assert seen["baggage"] == "tenant=acme"


# CXTRACE_PROPAGATE_TO -> {host asked for: whether it gets the CX entries}. Each form has
# hosts that a prefix, suffix or substring compare would wrongly let in.
PROPAGATE_TO = {
    "*.internal": {
        "api.internal": True,
        "a.b.internal": True,
        "internal.example.com": False,
        "api.internal.evil.com": False,
        "notinternal": False,
    },
    "10.*": {"10.1.2.3": True, "110.1.2.3": False, "1.10.2.3": False},
    "api.example.com": {
        "api.example.com": True,
        "API.Example.com": True,
        "api.example.com.evil.net": False,
        "evilapi.example.com": False,
        "api.example.co": False,
    },
    "api.internal:80": {
        "api.internal": True,  # port 80 is http's default
        "api.internal:80": True,
        "api.internal:8080": False,
        "api.internal:8": False,
        "www.api.internal:80": False,
    },
    "api.internal:8443": {"api.internal:8443": True, "api.internal": False},
    "[::1]": {"[::1]": True, "[::1]:8080": True, "1": False, "[::2]": False},
    "*.internal,10.*": {"api.internal": True, "10.0.0.1": True, "api.example.com": False},
}
SIGNED_CX = {"cx.segment": "pro", "cx.journey": "purchase", "cx.step": "checkout"}


@pytest.mark.parametrize("globs", PROPAGATE_TO.keys())
def test_cx_goes_to_the_hosts_propagate_to_matches_and_only_those(
    otlp: Receiver, instrument: Any, serve: Any, journeys_file: str, globs: str
) -> None:
    instrument(
        otlp,
        env={
            "CXTRACE_INTEGRATIONS": ALL,
            "CXTRACE_PROPAGATION_KEY": KEY,
            "CXTRACE_JOURNEYS_FILE": journeys_file,
            "CXTRACE_PROPAGATE_TO": globs,
        },
    )
    via = serve(proxy)
    shop = serve(make_upstream())

    for host, gets_cx in PROPAGATE_TO[globs].items():
        seen = requests.get(
            f"{shop}/call",
            params={"target": f"http://{host}/echo", "proxy": via, "tenant": "acme"},
            headers={"X-Tier": "pro"},
        ).json()

        assert seen["host"].lower() == host.lower()  # the call went out for that host
        trace_id = seen["traceparent"].split("-")[1]  # every host gets the trace context
        if gets_cx:
            assert seen["baggage"].startswith("tenant=acme,cx."), host
            cx = inbound_cx(
                seen["baggage"], trace_id=trace_id, key=KEY.encode(), trust_unsigned=False
            )
            assert cx == SIGNED_CX, host  # signed, for this very trace
        else:
            assert seen["baggage"] == "tenant=acme", host


def test_propagate_to_with_a_port_matches_that_port_only(
    otlp: Receiver, instrument: Any, serve: Any, journeys_file: str
) -> None:
    # Real ports on loopback, no proxy: the same host on another port is another service.
    inside, outside = serve(proxy), serve(proxy)
    instrument(
        otlp,
        env={
            "CXTRACE_INTEGRATIONS": ALL,
            "CXTRACE_JOURNEYS_FILE": journeys_file,
            "CXTRACE_PROPAGATE_TO": inside.removeprefix("http://"),
        },
    )
    shop = serve(make_upstream())

    def call(target: str) -> Any:
        return requests.get(
            f"{shop}/call", params={"target": f"{target}/echo"}, headers={"X-Tier": "pro"}
        ).json()

    assert call(inside)["baggage"] == "cx.segment=pro,cx.journey=purchase,cx.step=checkout"
    unlisted = call(outside)
    assert unlisted["traceparent"] is not None
    assert unlisted["baggage"] is None


def _forge(entries: dict[str, str], *, trace_id: str = TRACE_ID, key: str = KEY) -> str:
    sig = sign(entries, trace_id, key.encode())
    return ",".join([*(f"{k}={v}" for k, v in entries.items()), f"cx.sig={sig}"])


def _bent(bend: Callable[[str], str]) -> str:
    """A header promoting itself to enterprise, its valid ``cx.sig`` then bent by ``bend``."""
    sig = sign({"cx.segment": "enterprise"}, TRACE_ID, KEY.encode())
    return f"cx.segment=enterprise,cx.sig={bend(sig)}"


GOOD = {"cx.segment": "free", "cx.journey": "purchase", "cx.step": "checkout"}
HOSTILE = {
    "unsigned": "cx.segment=enterprise",
    "signed with another key": _forge({"cx.segment": "enterprise"}, key="guessed"),
    "replayed onto another trace": _forge({"cx.segment": "enterprise"}, trace_id="1" * 32),
    "value promoted after signing": _forge(GOOD).replace(
        "cx.segment=free", "cx.segment=enterprise"
    ),
    "an entry truncated away": _forge(GOOD).replace("cx.step=checkout,", ""),
    "values swapped between keys": _forge({"cx.segment": "enterprise", "cx.step": "free"})
    .replace("cx.segment=enterprise", "cx.segment=TMP")
    .replace("cx.step=free", "cx.step=enterprise")
    .replace("cx.segment=TMP", "cx.segment=free"),
    "duplicated segment": _forge(GOOD) + ",cx.segment=enterprise",
    "oversized": _forge({"cx.segment": "enterprise"}) + ",pad=" + "x" * 9000,
    "garbage": "cx.segment=%zz%%,,;;==\x7f",
    # A verifier comparing a prefix of cx.sig (or startswith) takes each of these.
    "empty signature": _bent(lambda sig: ""),
    "signature without its last character": _bent(lambda sig: sig[:-1]),
    "half a signature": _bent(lambda sig: sig[:11]),
    "signature with its first character changed": _bent(lambda sig: "_" + sig[1:]),
    "signature with its last character changed": _bent(lambda sig: sig[:-1] + "_"),
    "signature with a character added": _bent(lambda sig: sig + "A"),
}


@pytest.mark.parametrize("header", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_client_cannot_promote_itself_with_baggage(
    otlp: Receiver, instrument: Any, serve: Any, header: str
) -> None:
    instrument(otlp, env={"CXTRACE_PROPAGATION_KEY": KEY})
    shop = serve(make_upstream())

    response = requests.get(f"{shop}/echo", headers={"traceparent": TRACEPARENT, "baggage": header})

    assert response.status_code == 200
    assert not any(k.startswith("cx.") for k in response.json()["otel_baggage"])
    otlp.wait_for(lambda r: bool(spans_of(r, "SERVER")))
    span = spans_of(otlp, "SERVER")
    assert span[0].attributes["cx.segment"] == "unknown"
    assert "cx.step" not in span[0].attributes


def test_correctly_signed_baggage_is_used_and_member_order_does_not_matter(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    instrument(otlp, env={"CXTRACE_PROPAGATION_KEY": KEY})
    shop = serve(make_upstream())
    members = _forge(GOOD).split(",")

    requests.get(
        f"{shop}/echo", headers={"traceparent": TRACEPARENT, "baggage": ",".join(reversed(members))}
    )

    otlp.wait_for(lambda r: bool(spans_of(r, "SERVER")))
    span = spans_of(otlp, "SERVER")[0]
    assert (span.attributes["cx.segment"], span.attributes["cx.step"]) == ("free", "checkout")


@pytest.mark.parametrize(("trust", "segment"), [("false", "unknown"), ("true", "enterprise")])
def test_without_a_key_inbound_cx_is_used_only_when_trusted(
    otlp: Receiver, instrument: Any, serve: Any, trust: str, segment: str
) -> None:
    instrument(otlp, env={"CXTRACE_TRUST_INBOUND_BAGGAGE": trust})
    shop = serve(make_upstream())

    response = requests.get(f"{shop}/echo", headers={"baggage": "cx.segment=enterprise"})

    assert response.status_code == 200
    otlp.wait_for(lambda r: bool(spans_of(r, "SERVER")))
    assert spans_of(otlp, "SERVER")[0].attributes["cx.segment"] == segment


def test_client_spans_hide_credentials_and_secret_query_values(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    instrument(otlp, env={"CXTRACE_INTEGRATIONS": ALL})
    shop = serve(make_upstream())
    port = shop.rsplit(":", 1)[1]

    seen = requests.get(
        f"{shop}/call",
        params={"target": f"http://bob:hunter2@127.0.0.1:{port}/echo?q=1&token=tok-123"},
    ).json()

    assert seen["authorization"] is not None  # requests moved the credentials into the header
    otlp.wait_for(lambda r: bool(spans_of(r, "CLIENT")))
    client = spans_of(otlp, "CLIENT")[0]
    assert client.attributes["url.full"] == f"http://127.0.0.1:{port}/echo?q=1&token=REDACTED"
    for _, raw in otlp.payloads:
        assert b"hunter2" not in raw
        assert b"tok-123" not in raw


def test_failed_calls_carry_error_type_and_the_exception_still_reaches_the_app(
    otlp: Receiver, instrument: Any, serve: Any
) -> None:
    instrument(otlp, env={"CXTRACE_INTEGRATIONS": ALL})
    shop = serve(make_upstream())

    refused = requests.get(f"{shop}/call", params={"target": "http://127.0.0.1:9/"})
    missing = requests.get(f"{shop}/call", params={"target": f"{shop}/nowhere"})

    assert refused.status_code == 500  # the app saw requests' ConnectionError, unchanged
    assert missing.status_code == 404
    otlp.wait_for(lambda r: len(spans_of(r, "CLIENT")) == 2)
    by_url = {s.attributes["url.full"]: s for s in spans_of(otlp, "CLIENT")}
    assert by_url["http://127.0.0.1:9/"].attributes["error.type"] == (
        "requests.exceptions.ConnectionError"
    )
    assert by_url["http://127.0.0.1:9/"].status_code == "ERROR"
    assert by_url[f"{shop}/nowhere"].attributes["error.type"] == "404"
    assert by_url[f"{shop}/nowhere"].attributes["http.response.status_code"] == 404


def test_uninstrument_restores_session_send(otlp: Receiver, instrument: Any) -> None:
    original = vars(requests.Session)["send"]
    instrument(otlp, env={"CXTRACE_INTEGRATIONS": ALL})
    assert vars(requests.Session)["send"] is not original

    cxtrace.uninstrument()

    assert vars(requests.Session)["send"] is original


class _HeaderPropagator(TextMapPropagator):
    """A non-W3C propagator an app may install: ``X-Test-Trace: <trace id>-<span id>``."""

    def extract(
        self, carrier: Any, context: Any = None, getter: Getter[Any] = default_getter
    ) -> Any:
        found = getter.get(carrier, "x-test-trace")
        if not found:
            return context if context is not None else otel_context.Context()
        trace_id, span_id = found[0].split("-")
        parent = SpanContext(
            int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(1)
        )
        return set_span_in_context(NonRecordingSpan(parent), context)

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        return None

    @property
    def fields(self) -> set[str]:
        return {"x-test-trace"}


@pytest.mark.parametrize("propagator", ["w3c", "app's own"])
def test_the_global_propagator_finds_the_remote_parent(
    otlp: Receiver, instrument: Any, serve: Any, propagator: str
) -> None:
    # cxtrace skips calling OpenTelemetry's default propagators when a request has no
    # traceparent/baggage header; any other propagator is always asked.
    previous = propagate.get_global_textmap()
    if propagator == "app's own":
        propagate.set_global_textmap(_HeaderPropagator())
        headers = {"X-Test-Trace": f"{TRACE_ID}-00f067aa0ba902b7"}
    else:
        headers = {"traceparent": TRACEPARENT}
    try:
        instrument(otlp)
        shop = serve(make_upstream())
        assert requests.get(f"{shop}/echo", headers=headers).status_code == 200
        assert requests.get(f"{shop}/echo").status_code == 200
    finally:
        propagate.set_global_textmap(previous)

    otlp.wait_for(lambda r: len(spans_of(r, "SERVER")) == 2)
    continued, fresh = sorted(spans_of(otlp, "SERVER"), key=lambda s: s.trace_id != TRACE_ID)
    assert (continued.trace_id, continued.parent_span_id) == (TRACE_ID, "00f067aa0ba902b7")
    assert fresh.trace_id != TRACE_ID
    assert fresh.parent_span_id is None


class _Captured(requests.adapters.BaseAdapter):
    """A transport that answers every call itself and keeps the headers it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.baggage: list[str] = []

    def send(self, request: Any, **kwargs: Any) -> requests.Response:
        self.baggage.append(request.headers.get("baggage", ""))
        response = requests.Response()
        response.status_code, response._content = 200, b""
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("glob", "url", "gets_cx"),
    [
        ("api.internal:443", "https://api.internal/x", True),  # https's default port
        ("api.internal:443", "http://api.internal/x", False),
        ("api.internal:80", "https://api.internal/x", False),
        ("api.internal:8443", "https://api.internal:8443/x", True),
    ],
)
def test_a_glob_with_a_port_knows_each_schemes_default_port(
    otlp: Receiver,
    instrument: Any,
    serve: Any,
    journeys_file: str,
    glob: str,
    url: str,
    gets_cx: bool,
) -> None:
    # https cannot go through the loopback proxy readably: the call's transport is
    # replaced instead, after cxtrace's Session.send has added the headers.
    env = {"CXTRACE_INTEGRATIONS": ALL, "CXTRACE_JOURNEYS_FILE": journeys_file}
    instrument(otlp, env={**env, "CXTRACE_PROPAGATE_TO": glob})
    captured = _Captured()
    app = Flask("caller")

    @app.get("/checkout")
    def checkout() -> str:
        with requests.Session() as http:
            http.mount("https://", captured)
            http.mount("http://", captured)
            http.get(url, timeout=5)
        return "ok"

    base = serve(app)
    assert requests.get(f"{base}/checkout", headers={"X-Tier": "pro"}, timeout=5).text == "ok"
    (sent,) = captured.baggage
    assert ("cx.segment=pro" in sent.split(",")) is gets_cx, sent
