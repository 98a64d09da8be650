"""Real-user monitoring, the pure part: page tokens, beacon validation, injection, limits.

Owns what design.md section 10 makes a contract and that needs no OpenTelemetry:

::

    server, per HTML page                         browser -> POST /_cxtrace/rum
      PageContext (trace, span, CX, route, ..)      check_request(type, length)
      -> issue_token(page, key)                     -> TokenBucket.take()
         "<payload b64url>.<HMAC b64url>"           -> parse_beacon(body)   schema + ranges
      -> snippet(token, traceparent, nonce)         -> verify_token(cx, key, now)
      -> injection_point(body): before </head>      -> ReplayGuard.admit(page id)
                                                    -> Beacon + PageContext, or a Rejected cause

The token is the server's signed copy of the page's context: HMAC-SHA256 (first 128 bits)
over a domain tag and the exact payload bytes, the same construction as the ``cx.sig`` of
CX baggage (:mod:`cxtrace._core.baggage`) under its own domain tag, so a signature made for
one can never be replayed as the other. Nothing the browser says about segment, journey,
step, route or path is read: those come from the verified token only.

Imports: stdlib only. Nothing here logs; rejections are returned as a cause.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Optional

from cxtrace._core.locks import ForkSafeLock

__all__ = [
    "BEACON_PATH",
    "MAX_BEACON_BYTES",
    "MAX_TOKEN_AGE_S",
    "SCRIPT_PATH",
    "Beacon",
    "PageContext",
    "Rejected",
    "ReplayGuard",
    "SafeHtml",
    "TokenBucket",
    "check_request",
    "checked_nonce",
    "csp_nonce",
    "injection_point",
    "is_injectable_type",
    "issue_token",
    "parse_beacon",
    "perceived_ms",
    "snippet",
    "verify_token",
]

BEACON_PATH: Final = "/_cxtrace/rum"
SCRIPT_PATH: Final = "/_cxtrace/rum.js"
MAX_BEACON_BYTES: Final = 4096
MAX_TOKEN_AGE_S: Final = 600.0  # a beacon leaves at load + a few seconds, or when hidden
MAX_CLOCK_SKEW_S: Final = 60.0  # processes sharing CXTRACE_PROPAGATION_KEY on other hosts
MAX_TOKEN_CHARS: Final = 3072  # leaves ~1 KB of a 4 KB beacon for the measurements
MAX_MS: Final = 3_600_000.0  # an hour: any browser timing beyond it is not a page load
MAX_CLS: Final = 100.0
MAX_ERRORS: Final = 10_000
MAX_PATH_CHARS: Final = 512  # longer paths and routes are left out of the token

_DOMAIN: Final = b"cxtrace/rum/v1\x00"
_SIG_BYTES: Final = 16
_HEX32: Final = re.compile(r"[0-9a-f]{32}")
_HEX16: Final = re.compile(r"[0-9a-f]{16}")
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")
_NONCE: Final = re.compile(r"[A-Za-z0-9+/_=-]{1,256}")
_CSP_NONCE: Final = re.compile(r"'nonce-([A-Za-z0-9+/_=-]{1,256})'")
_HEAD_END: Final = re.compile(rb"</head\s*>", re.IGNORECASE)
_SCRIPT_OPEN: Final = re.compile(rb"<script[\s>/]", re.IGNORECASE)
_SCRIPT_CLOSE: Final = re.compile(rb"</script\s*>", re.IGNORECASE)
_MARKER: Final = SCRIPT_PATH.encode("ascii")
# Charsets in which "</head>" and our ASCII tag are the same bytes as in ASCII.
_ASCII_COMPATIBLE: Final = frozenset(
    {"", "utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1", "windows-1252"}
)


class Rejected(Exception):  # noqa: N818 - a verdict, not an error: "the beacon was rejected"
    """A beacon cxtrace drops; ``cause`` is one of the documented rejection causes."""

    def __init__(self, cause: str, status: int = 400) -> None:
        super().__init__(cause)
        self.cause = cause
        self.status = status


# --------------------------------------------------------------------------- the page token


class PageContext(NamedTuple):
    """What the server knew about the page it served: the signed part of a beacon.

    A NamedTuple, not a frozen dataclass: one is built per HTML page (~0.3 us, not ~2 us).
    """

    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex: the server span, and the page's id for replays
    sampled: bool
    segment: str
    journey: Optional[str]
    step: Optional[str]
    step_index: Optional[int]
    route: Optional[str]
    method: str
    path: Optional[str]
    issued_at_ms: int  # the server's wall clock when it produced the page

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=4)  # one key per process in practice
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC already keyed and fed the domain tag: each page copies it (saves ~1 us)."""
    return hmac.new(key, _DOMAIN, hashlib.sha256)


