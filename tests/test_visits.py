"""Visits on real servers (design.md section 12): the cookie, the spans, hostile values.

Each test runs on Flask and Django (WSGI and ASGI) on loopback (tests/framework_servers.py)
and reads what a real OTLP receiver decoded: the ``Set-Cookie`` / ``cx-visit`` answers, the
``cx.visit.id`` / ``cx.visit.new`` span attributes, the ``cx.visit*`` counters, and that no
visit value ever reaches the wire. tests/test_visits_shoppers.py counts whole visits
against ground truth; tests/test_visits_host.py holds every response to the bare one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Callable

import pytest
import requests
from flask import Flask, jsonify

import cxtrace
from cxtrace._core.config import load_settings
from cxtrace._core.journeys import Journey, Step
from cxtrace._core.visits import (
    JourneyProgress,
    VisitSchema,
    VisitState,
    decode,
    encode,
    read_cookie,
)
from cxtrace._telemetry.visits import RecorderVisits
from flask_app import make_app
from framework_servers import Served, server  # noqa: F401  (the fixture)
from otlp_receiver import Receiver, SpanRecord

pytest.importorskip("django")

KEY = "visit-key"
JOURNEYS = """\
[segments]
header = "X-Customer-Tier"
allowed = ["free", "pro", "enterprise"]

[[journeys]]
name = "purchase"
steps = [
  { name = "browse",       path = "/sleep*" },
  { name = "view_product", route = "/products/<int:product_id>" },
  { name = "purchase",     route = "/orders", method = "POST", conversion = true },
]
"""
SCHEMA = VisitSchema(
    [
        Journey(
            "purchase",
            steps=[
                Step("browse", path="/sleep*"),
                Step("view_product", route="/products/<int:product_id>"),
                Step("purchase", route="/orders", method="POST", conversion=True),
            ],
        )
    ]
)
COOKIE_ATTRIBUTES = "; HttpOnly; SameSite=Lax; Path=/"


Visiting = Callable[..., cxtrace.Instrumentation]


@pytest.fixture
def visiting(otlp: Receiver, instrument: Any, journeys_file: str) -> Visiting:
    """``visiting(**env)``: cxtrace with visits on, the test's journeys, and ``env``."""
    return lambda **extra: instrument(otlp, env=visit_env(journeys_file, **extra))


def visit_env(journeys_file: str, **extra: str) -> dict[str, str]:
    return {
        "CXTRACE_JOURNEYS_FILE": journeys_file,
        "CXTRACE_VISITS": "cookie",
        "CXTRACE_VISIT_KEY": KEY,
        **extra,
    }


def product(served: Served, n: int = 3) -> str:
    return f"{served.url}/products/{n}" + ("" if served.framework == "flask" else "/")


def browse(served: Served) -> str:
    return served.url + ("/sleep" if served.framework == "flask" else "/sleep/")


def the_cookie(response: requests.Response) -> str:
    """The value of our Set-Cookie, checking its attributes on the way."""
    headers = [v for k, v in response.raw.headers.items() if k.lower() == "set-cookie"]
    ours = [h for h in headers if h.startswith("cx_visit=")]
    assert len(ours) == 1, headers
    value, attributes = ours[0][len("cx_visit=") :].split(";", 1)
    assert ";" + attributes == COOKIE_ATTRIBUTES
    return value


def no_cookie(response: requests.Response) -> bool:
    return "cx_visit=" not in (response.headers.get("Set-Cookie") or "")


def state_of(value: str, *, timeout_s: int = 1800) -> VisitState:
    state = decode(
        value, key=KEY.encode(), schema=SCHEMA, now=int(time.time()), timeout_s=timeout_s
    )
    assert state is not None
    return state


def server_spans(otlp: Receiver, n: int) -> list[SpanRecord]:
    otlp.wait_for(lambda r: len([s for s in r.spans if s.kind == "SERVER"]) >= n)
    spans = sorted((s for s in otlp.spans if s.kind == "SERVER"), key=lambda s: s.start_ns)
    assert len(spans) == n
    return spans


def flushed(otlp: Receiver, handle: cxtrace.Instrumentation, metric: str, total: int) -> None:
    handle.force_flush()
    otlp.wait_for(lambda r: r.metric_total(metric) == total)


# --------------------------------------------------------------------------- the cookie


