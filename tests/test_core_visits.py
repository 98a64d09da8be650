"""Visits, the pure part (design.md section 12): the signed state, its strict decoder, one
request's transition and its events, when to send it back, the cookie headers. No clocks:
every time is an explicit integer second."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Sequence
from typing import Any, Optional, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxtrace._core import visits
from cxtrace._core.apdex import (
    FRUSTRATED_ERROR,
    FRUSTRATED_SLOW,
    SATISFIED,
    TOLERATING,
    Outcome,
)
from cxtrace._core.errors import ConfigError
from cxtrace._core.journeys import Journey, Step
from cxtrace._core.visits import (
    JOURNEY_CONVERTED,
    MAX_CLOCK_SKEW_S,
    MAX_JOURNEYS,
    MAX_STEPS,
    MAX_VALUE_BYTES,
    REFRESH_S,
    STEP_CONVERTED,
    STEP_FRUSTRATED,
    STEP_REACHED,
    VISIT_STARTED,
    JourneyProgress,
    VisitEvent,
    VisitSchema,
    VisitState,
    decode,
    encode,
    format_cookie,
    is_cookie_name,
    journeys_fingerprint,
    new_visit_id,
    observe,
    read_cookie,
    should_send,
)
from design_journeys import PURCHASE

KEY = b"test-visit-key"
OTHER_KEY = b"another deployment's visit key"
T0 = 1_700_000_000  # the visit's first request, in Unix seconds
TIMEOUT = 1800
VID = "4bf92f3577b34da6a3ce929d0e0e4736"
DOMAIN = b"cxtrace/visit\x00"  # as documented in the module: part of the wire contract

SUPPORT = Journey("support", steps=[Step("faq"), Step("contact", conversion=True)])
JOURNEYS = (PURCHASE, SUPPORT)
SCHEMA = VisitSchema(JOURNEYS)
FP = SCHEMA.fingerprint

quick = settings(max_examples=200, deadline=None)


def state(
    *progress: JourneyProgress,
    started: int = T0,
    last_seen: int = T0 + 60,
    fingerprint: bytes = FP,
) -> VisitState:
    return VisitState(VID, started, last_seen, fingerprint, progress)


BUSY = state(
    JourneyProgress(0, 0b11001, 0b01000, True),  # browse, checkout (frustrated), purchase
    JourneyProgress(1, 0b01, 0, False),  # faq
)


def b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def sign_text(body: bytes, key: bytes = KEY) -> str:
    """``body`` + "." + its signature, made with the stdlib's own HMAC (not the module's)."""
    sig = b64(hmac.new(key, DOMAIN + body, hashlib.sha256).digest())
    return (body + b"." + sig).decode("ascii")


def forge(raw: bytes, *, key: bytes = KEY, version: bytes = b"1") -> str:
    """A correctly signed value for an arbitrary payload: what a bug or another release could
    sign with our key, so that the payload checks are tested on their own."""
    return sign_text(version + b"." + b64(raw), key)


def head(
    started: int = T0, last_seen: int = T0 + 60, fingerprint: bytes = FP, visit_id: str = VID
) -> bytes:
    return bytes.fromhex(visit_id) + struct.pack(">II", started, last_seen) + fingerprint


def decoded(value: Any, *, now: int = T0 + 120, schema: VisitSchema = SCHEMA) -> Any:
    return decode(value, key=KEY, schema=schema, now=now, timeout_s=TIMEOUT)


# --------------------------------------------------------------------------- wire format


def test_the_wire_format_is_the_documented_one() -> None:
    # The worked example of the report and docs; a change here needs a new VERSION.
    value = encode(BUSY, key=b"example-visit-key", schema=SCHEMA)
    assert value == (
        "1.S_kvNXezTaajzpKdDg5HNmVT8QBlU_E8Kt-vKXEubdQAARkIAQABAA"
        ".qJ1Nl34NvQDWr5ABchm67issR1H1IN24Ry0k3m46EHA"
    )
    version, payload, sig = value.split(".")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert version == "1"
    assert raw[:16].hex() == VID
    assert struct.unpack(">II", raw[16:24]) == (T0, T0 + 60)
    assert raw[24:32] == FP == bytes.fromhex("2adfaf29712e6dd4")
    # journey 0: converted, reached 0b11001, frustrated 0b01000; journey 1: reached faq.
    assert raw[32:] == bytes([0, 1, 0b11001, 0b01000, 1, 0, 0b01, 0])
    assert sig == sign_text(f"1.{payload}".encode(), b"example-visit-key").split(".")[2]
    assert len(value) == 100


@pytest.mark.parametrize("key", [b"k", b"x" * 32, b"y" * 64, b"z" * 65, bytes(range(256)) * 2])
def test_the_signature_is_full_hmac_sha256_over_domain_version_and_payload(key: bytes) -> None:
    # Keys up to and beyond SHA-256's 64-byte block, where HMAC hashes the key first.
    raw = head() + bytes([0, 1, 0b11001, 0b01000, 1, 0, 0b01, 0])
    assert encode(BUSY, key=key, schema=SCHEMA) == forge(raw, key=key)
    assert len(encode(BUSY, key=key, schema=SCHEMA).split(".")[2]) == 43


def test_an_empty_visit_is_89_characters_of_cookie_safe_text() -> None:
    value = encode(state(), key=KEY, schema=SCHEMA)
    assert len(value) == 89
    cookie_octets = {chr(c) for c in (0x21, *range(0x23, 0x2C), *range(0x2D, 0x3B))}
    cookie_octets |= {chr(c) for c in (*range(0x3C, 0x5C), *range(0x5D, 0x7F))}
    assert set(value) <= cookie_octets  # RFC 6265 cookie-octet, no quoting needed


ROUND_TRIPS = {
    "new visit": state(last_seen=T0),
    "one step": state(JourneyProgress(0, 0b1, 0, False)),
    "busy": BUSY,
    "frustrated everywhere": state(JourneyProgress(0, 0b11111, 0b11111, True)),
    "second journey only": state(JourneyProgress(1, 0b11, 0b10, True)),
    "times at the 32-bit edge": state(started=0, last_seen=0xFFFFFFFF),
}


@pytest.mark.parametrize("visit", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_every_state_round_trips_as_text_and_as_bytes(visit: VisitState) -> None:
    value = encode(visit, key=KEY, schema=SCHEMA)
    now = max(visit.last_seen, T0)
    assert decoded(value, now=now) == visit
    assert decoded(value.encode("ascii"), now=now) == visit


def test_wide_journeys_round_trip_every_bit() -> None:
    wide = VisitSchema([Journey("wide", steps=[Step(f"s{i}") for i in range(MAX_STEPS)])])
    full = (1 << MAX_STEPS) - 1
    visit = state(JourneyProgress(0, full, full ^ 1, True), fingerprint=wide.fingerprint)
    value = encode(visit, key=KEY, schema=wide)
    assert decoded(value, schema=wide) == visit


# --------------------------------------------------------------------------- rejection


def _off(value: str, at: int) -> str:
    """``value`` with the character at ``at`` replaced by another base64url character."""
    return value[:at] + ("B" if value[at] == "A" else "A") + value[at + 1 :]


VALID = encode(BUSY, key=KEY, schema=SCHEMA)
SIG_AT = len(VALID) - 43

# Each must fail on its own: a prefix, startswith or truncated compare has nowhere to hide.
NOT_OURS: dict[str, object] = {
    "missing": None,
    "empty": "",
    "empty bytes": b"",
    "not text": 42,
    "a list": [VALID],
    "a bytearray": bytearray(VALID.encode()),
    "only the version": "1.",
    "garbage": "hello world",
    "no signature": VALID[:SIG_AT],
    "no signature, dot kept": VALID[: SIG_AT - 1] + ".",
    "last character dropped": VALID[:-1],
    "first character dropped": VALID[1:],
    "half the signature": VALID[: SIG_AT + 21],
    "one character too many": VALID + "A",
    "two signatures in a row": VALID + VALID[SIG_AT - 1 :],
    "signature first character off": _off(VALID, SIG_AT),
    "signature middle character off": _off(VALID, SIG_AT + 21),
    "signature last character off": _off(VALID, len(VALID) - 1),
    "payload character off": _off(VALID, 10),
    "payload last character off": _off(VALID, SIG_AT - 2),
    "case swapped": VALID.swapcase(),
    "space before": " " + VALID,
    "space after": VALID + " ",
    "padding added": VALID + "=",
    "quoted": f'"{VALID}"',
    "separator dropped": VALID[: SIG_AT - 1] + VALID[SIG_AT:],
    "another key": encode(BUSY, key=OTHER_KEY, schema=SCHEMA),
    "version 2 under the old signature": "2" + VALID[1:],
    "not ASCII": VALID[:-1] + "\u00e9",
    "not ASCII bytes": VALID.encode()[:-1] + b"\xff",
    "NUL inside": VALID[:20] + "\x00" + VALID[21:],
    "oversized": VALID + "A" * (MAX_VALUE_BYTES + 1 - len(VALID)),
    # Signed with our key, so only the payload checks stand between it and a trusted state.
    "signed, version 2": forge(head(), version=b"2"),
    "signed, version 10": forge(head(), version=b"10"),
    "signed, bad base64": sign_text(b"1." + b"@" * 44),
    "signed, base64 of impossible length": sign_text(b"1." + b64(head()) + b"AA"),
    "signed, payload too short": forge(head()[:-1]),
    "signed, empty payload": forge(b""),
    "signed, converted flag 2": forge(head() + bytes([0, 2, 0b1, 0])),
    "signed, unknown journey": forge(head() + bytes([2, 0, 0b1, 0])),
    "signed, journey 255": forge(head() + bytes([255, 0, 0b1, 0])),
    "signed, journey twice": forge(head() + bytes([0, 0, 0b1, 0, 0, 0, 0b10, 0])),
    "signed, journeys out of order": forge(head() + bytes([1, 0, 0b1, 0, 0, 0, 0b1, 0])),
    "signed, nothing reached": forge(head() + bytes([0, 0, 0, 0])),
    "signed, converted without a step": forge(head() + bytes([0, 1, 0, 0])),
    "signed, step beyond the journey": forge(head() + bytes([0, 0, 0b100000, 0])),
    "signed, step beyond the second journey": forge(head() + bytes([1, 0, 0b100, 0])),
    "signed, frustrated where not reached": forge(head() + bytes([0, 0, 0b1, 0b10])),
    "signed, entry cut short": forge(head() + bytes([0, 0, 0b1])),
    "signed, a journey byte alone": forge(head() + bytes([0])),
    "signed, no masks": forge(head() + bytes([0, 0])),
    "signed, trailing byte": forge(head() + bytes([0, 0, 0b1, 0, 7])),
    "signed, last seen before start": forge(head(started=T0, last_seen=T0 - 1)),
}


@pytest.mark.parametrize("value", NOT_OURS.values(), ids=NOT_OURS.keys())
def test_anything_encode_did_not_produce_under_this_key_starts_a_new_visit(value: object) -> None:
    assert decoded(VALID) == BUSY  # the untouched value is fine: each case alone is the cause
    assert decoded(value) is None


def test_an_empty_key_verifies_nothing() -> None:
    value = sign_text(b"1." + b64(head()), key=b"")
    assert decode(value, key=b"", schema=SCHEMA, now=T0 + 120, timeout_s=TIMEOUT) is None
    with pytest.raises(ValueError, match="key"):
        encode(BUSY, key=b"", schema=SCHEMA)


@pytest.mark.parametrize(
    ("idle_s", "alive"),
    [(0, True), (TIMEOUT - 1, True), (TIMEOUT, True), (TIMEOUT + 1, False), (10 * TIMEOUT, False)],
)
def test_a_visit_expires_one_second_after_timeout_s_of_inactivity(idle_s: int, alive: bool) -> None:
    value = encode(BUSY, key=KEY, schema=SCHEMA)
    assert (decoded(value, now=BUSY.last_seen + idle_s) == BUSY) is alive


def test_the_timeout_is_the_callers_setting() -> None:
    value = encode(BUSY, key=KEY, schema=SCHEMA)
    now = BUSY.last_seen + 61
    assert decode(value, key=KEY, schema=SCHEMA, now=now, timeout_s=61) == BUSY
    assert decode(value, key=KEY, schema=SCHEMA, now=now, timeout_s=60) is None


@pytest.mark.parametrize(
    ("ahead_s", "accepted"),
    [
        (0, True),
        (MAX_CLOCK_SKEW_S - 1, True),
        (MAX_CLOCK_SKEW_S, True),
        (MAX_CLOCK_SKEW_S + 1, False),
    ],
)
def test_a_last_seen_ahead_of_our_clock_is_accepted_only_within_the_skew(
    ahead_s: int, accepted: bool
) -> None:
    # Another host whose clock runs ahead signed it: fine within a minute, not beyond.
    value = encode(BUSY, key=KEY, schema=SCHEMA)
    assert (decoded(value, now=BUSY.last_seen - ahead_s) == BUSY) is accepted


def _count_signatures(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    original = visits._signature

    def counting(key: bytes, body: bytes) -> bytes:
        calls.append(body)
        return original(key, body)

    monkeypatch.setattr(visits, "_signature", counting)
    return calls


@pytest.mark.parametrize("as_bytes", [False, True])
@pytest.mark.parametrize(
    ("size", "verified"), [(MAX_VALUE_BYTES, True), (MAX_VALUE_BYTES + 1, False)]
)
def test_a_value_over_1_kb_is_rejected_before_any_decoding_work(
    monkeypatch: pytest.MonkeyPatch, size: int, verified: bool, as_bytes: bool
) -> None:
    calls = _count_signatures(monkeypatch)
    # The shape of a value, of exactly `size` characters: only the size can stop it early.
    text = "1." + "A" * (size - 2 - 44) + "." + "A" * 43
    assert len(text) == size
    assert decoded(text.encode() if as_bytes else text) is None
    assert len(calls) == (1 if verified else 0)


def test_the_largest_state_a_visit_reaches_fits_in_1_kb_and_decodes() -> None:
    many = VisitSchema(
        [Journey(f"j{i}", steps=[Step(f"s{s}") for s in range(8)]) for i in range(200)]
    )
    visit: Optional[VisitState] = None
    for journey in range(200):
        for step in range(8):
            visit, _, _ = observe(
                visit,
                schema=many,
                now=T0,
                journey=journey,
                step=step,
                outcome=FRUSTRATED_SLOW,
                converted=True,
            )
    assert visit is not None
    value = encode(visit, key=KEY, schema=many)
    assert len(value) <= MAX_VALUE_BYTES
    assert len(value) == 1022  # 175 journeys, every step reached, frustrated, converted
    assert decoded(value, schema=many) == visit


# --------------------------------------------------------------------------- journeys config


def _shape(*journeys: tuple[str, Sequence[str]]) -> list[Journey]:
    return [Journey(name, steps=[Step(s) for s in steps]) for name, steps in journeys]


BASE_SHAPE = (("purchase", ("browse", "checkout")), ("support", ("faq",)))
OTHER_SHAPES = {
    "journey renamed": (("buy", ("browse", "checkout")), ("support", ("faq",))),
    "step renamed": (("purchase", ("browse", "pay")), ("support", ("faq",))),
    "steps reordered": (("purchase", ("checkout", "browse")), ("support", ("faq",))),
    "journeys reordered": (("support", ("faq",)), ("purchase", ("browse", "checkout"))),
    "step added": (("purchase", ("browse", "checkout", "pay")), ("support", ("faq",))),
    "journey removed": (("purchase", ("browse", "checkout")),),
    "step moved to the next journey": (("purchase", ("browse",)), ("support", ("checkout", "faq"))),
    "name text moved": (("purchase", ("browse", "checkout")), ("suppor", ("tfaq",))),
}


@pytest.mark.parametrize("shape", OTHER_SHAPES.values(), ids=OTHER_SHAPES.keys())
def test_the_fingerprint_changes_with_any_journey_or_step_name_or_order(
    shape: tuple[tuple[str, Sequence[str]], ...],
) -> None:
    assert journeys_fingerprint(_shape(*shape)) != journeys_fingerprint(_shape(*BASE_SHAPE))


def test_the_fingerprint_ignores_what_does_not_move_progress() -> None:
    plain = _shape(*BASE_SHAPE)
    dressed = [
        Journey(
            "purchase",
            steps=[
                Step("browse", path="/p/*"),
                Step(
                    "checkout",
                    conversion=True,
                    apdex_threshold_ms=900,
                    route="/checkout",
                    method="POST",
                ),
            ],
        ),
        Journey("support", steps=[Step("faq", route="/faq")]),
    ]
    assert journeys_fingerprint(plain) == journeys_fingerprint(dressed)
    assert len(journeys_fingerprint(plain)) == 8


def test_a_changed_journeys_file_restarts_progress_but_keeps_the_visit() -> None:
    value = encode(BUSY, key=KEY, schema=SCHEMA)
    renamed = VisitSchema(
        [
            Journey(
                "purchase",
                steps=[
                    Step("browse"),
                    Step("view"),
                    Step("cart"),
                    Step("checkout"),
                    Step("purchase"),
                ],
            ),
            SUPPORT,
        ]
    )
    received = decoded(value, schema=renamed)
    assert received == BUSY._replace(progress=())  # its old fingerprint, none of its progress
    visit, events, changed = observe(
        received, schema=renamed, now=T0 + 120, journey=0, step=0, outcome=SATISFIED
    )
    # The same customer (no new visit), who reaches browse again under the new configuration.
    assert events == (VisitEvent(STEP_REACHED, 0, 0),)
    assert changed
    assert (visit.visit_id, visit.started, visit.fingerprint) == (VID, T0, renamed.fingerprint)
    assert visit.progress == (JourneyProgress(0, 0b1, 0, False),)
    assert decoded(encode(visit, key=KEY, schema=renamed), schema=renamed) == visit


def test_a_changed_journeys_file_sends_the_restarted_state_even_without_a_step() -> None:
    received = decoded(encode(BUSY, key=KEY, schema=SCHEMA), schema=VisitSchema([SUPPORT]))
    visit, events, changed = observe(
        received, schema=VisitSchema([SUPPORT]), now=T0 + 120, outcome=SATISFIED
    )
    assert (events, changed, visit.progress) == ((), True, ())


def test_a_changed_journeys_file_does_not_revive_an_expired_or_forged_visit() -> None:
    other = VisitSchema([SUPPORT])
    assert (
        decoded(encode(BUSY, key=KEY, schema=SCHEMA), schema=other, now=T0 + 60 + TIMEOUT + 1)
        is None
    )
    assert decoded(encode(BUSY, key=OTHER_KEY, schema=SCHEMA), schema=other) is None


def test_encode_refuses_a_state_of_another_configuration_or_malformed() -> None:
    with pytest.raises(ValueError, match="journeys configuration"):
        encode(state(fingerprint=b"\x00" * 8), key=KEY, schema=SCHEMA)
    with pytest.raises(ValueError, match="visit_id"):
        encode(state()._replace(visit_id="12" * 15 + "  "), key=KEY, schema=SCHEMA)
    with pytest.raises(ValueError, match="times"):
        encode(state(started=T0, last_seen=T0 - 1), key=KEY, schema=SCHEMA)


BAD_PROGRESS = {
    "step beyond the journey": (JourneyProgress(0, 1 << 5, 0, False),),
    "nothing reached": (JourneyProgress(0, 0, 0, False),),
    "frustrated where not reached": (JourneyProgress(0, 0b1, 0b10, False),),
    "negative mask": (JourneyProgress(0, -1, 0, False),),
    "unknown journey": (JourneyProgress(2, 0b1, 0, False),),
    "negative journey": (JourneyProgress(-1, 0b1, 0, False),),
    "journey twice": (JourneyProgress(0, 0b1, 0, False), JourneyProgress(0, 0b10, 0, False)),
    "out of order": (JourneyProgress(1, 0b1, 0, False), JourneyProgress(0, 0b1, 0, False)),
}


@pytest.mark.parametrize("progress", BAD_PROGRESS.values(), ids=BAD_PROGRESS.keys())
def test_encode_refuses_progress_decode_would_refuse(progress: tuple[JourneyProgress, ...]) -> None:
    with pytest.raises(ValueError, match="progress"):
        encode(state(*progress), key=KEY, schema=SCHEMA)


def test_encode_refuses_a_state_over_1_kb() -> None:
    many = VisitSchema([Journey(f"j{i}", steps=[Step("s")]) for i in range(200)])
    crowded = state(
        *(JourneyProgress(j, 1, 0, False) for j in range(200)), fingerprint=many.fingerprint
    )
    with pytest.raises(ValueError, match="over 1024"):
        encode(crowded, key=KEY, schema=many)


def test_the_schema_locates_steps_by_journey_name_and_1_based_index() -> None:
    assert SCHEMA.locate("purchase", 1) == (0, 0)
    assert SCHEMA.locate("purchase", 5) == (0, 4)
    assert SCHEMA.locate("support", 2) == (1, 1)
    for journey, index in [
        ("purchase", 0),
        ("purchase", 6),
        ("nope", 1),
        (None, 1),
        ("support", None),
    ]:
        assert SCHEMA.locate(journey, index) is None
    assert SCHEMA.journey_names == ("purchase", "support")
    assert SCHEMA.step_names[0][3] == "checkout"


def test_the_schema_refuses_more_journeys_or_steps_than_a_visit_can_follow() -> None:
    VisitSchema([Journey(f"j{i}", steps=[Step("s")]) for i in range(MAX_JOURNEYS)])
    VisitSchema([Journey("long", steps=[Step(f"s{i}") for i in range(MAX_STEPS)])])
    with pytest.raises(ConfigError, match="257 journeys; visits follow at most 256"):
        VisitSchema([Journey(f"j{i}", steps=[Step("s")]) for i in range(MAX_JOURNEYS + 1)])
    with pytest.raises(ConfigError, match="journey 'long': 257 steps"):
        VisitSchema([Journey("long", steps=[Step(f"s{i}") for i in range(MAX_STEPS + 1)])])


# --------------------------------------------------------------------------- one request


class Hit:
    """One request of a visit, written by name: ``Hit("checkout", FRUSTRATED_SLOW)``."""

    def __init__(
        self, step: Optional[str] = None, outcome: Outcome = SATISFIED, *, converted: bool = False
    ) -> None:
        self.step, self.outcome, self.converted = step, outcome, converted

    def position(self) -> tuple[Optional[int], Optional[int]]:
        if self.step is None:
            return None, None
        for j, steps in enumerate(SCHEMA.step_names):
            if self.step in steps:
                return j, steps.index(self.step)
        raise AssertionError(self.step)


def walk(
    *hits: Hit, schema: VisitSchema = SCHEMA
) -> list[tuple[VisitState, tuple[Any, ...], bool]]:
    """Every request in turn, one second apart: (state, events by name, changed) after each."""
    visit: Optional[VisitState] = None
    seen = []
    for second, hit in enumerate(hits):
        journey, step = hit.position()
        visit, events, changed = observe(
            visit,
            schema=schema,
            now=T0 + second,
            journey=journey,
            step=step,
            outcome=hit.outcome,
            converted=hit.converted,
            new_id=lambda: VID,
        )
        seen.append((visit, tuple(_named(e) for e in events), changed))
    return seen


def _named(event: VisitEvent) -> tuple[Any, ...]:
    journey = step = None
    if event.journey is not None:
        journey = SCHEMA.journey_names[event.journey]
        if event.step is not None:
            step = SCHEMA.step_names[event.journey][event.step]
    if event.kind == VISIT_STARTED:
        return ("started",)
    if event.kind == STEP_REACHED:
        return ("reached", step)
    if event.kind == STEP_FRUSTRATED:
        return ("frustrated", step, event.reason)
    if event.kind == JOURNEY_CONVERTED:
        return ("converted", journey)
    assert event.kind == STEP_CONVERTED
    return ("converted step", step, "frustrated" if event.frustrated else "not frustrated")


def _converted_purchase(*steps: tuple[str, bool]) -> tuple[Any, ...]:
    return (
        ("converted", "purchase"),
        *(("converted step", s, "frustrated" if f else "not frustrated") for s, f in steps),
    )


# The requests of one visit, and the events (and `changed`) of its *last* request.
EVENT_RULES: dict[str, tuple[list[Hit], tuple[Any, ...], bool]] = {
    "a first request starts a visit": ([Hit()], (("started",),), True),
    "a first request at a step starts the visit and reaches the step": (
        [Hit("browse")],
        (("started",), ("reached", "browse")),
        True,
    ),
    "a step is reached the first time only": ([Hit("browse"), Hit("browse")], (), False),
    "a request at no step changes nothing": ([Hit("browse"), Hit()], (), False),
    "a new step is reached": ([Hit("browse"), Hit("checkout")], (("reached", "checkout"),), True),
    "a tolerating request reaches its step but is not frustrated there": (
        [Hit("browse"), Hit("checkout", TOLERATING)],
        (("reached", "checkout"),),
        True,
    ),
    "a tolerating request at a reached step changes nothing": (
        [Hit("checkout"), Hit("checkout", TOLERATING)],
        (),
        False,
    ),
    "a frustrated request reaches its step and is frustrated there": (
        [Hit("browse"), Hit("checkout", FRUSTRATED_SLOW)],
        (("reached", "checkout"), ("frustrated", "checkout", "slow")),
        True,
    ),
    "frustration at a step already reached counts with its reason": (
        [Hit("checkout"), Hit("checkout", FRUSTRATED_ERROR)],
        (("frustrated", "checkout", "error"),),
        True,
    ),
    "a step is frustrated the first time only, whatever the reason": (
        [Hit("checkout", FRUSTRATED_SLOW), Hit("checkout", FRUSTRATED_ERROR)],
        (),
        False,
    ),
    "frustrated elsewhere is a new frustration": (
        [Hit("checkout", FRUSTRATED_SLOW), Hit("browse", FRUSTRATED_SLOW)],
        (("reached", "browse"), ("frustrated", "browse", "slow")),
        True,
    ),
    "a conversion reports every step reached, its own request's step included": (
        [Hit("browse"), Hit("add_to_cart"), Hit("purchase", converted=True)],
        (
            ("reached", "purchase"),
            *_converted_purchase(("browse", False), ("add_to_cart", False), ("purchase", False)),
        ),
        True,
    ),
    "frustrated then converts anyway": (
        [
            Hit("browse"),
            Hit("checkout", FRUSTRATED_SLOW),
            Hit("checkout"),
            Hit("purchase", converted=True),
        ],
        (
            ("reached", "purchase"),
            *_converted_purchase(("browse", False), ("checkout", True), ("purchase", False)),
        ),
        True,
    ),
    "a conversion on the first request": (
        [Hit("purchase", converted=True)],
        (("started",), ("reached", "purchase"), *_converted_purchase(("purchase", False))),
        True,
    ),
    "a slow but successful purchase is frustrated there and converts": (
        [Hit("browse"), Hit("purchase", FRUSTRATED_SLOW, converted=True)],
        (
            ("reached", "purchase"),
            ("frustrated", "purchase", "slow"),
            *_converted_purchase(("browse", False), ("purchase", True)),
        ),
        True,
    ),
    "a failed purchase is no conversion": (
        [Hit("browse"), Hit("purchase", FRUSTRATED_ERROR)],
        (("reached", "purchase"), ("frustrated", "purchase", "error")),
        True,
    ),
    "the retry after a failed purchase converts, frustrated there": (
        [Hit("browse"), Hit("purchase", FRUSTRATED_ERROR), Hit("purchase", converted=True)],
        _converted_purchase(("browse", False), ("purchase", True)),
        True,
    ),
    "a second conversion counts nothing": (
        [Hit("browse"), Hit("purchase", converted=True), Hit("purchase", converted=True)],
        (),
        False,
    ),
    "a second conversion after new steps counts nothing": (
        [Hit("purchase", converted=True), Hit("checkout"), Hit("purchase", converted=True)],
        (),
        False,
    ),
    "steps after the conversion are reached, not converted": (
        [Hit("purchase", converted=True), Hit("checkout", FRUSTRATED_SLOW)],
        (("reached", "checkout"), ("frustrated", "checkout", "slow")),
        True,
    ),
    "a conversion at no step converts in no journey": (
        [Hit("browse"), Hit(converted=True)],
        (),
        False,
    ),
    "a conversion reports only its own journey's steps": (
        [Hit("faq", FRUSTRATED_SLOW), Hit("browse"), Hit("purchase", converted=True)],
        (("reached", "purchase"), *_converted_purchase(("browse", False), ("purchase", False))),
        True,
    ),
    "each journey converts once": (
        [Hit("purchase", converted=True), Hit("contact", converted=True)],
        (
            ("reached", "contact"),
            ("converted", "support"),
            ("converted step", "contact", "not frustrated"),
        ),
        True,
    ),
}


@pytest.mark.parametrize(
    ("hits", "events", "changed"), EVENT_RULES.values(), ids=EVENT_RULES.keys()
)
def test_each_request_counts_what_it_does_for_the_first_time(
    hits: list[Hit], events: tuple[Any, ...], changed: bool
) -> None:
    assert walk(*hits)[-1][1:] == (events, changed)


def test_reaching_a_step_again_after_converting_counts_nothing() -> None:
    after = walk(Hit("browse"), Hit("purchase", converted=True), Hit("browse"))
    assert [len(events) for _, events, _ in after] == [2, 4, 0]


def test_the_state_remembers_reached_frustrated_and_converted() -> None:
    visit = walk(Hit("faq"), Hit("checkout", FRUSTRATED_ERROR), Hit("purchase", converted=True))[
        -1
    ][0]
    assert visit == VisitState(
        VID,
        T0,
        T0 + 2,
        FP,
        (JourneyProgress(0, 0b11000, 0b01000, True), JourneyProgress(1, 0b1, 0, False)),
    )


def test_a_visit_entered_in_any_order_keeps_its_journeys_in_position_order() -> None:
    visit = walk(Hit("faq"), Hit("browse"))[-1][0]
    assert [p.journey for p in visit.progress] == [0, 1]
    assert decoded(encode(visit, key=KEY, schema=SCHEMA)) == visit


def test_a_new_visit_gets_a_new_random_id_and_starts_now() -> None:
    visit, events, _ = observe(None, schema=SCHEMA, now=T0, outcome=SATISFIED)
    other, _, _ = observe(None, schema=SCHEMA, now=T0, outcome=SATISFIED)
    assert events == (VisitEvent(VISIT_STARTED),)
    assert (visit.started, visit.last_seen, visit.fingerprint, visit.progress) == (T0, T0, FP, ())
    assert visit.visit_id != other.visit_id
    for visit_id in (visit.visit_id, new_visit_id()):
        assert len(visit_id) == 32
        assert visit_id == visit_id.lower()
        assert bytes.fromhex(visit_id)


def test_last_seen_moves_forward_only() -> None:
    received = state(last_seen=T0 + 60)
    later, _, changed = observe(received, schema=SCHEMA, now=T0 + 90, outcome=SATISFIED)
    assert (later.last_seen, changed) == (T0 + 90, False)
    # This host's clock is behind the one that wrote the value: never before the start.
    young = state(started=T0, last_seen=T0)
    behind, _, _ = observe(young, schema=SCHEMA, now=T0 - 30, journey=0, step=0, outcome=SATISFIED)
    assert (behind.started, behind.last_seen) == (T0, T0)
    assert decoded(encode(behind, key=KEY, schema=SCHEMA), now=T0 - 30) == behind


@pytest.mark.parametrize(
    ("journey", "step"), [(0, None), (None, 0), (2, 0), (0, 5), (1, 2), (-1, 0), (0, -1)]
)
def test_a_position_no_journey_has_is_the_callers_bug(
    journey: Optional[int], step: Optional[int]
) -> None:
    with pytest.raises(ValueError, match="not a configured step"):
        observe(None, schema=SCHEMA, now=T0, journey=journey, step=step, outcome=SATISFIED)


def _full_visit(schema: VisitSchema, journeys: int, steps: int) -> VisitState:
    visit: Optional[VisitState] = None
    for journey in range(journeys):
        for step in range(steps):
            visit, _, _ = observe(
                visit, schema=schema, now=T0, journey=journey, step=step, outcome=SATISFIED
            )
    assert visit is not None
    return visit


@pytest.mark.parametrize(("steps", "followed"), [(1, 175), (8, 175), (9, 116), (MAX_STEPS, 10)])
def test_a_full_visit_follows_no_new_journey_and_keeps_the_ones_it_has(
    steps: int, followed: int
) -> None:
    count = followed + 5
    schema = VisitSchema(
        [Journey(f"j{i}", steps=[Step(f"s{s}") for s in range(steps)]) for i in range(count)]
    )
    visit = _full_visit(schema, count, 1)
    assert len(visit.progress) == followed
    assert len(encode(visit, key=KEY, schema=schema)) <= MAX_VALUE_BYTES
    # The next journey is not followed: no events, nothing to send, nothing dropped.
    untracked = observe(
        visit,
        schema=schema,
        now=T0 + 1,
        journey=followed,
        step=0,
        outcome=FRUSTRATED_SLOW,
        converted=True,
    )
    assert untracked[1:] == ((), False)
    assert untracked[0].progress == visit.progress
    # The journeys it follows still progress.
    if steps > 1:
        _, events, changed = observe(
            visit, schema=schema, now=T0 + 1, journey=0, step=1, outcome=SATISFIED
        )
        assert (events, changed) == ((VisitEvent(STEP_REACHED, 0, 1),), True)


# --------------------------------------------------------------------------- sending it back


@pytest.mark.parametrize(
    ("received", "changed", "age_s", "send"),
    [
        (None, True, 0, True),
        (state(last_seen=T0), True, 0, True),
        (state(last_seen=T0), False, 0, False),
        (state(last_seen=T0), False, REFRESH_S - 1, False),
        (state(last_seen=T0), False, REFRESH_S, False),
        (state(last_seen=T0), False, REFRESH_S + 1, True),
        (state(last_seen=T0), False, TIMEOUT, True),
    ],
)
def test_the_value_is_sent_when_it_changed_or_its_last_seen_is_over_5_minutes_old(
    received: Optional[VisitState], changed: bool, age_s: int, send: bool
) -> None:
    assert REFRESH_S == 300
    assert should_send(received, changed=changed, now=T0 + age_s) is send


def test_a_quiet_visit_is_refreshed_from_what_the_customer_holds() -> None:
    received = state(JourneyProgress(0, 1, 0, False), last_seen=T0)
    visit, _, changed = observe(
        received, schema=SCHEMA, now=T0 + 301, journey=0, step=0, outcome=SATISFIED
    )
    assert not changed
    assert should_send(received, changed=changed, now=T0 + 301)
    assert decoded(encode(visit, key=KEY, schema=SCHEMA), now=T0 + 301).last_seen == T0 + 301


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("secure", "expected"),
    [
        (False, "cx_visit=1.abc.def; HttpOnly; SameSite=Lax; Path=/"),
        (True, "cx_visit=1.abc.def; HttpOnly; SameSite=Lax; Path=/; Secure"),
    ],
)
def test_the_cookie_is_first_party_session_only_and_out_of_scripts_reach(
    secure: bool, expected: str
) -> None:
    header = format_cookie("cx_visit", "1.abc.def", secure=secure)
    assert header == expected
    assert "expires" not in header.lower()
    assert "max-age" not in header.lower()
    assert "domain" not in header.lower()


READS: dict[str, tuple[Optional[str], Optional[str]]] = {
    "alone": ("cx_visit=v1", "v1"),
    "first of several": ("cx_visit=v1; theme=dark; sid=abc", "v1"),
    "among several": ("theme=dark; cx_visit=v1; sid=abc", "v1"),
    "last of several": ("theme=dark; sid=abc; cx_visit=v1", "v1"),
    "no spaces": ("theme=dark;cx_visit=v1;sid=abc", "v1"),
    "extra spaces and tabs": ("theme=dark ;\t  cx_visit= v1 \t; sid=abc", "v1"),
    "leading spaces": ("   cx_visit=v1", "v1"),
    "quoted": ('theme=dark; cx_visit="v1"; sid=abc', "v1"),
    "an unbalanced quote is kept": ('cx_visit="v1', '"v1'),
    "joined with commas by a server": ("theme=dark, cx_visit=v1, sid=abc", "v1"),
    "a name that merely ends with ours": ("xcx_visit=evil; cx_visit=v1", "v1"),
    "only a name that merely ends with ours": ("xcx_visit=evil", None),
    "a name that merely starts with ours": ("cx_visitor=evil; cx_visit=v1", "v1"),
    "our name inside another value": ("next=cx_visit=evil; cx_visit=v1", "v1"),
    "our name after a space inside another value": ("a=b cx_visit=evil", None),
    "duplicates: the first counts": ("cx_visit=first; cx_visit=second", "first"),
    "names are case-sensitive": ("CX_VISIT=upper; Cx_Visit=mixed", None),
    "empty value": ("cx_visit=; theme=dark", ""),
    "no equals sign": ("cx_visit; theme=dark", None),
    "missing": ("theme=dark; sid=abc", None),
    "empty header": ("", None),
    "no header": (None, None),
    "a real value": (f"_ga=GA1.2.3.4; cx_visit={VALID}; csrftoken=x", VALID),
}


@pytest.mark.parametrize(("header", "expected"), READS.values(), ids=READS.keys())
def test_our_cookie_is_picked_out_of_the_cookie_header(
    header: Optional[str], expected: Optional[str]
) -> None:
    assert read_cookie(header, "cx_visit") == expected


def test_another_cookie_name_is_read_the_same_way() -> None:
    assert read_cookie("cx_visit=a; __Host-cx=b", "__Host-cx") == "b"
    assert read_cookie("a=1", "") is None


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("cx_visit", True),
        ("__Host-cx_visit", True),
        ("a.b~c!", True),
        ("", False),
        ("a b", False),
        ("a=b", False),
        ("a;b", False),
        ('"a"', False),
        ("caf\u00e9", False),
        ("a\tb", False),
        (None, False),
    ],
)
def test_cookie_names_are_rfc_6265_tokens(name: object, valid: bool) -> None:
    assert is_cookie_name(name) is valid


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=500, deadline=None)
@given(value=st.one_of(st.text(max_size=1100), st.binary(max_size=1100), st.none()))
def test_any_text_or_bytes_is_decoded_without_raising(value: Union[str, bytes, None]) -> None:
    assert decoded(value) is None


@quick
@given(value=st.from_regex(r"\A1\.[A-Za-z0-9_-]{43,120}\.[A-Za-z0-9_-]{43}\Z"))
def test_values_of_the_right_shape_but_not_signed_by_us_are_refused(value: str) -> None:
    assert decoded(value) is None


@settings(max_examples=500, deadline=None)
@given(tail=st.binary(max_size=24), started=st.sampled_from([T0, T0 + 61]))
def test_whatever_a_signed_payload_holds_only_what_encode_makes_is_accepted(
    tail: bytes, started: int
) -> None:
    # Our key over any progress bytes (a bug, another release): an accepted value is exactly
    # the encoding of the state it yields, so nothing non-canonical becomes a trusted state.
    value = forge(head(started=started, last_seen=T0 + 60) + tail)
    found = decoded(value)
    if found is not None:
        assert encode(found, key=KEY, schema=SCHEMA) == value


@st.composite
def mutations(draw: st.DrawFn) -> str:
    """A valid value bent once: a character replaced, inserted or deleted, a cut, a splice."""
    at = draw(st.integers(0, len(VALID)))
    char = draw(st.characters(codec="utf-8") | st.sampled_from("AZaz09-_.=+/ "))
    op = draw(st.sampled_from(["replace", "insert", "delete", "cut", "splice"]))
    if op == "replace":
        return VALID[:at] + char + VALID[at + 1 :]
    if op == "insert":
        return VALID[:at] + char + VALID[at:]
    if op == "delete":
        return VALID[:at] + VALID[at + 1 :]
    if op == "cut":
        return VALID[:at]
    return VALID[:at] + draw(st.text(max_size=60)) + VALID[at:]


@quick
@given(value=mutations(), as_bytes=st.booleans())
def test_a_valid_value_bent_anywhere_is_refused(value: str, as_bytes: bool) -> None:
    raw: Union[str, bytes] = value.encode("utf-8", "surrogatepass") if as_bytes else value
    assert decoded(raw) == (BUSY if value == VALID else None)


class Model:
    """Section 12 written as plainly as possible, to check observe() against."""

    def __init__(self) -> None:
        self.reached: set[tuple[int, int]] = set()
        self.frustrated: set[tuple[int, int]] = set()
        self.converted: set[int] = set()

    def events(self, journey: int, step: int, outcome: Outcome, converted: bool) -> list[Any]:
        out: list[Any] = []
        if (journey, step) not in self.reached:
            self.reached.add((journey, step))
            out.append(VisitEvent(STEP_REACHED, journey, step))
        if outcome.satisfaction == "frustrated" and (journey, step) not in self.frustrated:
            self.frustrated.add((journey, step))
            out.append(VisitEvent(STEP_FRUSTRATED, journey, step, outcome.reason))
        if converted and journey not in self.converted:
            self.converted.add(journey)
            out.append(VisitEvent(JOURNEY_CONVERTED, journey))
            for j, s in sorted(self.reached):
                if j == journey:
                    out.append(VisitEvent(STEP_CONVERTED, j, s, None, (j, s) in self.frustrated))
        return out


_requests = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from([(0, s) for s in range(5)] + [(1, 0), (1, 1)])),
        st.sampled_from([SATISFIED, TOLERATING, FRUSTRATED_SLOW, FRUSTRATED_ERROR]),
        st.booleans(),
        st.integers(0, TIMEOUT),
    ),
    max_size=25,
)


@quick
@given(requests=_requests)
def test_any_visit_counts_each_first_time_once_and_survives_the_cookie(
    requests: list[tuple[Optional[tuple[int, int]], Outcome, bool, int]],
) -> None:
    model, now = Model(), T0
    visit, events, _ = observe(None, schema=SCHEMA, now=now, outcome=SATISFIED)
    assert events == (VisitEvent(VISIT_STARTED),)
    for at, outcome, converted, pause in requests:
        now += pause
        received = decoded(encode(visit, key=KEY, schema=SCHEMA), now=now)
        assert received == visit  # a pause of at most timeout_s keeps the visit
        journey, step = at if at is not None else (None, None)
        visit, events, changed = observe(
            received,
            schema=SCHEMA,
            now=now,
            journey=journey,
            step=step,
            outcome=outcome,
            converted=converted,
        )
        expected = model.events(*at, outcome, converted) if at is not None else []
        assert list(events) == expected
        assert changed is bool(expected)
        assert visit.last_seen == now
    assert {
        (p.journey, s) for p in visit.progress for s in range(8) if p.reached >> s & 1
    } == model.reached