def _mac(payload: bytes, key: bytes) -> bytes:
    mac = _keyed(key).copy()
    mac.update(payload)
    return mac.digest()[:_SIG_BYTES]


# UTF-8, not \u escapes: a non-ASCII step name costs 2-4 bytes a character, not 6.
_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def issue_token(page: PageContext, key: bytes) -> Optional[str]:
    """The signed token the page carries: ``<payload>.<signature>``, both base64url.

    At most :data:`MAX_TOKEN_CHARS`: a path, then a route, that would make it longer is
    left out (``url.path`` / ``http.route`` then absent on the browser span); None if it
    is still too long (names far beyond what any configuration uses): the page is then
    not tagged rather than sending a beacon the endpoint would refuse.

    >>> page = PageContext("0" * 31 + "1", "0" * 15 + "2", True, "pro", None, None, None,
    ...                    "/", "GET", "/", 1_700_000_000_000)
    >>> verify_token(issue_token(page, b"k"), b"k", now_s=1_700_000_001.0) == page
    True
    """
    fields: dict[str, Any] = {
        "v": 1,
        "t": page.trace_id,
        "s": page.span_id,
        "f": 1 if page.sampled else 0,
        "g": page.segment,
        "m": page.method,
        "a": page.issued_at_ms,
    }
    if page.journey is not None:
        fields["j"] = page.journey
    if page.step is not None:
        fields["n"] = page.step
    if page.step_index is not None:
        fields["i"] = page.step_index
    if page.route is not None and len(page.route) <= MAX_PATH_CHARS:
        fields["r"] = page.route
    if page.path is not None and len(page.path) <= MAX_PATH_CHARS:
        fields["p"] = page.path
    for drop in ("", "p", "r"):
        fields.pop(drop, None)
        payload = _JSON.encode(fields).encode("utf-8", "surrogatepass")
        token = _b64(payload) + "." + _b64(_mac(payload, key))
        if len(token) <= MAX_TOKEN_CHARS:
            return token
    return None


def _opt_str(fields: dict[str, Any], name: str) -> Optional[str]:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected("unsigned")
    return value


def verify_token(token: object, key: bytes, *, now_s: float) -> PageContext:
    """The page's context if ``token`` is one this key signed and it is still fresh.

    Raises :class:`Rejected`: ``unsigned`` (absent or not a token), ``bad_signature``
    (forged or tampered), ``expired`` (older than :data:`MAX_TOKEN_AGE_S`, or from the
    future beyond :data:`MAX_CLOCK_SKEW_S`).
    """
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
        raise Rejected("unsigned")
    payload_text, dot, sig_text = token.partition(".")
    if not dot or not _B64URL.fullmatch(payload_text) or not _B64URL.fullmatch(sig_text):
        raise Rejected("unsigned")
    try:
        payload = _unb64(payload_text)
        sig = _unb64(sig_text)
    except (binascii.Error, ValueError):
        raise Rejected("unsigned") from None
    if not hmac.compare_digest(_mac(payload, key), sig):
        raise Rejected("bad_signature")
    # Signed by us: the payload is our own JSON. Still checked, as a key may be shared
    # with another cxtrace version.
    try:
        fields = json.loads(payload)
    except ValueError:
        raise Rejected("unsigned") from None
    if not isinstance(fields, dict) or fields.get("v") != 1:
        raise Rejected("unsigned")
    trace_id, span_id = fields.get("t"), fields.get("s")
    issued, index = fields.get("a"), fields.get("i")
    if (
        not isinstance(trace_id, str)
        or not _HEX32.fullmatch(trace_id)
        or not isinstance(span_id, str)
        or not _HEX16.fullmatch(span_id)
        or not isinstance(issued, int)
        or (index is not None and not isinstance(index, int))
        or not isinstance(fields.get("g"), str)
        or not isinstance(fields.get("m"), str)
    ):
        raise Rejected("unsigned")
    age_s = now_s - issued / 1000.0
    if age_s > MAX_TOKEN_AGE_S or age_s < -MAX_CLOCK_SKEW_S:
        raise Rejected("expired")
    return PageContext(
        trace_id=trace_id,
        span_id=span_id,
        sampled=fields.get("f") == 1,
        segment=fields["g"],
        journey=_opt_str(fields, "j"),
        step=_opt_str(fields, "n"),
        step_index=index,
        route=_opt_str(fields, "r"),
        method=fields["m"],
        path=_opt_str(fields, "p"),
        issued_at_ms=issued,
    )


# --------------------------------------------------------------------------- the beacon


@dataclass(frozen=True)
class Beacon:
    """The browser's measurements, validated; milliseconds since navigation start."""

    token: str
    ttfb_ms: float
    dom_content_loaded_ms: Optional[float]
    load_ms: Optional[float]
    lcp_ms: Optional[float]
    inp_ms: Optional[float]
    cls: Optional[float]
    js_errors: int
    sent_ms: float  # when the beacon was built; the end of a page that never loaded


