"""The pure RUM core: page tokens, beacon validation, limits, injection (no clocks, no I/O)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from cxtrace._core.rum import (
    MAX_BEACON_BYTES,
    MAX_TOKEN_AGE_S,
    MAX_TOKEN_CHARS,
    PageContext,
    Rejected,
    ReplayGuard,
    SafeHtml,
    TokenBucket,
    check_request,
    checked_nonce,
    csp_nonce,
    injection_point,
    is_injectable_type,
    issue_token,
    parse_beacon,
    perceived_ms,
    snippet,
    verify_token,
)

KEY = b"test-key"
ISSUED_MS = 1_700_000_000_000
NOW_S = ISSUED_MS / 1000 + 5
PAGE = PageContext(
    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    span_id="00f067aa0ba902b7",
    sampled=True,
    segment="pro",
    journey="purchase",
    step="checkout",
    step_index=4,
    route="/checkout",
    method="GET",
    path="/checkout",
    issued_at_ms=ISSUED_MS,
)


def cause(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(Rejected) as info:
        fn(*args, **kwargs)
    return info.value.cause


def edit_payload(token: str, **changes: object) -> str:
    """The token with its payload edited and its signature kept (a forgery)."""
    payload, sig = token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields.update(changes)
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + sig


# --------------------------------------------------------------------------- tokens


def test_a_token_round_trips_every_field() -> None:
    assert verify_token(issue_token(PAGE, KEY), KEY, now_s=NOW_S) == PAGE
    bare = PAGE._replace(journey=None, step=None, step_index=None, route=None, path=None)
    assert verify_token(issue_token(bare, KEY), KEY, now_s=NOW_S) == bare


def test_a_token_leaves_out_a_path_or_route_too_long_to_carry() -> None:
    long_names = PAGE._replace(path="/" + "a" * 600, route="/" + "r" * 600)
    verified = verify_token(issue_token(long_names, KEY), KEY, now_s=NOW_S)
    assert (verified.path, verified.route) == (None, None)
    kept = PAGE._replace(path="/" + "a" * 511, route="/" + "r" * 511)
    assert verify_token(issue_token(kept, KEY), KEY, now_s=NOW_S) == kept


def test_a_token_stays_small_enough_for_a_beacon_or_is_not_issued() -> None:
    widest = PAGE._replace(
        path="/" + "a" * 511,
        route="/" + "r" * 511,
        segment="\U0001f600" * 64,  # 4 UTF-8 bytes each
        journey="\U0001f600" * 128,
        step="\U0001f600" * 128,
    )
    token = issue_token(widest, KEY)
    assert token is not None
    assert len(token) <= MAX_TOKEN_CHARS
    verified = verify_token(token, KEY, now_s=NOW_S)
    assert verified.step == widest.step
    assert verified.path is None  # dropped to fit
    body = json.dumps({"v": 1, "cx": token, "ttfb": 1e6, "dcl": 1e6, "load": 1e6, "lcp": 1e6,
                       "inp": 1e6, "cls": 99.9999, "err": 10000, "end": 1e6})  # fmt: skip
    assert len(body) <= MAX_BEACON_BYTES
    assert issue_token(widest._replace(step="x" * 5000), KEY) is None


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, "unsigned"),
        ("", "unsigned"),
        (42, "unsigned"),
        ("no-dot-here", "unsigned"),
        ("a.b.c", "unsigned"),
        ("x" * MAX_TOKEN_CHARS + ".y", "unsigned"),
        ("!!!.???", "unsigned"),
        (edit_payload(issue_token(PAGE, KEY), g="enterprise"), "bad_signature"),
        (edit_payload(issue_token(PAGE, KEY), s="0000000000000001"), "bad_signature"),
        (issue_token(PAGE, b"another process's key"), "bad_signature"),
        (issue_token(PAGE, KEY)[:-2] + "AA", "bad_signature"),
    ],
)
def test_forged_tampered_and_unsigned_tokens_are_refused(token: object, expected: str) -> None:
    assert cause(verify_token, token, KEY, now_s=NOW_S) == expected


def test_tokens_expire_and_cannot_come_from_the_future() -> None:
    token = issue_token(PAGE, KEY)
    issued_s = ISSUED_MS / 1000
    assert verify_token(token, KEY, now_s=issued_s + MAX_TOKEN_AGE_S - 1) == PAGE
    assert cause(verify_token, token, KEY, now_s=issued_s + MAX_TOKEN_AGE_S + 1) == "expired"
    assert verify_token(token, KEY, now_s=issued_s - 59) == PAGE  # small clock skew
    assert cause(verify_token, token, KEY, now_s=issued_s - 61) == "expired"


def test_a_signed_payload_of_the_wrong_shape_is_still_refused() -> None:
    from cxtrace._core import rum  # noqa: PLC0415

    payload = json.dumps({"v": 1, "t": "zz", "s": "00f067aa0ba902b7", "a": 1}).encode()
    token = rum._b64(payload) + "." + rum._b64(rum._mac(payload, KEY))
    assert cause(verify_token, token, KEY, now_s=NOW_S) == "unsigned"


# --------------------------------------------------------------------------- beacons


def beacon(**fields: object) -> bytes:
    body: dict[str, object] = {"v": 1, "cx": "t.s", "ttfb": 12, "end": 4100, "err": 0}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def test_a_complete_beacon_parses() -> None:
    parsed = parse_beacon(beacon(dcl=40.5, load=80, lcp=60, inp=24, cls=0.0123, err=2, end=4100))
    assert (parsed.ttfb_ms, parsed.dom_content_loaded_ms, parsed.load_ms) == (12, 40.5, 80)
    assert (parsed.lcp_ms, parsed.inp_ms, parsed.cls, parsed.js_errors) == (60, 24, 0.0123, 2)
    assert parsed.token == "t.s"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "malformed"),
        (b"{", "malformed"),
        (b"\xff\xfe{}", "malformed"),
        (b'{"v":1,"v":1,"cx":"a","ttfb":1,"end":2}', "malformed"),  # duplicate key
        (b'{"v":1,"cx":"a","ttfb":NaN,"end":2}', "malformed"),
        (b'{"v":1,"cx":"a","ttfb":Infinity,"end":2}', "malformed"),
        (b"[1,2]", "schema"),
        (beacon(v=2), "schema"),
        (beacon(v=True), "schema"),
        (beacon(url="/secret?token=1"), "schema"),  # unknown key: never a URL
        (beacon(ttfb=None), "schema"),
        (beacon(end=None), "schema"),
        (beacon(ttfb="12"), "schema"),
        (beacon(ttfb=True), "schema"),
        (beacon(ttfb=-1), "schema"),
        (beacon(lcp=3_600_001), "schema"),
        (beacon(cls=101), "schema"),
        (beacon(err=-1), "schema"),
        (beacon(err=1.5), "schema"),
        (beacon(err=10_001), "schema"),
        (beacon(ttfb=100, load=50), "schema"),  # first byte after the load event
        (beacon(ttfb=100, dcl=50), "schema"),
        (beacon(ttfb=5000, end=4000), "schema"),
        (beacon(cx=None), "unsigned"),
        (beacon(cx=["a"]), "unsigned"),
        (b" " * (MAX_BEACON_BYTES + 1), "too_large"),
    ],
)
def test_beacons_are_validated_strictly(body: bytes, expected: str) -> None:
    assert cause(parse_beacon, body) == expected


@pytest.mark.parametrize(
    ("content_type", "length", "expected"),
    [
        ("text/plain;charset=UTF-8", "100", 100),
        ("application/json", "4096", 4096),
        ("text/plain", "5", 5),
        ("application/x-www-form-urlencoded", "5", "content_type"),
        ("multipart/form-data; boundary=x", "5", "content_type"),
        ("text/plain;charset=utf-16", "5", "content_type"),
        (None, "5", "content_type"),
        ("text/plain", None, "length_required"),
        ("text/plain", "-1", "length_required"),
        ("text/plain", "4097", "too_large"),
        ("text/plain", "0", "malformed"),
    ],
)
def test_requests_are_checked_before_the_body_is_read(
    content_type: str | None, length: str | None, expected: object
) -> None:
    if isinstance(expected, int):
        assert check_request(content_type, length) == expected
    else:
        assert cause(check_request, content_type, length) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"lcp": 900, "load": 1200}, 900),  # LCP when the browser has it
        ({"load": 1200}, 1200),  # else the load event
        ({"end": 700}, 700),  # else when the beacon left (the page never loaded)
    ],
)
def test_perceived_load_time_is_lcp_else_load(fields: dict[str, int], expected: float) -> None:
    assert perceived_ms(parse_beacon(beacon(**fields))) == expected


# --------------------------------------------------------------------------- limits


def test_the_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=4.0, burst=3)  # times below are exact binary fractions
    assert [bucket.take(now=100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(now=100.125) is False  # half a token
    assert bucket.take(now=100.25) is True
    assert [bucket.take(now=200.0) for _ in range(4)] == [True, True, True, False]  # capped
    assert bucket.take(now=150.0) is False  # a clock going back refills nothing


def test_the_replay_guard_accepts_each_page_once_and_forgets_expired_ones() -> None:
    guard = ReplayGuard(capacity=2)
    assert guard.admit("a", expires=10.0, now=0.0) is True
    assert guard.admit("a", expires=10.0, now=1.0) is False
    assert guard.admit("b", expires=11.0, now=1.0) is True
    assert cause(guard.admit, "c", expires=12.0, now=2.0) == "busy"  # full: refuse, not evict
    assert guard.admit("c", expires=20.0, now=10.5) is True  # "a" expired and was dropped
    assert len(guard) == 2


# --------------------------------------------------------------------------- injection

PAGE_HTML = b"<!doctype html><html><head><title>t</title></head><body>x</body></html>"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (PAGE_HTML, PAGE_HTML.index(b"</head>")),
        (b"<HTML><HEAD></HEAD></HTML>", 12),
        (b"<html><head></head ></html>", 12),
        (b"<html><body>no head end</body></html>", None),
        (b"", None),
        (b'<head><script src="/_cxtrace/rum.js"></script></head>', None),  # already there
        (b'<head><script>var s = "</head>";</script></head>', None),  # inside a script
        (b"<head><script src=a.js></script><script>1</script></head>", 50),
    ],
)
def test_the_tags_go_before_the_first_real_head_end(body: bytes, expected: int | None) -> None:
    assert injection_point(body) == expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/html", True),
        ("text/html; charset=utf-8", True),
        ('TEXT/HTML; Charset="UTF-8"', True),
        ("text/html; charset=iso-8859-1", True),
        ("text/html; charset=utf-16", False),
        ("application/json", False),
        ("application/xhtml+xml", False),
        ("text/plain", False),
        (None, False),
        ("", False),
    ],
)
def test_only_ascii_compatible_html_is_injected(content_type: str | None, expected: bool) -> None:
    assert is_injectable_type(content_type) is expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, None),
        ("default-src 'self'", None),
        ("script-src 'nonce-r4nd0m' 'strict-dynamic'", "r4nd0m"),
        ("default-src 'nonce-abc'", "abc"),
        ("default-src 'nonce-abc'; script-src 'self'", None),  # script-src wins, no nonce
        ("script-src-elem 'nonce-e1'; script-src 'nonce-s1'", "e1"),
        ("style-src 'nonce-style'; script-src 'self'", None),
        ("script-src 'nonce-bad\"quote'", None),
    ],
)
def test_the_nonce_comes_from_the_policy_that_governs_script_elements(
    policy: str | None, expected: str | None
) -> None:
    assert csp_nonce(policy) == expected


def test_the_snippet_carries_the_trace_the_token_and_only_a_valid_nonce() -> None:
    tag = snippet("tok.sig", PAGE.traceparent, "n0nce")
    assert tag == (
        '<meta name="traceparent" content="00-4bf92f3577b34da6a3ce929d0e0e4736-'
        '00f067aa0ba902b7-01"><script src="/_cxtrace/rum.js" async data-cx="tok.sig" '
        'nonce="n0nce"></script>'
    )
    assert "nonce" not in snippet("tok.sig", PAGE.traceparent, '"><script>alert(1)</script>')
    assert checked_nonce("abc+/=") == "abc+/="
    assert checked_nonce('a"b') is None
    assert checked_nonce(3) is None


def test_safe_html_is_inserted_unescaped_by_jinja_and_django() -> None:
    markup = pytest.importorskip("markupsafe")
    html = SafeHtml("<meta>")
    assert str(markup.escape(html)) == "<meta>"
    from django.utils.html import conditional_escape  # noqa: PLC0415

    assert conditional_escape(html) == "<meta>"