def test_a_visit_is_one_cookie_one_id_and_the_cookie_is_sent_only_when_it_changes(
    otlp: Receiver,
    server: Served,  # noqa: F811 - the fixture imported above
    visiting: Visiting,
) -> None:
    handle = visiting()
    browser = requests.Session()
    tier = {"X-Customer-Tier": "pro"}

    first = browser.get(product(server, 3), headers=tier)
    again = browser.get(product(server, 4), headers=tier)  # same step: nothing new
    browsed = browser.get(browse(server), headers=tier)  # a new step
    server.finished(3)

    assert [r.status_code for r in (first, again, browsed)] == [200, 200, 200]
    value = the_cookie(first)
    assert first.headers["cx-visit"] == value  # no cookie and no header came: both answers
    assert no_cookie(again)
    assert "cx-visit" not in again.headers
    assert "cx-visit" not in browsed.headers  # it came as a cookie: answered as one
    later = the_cookie(browsed)
    assert state_of(later).visit_id == state_of(value).visit_id
    assert state_of(later).progress == (JourneyProgress(0, 0b011, 0, False),)

    spans = server_spans(otlp, 3)
    visit_id = state_of(value).visit_id
    assert [s.attributes["cx.visit.id"] for s in spans] == [visit_id] * 3
    assert [s.attributes["cx.visit.new"] for s in spans] == [True, False, False]
    flushed(otlp, handle, "cx.visits", 1)
    assert otlp.metric_total("cx.visits", **{"cx.segment": "pro"}) == 1
    assert otlp.metric_total("cx.visit.steps") == 2
    assert otlp.metric_total("cx.visit.steps", **{"cx.step": "view_product"}) == 1
    assert otlp.metric_total("cx.requests") == 3


def test_spans_started_inside_a_request_carry_its_visit(
    otlp: Receiver, instrument: Any, serve: Callable[[Any], str], journeys_file: str
) -> None:
    handle = instrument(otlp, env=visit_env(journeys_file))
    app = make_app()
    app.config["TRACER"] = handle.tracer_provider.get_tracer("tests")
    response = requests.get(serve(app) + "/stream-work")  # the span starts in the body
    visit_id = state_of(the_cookie(response)).visit_id
    otlp.wait_for(lambda r: bool(r.spans_named("render-chunk")))
    chunk = otlp.spans_named("render-chunk")[0]
    assert chunk.attributes["cx.visit.id"] == visit_id
    assert "cx.visit.new" not in chunk.attributes  # the server span's only


def test_a_client_without_cookies_echoes_the_cx_visit_header(
    otlp: Receiver,
    server: Served,  # noqa: F811 - the fixture imported above
    visiting: Visiting,
) -> None:
    handle = visiting()
    first = requests.get(product(server))
    echo = first.headers["cx-visit"]
    second = requests.get(browse(server), headers={"cx-visit": echo})
    third = requests.get(browse(server), headers={"cx-visit": second.headers["cx-visit"]})
    server.finished(3)

    assert no_cookie(second)  # it came as a header: answered as one
    assert no_cookie(third)
    assert "cx-visit" not in third.headers  # nothing changed
    assert state_of(second.headers["cx-visit"]).visit_id == state_of(echo).visit_id
    spans = server_spans(otlp, 3)
    assert len({s.attributes["cx.visit.id"] for s in spans}) == 1
    flushed(otlp, handle, "cx.visits", 1)
    assert otlp.metric_total("cx.visit.steps") == 2


def test_without_cookie_or_header_each_request_is_a_visit_of_its_own(
    otlp: Receiver,
    server: Served,  # noqa: F811 - the fixture imported above
    visiting: Visiting,
) -> None:
    handle = visiting()
    for _ in range(3):
        assert requests.get(product(server)).status_code == 200
    server.finished(3)
    spans = server_spans(otlp, 3)
    assert len({s.attributes["cx.visit.id"] for s in spans}) == 3
    assert {s.attributes["cx.visit.new"] for s in spans} == {True}
    flushed(otlp, handle, "cx.visits", 3)
    assert otlp.metric_total("cx.visit.steps", **{"cx.step": "view_product"}) == 3