# name -> (required, maximum); every other key is a schema error.
_NUMBERS: Final = {
    "ttfb": (True, MAX_MS),
    "dcl": (False, MAX_MS),
    "load": (False, MAX_MS),
    "lcp": (False, MAX_MS),
    "inp": (False, MAX_MS),
    "end": (True, MAX_MS),
    "cls": (False, MAX_CLS),
}
_KEYS: Final = frozenset({"v", "cx", "err", *_NUMBERS})
_MEDIA_TYPES: Final = frozenset({"text/plain", "application/json"})


def check_request(content_type: Optional[str], content_length: Optional[str]) -> int:
    """The declared body length of an acceptable beacon request, else :class:`Rejected`.

    ``navigator.sendBeacon`` with a string sends ``text/plain;charset=UTF-8``; a fetch
    fallback may send ``application/json``. Any other type (forms, multipart) is refused.
    """
    media, _, params = (content_type or "").partition(";")
    if media.strip().lower() not in _MEDIA_TYPES:
        raise Rejected("content_type", 415)
    charset = params.strip().lower()
    if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
        raise Rejected("content_type", 415)
    if content_length is None or not content_length.strip().isdigit():
        raise Rejected("length_required", 411)
    length = int(content_length)
    if length > MAX_BEACON_BYTES:
        raise Rejected("too_large", 413)
    if length == 0:
        raise Rejected("malformed")
    return length


def _no_constants(name: str) -> float:
    raise ValueError(name)  # NaN, Infinity: not JSON, whatever Python's parser allows


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _number(value: object, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected("schema")
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= maximum):
        raise Rejected("schema")
    return number


def parse_beacon(body: bytes) -> Beacon:
    """Strictly parse one beacon body (at most :data:`MAX_BEACON_BYTES`).

    Raises :class:`Rejected`: ``too_large``, ``malformed`` (not UTF-8 JSON, duplicate keys,
    NaN/Infinity), ``schema`` (unknown or missing keys, wrong types, out-of-range numbers,
    implausible order such as a TTFB after the load event).
    """
    if len(body) > MAX_BEACON_BYTES:
        raise Rejected("too_large", 413)
    try:
        data = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_unique_object,
            parse_constant=_no_constants,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Rejected("malformed") from None
    if not isinstance(data, dict) or not data.keys() <= _KEYS or data.get("v") != 1:
        raise Rejected("schema")
    if isinstance(data.get("v"), bool):
        raise Rejected("schema")
    values: dict[str, Optional[float]] = {}
    for name, (required, maximum) in _NUMBERS.items():
        raw = data.get(name)
        if raw is None:
            if required:
                raise Rejected("schema")
            values[name] = None
        else:
            values[name] = _number(raw, maximum)
    errors = data.get("err", 0)
    if isinstance(errors, bool) or not isinstance(errors, int) or not 0 <= errors <= MAX_ERRORS:
        raise Rejected("schema")
    token = data.get("cx")
    if not isinstance(token, str):
        raise Rejected("unsigned")
    ttfb, end = values["ttfb"], values["end"]
    if ttfb is None or end is None:  # required above; for the type checker
        raise Rejected("schema")
    for later in ("dcl", "load"):
        value = values[later]
        if value is not None and value < ttfb:
            raise Rejected("schema")
    if ttfb > end:
        raise Rejected("schema")
    return Beacon(
        token=token,
        ttfb_ms=ttfb,
        dom_content_loaded_ms=values["dcl"],
        load_ms=values["load"],
        lcp_ms=values["lcp"],
        inp_ms=values["inp"],
        cls=values["cls"],
        js_errors=errors,
        sent_ms=end,
    )


def perceived_ms(beacon: Beacon) -> float:
    """The load time the visitor perceived: LCP, else the load event, else when they left."""
    if beacon.lcp_ms is not None:
        return beacon.lcp_ms
    if beacon.load_ms is not None:
        return beacon.load_ms
    return beacon.sent_ms


# --------------------------------------------------------------------------- limits


