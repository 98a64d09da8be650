"""Visits on the request path: read the customer's state, count its events, answer it.

The pure part (state, signing, transitions) is :mod:`cxtrace._core.visits`; this module
runs it per request with the configured key and journeys, counts the events in the five
``cx.visit*`` counters (kept by cxtrace and reported through observable counters, like
``cx.requests``, so every request counts whatever the sampler says) and produces the
response headers. Integrations see two calls, both on :class:`RecorderVisits`::

    visit = visits.begin(view)                      # at Recorder.begin: decode, or a new id
    headers = visits.respond(visit, segment, ...)   # as response headers go out: count,
                                                    # then () or the Set-Cookie / cx-visit
                                                    # header to add

Built only when ``CXTRACE_VISITS=cookie``: with visits off nothing here runs.
"""

from __future__ import annotations

import time
from typing import Any, Final, Optional

from cxtrace._core.apdex import Outcome
from cxtrace._core.config import Settings
from cxtrace._core.journeys import StepRef
from cxtrace._core.request import RequestView
from cxtrace._core.visits import (
    JOURNEY_CONVERTED,
    REFRESH_S,
    STEP_CONVERTED,
    STEP_FRUSTRATED,
    STEP_REACHED,
    VISIT_HEADER,
    VISIT_STARTED,
    VisitState,
    decode,
    encode,
    format_cookie,
    new_visit_id,
    observe,
    read_cookie,
    should_send,
)
from cxtrace._telemetry import semconv as sc
from cxtrace._telemetry.tally import Tally

__all__ = ["COOKIE", "HEADER", "RecorderVisits", "Visit"]

COOKIE: Final = "cookie"  # the state came in the cookie: answer with Set-Cookie
HEADER: Final = "header"  # it came in the cx-visit request header: answer in that header
_HEADER_ENV: Final = "HTTP_" + VISIT_HEADER.upper().replace("-", "_")  # HTTP_CX_VISIT


class Visit:
    """One request's place in a visit (slotted: one per request with visits on)."""

    __slots__ = ("done", "headers", "id", "inherited", "new", "received", "secure", "via")

    def __init__(
        self,
        visit_id: str,
        *,
        new: bool,
        received: Optional[VisitState] = None,
        via: Optional[str] = None,
        inherited: bool = False,
        secure: bool = False,
    ) -> None:
        self.id = visit_id  # cx.visit.id: the random id, never the signed value
        self.new = new  # cx.visit.new: this request starts the visit
        self.received = received  # the verified state the customer sent, if any
        self.via = via  # COOKIE, HEADER or None (neither: answer in both)
        self.secure = secure  # the customer reached us over https: a Secure cookie
        # The visit is the caller's (verified inbound CX baggage): spans say so, but this
        # request counts nothing and sets no cookie; the service customers reach does.
        self.inherited = inherited
        self.done = inherited  # counted (or not ours to count)
        self.headers: tuple[tuple[str, str], ...] = ()  # sent again if start_response is

    @classmethod
    def of_caller(cls, visit_id: str) -> Visit:
        return cls(visit_id, new=False, inherited=True)


def _forwarded_https(view: RequestView) -> bool:
    """Whether a TLS-terminating proxy says the customer came over https.

    ``X-Forwarded-Proto`` (its first value) or ``Forwarded: proto=https``, read whoever sent
    them: the cookie only gains ``Secure``, which a client faking the header denies itself.
    An app's own proxy fix (werkzeug's ProxyFix inside Flask, Django's
    SECURE_PROXY_SSL_HEADER) runs after cxtrace saw the request, so the headers are read here.
    """
    proto = view.header("HTTP_X_FORWARDED_PROTO")
    if proto is not None and proto.split(",", 1)[0].strip().lower() == "https":
        return True
    forwarded = view.header("HTTP_FORWARDED")
    if forwarded is None:
        return False
    first = forwarded.split(",", 1)[0]
    return any(part.strip().lower().replace('"', "") == "proto=https" for part in first.split(";"))


_VISIT_KEYS: Final = (sc.CX_SEGMENT,)
_STEP_KEYS: Final = (sc.CX_SEGMENT, sc.CX_JOURNEY, sc.CX_STEP)
_FRUSTRATION_KEYS: Final = (*_STEP_KEYS, sc.CX_FRUSTRATION_REASON)
_CONVERSION_KEYS: Final = (sc.CX_SEGMENT, sc.CX_JOURNEY)
_CONVERTED_STEP_KEYS: Final = (*_STEP_KEYS, sc.CX_VISIT_FRUSTRATED)