def test_a_customer_back_after_the_timeout_starts_a_new_visit(
    otlp: Receiver,
    server: Served,  # noqa: F811 - the fixture imported above
    visiting: Visiting,
) -> None:
    handle = visiting(CXTRACE_VISIT_TIMEOUT_S="60")
    now = int(time.time())
    key = KEY.encode()
    reached = (JourneyProgress(0, 0b010, 0, False),)  # view_product
    idle = {  # seconds since last-seen -> still the same visit
        50: True,  # within the timeout
        75: False,  # past it
    }
    ids = {}
    for seconds in idle:
        held = VisitState(f"{seconds:032x}", now - 100, now - seconds, SCHEMA.fingerprint, reached)
        value = encode(held, key=key, schema=SCHEMA)
        response = requests.get(product(server), cookies={"cx_visit": value})
        ids[seconds] = state_of(the_cookie(response), timeout_s=60).visit_id
    server.finished(2)

    assert ids[50] == f"{50:032x}"
    assert ids[75] != f"{75:032x}"
    spans = server_spans(otlp, 2)
    assert [s.attributes["cx.visit.new"] for s in spans] == [False, True]
    flushed(otlp, handle, "cx.visits", 1)
    assert otlp.metric_total("cx.visit.steps") == 1  # only the new visit reached a step anew


def test_an_unchanged_visit_is_sent_again_once_its_copy_is_older_than_the_refresh(
    otlp: Receiver,
    instrument: Any,
    server: Served,  # noqa: F811 - the fixture imported above
    journeys_file: str,
) -> None:
    instrument(otlp, env=visit_env(journeys_file))  # 30 minutes: refreshed after 5
    now = int(time.time())
    reached = (JourneyProgress(0, 0b010, 0, False),)
    answers = {}
    for age in (240, 360):  # under and over 300 s: the boundary itself is core-tested
        held = VisitState("ab" * 16, now - 400, now - age, SCHEMA.fingerprint, reached)
        value = encode(held, key=KEY.encode(), schema=SCHEMA)
        answers[age] = requests.get(product(server), cookies={"cx_visit": value})
    server.finished(2)
    assert no_cookie(answers[240])
    refreshed = state_of(the_cookie(answers[360]))
    assert refreshed.visit_id == "ab" * 16
    assert refreshed.last_seen >= now


@pytest.mark.parametrize(
    ("timeout_s", "refresh_s"), [(1800, 300), (3600, 300), (600, 100), (6, 1), (5, 0)]
)
def test_the_refresh_is_five_minutes_or_a_sixth_of_a_shorter_timeout(
    timeout_s: int, refresh_s: int
) -> None:
    settings = load_settings(
        {
            "CXTRACE_VISITS": "cookie",
            "CXTRACE_VISIT_KEY": "k",
            "CXTRACE_VISIT_TIMEOUT_S": str(timeout_s),
        }
    )
    assert RecorderVisits(settings).refresh_s == refresh_s


# --------------------------------------------------------------------------- hostile input


def _hostile() -> dict[str, str]:
    now = int(time.time())
    claims = VisitState(
        "cd" * 16,
        now - 100,
        now - 10,
        SCHEMA.fingerprint,
        (JourneyProgress(0, 0b111, 0b010, True),),  # reached all, frustrated, converted
    )
    valid = encode(claims, key=KEY.encode(), schema=SCHEMA)
    expired = encode(
        claims._replace(started=now - 5000, last_seen=now - 4000), key=KEY.encode(), schema=SCHEMA
    )
    payload_at = 10
    return {
        "another key": encode(claims, key=b"someone else's key", schema=SCHEMA),
        "tampered": valid[:payload_at]
        + ("B" if valid[payload_at] == "A" else "A")
        + valid[payload_at + 1 :],
        "truncated": valid[:-5],
        "expired": expired,
        "oversized": valid + "A" * 1100,
        "wrong version": "2" + valid[1:],
        "garbage": "hello; world",
        "empty": "",
    }


HOSTILE = _hostile()


