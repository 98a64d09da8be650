"""Hostile input: requests no client should send, configuration no operator should write.

Property-based (hypothesis, derandomized so CI runs the same examples every time, with a
bounded number of them) plus a corpus of known-bad cases sent as raw bytes to real
servers (werkzeug for Flask, Django over WSGI and ASGI). Whatever comes in, the app
answers exactly as it does without cxtrace, cxtrace swallows no error of its own (the
``internal_errors`` fixture fails the test otherwise), and what it keeps per process
(segments, steps, counters) and exports (metric series) stays bounded.
"""

from __future__ import annotations

import io
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cxtrace
from cxtrace import ConfigError
from cxtrace._core.config import VARIABLES, load_settings
from cxtrace._core.journeys import MAX_NAMED_STEPS
from flask_app import make_app
from otlp_receiver import Receiver

HOSTILE = settings(
    max_examples=150,
    derandomize=True,  # the same examples on every run: CI never flakes on a new one
    deadline=None,  # timing is asserted explicitly, per request
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
GOOD_TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

# Known-bad header values, per header: what fuzzers and broken proxies actually send.
CORPUS: dict[str, list[str]] = {
    "traceparent": [
        "",
        "00",
        "00-" + "0" * 32 + "-" + "0" * 16 + "-01",  # all-zero ids
        "ff-" + TRACE_ID + "-00f067aa0ba902b7-01",  # forbidden version
        "00-" + TRACE_ID.upper() + "-00F067AA0BA902B7-01",
        GOOD_TRACEPARENT + "-extra",
        GOOD_TRACEPARENT + "," + GOOD_TRACEPARENT,  # a repeated header, joined
        "00-xyz-abc-01",
        "\x00" * 55,
        GOOD_TRACEPARENT + ";" * 8000,
        "Ã©" * 100,  # UTF-8 bytes as a WSGI server hands them over (latin-1)
    ],
    "tracestate": ["a=b," * 1000, "=,=,=", "k" * 300 + "=v", "a=\x00", "\x7f=\x7f", ","],
    "baggage": [
        "cx.segment=enterprise",  # unsigned: must not promote anyone
        "cx.segment=%ZZ",
        "cx.segment=%",
        "cx.segment=" + "%41" * 5000,
        "cx.sig=abc,cx.segment=enterprise",
        ",,,;;;===",
        "k=v;" * 3000,
        "cx.segment=a,cx.segment=b",
        "cx.step=\x01,cx.journey=\x02",
        "cx.segment=Ã©Ã©",
        "a=" + "b" * 9000,
    ],
    "x-tier": [
        "",
        " ",
        "\x00",
        "a" * 10_000,
        "Ã©",
        "other",
        "unknown",
        "pro\tplan",
        "\x1b[31mred",
        "%70%72%6f",
    ],
}

latin1 = st.characters(min_codepoint=0, max_codepoint=255)
header_values = st.one_of(
    st.text(latin1, max_size=200),
    st.sampled_from([v for values in CORPUS.values() for v in values]),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["a", "%", ",", "=", ";", "\xff"]), st.integers(1, 9000)
    ),
)
# Routes of tests/flask_app.py that read nothing they could choke on (no sleep=, status=).
path_prefixes = st.sampled_from(
    ["/products", "/products/", "/cart", "/health", "/", "/segment/", "/user/", "/gone", ""]
)
odd_text = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=120)
methods = st.sampled_from(["GET", "POST", "HEAD", "DELETE", "BREW", "get", "G\x00T", "X" * 100])


@st.composite
def environs(draw: Any) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": draw(methods),
        "SCRIPT_NAME": "",
        "PATH_INFO": draw(path_prefixes) + draw(odd_text),
        "QUERY_STRING": draw(odd_text),
        "SERVER_NAME": "shop.test",
        "SERVER_PORT": draw(st.sampled_from(["80", "", "x", "99999999999"])),
        "SERVER_PROTOCOL": draw(st.sampled_from(["HTTP/1.1", "HTTP/2", "", "junk"])),
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }
    for header in ("traceparent", "tracestate", "baggage", "x-tier", "host", "user-agent"):
        if draw(st.booleans()):
            environ["HTTP_" + header.upper().replace("-", "_")] = draw(header_values)
    return environ


