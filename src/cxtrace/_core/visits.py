"""Visits, the pure part: one customer's state across requests, signed (design.md section 12).

Owns the visit state, its signed wire form (the cookie value, also sent verbatim in the
``cx-visit`` header), the strict decoder, the per-request transition and the events it
yields for the five ``cx.visit*`` counters, when to send the state back, and the
``Set-Cookie`` / ``Cookie`` header text. Stdlib only: it never imports OpenTelemetry or a
framework; the integrations read and write the headers, ``_telemetry`` counts the events.

::

    Cookie: a=1; cx_visit=1.<payload>.<sig>      (or  cx-visit: 1.<payload>.<sig>)
      -> read_cookie(header, name)               first cx_visit= at a cookie boundary
      -> decode(value, key, schema, now, ..)     VisitState, or None: start a new visit
      -> observe(state, schema, now, journey,    (new state, events, changed)
                 step, outcome, converted)       events -> the cx.visit* counters
      -> should_send(received, changed, now)     changed, or last-seen over 5 minutes old
      -> format_cookie(name, encode(state, ..), secure)
         "cx_visit=1.<payload>.<sig>; HttpOnly; SameSite=Lax; Path=/[; Secure]"

Wire format, at most :data:`MAX_VALUE_BYTES` (1 KB): ``"1." payload "." signature``::

    payload    base64url, no padding, of a fixed binary layout (integers big-endian):
      visit id     16 bytes   random (os.urandom); cx.visit.id shows it as 32 lowercase hex
      started       4 bytes   Unix seconds, unsigned
      last_seen     4 bytes   Unix seconds, unsigned, >= started
      fingerprint   8 bytes   of the journeys' names and their ordered step names
      then, for each journey the visit entered, by ascending position in the configuration:
      journey       1 byte    0-based position in the configured journeys
      flags         1 byte    1: converted in this journey, else 0
      reached       w bytes   step bitmask, bit s = step s (0-based); w = ceil(steps / 8)
      frustrated    w bytes   the reached steps where the visit was frustrated
    signature  base64url (43 characters) of the full HMAC-SHA256 under CXTRACE_VISIT_KEY of
               b"cxtrace/visit\\x00" + the ASCII text "1." + payload

The cookie carries no personal data: no user id, segment, URL or IP, only a random id, two
times and bitmasks. The domain tag keeps a signature made for CX baggage or RUM tokens (same
construction, their own tags) from ever verifying here. The signature is computed over the
exact text and compared as text, over all 43 characters, so no other spelling of the same
bytes (base64's unused low bits, padding) is accepted: a value verifies only if it is,
character for character, what :func:`encode` produced under this key.

How design.md section 12 is read here:

- *"a visit is frustrated at a step for the first time (slow or error)"*: frustrated means
  ``cx.satisfaction == "frustrated"`` (section 4: an error, or slower than 4T). A tolerating
  request carries ``cx.frustration.reason = "slow"`` on its span but is not frustrated, so it
  reaches the step and counts no frustration.
- A request reaches its step whatever its outcome (so ``frustrations{S} <= steps{S}``); on one
  request the order is reach, then frustration, then conversion: a conversion step's own
  request is among the steps its conversion reports, frustrated or not.
- ``converted`` is ``cx.conversion`` of section 4: true when a conversion step (or
  ``mark_conversion``) *succeeded*. A failing purchase (frustrated, reason error) is no
  conversion; the caller passes ``converted=False``. A slow but successful one is both.
  A conversion on a request that maps to no journey step converts in no journey.
- Only the first conversion in a journey counts, with its converted steps (the steps reached
  until then, each saying whether the visit was frustrated there); later ones count nothing.
- *"A changed journeys file restarts a visit's progress rather than misattribute it"*: a
  well-signed, unexpired value made under another journeys configuration keeps its visit (id,
  start: no new ``cx.visits``) but none of its progress, as positions and bitmasks mean other
  steps now. Its steps count again as they are reached under the new configuration.
- Expiry: *"until CXTRACE_VISIT_TIMEOUT_S without one"*: a request ``timeout_s`` seconds after
  last-seen still belongs to the visit; one second later it starts a new one.
- *"sent back only when the state changed or last-seen is over 5 minutes old"*: last-seen in
  the customer's copy may lag up to :data:`REFRESH_S`, so a visit ends after between
  ``timeout_s - REFRESH_S`` and ``timeout_s`` seconds without a request.

Limits, decided here: visits follow at most :data:`MAX_JOURNEYS` journeys of at most
:data:`MAX_STEPS` steps each (a :class:`ConfigError` when the schema is built beyond that). A
visit follows the journeys it enters, in that order, while their progress fits in 1 KB: at
least 10 journeys of 256 steps, 175 of up to 8 steps. A journey entered once the value is
full is not followed for that visit: its requests yield no visit events (nothing is dropped
or counted twice; the request's own span and metrics are unaffected).

Nothing here logs, keeps a value or reads a clock: times are passed in, in integer seconds.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Callable, Final, NamedTuple, Optional, Union

from cxtrace._core.apdex import FRUSTRATED_SLOW, Outcome
from cxtrace._core.errors import ConfigError
from cxtrace._core.journeys import Journey

__all__ = [
    "JOURNEY_CONVERTED",
    "MAX_CLOCK_SKEW_S",
    "MAX_JOURNEYS",
    "MAX_PAYLOAD_BYTES",
    "MAX_STEPS",
    "MAX_VALUE_BYTES",
    "REFRESH_S",
    "STEP_CONVERTED",
    "STEP_FRUSTRATED",
    "STEP_REACHED",
    "VERSION",
    "VISIT_HEADER",
    "VISIT_STARTED",
    "JourneyProgress",
    "VisitEvent",
    "VisitSchema",
    "VisitState",
    "decode",
    "encode",
    "format_cookie",
    "is_cookie_name",
    "journeys_fingerprint",
    "new_visit_id",
    "observe",
    "read_cookie",
    "should_send",
]

VISIT_HEADER: Final = "cx-visit"  # request and response header for clients without cookies
VERSION: Final = "1"
MAX_VALUE_BYTES: Final = 1024  # the whole value; longer is rejected before any other work
REFRESH_S: Final = 300  # an unchanged state is sent again once its last-seen is older
MAX_CLOCK_SKEW_S: Final = 60  # another host's clock may run this far ahead of ours
MAX_JOURNEYS: Final = 256  # a journey's position is one byte
MAX_STEPS: Final = 256  # per journey: 32-byte bitmasks, so at least 10 journeys fit

# Event kinds, one per counter of design.md section 12.
VISIT_STARTED: Final = "visit_started"  # cx.visits
STEP_REACHED: Final = "step_reached"  # cx.visit.steps
STEP_FRUSTRATED: Final = "step_frustrated"  # cx.visit.frustrations
JOURNEY_CONVERTED: Final = "journey_converted"  # cx.visit.conversions
STEP_CONVERTED: Final = "step_converted"  # cx.visit.converted_steps

_FRUSTRATED: Final = FRUSTRATED_SLOW.satisfaction  # "frustrated"
_DOMAIN: Final = b"cxtrace/visit\x00"
_PREFIX: Final = (VERSION + ".").encode("ascii")
_SIG_CHARS: Final = 43  # 32 bytes of HMAC-SHA256 in base64url without padding
_HEAD: Final = struct.Struct(">16sII8s")  # visit id, started, last_seen, fingerprint
_HEAD_BYTES: Final = _HEAD.size  # 32
_FINGERPRINT_BYTES: Final = 8
_MAX_SECONDS: Final = 0xFFFFFFFF  # unsigned 32 bits: until 2106
# The largest payload whose token fits: "1." + ceil(4n/3) + "." + 43 <= 1024 -> n <= 733.
MAX_PAYLOAD_BYTES: Final = (MAX_VALUE_BYTES - len(_PREFIX) - 1 - _SIG_CHARS) * 3 // 4
_MIN_VALUE_CHARS: Final = len(_PREFIX) + (_HEAD_BYTES * 4 + 2) // 3 + 1 + _SIG_CHARS  # 89

_TO_URL: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URL: Final = bytes.maketrans(b"-_", b"+/")
_PADDING: Final = (b"", b"===", b"==", b"=")  # by payload length % 4 (1 cannot be base64)
_COOKIE_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 6265: an RFC 2616 token
_COOKIE_ATTRIBUTES: Final = "; HttpOnly; SameSite=Lax; Path=/"
_OWS: Final = " \t"
_SEPARATORS: Final = ";,"  # ";" per RFC 6265; "," where a server joined repeated headers


# --------------------------------------------------------------------------- the state


class JourneyProgress(NamedTuple):
    """How far a visit got in one journey: bitmasks over the journey's steps (0-based)."""

    journey: int  # 0-based position in the configured journeys
    reached: int  # bit s: step s reached; never 0
    frustrated: int  # bit s: frustrated at step s; always within reached
    converted: bool