@pytest.mark.parametrize("carrier", ["cookie", "cx-visit"])
def test_hostile_values_start_a_new_visit_and_earn_nothing(
    otlp: Receiver,
    server: Served,  # noqa: F811 - the fixture imported above
    visiting: Visiting,
    carrier: str,
) -> None:
    handle = visiting()
    baseline = requests.get(product(server))
    answers = {}
    for name, value in HOSTILE.items():
        if carrier == "cookie":
            answers[name] = requests.get(product(server), headers={"Cookie": f"cx_visit={value}"})
        else:
            answers[name] = requests.get(product(server), headers={"cx-visit": value})
    server.finished(1 + len(HOSTILE))

    for name, answer in answers.items():
        assert (answer.status_code, answer.content) == (200, baseline.content), name
        if carrier == "cookie":
            fresh = the_cookie(answer)
            assert "cx-visit" not in answer.headers, name
        else:
            fresh = answer.headers["cx-visit"]
            assert no_cookie(answer), name
        assert state_of(fresh).visit_id != "cd" * 16, name
    spans = server_spans(otlp, 1 + len(HOSTILE))
    assert {s.attributes["cx.visit.new"] for s in spans} == {True}
    assert "cd" * 16 not in {s.attributes["cx.visit.id"] for s in spans}
    # Each a new visit reaching view_product: none of the forged claims counted.
    n = 1 + len(HOSTILE)
    flushed(otlp, handle, "cx.visits", n)
    assert otlp.metric_total("cx.visit.steps", **{"cx.step": "view_product"}) == n
    assert otlp.metric_total("cx.visit.steps") == n
    assert otlp.metric_total("cx.visit.frustrations") == 0
    assert otlp.metric_total("cx.visit.conversions") == 0


def test_the_valid_twin_of_the_hostile_values_is_trusted(
    otlp: Receiver,
    server: Served,  # noqa: F811 - the fixture imported above
    visiting: Visiting,
) -> None:
    # The positive side: the same claims, signed with our key and current, continue the visit.
    handle = visiting()
    now = int(time.time())
    claims = VisitState(
        "cd" * 16, now - 100, now - 10, SCHEMA.fingerprint, (JourneyProgress(0, 0b001, 0, False),)
    )
    value = encode(claims, key=KEY.encode(), schema=SCHEMA)
    answer = requests.get(product(server), headers={"Cookie": f"theme=dark; cx_visit={value}"})
    server.finished(1)
    assert state_of(the_cookie(answer)).visit_id == "cd" * 16
    assert server_spans(otlp, 1)[0].attributes["cx.visit.new"] is False
    flushed(otlp, handle, "cx.visit.steps", 1)
    assert otlp.metric_total("cx.visits") == 0


# --------------------------------------------------------------------------- visits off


def test_with_visits_off_a_visit_cookie_is_ignored_and_nothing_is_added(
    otlp: Receiver,
    instrument: Any,
    server: Served,  # noqa: F811 - the fixture imported above
    journeys_file: str,
) -> None:
    handle = instrument(otlp, env={"CXTRACE_JOURNEYS_FILE": journeys_file})
    value = encode(
        VisitState("ef" * 16, int(time.time()) - 5, int(time.time()), SCHEMA.fingerprint),
        key=KEY.encode(),
        schema=SCHEMA,
    )
    answer = requests.get(product(server), cookies={"cx_visit": value}, headers={"cx-visit": value})
    server.finished(1)
    assert no_cookie(answer)
    assert "cx-visit" not in answer.headers
    span = server_spans(otlp, 1)[0]
    assert not [k for k in span.attributes if k.startswith("cx.visit")]
    flushed(otlp, handle, "cx.requests", 1)
    assert not [p for p in otlp.points if p.metric.startswith("cx.visit")]


# --------------------------------------------------------------------------- downstream


def make_storefront(backend: str) -> Flask:
    app = Flask("storefront")

    @app.get("/products/<int:product_id>")
    def product_page(product_id: int) -> Any:
        answer = requests.get(f"{backend}/products/{product_id}/", timeout=5)
        return jsonify(
            text=answer.text,
            set_cookie=answer.headers.get("Set-Cookie"),
            cx_visit=answer.headers.get("cx-visit"),
        )

    return app


def test_a_backend_tags_the_customers_visit_and_counts_nothing(
    otlp: Receiver, instrument: Any, serve: Callable[[Any], str], journeys_file: str
) -> None:
    import django_server  # noqa: PLC0415 - sets Django up

    handle = instrument(
        otlp,
        env=visit_env(
            journeys_file,
            CXTRACE_INTEGRATIONS="flask,django,requests",
            CXTRACE_PROPAGATION_KEY="propagation-key",
        ),
    )
    backend = serve(django_server.WSGI_APP)  # visits on here too: it must still count nothing
    shop = serve(make_storefront(backend))
    browser = requests.Session()

    page = browser.get(f"{shop}/products/5", headers={"X-Customer-Tier": "enterprise"})

    assert page.json() == {"text": "product 5", "set_cookie": None, "cx_visit": None}
    visit_id = state_of(the_cookie(page)).visit_id
    otlp.wait_for(lambda r: len([s for s in r.spans if s.kind == "SERVER"]) == 2)
    servers = {s.attributes["url.path"]: s for s in otlp.spans if s.kind == "SERVER"}
    backend_span = servers["/products/5/"]
    assert backend_span.attributes["cx.visit.id"] == visit_id
    assert backend_span.attributes["cx.visit.new"] is False
    assert servers["/products/5"].attributes["cx.visit.new"] is True
    flushed(otlp, handle, "cx.requests", 2)  # the test's own call is a client span only
    assert otlp.metric_total("cx.visits") == 1
    assert otlp.metric_total("cx.visit.steps") == 1  # the storefront's view_product only