class TokenBucket:
    """A per-process rate limit: ``rate`` beacons a second, bursts up to ``burst``.

    >>> bucket = TokenBucket(rate=1.0, burst=2)
    >>> [bucket.take(now=0.0) for _ in range(3)], bucket.take(now=1.0)
    ([True, True, False], True)
    """

    __slots__ = ("_last", "_lock", "_tokens", "burst", "rate")

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last: Optional[float] = None
        self._lock = ForkSafeLock()

    def take(self, now: Optional[float] = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._last is not None and now > self._last:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now if self._last is None else max(now, self._last)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


class ReplayGuard:
    """Each page id is accepted once; ids are remembered until their token expires.

    Bounded: at most ``capacity`` ids. Tokens expire after :data:`MAX_TOKEN_AGE_S`, so
    older ids are forgotten safely (their beacons are refused as ``expired``). When full of
    unexpired ids a new one is refused (``busy``) rather than evicting one that could
    then be replayed.

    >>> guard = ReplayGuard(capacity=2)
    >>> guard.admit("a", expires=10.0, now=0.0), guard.admit("a", expires=10.0, now=1.0)
    (True, False)
    """

    __slots__ = ("_lock", "_seen", "capacity")

    def __init__(self, *, capacity: int) -> None:
        self.capacity = capacity
        self._seen: dict[str, float] = {}  # id -> expiry; insertion order ~ expiry order
        self._lock = ForkSafeLock()

    def admit(self, page_id: str, *, expires: float, now: float) -> bool:
        """True the first time ``page_id`` is seen; raises ``Rejected('busy')`` when full."""
        with self._lock:
            seen = self._seen
            if page_id in seen:
                return False
            while seen:
                oldest = next(iter(seen))
                if seen[oldest] > now:
                    break
                del seen[oldest]
            if len(seen) >= self.capacity:
                raise Rejected("busy", 429)
            seen[page_id] = expires
            return True

    def __len__(self) -> int:
        return len(self._seen)


# --------------------------------------------------------------------------- injection


def is_injectable_type(content_type: Optional[str]) -> bool:
    """``text/html`` in an ASCII-compatible charset (or none named)."""
    if not content_type:
        return False
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "text/html":
        return False
    charset = ""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return charset in _ASCII_COMPATIBLE


def csp_nonce(policy: Optional[str]) -> Optional[str]:
    """The nonce a ``Content-Security-Policy`` lets scripts carry, if any.

    From ``script-src-elem``, else ``script-src``, else ``default-src`` (the directive the
    browser applies to a ``<script src>`` element).

    >>> csp_nonce("default-src 'self'; script-src 'nonce-abc123' 'strict-dynamic'")
    'abc123'
    """
    if not policy or "'nonce-" not in policy:
        return None
    directives: dict[str, str] = {}
    for directive in policy.split(";"):
        name, _, value = directive.strip().partition(" ")
        directives.setdefault(name.lower(), value)
    for name in ("script-src-elem", "script-src", "default-src"):
        if name in directives:
            found = _CSP_NONCE.search(directives[name])
            return found.group(1) if found else None
    return None


def snippet(token: str, traceparent: str, nonce: Optional[str] = None) -> str:
    """The tags a page carries: its trace context and the script with its signed token.

    ``<meta name="traceparent">`` is the convention OpenTelemetry's browser
    instrumentations read; the script is always external and same-origin, so a
    ``script-src 'self'`` policy allows it, and it carries the nonce when one is given.
    A nonce with characters a CSP nonce cannot have is left out.
    """
    nonce_attr = f' nonce="{nonce}"' if nonce and _NONCE.fullmatch(nonce) else ""
    return (
        f'<meta name="traceparent" content="{traceparent}">'
        f'<script src="{SCRIPT_PATH}" async data-cx="{token}"{nonce_attr}></script>'
    )


def injection_point(body: bytes) -> Optional[int]:
    """Where the tags go: the offset of the first ``</head>``; None to leave the page as is.

    None when there is no ``</head>``, when the head already loads the script (a template
    used ``rum_snippet()``), or when the first ``</head>`` sits inside an unclosed
    ``<script>`` (it is then text of that script, and a tag there would break it).

    >>> injection_point(b"<html><head><title>t</title></head><body></body></html>")
    28
    """
    found = _HEAD_END.search(body)
    if found is None:
        return None
    at = found.start()
    # Looked for in the head only: a whole 20 KB page costs ~4 us to scan, the head ~0.1 us.
    # A snippet a template put in <body> gets a second one here; the script itself makes
    # sure a page sends one beacon, whatever the number of tags.
    if body.find(_MARKER, 0, at) != -1:
        return None
    if _SCRIPT_OPEN.search(body, 0, at) is not None:
        head = body[:at]
        if len(_SCRIPT_OPEN.findall(head)) != len(_SCRIPT_CLOSE.findall(head)):
            return None
    return at


def checked_nonce(value: object) -> Optional[str]:
    """A caller-given nonce, if it is one (``rum_snippet(nonce=...)``); else None."""
    if isinstance(value, str) and _NONCE.fullmatch(value):
        return value
    return None


class SafeHtml(str):
    """Markup that templates insert as is: ``__html__`` is the protocol Jinja (MarkupSafe)
    and Django (``conditional_escape``) both honour, so no ``|safe`` is needed."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)