class VisitState(NamedTuple):
    """What the cookie carries. A NamedTuple: one is built per request with visits on."""

    visit_id: str  # 32 lowercase hex, random: the span attribute cx.visit.id
    started: int  # Unix seconds
    last_seen: int  # Unix seconds, >= started
    fingerprint: bytes  # of the journeys configuration that made ``progress``
    progress: tuple[JourneyProgress, ...] = ()  # by ascending journey position


class VisitEvent(NamedTuple):
    """One +1 on one ``cx.visit*`` counter; the caller adds the request's segment.

    ``kind`` is one of :data:`VISIT_STARTED` (no journey), :data:`STEP_REACHED`,
    :data:`STEP_FRUSTRATED` (with ``reason``), :data:`JOURNEY_CONVERTED` (no step) and
    :data:`STEP_CONVERTED` (with ``frustrated``). Positions are 0-based; names are in
    :attr:`VisitSchema.journey_names` and :attr:`VisitSchema.step_names`.
    """

    kind: str
    journey: Optional[int] = None
    step: Optional[int] = None
    reason: Optional[str] = None  # "slow" | "error", for STEP_FRUSTRATED
    frustrated: bool = False  # for STEP_CONVERTED: frustrated at that step before converting


_STARTED: Final = VisitEvent(VISIT_STARTED)
# A NamedTuple's generated __new__ is a Python call (~0.7 us here); tuple.__new__ builds the
# same object in half that. Used where one is built on every request, with every field given.
_new_tuple: Final = tuple.__new__
_NO_EVENTS: Final[tuple[VisitEvent, ...]] = ()