def call(app: Any, environ: dict[str, Any]) -> tuple[str, bytes]:
    seen: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        seen.append(status)

    env = dict(environ)
    env["wsgi.input"] = io.BytesIO(b"")
    body = app(env, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return seen[0], data


def assert_bounded(handle: cxtrace.Instrumentation) -> None:
    recorder = handle._recorder
    assert recorder is not None
    assert len(recorder.segments._names) <= 50
    assert len(recorder.segments._cache) <= 1024
    assert len(recorder.matcher._named) <= MAX_NAMED_STEPS
    assert len(recorder.matcher._route_cache) <= 4096


def assert_series_bounded(otlp: Receiver) -> None:
    segments = {p.attributes.get("cx.segment") for p in otlp.points if p.metric == "cx.requests"}
    assert len(segments - {"other", "unknown"}) <= 50, segments
    assert all(isinstance(s, str) and len(s) <= 64 and s.isprintable() for s in segments)


# --------------------------------------------------------------------------- in-process, volume


# The SDK's id generator uses the random module; hypothesis notes it, harmlessly here.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.parametrize("trust", [False, True], ids=["untrusted", "trusted-baggage"])
def test_hostile_requests_are_answered_as_without_cxtrace(
    otlp: Receiver, instrument: Any, trust: bool
) -> None:
    env = {"CXTRACE_SEGMENT_HEADER": "X-Tier", "CXTRACE_USER_HASH_KEY": "k"}
    if trust:  # more surface: hostile CX baggage is then believed (bounded all the same)
        env["CXTRACE_TRUST_INBOUND_BAGGAGE"] = "true"
    handle = instrument(otlp, env=env)
    app = make_app()
    sent = []

    @HOSTILE
    @given(environ=environs())
    def check(environ: dict[str, Any]) -> None:
        baseline = call(app.wsgi_app, environ)  # Flask.__call__ is what cxtrace wraps
        t0 = time.monotonic()
        answer = call(app, environ)
        assert time.monotonic() - t0 < 2.0
        sent.append(environ["PATH_INFO"])
        assert answer == baseline

    check()

    assert len(sent) >= 100
    print(f"\nhypothesis ({'trusted' if trust else 'untrusted'}): {len(sent)} hostile requests")
    otlp.wait_for(lambda r: sum(s.kind == "SERVER" for s in r.spans) >= len(sent))
    handle.force_flush()
    otlp.wait_for(lambda r: r.metric_total("cx.requests") == len(sent))
    assert_series_bounded(otlp)
    assert_bounded(handle)


def test_ten_thousand_segments_and_steps_stay_within_the_bound(
    otlp: Receiver, instrument: Any
) -> None:
    """10,000 distinct segment headers, and as many step names in trusted CX baggage: at
    most 50 segments (+ other, unknown) and MAX_NAMED_STEPS steps (+ other) are kept."""
    handle = instrument(
        otlp, env={"CXTRACE_SEGMENT_HEADER": "X-Tier", "CXTRACE_TRUST_INBOUND_BAGGAGE": "true"}
    )
    app = make_app()
    for i in range(10_000):
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/health",
            "SERVER_NAME": "shop.test",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "HTTP_X_TIER": f"tenant-{i:05d}-" + "z" * (i % 90),
            "HTTP_BAGGAGE": f"cx.step=step-{i},cx.journey=journey-{i}",
        }
        assert call(app, environ) == ("200 OK", b"ok")
    handle.force_flush()
    otlp.wait_for(lambda r: r.metric_total("cx.requests") == 10_000, timeout=15)
    assert_series_bounded(otlp)
    steps = {p.attributes.get("cx.step") for p in otlp.points if p.metric == "cx.requests"}
    assert len(steps) == MAX_NAMED_STEPS + 1  # and `other`
    assert "other" in steps
    assert_bounded(handle)
    tally = handle._recorder.requests_tally._counts  # type: ignore[union-attr]
    assert len(tally) <= 51 * (MAX_NAMED_STEPS + 1)
    assert otlp.metric_total("cx.requests", **{"cx.step": "other"}) == 10_000 - MAX_NAMED_STEPS


# --------------------------------------------------------------------------- real servers