def test_without_a_propagation_key_the_visit_id_does_not_leave_the_service(
    otlp: Receiver, instrument: Any, serve: Callable[[Any], str], journeys_file: str
) -> None:
    instrument(otlp, env=visit_env(journeys_file, CXTRACE_INTEGRATIONS="flask,requests"))
    seen: list[Any] = []

    def backend(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ.get("HTTP_BAGGAGE"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"product 5"]

    shop = serve(make_storefront(serve(backend).rstrip("/")))
    page = requests.get(f"{shop}/products/5", headers={"X-Customer-Tier": "pro"})
    assert page.json()["text"] == "product 5"
    assert seen == ["cx.segment=pro,cx.journey=purchase,cx.step=view_product"]


def test_a_forged_visit_in_unsigned_baggage_is_not_believed(
    otlp: Receiver,
    server: Served,  # noqa: F811 - the fixture imported above
    visiting: Visiting,
) -> None:
    visiting(CXTRACE_PROPAGATION_KEY="propagation-key")
    answer = requests.get(product(server), headers={"baggage": f"cx.visit={'aa' * 16}"})
    server.finished(1)
    span = server_spans(otlp, 1)[0]
    assert span.attributes["cx.visit.id"] != "aa" * 16
    assert span.attributes["cx.visit.new"] is True
    assert state_of(the_cookie(answer)).visit_id == span.attributes["cx.visit.id"]


# --------------------------------------------------------------------------- privacy


def test_no_visit_value_reaches_the_wire(
    otlp: Receiver,
    server: Served,  # noqa: F811 - the fixture imported above
    visiting: Visiting,
) -> None:
    handle = visiting()
    browser = requests.Session()
    values = []
    for url in (browse(server), product(server, 8), browse(server)):
        answer = browser.get(url, headers={"X-Customer-Tier": "free"})
        if "cx_visit=" in (answer.headers.get("Set-Cookie") or ""):
            values.append(the_cookie(answer))
    server.finished(3)
    flushed(otlp, handle, "cx.requests", 3)
    server_spans(otlp, 3)
    assert len(values) == 2  # a new visit, then a new step
    wire = b"".join(raw for _, raw in otlp.payloads)
    for value in values:
        _, payload, signature = value.split(".")
        for part in (value, payload, signature, payload[:16], signature[:16]):
            assert part.encode() not in wire
        assert state_of(value).visit_id.encode() in wire  # the random id is there, by design
    assert read_cookie(f"cx_visit={values[0]}", "cx_visit") == values[0]


# --------------------------------------------------------------------------- cxtrace config


def test_cxtrace_config_shows_the_visit_settings_with_the_key_hidden() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CXTRACE_", "OTEL_"))},
        "CXTRACE_VISITS": "cookie",
        "CXTRACE_VISIT_KEY": "very-secret-visit-key",
        "CXTRACE_VISIT_TIMEOUT_S": "900",
    }
    shown = subprocess.run(
        [sys.executable, "-m", "cxtrace", "config"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines() if line.strip()}
    assert rows["CXTRACE_VISITS"][0] == "cookie"
    assert rows["CXTRACE_VISIT_KEY"][0] == "***"
    assert rows["CXTRACE_VISIT_TIMEOUT_S"][0] == "900"
    assert rows["CXTRACE_VISIT_COOKIE"][0] == "cx_visit"
    assert "very-secret-visit-key" not in shown.stdout + shown.stderr

    del env["CXTRACE_VISIT_KEY"]
    refused = subprocess.run(
        [sys.executable, "-m", "cxtrace", "config"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "CXTRACE_VISITS='cookie': expected CXTRACE_VISIT_KEY" in refused.stderr