def new_visit_id() -> str:
    """A fresh visit id: 128 random bits as 32 lowercase hex, the form of a trace id.

    Only randomness: no time, host or counter, so it says nothing about the customer. Hex
    rather than a shorter base64url id because it is what users query and compare beside
    trace ids (no case or ``-``/``_`` to get wrong); in the cookie it takes 16 raw bytes.
    """
    return os.urandom(16).hex()


def journeys_fingerprint(journeys: Sequence[Journey]) -> bytes:
    """8 bytes that change when a journey or step is renamed, added, removed or reordered.

    SHA-256 over each journey's name and its ordered step names, each length-prefixed, so no
    other configuration can spell the same bytes. Routes, methods, thresholds and which step
    converts do not move progress from one step to another, so they are not part of it.

    >>> from cxtrace._core.journeys import Step
    >>> a = [Journey("buy", steps=[Step("browse"), Step("pay")])]
    >>> journeys_fingerprint(a) == journeys_fingerprint([Journey("buy", steps=[Step("browse"),
    ...     Step("pay", conversion=True)])])
    True
    """
    digest = hashlib.sha256(b"cxtrace/visit-journeys\x00")
    for journey in journeys:
        digest.update(_length_prefixed(journey.name))
        digest.update(len(journey.steps).to_bytes(4, "big"))
        for step in journey.steps:
            digest.update(_length_prefixed(step.name))
    return digest.digest()[:_FINGERPRINT_BYTES]