def raw_request(base: str, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (duplicates, odd bytes); (status, body) of the answer."""
    where = urlsplit(base)
    with socket.create_connection((where.hostname, where.port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def corpus_requests(path: str) -> list[bytes]:
    """Raw requests: each corpus value in its header (twice: a repeated header), plus
    paths and queries with odd bytes and bad percent-encoding."""
    requests = []
    for header, values in CORPUS.items():
        for value in values:
            raw = value.encode("latin-1")[:7000]  # servers refuse longer header lines
            line = header.encode() + b": " + raw + b"\r\n"
            requests.append(
                b"GET "
                + path.encode()
                + b" HTTP/1.1\r\nHost: shop.test\r\n"
                + line * 2
                + b"Connection: close\r\n\r\n"
            )
    for target in (
        path + "?q=%ZZ&token=%&password=%E9%",
        path + "?" + "a=b&" * 2000,
        path + "%00%ff%C3%28",
        path + "\xe9\xff".encode("latin-1").decode("latin-1"),
        path + "?%00=%00&\x7f",
        "//" + path,
    ):
        requests.append(
            b"GET " + target.encode("latin-1") + b" HTTP/1.1\r\nHost: shop.test\r\n"
            b"X-Tier: pro\r\nConnection: close\r\n\r\n"
        )
    return requests


@pytest.fixture
def django_bases() -> Any:
    """Django's test project over WSGI (werkzeug) and ASGI (uvicorn), started on demand."""
    pytest.importorskip("django")
    import django_server  # noqa: PLC0415 - sets Django up once per process

    servers: list[Any] = []

    def start() -> list[str]:
        from werkzeug.serving import make_server  # noqa: PLC0415

        wsgi = make_server("127.0.0.1", 0, django_server.WSGI_APP, threaded=True)
        thread = threading.Thread(target=wsgi.serve_forever, daemon=True)
        thread.start()
        servers.append(("wsgi", wsgi, thread))
        asgi = django_server.Uvicorn(django_server.ASGI_APP)
        port = asgi.start_and_wait()
        servers.append(("asgi", asgi, None))
        return [
            f"http://127.0.0.1:{wsgi.server_port}/products/1/",
            f"http://127.0.0.1:{port}/products/1/",
        ]

    yield start
    for kind, server, thread in servers:
        if kind == "wsgi":
            server.shutdown()
            thread.join(timeout=5)
        else:
            server.stop()


def test_a_corpus_of_bad_requests_gets_the_same_answers_from_real_servers(
    otlp: Receiver, instrument: Any, serve: Any, django_bases: Any
) -> None:
    targets = [serve(make_app()) + "/products/1", *django_bases()]
    cases = [
        (base, request) for base in targets for request in corpus_requests(urlsplit(base).path)
    ]
    before = [raw_request(base, request) for base, request in cases]

    handle = instrument(otlp, env={"CXTRACE_SEGMENT_HEADER": "X-Tier"})
    after = [raw_request(base, request) for base, request in cases]

    assert after == before
    print(f"\ncorpus: {len(cases)} raw requests over {len(targets)} servers, same answers")
    answered = sum(1 for status, _ in after if status)
    otlp.wait_for(lambda r: sum(s.kind == "SERVER" for s in r.spans) >= answered - 10)
    handle.force_flush()
    otlp.wait_for(lambda r: r.metric_total("cx.requests") > 0)
    assert_series_bounded(otlp)
    for span in otlp.spans:
        assert len(str(span.attributes.get("cx.segment"))) <= 64


# --------------------------------------------------------------------------- configuration

variables = st.sampled_from([v.name for v in VARIABLES if v.name != "CXTRACE_JOURNEYS_FILE"])
raw_values = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "",
            " ",
            "-1",
            "0",
            "1e309",
            "nan",
            "-inf",
            "99999999999999999999",
            "true,false",
            ",",
            "=",
            "\x00",
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(name=variables, raw=raw_values)
def test_any_value_of_any_variable_is_accepted_or_a_config_error_naming_it(
    name: str, raw: str
) -> None:
    if "\x00" in raw:
        raw = raw.replace("\x00", "")  # the environment cannot hold NUL
    try:
        load_settings({name: raw})
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{name}="), message
        assert "expected" in message, message
        if next(v.secret for v in VARIABLES if v.name == name):
            assert message.startswith(f"{name}='***'"), message  # a secret never shown


toml_texts = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.lists(
        st.sampled_from(
            [
                "apdex_threshold_ms = 500\n",
                "apdex_threshold_ms = -1\n",
                "apdex_threshold_ms = 1e400\n",
                "[segments]\nheader = 'X-Tier'\n",
                "[segments]\nallowed = ['a', 'a']\n",
                "[[journeys]]\nname = 'p'\nsteps = [{ name = 's', route = '/x' }]\n",
                "[[journeys]]\nname = 'p'\nsteps = [{ name = 's', path = '[' }]\n",
                "[[journeys]]\nname = 'p'\nsteps = [{ name = 's', method = 'YEET' }]\n",
                "[[journeys]]\nname = 'p'\nsteps = [{ name = 's' }, { name = 's' }]\n",
                "[[journeys]]\nname = ''\nsteps = [{ name = 's', route = 5 }]\n",
                "[[journeys]]\nbogus = 1\n",
                "unknown = true\n",
                "[journeys]\n",
                "\ufeff",
            ]
        ),
        max_size=5,
    ).map("".join),
)


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(text=toml_texts)
def test_any_journeys_file_is_accepted_or_a_config_error_naming_it(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("journeys") / "journeys.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_settings({"CXTRACE_JOURNEYS_FILE": str(path)})
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert message.startswith(f"CXTRACE_JOURNEYS_FILE={str(path)!r}: "), message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param(b"\xff\xfe\x00bad", "expected a TOML file", id="binary"),
        pytest.param(
            b"[[journeys]]\nname = 'p'\nsteps = [{ name = 's', route = '/a' }, "
            b"{ name = 's', route = '/b' }]\n",
            "duplicate",
            id="duplicate-step-name",
        ),
        pytest.param(
            b"[[journeys]]\nname = 'p'\nsteps = [{ name = 's', route = '/a', colour = 'red' }]\n",
            "unknown key 'colour'",
            id="unknown-step-key",
        ),
    ],
)
def test_instrument_reports_a_bad_journeys_file_as_one_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: bytes, says: str
) -> None:
    path = tmp_path / "journeys.toml"
    path.write_bytes(text)
    monkeypatch.setenv("CXTRACE_JOURNEYS_FILE", str(path))
    with pytest.raises(ConfigError) as caught:
        cxtrace.instrument()
    assert str(caught.value).startswith(f"CXTRACE_JOURNEYS_FILE={str(path)!r}: ")
    assert says in str(caught.value)
    assert caught.value.__cause__ is None  # no traceback from deep inside
    assert caught.value.__suppress_context__ or caught.value.__context__ is None