class RecorderVisits:
    """Process-wide visit settings and the five tallies (renewed with the providers)."""

    def __init__(self, settings: Settings) -> None:
        schema = settings.visit_schema
        key = settings.visit_key
        if schema is None or key is None:  # load_settings guarantees both with visits on
            raise ValueError("visits are off")
        self.schema = schema
        self.key = key
        self.timeout_s = settings.visit_timeout_s
        self.cookie = settings.visit_cookie
        # Sent again once the customer's copy is this old, so an active visit never expires:
        # five minutes at the default 30-minute timeout, sooner for a shorter timeout.
        self.refresh_s = min(REFRESH_S, settings.visit_timeout_s // 6)
        self.bind(None)

    def bind(self, meter: Any) -> None:
        """Fresh tallies, reported through ``meter`` (None: not reported, as in tests)."""
        self.visits = Tally(_VISIT_KEYS)
        self.steps = Tally(_STEP_KEYS)
        self.frustrations = Tally(_FRUSTRATION_KEYS)
        self.conversions = Tally(_CONVERSION_KEYS)
        self.converted_steps = Tally(_CONVERTED_STEP_KEYS)
        if meter is None:
            return
        for name, tally, description in (
            (sc.CX_VISITS, self.visits, "Visits started, by the segment of their first request"),
            (sc.CX_VISIT_STEPS, self.steps, "Visits that reached a step, once per visit"),
            (
                sc.CX_VISIT_FRUSTRATIONS,
                self.frustrations,
                "Visits frustrated at a step (slow or error), once per visit and step",
            ),
            (
                sc.CX_VISIT_CONVERSIONS,
                self.conversions,
                "Visits that converted in a journey, once per visit and journey",
            ),
            (
                sc.CX_VISIT_CONVERTED_STEPS,
                self.converted_steps,
                "At a visit's conversion: each step it reached, and whether it was frustrated",
            ),
        ):
            meter.create_observable_counter(
                name, callbacks=[tally.observe], unit="{visit}", description=description
            )

    def begin(self, view: RequestView) -> Visit:
        """The visit this request continues (a verified, current state), else a new one."""
        cookie_value = None
        cookie = view.header("HTTP_COOKIE")
        if cookie is not None:
            cookie_value = read_cookie(cookie, self.cookie)
        header_value = view.header(_HEADER_ENV)
        secure = view.scheme == "https" or _forwarded_https(view)
        now = int(time.time())
        for value, came in ((cookie_value, COOKIE), (header_value, HEADER)):
            if value is not None:
                state = decode(
                    value, key=self.key, schema=self.schema, now=now, timeout_s=self.timeout_s
                )
                if state is not None:
                    return Visit(state.visit_id, new=False, received=state, via=came, secure=secure)
        via: Optional[str] = None
        if cookie_value is not None or header_value is not None:
            # A bad or expired state: answer where it came from (the cookie first).
            via = COOKIE if cookie_value is not None else HEADER
        return Visit(new_visit_id(), new=True, via=via, secure=secure)

    def respond(
        self,
        visit: Visit,
        *,
        segment: str,
        step: Optional[StepRef],
        outcome: Outcome,
        converted: bool,
    ) -> tuple[tuple[str, str], ...]:
        """Count this request in its visit; the headers to add to its response (maybe none).

        ``step`` is None for a step this service inherited from its caller: that step is
        counted where the customer arrived, not here.
        """
        if visit.done:
            return visit.headers
        visit.done = True
        schema = self.schema
        position = schema.locate(step.journey, step.index) if step is not None else None
        journey = step_at = None
        if position is not None:
            journey, step_at = position
        now = int(time.time())
        received = visit.received
        visit_id = visit.id
        state, events, changed = observe(
            received,
            schema=schema,
            now=now,
            journey=journey,
            step=step_at,
            outcome=outcome,
            converted=converted,
            new_id=lambda: visit_id,
        )
        if events:
            self._count(events, segment)
        if not should_send(received, changed=changed, now=now, refresh_s=self.refresh_s):
            return ()
        value = encode(state, key=self.key, schema=schema)
        headers: list[tuple[str, str]] = []
        if visit.via != HEADER:
            headers.append(("Set-Cookie", format_cookie(self.cookie, value, secure=visit.secure)))
        if visit.via != COOKIE:
            headers.append((VISIT_HEADER, value))
        visit.headers = tuple(headers)
        return visit.headers

    def _count(self, events: Any, segment: str) -> None:
        journeys = self.schema.journey_names
        steps = self.schema.step_names
        for event in events:
            kind = event.kind
            if kind == VISIT_STARTED:
                self.visits.add((segment,))
                continue
            journey = journeys[event.journey]
            if kind == STEP_REACHED:
                self.steps.add((segment, journey, steps[event.journey][event.step]))
            elif kind == STEP_FRUSTRATED:
                self.frustrations.add(
                    (segment, journey, steps[event.journey][event.step], event.reason)
                )
            elif kind == JOURNEY_CONVERTED:
                self.conversions.add((segment, journey))
            elif kind == STEP_CONVERTED:
                self.converted_steps.add(
                    (segment, journey, steps[event.journey][event.step], event.frustrated)
                )
