"""CX baggage (design.md section 5): what we send, how it is signed, what inbound we believe."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Callable, Optional
from urllib.parse import unquote, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxtrace._core.baggage import (
    CX_JOURNEY,
    CX_KEYS,
    CX_SEGMENT,
    CX_STEP,
    MAX_BYTES,
    MAX_INBOUND_MEMBERS,
    MAX_MEMBERS,
    SIG_KEY,
    inbound_cx,
    outbound_header,
    sign,
)

KEY = b"test-propagation-key"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CX = {CX_SEGMENT: "free", CX_JOURNEY: "checkout", CX_STEP: "payment"}

quick = settings(max_examples=60, deadline=None)


def _send(
    cx: dict[str, str],
    existing: Optional[str] = None,
    *,
    trace: str = TRACE,
    key: Optional[bytes] = KEY,
) -> str:
    header = outbound_header(existing, cx, trace_id=trace, key=key)
    assert header is not None
    return header


def _believe(
    header: Optional[str],
    *,
    trace: str = TRACE,
    key: Optional[bytes] = KEY,
    trust: bool = False,
) -> Optional[dict[str, str]]:
    return inbound_cx(header, trace_id=trace, key=key, trust_unsigned=trust)


def _members(header: str) -> list[str]:
    return [m.strip(" \t") for m in header.split(",") if m.strip(" \t")]


def _byte_length(header: str) -> int:
    return len(header.encode("utf-8"))


# --------------------------------------------------------------------------- strategies

# Printable text (str.isprintable: no controls, format, private-use, unassigned or separator
# characters other than " "), weighted towards what baggage treats specially.
_awkward = st.sampled_from([*' ,;=%+"\\&?#/', "é", "€", "😀", "%20", "%zz"])
_printable = st.one_of(
    _awkward,
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Co", "Cn", "Zl", "Zp", "Zs")),
)


def _value(limit: int) -> st.SearchStrategy[str]:
    pieces = st.lists(_printable, min_size=1, max_size=limit).map("".join)
    return pieces.map(lambda v: v[:limit]).filter(str.isprintable)


cx_entries = st.fixed_dictionaries(
    {},
    optional={CX_SEGMENT: _value(64), CX_JOURNEY: _value(128), CX_STEP: _value(128)},
).filter(bool)

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_OCTET = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\')
_token = st.text(_TCHAR, min_size=1, max_size=12)
_octets = st.text(_OCTET, max_size=20)
_ows = st.sampled_from(["", " ", "\t "])


@st.composite
def caller_member(draw: st.DrawFn) -> str:
    """A valid W3C list-member that is not ours: key OWS = OWS value *(OWS ; OWS property)."""
    key = draw(_token.filter(lambda k: not k.startswith("cx.")))
    member = key + draw(_ows) + "=" + draw(_ows) + draw(_octets)
    for prop_key, prop_value in draw(st.lists(st.tuples(_token, st.none() | _octets), max_size=2)):
        member += draw(_ows) + ";" + draw(_ows) + prop_key
        if prop_value is not None:
            member += "=" + prop_value
    return member.rstrip(" \t")  # trailing OWS belongs to the separator


caller_members = st.lists(caller_member(), max_size=10)
separators = st.sampled_from([",", ", ", " ,\t", " , "])


# --------------------------------------------------------------------------- round trip


@quick
@given(cx=cx_entries, caller=caller_members, sep=separators, key=st.sampled_from([KEY, None]))
def test_cx_entries_survive_the_round_trip_and_caller_members_are_kept_byte_for_byte(
    cx: dict[str, str], caller: list[str], sep: str, key: Optional[bytes]
) -> None:
    existing = sep.join(caller) or None
    header = _send(cx, existing, key=key)

    members = _members(header)
    assert members[: len(caller)] == caller
    ours = [m.split("=", 1)[0] for m in members[len(caller) :]]
    assert ours == [k for k in CX_KEYS if k in cx] + ([SIG_KEY] if key else [])
    if existing is not None and sep == ",":
        assert header.startswith(existing + ",")
    assert _believe(header, key=key, trust=key is None) == cx


@quick
@given(cx=cx_entries)
def test_values_decode_the_same_under_w3c_and_opentelemetry_python_rules(
    cx: dict[str, str],
) -> None:
    for member in _members(_send(cx, key=None)):
        name, _, raw = member.partition("=")
        assert unquote(raw) == unquote_plus(raw) == cx[name]


def test_values_are_percent_encoded_utf8() -> None:
    header = _send({CX_SEGMENT: "a b+c,d;e=f%g", CX_JOURNEY: "é"}, key=None)
    assert header == "cx.segment=a%20b%2Bc%2Cd%3Be%3Df%25g,cx.journey=%C3%A9"


def test_properties_and_whitespace_around_members_are_tolerated() -> None:
    header = " a=1 ,\tcx.segment = pro%20plan ;tier=1;flag , cx.step=pay\t,"
    assert _believe(header, key=None, trust=True) == {CX_SEGMENT: "pro plan", CX_STEP: "pay"}


def test_a_header_without_cx_entries_yields_none() -> None:
    assert _believe("a=1,b=2", trust=True) is None
    assert _believe(None, trust=True) is None
    assert _believe("", trust=True) is None
    assert _believe(f"{SIG_KEY}={sign({}, TRACE, KEY)}") is None


def test_unknown_cx_keys_are_ignored_on_the_way_in() -> None:
    header = "cx.other=1,cx.segmentation=2," + _send({CX_SEGMENT: "free"})
    assert _believe(header) == {CX_SEGMENT: "free"}


def test_keys_are_case_sensitive_as_in_w3c() -> None:
    assert _believe("CX.SEGMENT=enterprise", trust=True) is None
    assert _send({CX_SEGMENT: "free"}, "CX.Segment=x", key=None) == "CX.Segment=x,cx.segment=free"


# --------------------------------------------------------------------------- signature


def test_the_signature_is_22_base64url_characters() -> None:
    sig = sign(CX, TRACE, KEY)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", sig)
    assert _members(_send(CX))[-1] == f"{SIG_KEY}={sig}"


def test_the_signature_is_truncated_hmac_sha256_over_the_documented_message() -> None:
    # Pinned so that other languages can sign and verify the same bytes.
    message = b"cxtrace/baggage/v1\x00" + TRACE.encode()
    for name in sorted(CX):
        value = CX[name].encode()
        message += len(name).to_bytes(4, "big") + name.encode()
        message += len(value).to_bytes(4, "big") + value
    digest = hmac.new(KEY, message, hashlib.sha256).digest()[:16]
    assert sign(CX, TRACE, KEY) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_the_signature_ignores_entry_order_other_keys_and_trace_id_case() -> None:
    reordered = {CX_STEP: "payment", "user.hash": "abc", CX_SEGMENT: "free", CX_JOURNEY: "checkout"}
    assert sign(reordered, TRACE.upper(), KEY) == sign(CX, TRACE, KEY)


@pytest.mark.parametrize("trace_id", ["", "0" * 31, "0" * 33, "g" * 32, "\u0660" * 32])
def test_signing_needs_a_32_hex_digit_trace_id(trace_id: str) -> None:
    with pytest.raises(ValueError, match="32 hex digits"):
        sign(CX, trace_id, KEY)


_ab = st.text("ab", max_size=4)


@quick
@given(
    a=st.fixed_dictionaries({}, optional=dict.fromkeys(CX_KEYS, _ab)),
    b=st.fixed_dictionaries({}, optional=dict.fromkeys(CX_KEYS, _ab)),
)
def test_different_entry_sets_get_different_signatures(
    a: dict[str, str], b: dict[str, str]
) -> None:
    # A two-letter alphabet makes shifted, split and concatenated values likely.
    assert (sign(a, TRACE, KEY) == sign(b, TRACE, KEY)) == (a == b)


# --------------------------------------------------------------------------- rejections


def test_forged_cx_without_a_signature_is_ignored() -> None:
    assert _believe("cx.segment=enterprise") is None
    assert _believe("cx.segment=enterprise", key=None) is None


def test_a_signature_made_with_another_key_is_rejected() -> None:
    assert _believe(_send(CX, key=b"someone-elses-key")) is None


def test_a_signed_header_replayed_onto_another_trace_is_rejected() -> None:
    header = _send(CX)
    assert _believe(header, trace=TRACE) == CX
    assert _believe(header, trace=OTHER_TRACE) is None


def test_a_signed_header_on_a_malformed_trace_id_is_rejected() -> None:
    assert _believe(_send(CX), trace="not-a-trace-id") is None


def test_promoting_the_segment_under_the_old_signature_is_rejected() -> None:
    header = _send(CX)
    promoted = header.replace("cx.segment=free", "cx.segment=enterprise")
    assert promoted != header
    assert _believe(promoted) is None


def test_reordered_entries_still_verify() -> None:
    members = _members(_send(CX))
    assert _believe(",".join(reversed(members))) == CX
    assert _believe(",".join([members[2], members[3], members[0], members[1]])) == CX


def test_removing_an_entry_breaks_the_signature() -> None:
    members = [m for m in _members(_send(CX)) if not m.startswith(CX_STEP)]
    assert _believe(",".join(members)) is None


def test_truncating_a_value_breaks_the_signature() -> None:
    assert _believe(_send(CX).replace("=checkout", "=check")) is None


def test_moving_text_between_entries_breaks_the_signature() -> None:
    header = _send({CX_JOURNEY: "ab", CX_STEP: "c"})
    moved = header.replace("cx.journey=ab", "cx.journey=a").replace("cx.step=c", "cx.step=bc")
    assert _believe(moved) is None


def _other_char(sig: str, at: int) -> str:
    """``sig`` with the character at ``at`` replaced by another base64url character."""
    return sig[:at] + ("B" if sig[at] == "A" else "A") + sig[at + 1 :]


# How a forger might bend a valid cx.sig; each must fail on its own, so that a prefix or
# startswith compare (under which an empty cx.sig forges anything) has nowhere to hide.
TAMPERED_SIGNATURES = {
    "empty": lambda sig: "",
    "last character dropped": lambda sig: sig[:-1],
    "first half only": lambda sig: sig[: len(sig) // 2],
    "first character off": lambda sig: _other_char(sig, 0),
    "middle character off": lambda sig: _other_char(sig, len(sig) // 2),
    "last character off": lambda sig: _other_char(sig, len(sig) - 1),
    "one character too many": lambda sig: sig + "A",
    "two signatures in a row": lambda sig: sig + sig,
    "signed for another trace": lambda sig: sign(CX, OTHER_TRACE, KEY),
    "signed for other entries": lambda sig: sign({**CX, CX_SEGMENT: "enterprise"}, TRACE, KEY),
}


@pytest.mark.parametrize("trust", [False, True])
@pytest.mark.parametrize("tamper", TAMPERED_SIGNATURES.values(), ids=TAMPERED_SIGNATURES.keys())
def test_only_the_exact_signature_verifies(tamper: Callable[[str], str], trust: bool) -> None:
    # Trusting unsigned baggage changes nothing: a present but wrong cx.sig is a forgery.
    valid = sign(CX, TRACE, KEY)
    forged = tamper(valid)
    assert forged != valid
    entries = [m for m in _members(_send(CX)) if not m.startswith(SIG_KEY)]
    assert _believe(",".join([*entries, f"{SIG_KEY}={valid}"]), trust=trust) == CX
    assert _believe(",".join([*entries, f"{SIG_KEY}={forged}"]), trust=trust) is None


def test_adding_an_entry_breaks_the_signature() -> None:
    header = _send({CX_SEGMENT: "free", CX_JOURNEY: "checkout"})
    assert _believe(header + ",cx.step=payment") is None


@pytest.mark.parametrize("trust", [False, True])
def test_a_duplicated_segment_is_rejected(trust: bool) -> None:
    header = _send(CX)
    assert _believe(header + ",cx.segment=free", trust=trust) is None
    assert _believe("cx.segment=enterprise," + header, trust=trust) is None


def test_a_duplicated_signature_is_rejected() -> None:
    header = _send(CX)
    assert _believe(header + "," + _members(header)[-1]) is None


def test_an_oversized_header_is_rejected() -> None:
    signed = _send(CX)
    pad = "pad=" + "x" * (MAX_BYTES - len(signed) - len(",pad="))
    at_limit = signed + "," + pad
    assert _byte_length(at_limit) == MAX_BYTES
    assert _believe(at_limit) == CX
    assert _believe(at_limit + "x") is None


def test_the_size_limit_counts_utf8_bytes_not_characters() -> None:
    signed = _send(CX)
    pad = "pad=" + "é" * ((MAX_BYTES - len(signed)) // 2)  # 2 bytes per character
    header = signed + "," + pad
    assert len(header) <= MAX_BYTES < _byte_length(header)
    assert _believe(header) is None


def test_too_many_members_are_rejected() -> None:
    signed = _send(CX)
    filler = [f"k{i}=v" for i in range(MAX_INBOUND_MEMBERS - len(_members(signed)))]
    at_limit = ",".join([*filler, signed])
    assert len(_members(at_limit)) == MAX_INBOUND_MEMBERS
    assert _believe(at_limit) == CX
    assert _believe("one=more," + at_limit) is None


def test_empty_members_do_not_count_as_members() -> None:
    assert _believe("," * 500 + _send(CX)) == CX


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("%", id="lone-percent"),
        pytest.param("fr%6", id="short-escape"),
        pytest.param("%zz", id="non-hex-escape"),
        pytest.param("%C3", id="truncated-utf8"),
        pytest.param("%FF%FE", id="invalid-utf8"),
        pytest.param("%ED%A0%80", id="encoded-surrogate"),
        pytest.param("fr ee", id="raw-space"),
        pytest.param('"free"', id="raw-quote"),
        pytest.param("fr\\ee", id="raw-backslash"),
        pytest.param("frée", id="raw-non-ascii"),
    ],
)
def test_malformed_percent_encoding_is_rejected(raw: str) -> None:
    assert _believe(f"cx.segment={raw}", trust=True) is None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("%0A", id="newline"),
        pytest.param("%00", id="nul"),
        pytest.param("%E2%80%8B", id="zero-width-space"),
        pytest.param("a%09b", id="tab"),
    ],
)
def test_non_printable_values_are_rejected(raw: str) -> None:
    assert _believe(f"cx.journey={raw}", trust=True) is None


@pytest.mark.parametrize(("name", "limit"), [(CX_SEGMENT, 64), (CX_JOURNEY, 128), (CX_STEP, 128)])
def test_values_over_their_length_limit_are_rejected(name: str, limit: int) -> None:
    at_limit = "é" * limit  # characters, not bytes: 2 bytes, 6 encoded characters each
    assert _believe(_send({name: at_limit})) == {name: at_limit}
    assert _believe(f"{name}=" + "a" * (limit + 1), trust=True) is None


@pytest.mark.parametrize("member", ["cx.segment=", "cx.segment", "cx.segment;p=1"])
def test_a_cx_key_without_a_value_is_rejected(member: str) -> None:
    assert _believe(f"a=1,{member},cx.step=pay", trust=True) is None


_baggage_ish = st.lists(
    st.sampled_from([*' \t,;=%+"\\', "cx.", "segment", "journey", "step", "sig", "C3", "zz"]),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    header=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
        st.lists(_baggage_ish, max_size=12).map("".join),
    ),
    trace=st.sampled_from([TRACE, "", "xyz"]),
    key=st.sampled_from([KEY, b"", None]),
    trust=st.booleans(),
)
def test_any_text_is_parsed_without_raising(
    header: str, trace: str, key: Optional[bytes], trust: bool
) -> None:
    found = _believe(header, trace=trace, key=key, trust=trust)
    if found is not None:
        assert found
        assert set(found) <= set(CX_KEYS)
        assert all(value.isprintable() and len(value) <= 128 for value in found.values())


def test_a_non_string_header_yields_none() -> None:
    assert _believe(b"cx.segment=free", trust=True) is None  # type: ignore[arg-type]


# --------------------------------------------------------------------------- trust


@pytest.mark.parametrize("key", [KEY, None])
def test_trust_unsigned_accepts_unsigned_cx(key: Optional[bytes]) -> None:
    assert _believe(_send(CX, key=None), key=key, trust=True) == CX


def test_trust_unsigned_still_rejects_a_wrong_signature_when_a_key_is_set() -> None:
    assert _believe(_send(CX, key=b"someone-elses-key"), trust=True) is None
    assert _believe(_send(CX), trace=OTHER_TRACE, trust=True) is None


def test_trust_unsigned_without_a_key_ignores_the_signature() -> None:
    assert _believe(_send(CX, key=b"someone-elses-key"), key=None, trust=True) == CX


def test_an_empty_key_signs_nothing_and_verifies_nothing() -> None:
    assert SIG_KEY not in _send(CX, key=b"")
    forged = f"cx.segment=enterprise,{SIG_KEY}={sign({CX_SEGMENT: 'enterprise'}, TRACE, b'')}"
    assert _believe(forged, key=b"") is None


# --------------------------------------------------------------------------- outbound


@pytest.mark.parametrize("existing", [None, "", "a=1 , b=2;p", " , "])
def test_without_cx_the_callers_header_is_returned_unchanged(existing: Optional[str]) -> None:
    assert outbound_header(existing, {}, trace_id=TRACE, key=KEY) == (existing or None)


def test_without_a_key_no_signature_is_sent() -> None:
    assert _send(CX, key=None) == "cx.segment=free,cx.journey=checkout,cx.step=payment"


def test_with_a_key_but_no_valid_trace_id_no_cx_is_sent() -> None:
    assert outbound_header("a=1", CX, trace_id="", key=KEY) == "a=1"
    assert outbound_header(None, CX, trace_id="0" * 31, key=KEY) is None


@pytest.mark.parametrize(
    "cx",
    [
        pytest.param({CX_SEGMENT: ""}, id="empty"),
        pytest.param({CX_SEGMENT: "x" * 65}, id="segment-too-long"),
        pytest.param({CX_STEP: "x" * 129}, id="step-too-long"),
        pytest.param({CX_JOURNEY: "a\nb"}, id="non-printable"),
        pytest.param({CX_JOURNEY: "a\ud800"}, id="lone-surrogate"),
        pytest.param({"user.hash": "abc", "cx.other": "1"}, id="not-cx-keys"),
    ],
)
def test_invalid_entries_are_not_sent(cx: dict[str, str]) -> None:
    assert outbound_header("a=1", cx, trace_id=TRACE, key=KEY) == "a=1"
    assert _believe(_send({**cx, CX_SEGMENT: "free"}, "a=1")) == {CX_SEGMENT: "free"}


def test_inbound_cx_in_the_callers_header_is_replaced_by_ours() -> None:
    existing = "a=1, cx.segment=enterprise;p=1 ,cx.sig=forged,cx.extra=1,b=2"
    header = _send({CX_SEGMENT: "free"}, existing)
    assert header == f"a=1,b=2,cx.segment=free,{SIG_KEY}={sign({CX_SEGMENT: 'free'}, TRACE, KEY)}"
    assert _believe(header) == {CX_SEGMENT: "free"}


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ("a=1,cx.segment=enterprise,b=2", "a=1,b=2"),
        ("cx.segment=enterprise", None),
        (" cx.step = x ; p ", None),
    ],
)
def test_inbound_cx_is_not_relayed_even_when_we_add_none(
    existing: str, expected: Optional[str]
) -> None:
    assert outbound_header(existing, {}, trace_id=TRACE, key=KEY) == expected


# --------------------------------------------------------------------------- limits


def test_a_caller_header_near_the_byte_limit_gets_no_cx_and_is_returned_unchanged() -> None:
    existing = "a=1, pad=" + "x" * (MAX_BYTES - 40)
    assert _send(CX, existing) is existing


def test_cx_is_added_when_it_fits_exactly() -> None:
    ours = _send(CX)
    existing = "pad=" + "x" * (MAX_BYTES - len(ours) - len("pad=,"))
    assert _byte_length(_send(CX, existing)) == MAX_BYTES
    assert _send(CX, existing + "x") == existing + "x"


def test_a_caller_header_near_the_member_limit_gets_no_cx() -> None:
    room = MAX_MEMBERS - len(CX) - 1  # three entries and the signature
    fits = ",".join(f"k{i}=v" for i in range(room))
    assert len(_members(_send(CX, fits))) == MAX_MEMBERS
    full = fits + ",one=more"
    assert _send(CX, full) is full


def test_a_caller_header_already_over_the_limit_is_returned_as_it_is() -> None:
    existing = "cx.segment=enterprise,pad=" + "x" * MAX_BYTES
    assert _send(CX, existing) is existing


@settings(max_examples=40, deadline=None)
@given(
    cx=cx_entries,
    count=st.integers(0, 80),
    width=st.integers(1, 300),
    key=st.sampled_from([KEY, None]),
)
def test_outbound_stays_within_the_w3c_limits_and_cx_is_all_or_nothing(
    cx: dict[str, str], count: int, width: int, key: Optional[bytes]
) -> None:
    existing = ",".join(f"k{i}={'v' * width}" for i in range(count)) or None
    header = outbound_header(existing, cx, trace_id=TRACE, key=key)
    if existing is not None and _byte_length(existing) > MAX_BYTES:
        assert header is existing
        return
    if header == existing:  # nothing fitted: the caller's header as it was
        return
    assert header is not None
    assert _byte_length(header) <= MAX_BYTES
    assert len(_members(header)) <= MAX_MEMBERS
    assert _believe(header, key=key, trust=key is None) == cx


@settings(max_examples=100, deadline=None)
@given(
    existing=st.none() | st.text(max_size=200) | st.lists(_baggage_ish, max_size=8).map("".join),
    cx=st.dictionaries(st.sampled_from([*CX_KEYS, SIG_KEY, "user.hash"]), st.text(max_size=70)),
    trace=st.sampled_from([TRACE, "", "xyz"]),
    key=st.sampled_from([KEY, b"", None]),
)
def test_outbound_never_raises_and_never_relays_cx(
    existing: Optional[str], cx: dict[str, str], trace: str, key: Optional[bytes]
) -> None:
    header = outbound_header(existing, cx, trace_id=trace, key=key)
    if header is None:
        return
    cx_names = [m.split("=", 1)[0].split(";", 1)[0].strip(" \t") for m in _members(header)]
    ours = [name for name in cx_names if name.startswith("cx.")]
    assert len(ours) == len(set(ours))
    assert set(ours) <= {*CX_KEYS, SIG_KEY}
