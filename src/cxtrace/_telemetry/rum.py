"""Real-user monitoring, the telemetry part: page tokens out, ``browser.page_load`` spans in.

:class:`RumRecorder` is built once at ``instrument()`` when ``CXTRACE_RUM=true`` and holds
the signing key, the limits, the tracer and the instruments::

    rum.page_tag(state, nonce)      the tags one HTML page carries (None: cannot sign it)
    rum.receive(body, ...)          one beacon -> 204, or a rejection (counted, logged once)

An accepted beacon becomes one ``browser.page_load`` span, a child of the page's server
span (its trace and span id come from the signed token), plus ``cx.page_loads`` and
``cx.page_load.duration``. The browser's timings are offsets from its navigation start;
they are anchored at the server's clock: navigation start = the moment the server issued
the page minus the TTFB the browser measured. No browser clock is trusted.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Final, Optional, Union

from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
)

from cxtrace._core.apdex import classify
from cxtrace._core.config import Settings
from cxtrace._core.privacy import SegmentGate
from cxtrace._core.rum import (
    MAX_TOKEN_AGE_S,
    Beacon,
    PageContext,
    Rejected,
    ReplayGuard,
    TokenBucket,
    issue_token,
    parse_beacon,
    perceived_ms,
    snippet,
    verify_token,
)
from cxtrace._telemetry import semconv as sc

__all__ = ["PAGE_LOAD_SPAN", "RumRecorder"]

_log = logging.getLogger("cxtrace")

PAGE_LOAD_SPAN: Final = "browser.page_load"
RATE_PER_S: Final = 50.0  # accepted beacons a second, per process, sustained
BURST: Final = 100
# Enough page ids for the sustained rate over a token's lifetime.
REPLAY_CAPACITY: Final = int(RATE_PER_S * MAX_TOKEN_AGE_S)
MAX_USER_AGENT: Final = 512

_HINTS: Final = {
    "bad_signature": (
        "; with several server processes (or hosts) set the same CXTRACE_PROPAGATION_KEY on "
        "all of them, else each signs pages with its own random key"
    ),
    "expired": "; a beacon older than 10 minutes, or a clock far apart between hosts",
}


class RumRecorder:
    """Process-wide RUM state, configured once; thread-safe."""

    def __init__(
        self,
        settings: Settings,
        tracer_provider: Any,
        meter_provider: Any,
        version: str,
        segments: SegmentGate,
    ) -> None:
        # Without CXTRACE_PROPAGATION_KEY only this process (and workers forked from it,
        # which inherit the key) can verify the pages it signed.
        self.key = settings.propagation_key or secrets.token_bytes(32)
        self.version = version
        self.segments = segments
        self.threshold_s = settings.rum_apdex_threshold_ms / 1000.0
        self.threshold_attr = round(settings.rum_apdex_threshold_ms)
        self.bucket = TokenBucket(rate=RATE_PER_S, burst=BURST)
        self.replays = ReplayGuard(capacity=REPLAY_CAPACITY)
        self._logged: set[str] = set()
        self.bind(tracer_provider, meter_provider)

    def bind(self, tracer_provider: Any, meter_provider: Any) -> None:
        """(Re)take tracer and instruments; after a fork, from the child's providers."""
        self.tracer = tracer_provider.get_tracer("cxtrace", self.version)
        meter = meter_provider.get_meter("cxtrace", self.version)
        # Beacons are rate limited, so plain SDK instruments are cheap enough here.
        self.page_loads = meter.create_counter(
            sc.CX_PAGE_LOADS,
            unit="{page_load}",
            description="Browser page loads by perceived satisfaction (Apdex), segment and step",
        )
        self.page_load_duration = meter.create_histogram(
            sc.CX_PAGE_LOAD_DURATION,
            unit="s",
            description="Perceived page load time (LCP, else the load event) in the browser",
            explicit_bucket_boundaries_advisory=sc.PAGE_LOAD_BUCKETS_S,
        )
        self.rejected = meter.create_counter(
            sc.CX_RUM_BEACONS_REJECTED,
            unit="{beacon}",
            description="RUM beacons cxtrace dropped, by cause (error.type)",
        )

    # ------------------------------------------------------------------ the page

    def page_context(
        self,
        span: Any,
        *,
        segment: str,
        step: Any,
        route: Optional[str],
        method: str,
        path: Optional[str],
    ) -> Optional[PageContext]:
        """The context a page served inside ``span`` carries; None without a valid span."""
        if span is None:
            span = trace.get_current_span()
        ctx = span.get_span_context()
        if not ctx.is_valid:
            return None
        return PageContext(
            trace_id=format(ctx.trace_id, "032x"),
            span_id=format(ctx.span_id, "016x"),
            sampled=ctx.trace_flags.sampled,
            segment=segment,
            journey=step.journey if step is not None else None,
            step=step.step if step is not None else None,
            step_index=step.index if step is not None else None,
            route=route,
            method=method,
            path=path,
            issued_at_ms=time.time_ns() // 1_000_000,
        )

    def page_tag(self, state: Any, nonce: Optional[str] = None) -> Optional[str]:
        """The tags for the page the request ``state`` is serving, or None."""
        page = self.page_context(
            state.span,
            segment=state.segment,
            step=state.step,
            route=state.route,
            method=state.method,
            path=state.path,
        )
        if page is None:
            return None
        token = issue_token(page, self.key)
        if token is None:
            return None
        return snippet(token, page.traceparent, nonce)

    # ------------------------------------------------------------------ the beacon

    def reject(self, cause: str) -> None:
        """Count a dropped beacon; log each cause once per process (WARNING), then DEBUG."""
        self.rejected.add(1, {sc.ERROR_TYPE: cause})
        if cause in self._logged:
            _log.debug("RUM beacon dropped: %s", cause)
            return
        self._logged.add(cause)
        _log.warning(
            "RUM beacon dropped: %s (further ones are counted in %s, not logged)%s",
            cause,
            sc.CX_RUM_BEACONS_REJECTED,
            _HINTS.get(cause, ""),
        )

    def receive(self, body: bytes, *, user_agent: Optional[str], now_s: float) -> None:
        """Validate one beacon body and record it; raises :class:`Rejected` to drop it.

        The request's method, content type and length were checked by the caller
        (``check_request``) before the body was read.
        """
        if not self.bucket.take():
            raise Rejected("rate_limited", 429)
        beacon = parse_beacon(body)
        page = verify_token(beacon.token, self.key, now_s=now_s)
        if not self.replays.admit(
            page.span_id,
            expires=time.monotonic() + MAX_TOKEN_AGE_S,
            now=time.monotonic(),
        ):
            raise Rejected("replayed")
        self.record(page, beacon, user_agent)

    def record(self, page: PageContext, beacon: Beacon, user_agent: Optional[str]) -> None:
        perceived = perceived_ms(beacon)
        outcome = classify(perceived / 1000.0, self.threshold_s, is_error=False)
        segment = self.segments.admit(page.segment)
        self.page_loads.add(
            1,
            _present(
                {
                    sc.CX_SATISFACTION: outcome.satisfaction,
                    sc.CX_SEGMENT: segment,
                    sc.CX_JOURNEY: page.journey,
                    sc.CX_STEP: page.step,
                    sc.HTTP_ROUTE: page.route,
                    sc.HTTP_REQUEST_METHOD: page.method,
                }
            ),
        )
        self.page_load_duration.record(
            perceived / 1000.0,
            _present({sc.CX_SEGMENT: segment, sc.CX_STEP: page.step, sc.HTTP_ROUTE: page.route}),
        )
        parent = SpanContext(
            trace_id=int(page.trace_id, 16),
            span_id=int(page.span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if page.sampled else TraceFlags.DEFAULT),
        )
        context = trace.set_span_in_context(NonRecordingSpan(parent))
        # Anchor: the server issued the page at issued_at; the browser got its first byte
        # ttfb after navigation start. Network latency one way is the residual error.
        start_ns = (page.issued_at_ms - round(beacon.ttfb_ms)) * 1_000_000
        end_ms = beacon.load_ms if beacon.load_ms is not None else max(perceived, beacon.sent_ms)
        attributes = _present(
            {
                sc.CX_SEGMENT: segment,
                sc.CX_JOURNEY: page.journey,
                sc.CX_STEP: page.step,
                sc.CX_STEP_INDEX: page.step_index,
                sc.CX_APDEX_THRESHOLD_MS: self.threshold_attr,
                sc.CX_SATISFACTION: outcome.satisfaction,
                sc.CX_SATISFACTION_SCORE: outcome.score,
                sc.CX_FRUSTRATION_REASON: outcome.reason,
                sc.CX_RUM_PERCEIVED_MS: perceived,
                sc.CX_RUM_TTFB_MS: beacon.ttfb_ms,
                sc.CX_RUM_DOM_CONTENT_LOADED_MS: beacon.dom_content_loaded_ms,
                sc.CX_RUM_LOAD_MS: beacon.load_ms,
                sc.CX_RUM_LCP_MS: beacon.lcp_ms,
                sc.CX_RUM_INP_MS: beacon.inp_ms,
                sc.CX_RUM_CLS: beacon.cls,
                sc.CX_RUM_JS_ERRORS: beacon.js_errors,
                sc.HTTP_ROUTE: page.route,
                sc.URL_PATH: page.path,
                sc.USER_AGENT_ORIGINAL: user_agent[:MAX_USER_AGENT] if user_agent else None,
            }
        )
        span = self.tracer.start_span(
            PAGE_LOAD_SPAN,
            context=context,
            kind=SpanKind.INTERNAL,
            start_time=start_ns,
            attributes=attributes,
        )
        span.end(end_time=start_ns + round(end_ms * 1_000_000))


def _present(
    attributes: dict[str, Union[str, int, float, None]],
) -> dict[str, Union[str, int, float]]:
    return {name: value for name, value in attributes.items() if value is not None}
