"""CX baggage: the W3C ``baggage`` members cxtrace sends and trusts (design.md section 5).

Owns the wire format of ``cx.segment``, ``cx.journey``, ``cx.step`` and ``cx.visit``, their
``cx.sig`` (HMAC-SHA256 over the entries and the trace id) and the W3C limits. Pure and stdlib only:
it never imports OpenTelemetry; ``_telemetry`` reads and writes the actual headers.

::

    outbound_header(existing, cx)            inbound_cx(header)
      caller's members, byte for byte          > 8192 bytes or > 180 members: None
      minus any cx.* (never relayed)           cx.* members: duplicated, malformed,
      + cx.segment=..,cx.journey=..,           too long, non-printable: None
        cx.step=..,cx.sig=..                   cx.sig verifies, or trust_unsigned
      all CX or none: <= 64 members,             (a present but wrong sig still fails)
        <= 8192 bytes                          -> {"cx.segment": ..., ...}

Nothing here logs or keeps a value: a rejected header is just ``None``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Final, Optional
from urllib.parse import quote, unquote_to_bytes

from cxtrace._core.keys import CX_JOURNEY, CX_SEGMENT, CX_STEP
from cxtrace._core.privacy import MAX_SEGMENT_LENGTH

__all__ = [
    "CX_JOURNEY",
    "CX_KEYS",
    "CX_SEGMENT",
    "CX_STEP",
    "CX_VISIT",
    "MAX_BYTES",
    "MAX_INBOUND_MEMBERS",
    "MAX_MEMBERS",
    "MAX_NAME_LENGTH",
    "SIG_KEY",
    "inbound_cx",
    "outbound_header",
    "sign",
]

# The same keys as the span attributes in _telemetry/semconv.py (_core cannot import it),
# and the visit the request belongs to (design.md section 12; the span says cx.visit.id).
CX_VISIT: Final = "cx.visit"
CX_KEYS: Final = (CX_SEGMENT, CX_JOURNEY, CX_STEP, CX_VISIT)
SIG_KEY: Final = "cx.sig"

MAX_BYTES: Final = 8192  # W3C: the whole header, sent or accepted
MAX_MEMBERS: Final = 64  # W3C: what every hop must propagate; we never send more
MAX_INBOUND_MEMBERS: Final = 180  # W3C grammar's ceiling; more is rejected, not truncated
MAX_NAME_LENGTH: Final = 128  # journey and step names, in characters

_MAX_LENGTH: Final = {
    CX_SEGMENT: MAX_SEGMENT_LENGTH,
    CX_JOURNEY: MAX_NAME_LENGTH,
    CX_STEP: MAX_NAME_LENGTH,
    CX_VISIT: 32,
}
_VISIT_ID: Final = re.compile(r"[0-9a-f]{32}")  # what cxtrace._core.visits.new_visit_id makes
_READ: Final = frozenset((*CX_KEYS, SIG_KEY))
_OWN_PREFIX: Final = "cx."  # every cx.* member of a caller's header is dropped, not relayed
_OWS: Final = " \t"
_SIG_BYTES: Final = 16  # 128 bits of HMAC-SHA256 -> 22 base64url characters

# W3C baggage-octet (%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E) without "%", or a
# complete percent-escape: a CX value is exactly this or the whole CX set is rejected.
_VALUE: Final = re.compile(
    r"(?:[\x21\x23\x24\x26-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]|%[0-9A-Fa-f]{2})*"
)
_TRACE_ID: Final = re.compile(r"[0-9a-fA-F]{32}")

# The signed message is injective: a domain tag, the 32-hex trace id, then for each present
# entry in sorted key order a length-prefixed key and a length-prefixed UTF-8 value. No
# reordering, truncation or concatenation of entries can produce another entry set's bytes.
_DOMAIN: Final = b"cxtrace/baggage/v1\x00"
_SIGNED_ORDER: Final = tuple(sorted(CX_KEYS))
_KEY_PREFIX: Final = {
    name: len(name).to_bytes(4, "big") + name.encode("ascii") for name in _SIGNED_ORDER
}


def sign(entries: Mapping[str, str], trace_id: str, key: bytes) -> str:
    """``cx.sig`` for the CX entries in ``entries`` on trace ``trace_id``.

    The first 128 bits of HMAC-SHA256, base64url without padding (22 characters). Keys other
    than :data:`CX_KEYS` are ignored; the order of ``entries`` is not part of the meaning.
    Raises ``ValueError`` unless ``trace_id`` is 32 hex digits.

    >>> len(sign({"cx.segment": "free"}, "4bf92f3577b34da6a3ce929d0e0e4736", b"k"))
    22
    """
    if _TRACE_ID.fullmatch(trace_id) is None:
        raise ValueError("trace_id: expected 32 hex digits")
    parts = [_DOMAIN, trace_id.lower().encode("ascii")]
    for name in _SIGNED_ORDER:
        value = entries.get(name)
        if value is not None:
            raw = value.encode("utf-8", "surrogatepass")
            parts += (_KEY_PREFIX[name], len(raw).to_bytes(4, "big"), raw)
    digest = hmac.new(key, b"".join(parts), hashlib.sha256).digest()[:_SIG_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _is_valid_value(name: str, value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_LENGTH[name]
        and value.isprintable()  # also rules out lone surrogates (category Cs)
        and (name != CX_VISIT or _VISIT_ID.fullmatch(value) is not None)
    )


def _byte_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _member_key(member: str) -> str:
    return member.split("=", 1)[0].split(";", 1)[0].strip(_OWS)


def outbound_header(
    existing: Optional[str],
    cx: Mapping[str, str],
    *,
    trace_id: str,
    key: Optional[bytes],
) -> Optional[str]:
    """The ``baggage`` header to send: the caller's members, then ours.

    The caller's members are kept byte for byte and in order (whitespace around commas is not
    kept); any ``cx.*`` member already there is dropped, so inbound CX is never relayed. Ours
    are the valid entries of ``cx`` (1 to 64/128 printable characters; others are not sent),
    percent-encoded, then ``cx.sig`` when ``key`` is given. If they do not all fit in 64
    members and 8192 bytes none is added. A caller header already over 8192 bytes is returned
    as it is; ``None`` when nothing is left to send.

    >>> outbound_header("a=1", {"cx.segment": "pro plan"}, trace_id="0" * 32, key=None)
    'a=1,cx.segment=pro%20plan'
    """
    if existing is not None and (len(existing) > MAX_BYTES or _byte_length(existing) > MAX_BYTES):
        return existing  # already invalid: not ours to parse or fix
    caller: list[str] = []
    dropped = False
    if existing:
        for part in existing.split(","):
            member = part.strip(_OWS)
            if not member:
                continue
            if _member_key(member).startswith(_OWN_PREFIX):
                dropped = True
            else:
                caller.append(member)
    kept = ",".join(caller)
    caller_only = (existing or None) if not dropped else (kept or None)

    sent = {name: cx[name] for name in CX_KEYS if _is_valid_value(name, cx.get(name))}
    if not sent:
        return caller_only
    # Everything but unreserved characters is escaped, "+" and " " too, so that decoders
    # following W3C (unquote) and OpenTelemetry Python's (unquote_plus) read the same value.
    ours = [name + "=" + quote(value, safe="") for name, value in sent.items()]
    if key:
        if _TRACE_ID.fullmatch(trace_id) is None:
            return caller_only  # no trace to bind a signature to
        ours.append(SIG_KEY + "=" + sign(sent, trace_id, key))
    added = ",".join(ours)
    size = _byte_length(kept) + len(added) + (1 if kept else 0)
    if size > MAX_BYTES or len(caller) + len(ours) > MAX_MEMBERS:
        return caller_only
    return kept + "," + added if kept else added


def _decode(raw: str) -> Optional[str]:
    if _VALUE.fullmatch(raw) is None:
        return None
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def inbound_cx(
    header: Optional[str],
    *,
    trace_id: str,
    key: Optional[bytes],
    trust_unsigned: bool,
) -> Optional[dict[str, str]]:
    """The CX entries of an inbound ``baggage`` header, if they may be believed; else ``None``.

    Believed when ``key`` is given and ``cx.sig`` verifies for these entries on this trace,
    or when ``trust_unsigned`` (a ``cx.sig`` that is present but wrong is still rejected).
    ``None`` as well for no CX entries, a header over 8192 bytes or 180 members, and any CX
    member that is duplicated, malformed, empty, too long or non-printable. Never raises.

    >>> inbound_cx("cx.segment=pro%20plan;p=1, a=1", trace_id="0" * 32, key=None,
    ...            trust_unsigned=True)
    {'cx.segment': 'pro plan'}
    """
    if not isinstance(header, str) or len(header) > MAX_BYTES:
        return None
    if not header.isascii() and len(header.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return None
    found: dict[str, str] = {}
    members = 0
    for part in header.split(","):
        member = part.strip(_OWS)
        if not member:
            continue
        members += 1
        if members > MAX_INBOUND_MEMBERS:
            return None
        if not member.startswith(_OWN_PREFIX):
            continue
        head = member.split(";", 1)[0]  # properties carry nothing for us
        name, eq, raw = head.partition("=")
        name = name.rstrip(_OWS)
        if name not in _READ:
            continue
        if not eq or name in found:
            return None
        value = _decode(raw.strip(_OWS))
        if value is None:
            return None
        found[name] = value
    sig = found.pop(SIG_KEY, None)
    if not found or not all(_is_valid_value(name, value) for name, value in found.items()):
        return None
    if key and sig is not None:
        if _TRACE_ID.fullmatch(trace_id) is None:
            return None
        expected = sign(found, trace_id, key).encode("ascii")
        return found if hmac.compare_digest(expected, sig.encode("utf-8")) else None
    return found if trust_unsigned else None