def _length_prefixed(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(4, "big") + raw


class VisitSchema:
    """What the journeys configuration makes of a visit state; built once at ``instrument()``.

    >>> from cxtrace._core.journeys import Step
    >>> schema = VisitSchema([Journey("buy", steps=[Step("browse"), Step("pay")])])
    >>> schema.locate("buy", 2), schema.step_names[0][1]
    ((0, 1), 'pay')
    """

    __slots__ = (
        "_always_fits",
        "_entry_bytes",
        "_full_masks",
        "_positions",
        "_widths",
        "fingerprint",
        "journey_names",
        "step_names",
    )

    def __init__(self, journeys: Sequence[Journey]) -> None:
        if len(journeys) > MAX_JOURNEYS:
            raise ConfigError(
                f"journeys: {len(journeys)} journeys; visits follow at most {MAX_JOURNEYS}"
            )
        for journey in journeys:
            if len(journey.steps) > MAX_STEPS:
                raise ConfigError(
                    f"journey {journey.name!r}: {len(journey.steps)} steps; "
                    f"visits follow at most {MAX_STEPS} per journey"
                )
        self.fingerprint: bytes = journeys_fingerprint(journeys)
        self.journey_names: tuple[str, ...] = tuple(j.name for j in journeys)
        self.step_names: tuple[tuple[str, ...], ...] = tuple(
            tuple(s.name for s in j.steps) for j in journeys
        )
        self._widths = tuple((len(steps) + 7) // 8 for steps in self.step_names)
        self._entry_bytes = tuple(2 + 2 * width for width in self._widths)
        self._full_masks = tuple((1 << len(steps)) - 1 for steps in self.step_names)
        # Below this many journeys in a visit, one more always fits: no need to add up sizes.
        widest = max(self._entry_bytes, default=2)
        self._always_fits = (MAX_PAYLOAD_BYTES - _HEAD_BYTES) // widest - 1
        # (journey name, 1-based cx.step.index) -> 0-based positions
        self._positions: Mapping[tuple[str, int], tuple[int, int]] = MappingProxyType(
            {
                (name, s + 1): (j, s)
                for j, (name, steps) in enumerate(zip(self.journey_names, self.step_names))
                for s in range(len(steps))
            }
        )

    def locate(self, journey: Optional[str], index: Optional[int]) -> Optional[tuple[int, int]]:
        """(journey position, step position) of a matched step (``StepRef.journey`` and its
        1-based ``index``); None for a step no configured journey lists."""
        if journey is None or index is None:
            return None
        return self._positions.get((journey, index))


# --------------------------------------------------------------------------- signing


@functools.lru_cache(maxsize=4)  # one key per process in practice
def _keyed(key: bytes) -> hmac.HMAC:
    """HMAC-SHA256 under ``key``, already fed the domain tag: copied per value, so the key
    schedule runs once per key, not per request."""
    return hmac.new(key, _DOMAIN, hashlib.sha256)


def _signature(key: bytes, body: bytes) -> bytes:
    """base64url (43 characters) of HMAC-SHA256(key, domain tag + body)."""
    mac = _keyed(key).copy()
    mac.update(body)
    return _b64(mac.digest())


def _b64(raw: bytes) -> bytes:
    return binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_TO_URL)


# --------------------------------------------------------------------------- the wire form


def encode(state: VisitState, *, key: bytes, schema: VisitSchema) -> str:
    """The signed value of ``state``: what the cookie and the ``cx-visit`` header carry.

    Raises ``ValueError`` for an empty key, a state of another journeys configuration or one
    no :func:`observe` makes (a malformed id, times or progress; over 1 KB): what it encodes
    always decodes.

    >>> from cxtrace._core.journeys import Step
    >>> schema = VisitSchema([Journey("buy", steps=[Step("browse"), Step("pay")])])
    >>> state = VisitState("0" * 32, 1_700_000_000, 1_700_000_100, schema.fingerprint,
    ...                    (JourneyProgress(0, 0b01, 0, False),))
    >>> value = encode(state, key=b"k", schema=schema)
    >>> len(value), decode(value, key=b"k", schema=schema, now=1_700_000_200,
    ...                    timeout_s=1800) == state
    (94, True)
    """
    if not key:
        raise ValueError("key: expected a non-empty HMAC key")
    if state.fingerprint != schema.fingerprint:
        raise ValueError("state: made under another journeys configuration")
    visit_id = bytes.fromhex(state.visit_id) if len(state.visit_id) == 32 else b""
    if len(visit_id) != 16:
        raise ValueError(f"visit_id={state.visit_id!r}: expected 32 hex digits")
    if not 0 <= state.started <= state.last_seen <= _MAX_SECONDS:
        raise ValueError(f"times {state.started}, {state.last_seen}: expected started <= last_seen")
    parts = [_HEAD.pack(visit_id, state.started, state.last_seen, state.fingerprint)]
    widths, full_masks, previous = schema._widths, schema._full_masks, -1
    for entry in state.progress:
        if (
            not previous < entry.journey < len(widths)
            or not 0 < entry.reached <= full_masks[entry.journey]
            or entry.frustrated & ~entry.reached
        ):
            raise ValueError(f"progress {entry!r}: not one observe() makes")
        previous = entry.journey
        flags = 1 if entry.converted else 0
        width = widths[entry.journey]
        if width == 1:
            parts.append(bytes((entry.journey, flags, entry.reached, entry.frustrated)))
        else:
            parts.append(
                bytes((entry.journey, flags))
                + entry.reached.to_bytes(width, "big")
                + entry.frustrated.to_bytes(width, "big")
            )
    body = _PREFIX + _b64(b"".join(parts))
    value = body + b"." + _signature(key, body)
    if len(value) > MAX_VALUE_BYTES:
        raise ValueError(f"state: {len(value)} bytes encoded, over {MAX_VALUE_BYTES}")
    return value.decode("ascii")


def decode(
    value: Union[str, bytes, None],
    *,
    key: bytes,
    schema: VisitSchema,
    now: int,
    timeout_s: float,
) -> Optional[VisitState]:
    """The visit state ``value`` carries if this key signed it and it is still current.

    ``None`` means: start a new visit. That is the answer for anything :func:`encode` did not
    produce under ``key``, character for character (missing, empty, over 1 KB, not ASCII,
    another version, a signature that differs anywhere, a payload of the wrong shape), for a
    last-seen before the start or more than :data:`MAX_CLOCK_SKEW_S` ahead of ``now``, and
    for an expired visit (``now - last_seen > timeout_s``). A value signed under another
    journeys configuration keeps its visit without its progress (``progress == ()`` and its
    old ``fingerprint``; :func:`observe` then restarts it). Never raises.
    """
    if isinstance(value, str):
        if len(value) > MAX_VALUE_BYTES or not value.isascii():
            return None
        token = value.encode("ascii")
    elif isinstance(value, bytes):
        if len(value) > MAX_VALUE_BYTES:
            return None
        token = value
    else:
        return None
    if (
        len(token) < _MIN_VALUE_CHARS
        or not key
        or not token.startswith(_PREFIX)
        or token[-_SIG_CHARS - 1] != 0x2E  # "."
    ):
        return None
    body = token[: -_SIG_CHARS - 1]
    if not hmac.compare_digest(_signature(key, body), token[-_SIG_CHARS:]):
        return None
    # Signed with our key: our own encoder's output. Still checked field by field, as a key
    # may be shared with another cxtrace release, and a bug must not become a trusted claim.
    payload = body[len(_PREFIX) :]
    try:
        raw = binascii.a2b_base64(payload.translate(_FROM_URL) + _PADDING[len(payload) % 4])
    except binascii.Error:
        return None
    if len(raw) < _HEAD_BYTES:
        return None
    visit_id, started, last_seen, fingerprint = _HEAD.unpack_from(raw)
    if last_seen < started or last_seen > now + MAX_CLOCK_SKEW_S or now - last_seen > timeout_s:
        return None
    if fingerprint != schema.fingerprint:
        return VisitState(visit_id.hex(), started, last_seen, fingerprint, ())
    progress = _read_progress(raw, schema)
    if progress is None:
        return None
    return _new_tuple(VisitState, (visit_id.hex(), started, last_seen, fingerprint, progress))


def _read_progress(raw: bytes, schema: VisitSchema) -> Optional[tuple[JourneyProgress, ...]]:
    widths, full_masks = schema._widths, schema._full_masks
    entries: list[JourneyProgress] = []
    at, end, previous = _HEAD_BYTES, len(raw), -1
    while at < end:
        journey = raw[at]
        if journey <= previous or journey >= len(widths):  # out of order, repeated, unknown
            return None
        width = widths[journey]
        stop = at + 2 + 2 * width
        if stop > end:
            return None
        flags = raw[at + 1]
        if flags > 1:
            return None
        if width == 1:  # up to 8 steps, the usual journey: bytes, not int.from_bytes (~0.7 us)
            reached, frustrated = raw[at + 2], raw[at + 3]
        else:
            reached = int.from_bytes(raw[at + 2 : at + 2 + width], "big")
            frustrated = int.from_bytes(raw[at + 2 + width : stop], "big")
        if not reached or reached > full_masks[journey] or frustrated & ~reached:
            return None
        entries.append(_new_tuple(JourneyProgress, (journey, reached, frustrated, flags == 1)))
        at, previous = stop, journey
    return tuple(entries)


# --------------------------------------------------------------------------- one request


def observe(
    state: Optional[VisitState],
    *,
    schema: VisitSchema,
    now: int,
    journey: Optional[int] = None,
    step: Optional[int] = None,
    outcome: Outcome,
    converted: bool = False,
    new_id: Callable[[], str] = new_visit_id,
) -> tuple[VisitState, tuple[VisitEvent, ...], bool]:
    """One request's effect on its visit: ``(new state, events, changed)``.

    ``state`` is what :func:`decode` returned (``None``: a new visit starts, id from
    ``new_id``). ``journey`` and ``step`` are the request's 0-based positions
    (:meth:`VisitSchema.locate`), both ``None`` when it maps to no configured step.
    ``outcome`` is its Apdex outcome as its response headers went out; ``converted`` is its
    ``cx.conversion``. ``changed`` is true when the value must be sent back whatever its age:
    a new visit, restarted progress, a step reached or frustrated, a conversion. The new
    state's last-seen is ``now`` (never moved back, so it stays >= the start whatever the
    clocks of the hosts involved).

    >>> from cxtrace._core.apdex import SATISFIED
    >>> from cxtrace._core.journeys import Step
    >>> schema = VisitSchema([Journey("buy", steps=[Step("browse"), Step("pay")])])
    >>> state, events, changed = observe(None, schema=schema, now=100, journey=0, step=0,
    ...                                  outcome=SATISFIED, new_id=lambda: "0" * 32)
    >>> [event.kind for event in events], changed
    (['visit_started', 'step_reached'], True)
    >>> observe(state, schema=schema, now=160, journey=0, step=0, outcome=SATISFIED)[1:]
    ((), False)
    """
    if state is None:
        start = now
        state = VisitState(new_id(), start, start, schema.fingerprint, ())
        events = [_STARTED]
        changed = True
    else:
        events = []
        changed = state.fingerprint != schema.fingerprint
        if changed:  # another journeys configuration: same visit, progress restarts
            state = VisitState(
                state.visit_id, state.started, max(state.last_seen, now), schema.fingerprint, ()
            )
        elif now > state.last_seen:
            state = _new_tuple(
                VisitState, (state.visit_id, state.started, now, state.fingerprint, state.progress)
            )
    if journey is None and step is None:
        return state, (tuple(events) if events else _NO_EVENTS), changed
    if (
        journey is None
        or step is None
        or not 0 <= journey < len(schema.step_names)
        or not 0 <= step < len(schema.step_names[journey])
    ):
        raise ValueError(f"journey={journey!r}, step={step!r}: not a configured step")

    progress = state.progress
    current: Optional[JourneyProgress] = None
    at = len(progress)
    for i, entry in enumerate(progress):
        if entry.journey >= journey:
            at = i
            if entry.journey == journey:
                current = entry
            break
    if current is None and len(progress) >= schema._always_fits:
        used = _HEAD_BYTES + sum(schema._entry_bytes[e.journey] for e in progress)
        if used + schema._entry_bytes[journey] > MAX_PAYLOAD_BYTES:
            # Full: this journey is not followed in this visit (nothing counted twice).
            return state, (tuple(events) if events else _NO_EVENTS), changed
    if current is None:
        reached = frustrated = 0
        was_converted = False
    else:
        _, reached, frustrated, was_converted = current

    bit = 1 << step
    new_reached, new_frustrated, is_converted = reached | bit, frustrated, was_converted
    if not reached & bit:
        events.append(_new_tuple(VisitEvent, (STEP_REACHED, journey, step, None, False)))
    if outcome.satisfaction == _FRUSTRATED and not frustrated & bit:
        new_frustrated |= bit
        events.append(
            _new_tuple(VisitEvent, (STEP_FRUSTRATED, journey, step, outcome.reason, False))
        )
    if converted and not was_converted:
        is_converted = True
        events.append(VisitEvent(JOURNEY_CONVERTED, journey))
        mask, s = new_reached, 0
        while mask:
            if mask & 1:
                events.append(
                    VisitEvent(STEP_CONVERTED, journey, s, None, bool(new_frustrated >> s & 1))
                )
            mask >>= 1
            s += 1
    if new_reached == reached and new_frustrated == frustrated and is_converted == was_converted:
        return state, (tuple(events) if events else _NO_EVENTS), changed
    entry = _new_tuple(JourneyProgress, (journey, new_reached, new_frustrated, is_converted))
    after = at + 1 if current is not None else at
    progress = (*progress[:at], entry, *progress[after:])
    return (
        VisitState(state.visit_id, state.started, state.last_seen, state.fingerprint, progress),
        tuple(events),
        True,
    )


def should_send(
    received: Optional[VisitState], *, changed: bool, now: int, refresh_s: int = REFRESH_S
) -> bool:
    """Whether the response carries the (re-signed) value: the state changed, or the
    customer's copy has a last-seen over ``refresh_s`` (:data:`REFRESH_S`) old, so an
    active visit does not expire, or the customer had none.

    >>> state = VisitState("0" * 32, 0, 1000, b"\\x00" * 8)
    >>> should_send(state, changed=False, now=1300), should_send(state, changed=False, now=1301)
    (False, True)
    """
    return changed or received is None or now - received.last_seen > refresh_s


# --------------------------------------------------------------------------- HTTP headers


def is_cookie_name(name: object) -> bool:
    """Whether ``name`` can name a cookie (RFC 6265: an RFC 2616 token)."""
    return isinstance(name, str) and _COOKIE_NAME.fullmatch(name) is not None


def format_cookie(name: str, value: str, *, secure: bool) -> str:
    """The ``Set-Cookie`` header value: first-party, session-only, out of scripts' reach.

    No ``Expires`` or ``Max-Age``: the browser drops it when it ends the session, and the
    signed last-seen ends the visit sooner on the server's side.

    >>> format_cookie("cx_visit", "1.abc.def", secure=True)
    'cx_visit=1.abc.def; HttpOnly; SameSite=Lax; Path=/; Secure'
    """
    cookie = name + "=" + value + _COOKIE_ATTRIBUTES
    return cookie + "; Secure" if secure else cookie


def read_cookie(header: Optional[str], name: str) -> Optional[str]:
    """The value of cookie ``name`` in a ``Cookie`` request header, without parsing the rest.

    Scans for ``name=`` at a cookie boundary (the header's start or after ``;`` or ``,`` and
    optional spaces), so ``xcx_visit=`` or ``a=cx_visit=`` do not match. The value runs to the
    next ``;`` or ``,``, spaces around it and one pair of double quotes removed. Names are
    case-sensitive. With duplicates the first one counts: browsers list the cookie with the
    most specific path first (RFC 6265 section 5.4), and ours (``Path=/``) is then shadowed
    by a cookie of the same name the app or a sibling subdomain set; that value fails to
    verify and a new visit starts, never a trusted claim (a ``__Host-`` name prevents it).

    >>> read_cookie('theme=dark; cx_visit="1.abc.def" ;x=1', "cx_visit")
    '1.abc.def'
    """
    if not header or not name:
        return None
    needle = name + "="
    start = 0
    while True:
        at = header.find(needle, start)
        if at < 0:
            return None
        before = at
        while before > 0 and header[before - 1] in _OWS:
            before -= 1
        if before == 0 or header[before - 1] in _SEPARATORS:
            begin = at + len(needle)
            end = header.find(";", begin)
            comma = header.find(",", begin, None if end < 0 else end)
            value = header[begin : comma if comma >= 0 else end if end >= 0 else None]
            value = value.strip(_OWS)
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            return value
        start = at + 1
