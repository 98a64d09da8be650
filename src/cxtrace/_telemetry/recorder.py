"""Server requests -> spans, cx.* attributes and metrics.

:class:`Recorder` holds everything decided at ``instrument()``: the tracer, the three
instruments, the step matcher, the segment gate, the thresholds. Per request it makes
one :class:`RequestState` (slotted), which integrations drive::

    state = recorder.begin(view)      # None: excluded, nested, or not instrumenting
    state.resolve(route, request)     # once the framework knows the route (optional)
    state.fail(exc)                   # an unhandled exception, if any
    state.status = 200                # from start_response / the response object
    state.visit_headers()             # as the headers go out: the visit cookie to add, if any
    state.detach()                    # leave the request's context (same thread)
    state.finish()                    # when the body has been sent: Apdex, metrics, end span

The current request lives in one ContextVar, so threads, asyncio tasks and Django's
sync/async bridges each see their own.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any, Callable, Final, Optional, Protocol, Union

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cxtrace._core.apdex import Outcome, classify
from cxtrace._core.baggage import CX_KEYS, CX_VISIT, SIG_KEY, inbound_cx
from cxtrace._core.config import Settings
from cxtrace._core.journeys import HTTP_METHODS, StepRef
from cxtrace._core.privacy import UNKNOWN, SegmentGate, hash_user, redact_query
from cxtrace._core.request import RequestView
from cxtrace._guard import Guard
from cxtrace._telemetry import semconv as sc
from cxtrace._telemetry.histogram import attach
from cxtrace._telemetry.tally import Tally
from cxtrace._telemetry.visits import RecorderVisits, Visit

__all__ = [
    "CxSpanProcessor",
    "Recorder",
    "RequestState",
    "ServerRequest",
    "current_request",
    "exception_type",
]

_log = logging.getLogger("cxtrace")


_current: ContextVar[Optional[RequestState]] = ContextVar("cxtrace_request", default=None)


def current_request() -> Optional[RequestState]:
    """The request being served in this context, if cxtrace traces it."""
    return _current.get()


class ServerRequest(RequestView, Protocol):
    """What a server integration tells the recorder about a request."""

    @property
    def server(self) -> tuple[Optional[str], Optional[int]]:
        """(server.address, server.port), worked out together: one ``Host`` parse."""

    @property
    def client_address(self) -> Optional[str]: ...

    @property
    def user_agent(self) -> Optional[str]: ...

    @property
    def protocol_version(self) -> Optional[str]:
        """``1.1``, ``2``."""


class _ViewGetter(Getter[RequestView]):
    """Reads W3C headers through RequestView.header (no copy of the headers)."""

    _keys: Final = {
        "traceparent": "HTTP_TRACEPARENT",
        "tracestate": "HTTP_TRACESTATE",
        "baggage": "HTTP_BAGGAGE",
    }

    def get(self, carrier: RequestView, key: str) -> Optional[list[str]]:
        environ_key = self._keys.get(key) or "HTTP_" + key.upper().replace("-", "_")
        value = carrier.header(environ_key)
        return None if value is None else [value]

    def keys(self, carrier: RequestView) -> list[str]:
        return list(self._keys)


_GETTER: Final = _ViewGetter()
_W3C_PROPAGATORS: Final = (TraceContextTextMapPropagator, W3CBaggagePropagator)
_BAGGAGE_KEYS: Final = (*CX_KEYS, SIG_KEY)
_RESOLVE_SEGMENT = Guard("segment resolver")
_RESOLVE_USER = Guard("user resolver")
_SPAN_START = Guard("span processor")


def _reads_only_w3c(textmap: object) -> bool:
    """Whether this propagator reads nothing but ``traceparent``/``tracestate``/``baggage``.

    Only OpenTelemetry's own classes count (exact types: a subclass may read more).
    """
    if type(textmap) in _W3C_PROPAGATORS:
        return True
    if type(textmap) is CompositePropagator:
        inner = getattr(textmap, "_propagators", None)  # not public: anything else, no shortcut
        return isinstance(inner, (list, tuple)) and all(type(p) in _W3C_PROPAGATORS for p in inner)
    return False


def exception_type(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class Recorder:
    """Process-wide request recording, configured once."""

    def __init__(
        self, settings: Settings, tracer_provider: Any, meter_provider: Any, version: str
    ) -> None:
        self.settings = settings
        self.active = True
        self.version = version
        self.bind(tracer_provider, meter_provider)
        self.matcher = settings.step_matcher
        self.segments = SegmentGate(settings.segments_allowed)
        self.threshold_s = settings.apdex_threshold_ms / 1000.0
        self.threshold_attr = round(settings.apdex_threshold_ms)
        self.frustrated_status = settings.frustrated_status
        self.excluded = settings.excluded_urls
        self.segment_header_key = settings.segment_header_key
        self.user_key = settings.user_hash_key
        self.segment_resolver = settings.segment_resolver
        self.user_resolver = settings.user_resolver
        self._warned_no_user_key = False
        self.inbound_key = settings.propagation_key
        self.trust_inbound = settings.trust_inbound_baggage
        self.reads_inbound = self.inbound_key is not None or self.trust_inbound
        # Visits (design.md section 12): None when CXTRACE_VISITS is off, and nothing runs.
        self.visits: Optional[RecorderVisits] = (
            RecorderVisits(settings) if settings.visits else None
        )
        if self.visits is not None:
            self.visits.bind(self._meter)
        # The global propagator _extract saw last, and whether it reads only W3C headers.
        self._textmap_seen: tuple[object, bool] = (None, False)

    def bind(self, tracer_provider: Any, meter_provider: Any) -> None:
        """(Re)take the tracer and instruments from these providers.

        Called at construction, and after a fork when cxtrace rebuilds its providers for
        the child process (pre-fork servers): requests then export through the child's.
        """
        version = self.version
        self.tracer = tracer_provider.get_tracer("cxtrace", version)
        meter = self._meter = meter_provider.get_meter("cxtrace", version)
        # The two counters are kept by cxtrace (a locked dict increment per request) and
        # reported through observable counters at collection time: an SDK counter.add()
        # cleans and hashes its attribute dict on every call, which was most of the cost
        # of a request (tests/bench, `--profile`). Fresh tallies here also mean that a
        # forked child never re-reports its parent's counts.
        self.requests_tally = Tally(_REQUEST_KEYS)
        self.conversions_tally = Tally(_CONVERSION_KEYS)
        self.conversion_values = Tally(_CONVERSION_VALUE_KEYS)
        visits = getattr(self, "visits", None)  # None at construction: __init__ binds it
        if visits is not None:
            visits.bind(meter)
        meter.create_observable_counter(
            sc.CX_REQUESTS,
            callbacks=[self.requests_tally.observe],
            unit="{request}",
            description="Server requests by customer satisfaction (Apdex), segment and step",
        )
        meter.create_observable_counter(
            sc.CX_CONVERSIONS,
            callbacks=[self.conversions_tally.observe],
            unit="{conversion}",
            description="Successful conversion steps by journey, step and segment",
        )
        meter.create_observable_counter(
            sc.CX_CONVERSION_VALUE,
            callbacks=[self.conversion_values.observe],
            unit="1",
            description="Sum of the values of successful conversions, by currency",
        )
        # The duration histogram likewise, where cxtrace can hand its points to the
        # provider's readers itself (cxtrace._telemetry.histogram); else the SDK's.
        description = "Duration of HTTP server requests, until the body was sent"
        self.durations = attach(
            meter_provider,
            sc.HTTP_SERVER_REQUEST_DURATION,
            unit="s",
            description=description,
            bounds=sc.DURATION_BUCKETS_S,
            names=_DURATION_KEYS,
            scope=InstrumentationScope("cxtrace", version),
        )
        self.duration_histogram = None
        if self.durations is None:
            self.duration_histogram = meter.create_histogram(
                sc.HTTP_SERVER_REQUEST_DURATION,
                unit="s",
                description=description,
                explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS_S,
            )

    # ------------------------------------------------------------------ begin

    def begin(self, view: ServerRequest, *, defer_span: bool = False) -> Optional[RequestState]:
        """Start recording a server request; None when it is excluded or already traced.

        ``defer_span``: an OpenTelemetry contrib instrumentation will start the server span
        further in; cxtrace then starts none, adopts contrib's (``adopt_current_span``) and
        writes its attributes onto it (``hand_over``): one server span, not two.
        """
        if not self.active:
            return None
        path = view.path
        if self.excluded is not None and self.excluded.search(path):
            return None
        if _current.get() is not None:  # an app mounted inside a traced app: one request
            return None
        raw_method = view.method
        method = raw_method if raw_method in HTTP_METHODS else sc.OTHER_METHOD
        scheme = view.scheme
        segment = UNKNOWN
        if self.segment_header_key is not None:
            segment = self.segments.admit(view.header(self.segment_header_key))

        state = RequestState(self, method, path, scheme)
        current = otel_context.get_current()
        existing = trace.get_current_span(current)
        enrich = existing.is_recording() and getattr(existing, "kind", None) is SpanKind.SERVER
        raw_baggage = view.header("HTTP_BAGGAGE")
        parent = current if enrich or defer_span else self._extract(view, raw_baggage)
        if raw_baggage is not None and "cx." in raw_baggage:
            parent = self._take_inbound_cx(state, raw_baggage, parent)
            if segment == UNKNOWN and state.upstream_segment is not None:
                segment = state.upstream_segment
        state.segment = segment
        visits = self.visits
        if visits is not None and state.visit is None:
            state.visit = visits.begin(view)
        if enrich:
            # Someone (e.g. an OpenTelemetry contrib middleware) already made the server
            # span: enrich it rather than nest a second one. Its owner ends it.
            state.span = existing
            state.owns_span = False
            state.recording = True
        elif defer_span:
            state.owns_span = False
            state.deferred = True
            state.start_wall_ns = time.time_ns()
        else:
            # Everything known now goes into start_span (samplers see it; the SDK cleans
            # one mapping); finish() adds the rest in one set_attributes call.
            attributes: dict[str, Union[str, int]] = {
                sc.HTTP_REQUEST_METHOD: method,
                sc.URL_PATH: path,
                sc.URL_SCHEME: scheme,
                sc.CX_SEGMENT: segment,
            }
            if method is sc.OTHER_METHOD:
                attributes[sc.HTTP_REQUEST_METHOD_ORIGINAL] = raw_method
            # Each view property is computed on access: read every one once.
            query = view.query
            if query:
                attributes[sc.URL_QUERY] = redact_query(query)
            address, port = view.server
            if address:
                attributes[sc.SERVER_ADDRESS] = address
            if port:
                attributes[sc.SERVER_PORT] = port
            client = view.client_address
            if client:
                attributes[sc.CLIENT_ADDRESS] = client
            agent = view.user_agent
            if agent:
                attributes[sc.USER_AGENT_ORIGINAL] = agent
            protocol = view.protocol_version
            if protocol:
                attributes[sc.NETWORK_PROTOCOL_VERSION] = protocol
                state.protocol_version = protocol
            span = self.tracer.start_span(
                "HTTP" if method is sc.OTHER_METHOD else method,  # sc.span_method, inlined
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
            )
            state.span = span
            state.span_segment = segment
            state.recording = span.is_recording()
            context = state.context = trace.set_span_in_context(span, parent)
            state.otel_token = otel_context.attach(context)
        state.token = _current.set(state)
        return state

    def _extract(self, view: ServerRequest, raw_baggage: Optional[str]) -> Context:
        """The remote parent, as ``propagate.extract`` finds it.

        With OpenTelemetry's default propagators (W3C trace context and baggage) and
        neither header in the request, that is an empty Context: returned without
        calling the propagators. Checked against the global propagator per request
        (by identity; it may be replaced after ``instrument()``).
        """
        textmap = propagate.get_global_textmap()
        seen = self._textmap_seen  # one tuple, replaced whole: threads see a matching pair
        if seen[0] is not textmap:
            seen = self._textmap_seen = (textmap, _reads_only_w3c(textmap))
        if seen[1] and raw_baggage is None and view.header("HTTP_TRACEPARENT") is None:
            return Context()
        return textmap.extract(view, getter=_GETTER)

    def _take_inbound_cx(self, state: RequestState, raw: str, parent: Context) -> Context:
        """Use inbound CX baggage only when it verifies (or is trusted); never relay it.

        Whatever the verdict, the cx.* entries are removed from the OpenTelemetry baggage
        the request runs with, so app code and outbound calls never see forged values.
        """
        if self.reads_inbound:
            span_context = trace.get_current_span(parent).get_span_context()
            trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
            cx = inbound_cx(
                raw, trace_id=trace_id, key=self.inbound_key, trust_unsigned=self.trust_inbound
            )
            if cx:
                if cx.get(sc.CX_SEGMENT):
                    state.upstream_segment = self.segments.admit(cx[sc.CX_SEGMENT])
                if cx.get(sc.CX_STEP):
                    state.upstream_step = self.matcher.named(cx[sc.CX_STEP], cx.get(sc.CX_JOURNEY))
                if cx.get(CX_VISIT):
                    state.visit = Visit.of_caller(cx[CX_VISIT])
        for key in _BAGGAGE_KEYS:
            if baggage.get_baggage(key, parent) is not None:
                parent = baggage.remove_baggage(key, parent)
        return parent

    def warn_no_user_key(self) -> None:
        if not self._warned_no_user_key:
            self._warned_no_user_key = True
            _log.warning(
                "a user id was set but CXTRACE_USER_HASH_KEY is not: no user identity is "
                "exported (set the key to export user.hash)"
            )


class RequestState:
    """One request's CX and span state; lives from begin() to finish()."""

    __slots__ = (
        "body_in_memory",
        "context",
        "conversion_currency",
        "conversion_marked",
        "conversion_value",
        "deferred",
        "error",
        "error_handled",
        "finished",
        "method",
        "otel_token",
        "owns_span",
        "path",
        "protocol_version",
        "recorder",
        "recording",
        "resolved",
        "route",
        "scheme",
        "segment",
        "segment_from_code",
        "span",
        "span_segment",
        "span_written",
        "start_ns",
        "start_wall_ns",
        "status",
        "step",
        "step_from_code",
        "step_inherited",
        "token",
        "upstream_segment",
        "upstream_step",
        "user_hash",
        "visit",
    )

    def __init__(self, recorder: Recorder, method: str, path: str, scheme: str) -> None:
        self.recorder = recorder
        self.start_ns = time.perf_counter_ns()
        self.method = method
        self.path = path
        self.scheme = scheme
        self.span: Any = None
        self.span_segment: Optional[str] = None  # the cx.segment the span got at its start
        self.owns_span = True
        self.recording = False
        self.otel_token: Optional[Token[Context]] = None
        self.context: Optional[Context] = None  # the span's context, re-entered while streaming
        self.token: Optional[Token[Optional[RequestState]]] = None
        self.segment = UNKNOWN
        self.segment_from_code = False
        self.upstream_segment: Optional[str] = None  # from verified inbound CX baggage
        self.upstream_step: Optional[StepRef] = None
        self.step_inherited = False  # the step is the caller's: its conversion is counted there
        self.route: Optional[str] = None
        self.step: Optional[StepRef] = None
        self.step_from_code = False
        self.resolved = False
        self.status = 0
        self.error: Optional[BaseException] = None
        self.error_handled: Optional[BaseException] = None
        self.user_hash: Optional[str] = None
        self.conversion_marked = False
        self.conversion_value: Optional[float] = None
        self.conversion_currency: Optional[str] = None
        self.protocol_version: Optional[str] = None
        self.finished = False
        self.span_written = False  # our attributes are on the span (finish or hand_over)
        self.deferred = False  # contrib starts (and ends early) the server span: hand_over
        self.start_wall_ns: Optional[int] = None  # only when deferred
        # Set by an integration that saw the final response: its body is already in
        # memory, so sending it runs no app code and needs no re-entered context.
        self.body_in_memory = False
        self.visit: Optional[Visit] = None  # with visits on, or a visit the caller is in

    # ------------------------------------------------------------------ during the request

    def resolve(self, route: Optional[str], request: Any = None) -> None:
        """The framework matched the request (before the view): route, step, segment.

        Runs once. The ``segment=`` resolver runs here so that spans the view starts
        already carry the segment.
        """
        if self.resolved:
            return
        self.resolved = True
        rec = self.recorder
        self.route = route
        if not self.step_from_code:
            # This service's own rules first; else the step the (verified) caller is in,
            # so a backend can say which customer journeys it serves.
            own = rec.matcher.match(route, self.path, self.method)
            self.step_inherited = own is None and self.upstream_step is not None
            self.step = own or self.upstream_step
        resolver = rec.segment_resolver
        if request is not None and resolver is not None and not self.segment_from_code:
            with _RESOLVE_SEGMENT:
                value = resolver(request)
                if value is not None:
                    if not isinstance(value, str):  # a bug in the app's resolver: say so once
                        raise TypeError(
                            f"the segment= resolver returned a {type(value).__name__}; "
                            "expected a str or None (the segment stays as it was)"
                        )
                    self.set_segment(rec.segments.admit(value), from_code=False)

    def dispatched(
        self, request: Any, default_user: Optional[Callable[[Any], object]] = None
    ) -> None:
        """The view has run (still inside the framework's request context): the user.

        The ``user=`` resolver runs after the view because that is where apps log users
        in; ``default_user`` is the integration's own fallback (Django's cached user).
        """
        rec = self.recorder
        if self.user_hash is not None:
            return
        resolver: Optional[Callable[[Any], object]] = rec.user_resolver
        if resolver is None:
            if rec.user_key is None:  # the fallback is implicit: no key, no lookup, no warning
                return
            resolver = default_user
        if resolver is None:
            return
        with _RESOLVE_USER:
            user = resolver(request)
            if user is not None:
                self.set_user(user)

    # The server span gets its cx.* attributes once, in finish(): a segment or step set
    # late in the request then never leaves a stale value behind (attributes cannot be
    # removed), and the request path makes one set_attributes call instead of many.

    def set_segment(self, segment: str, *, from_code: bool = True) -> None:
        self.segment = segment
        self.segment_from_code = self.segment_from_code or from_code

    def set_step(self, step: StepRef) -> None:
        self.step = step
        self.step_from_code = True
        self.step_inherited = False

    def set_user(self, user_id: object) -> None:
        key = self.recorder.user_key
        if key is None:
            self.recorder.warn_no_user_key()
            return
        self.user_hash = hash_user(key, user_id)

    def mark_conversion(self, value: Optional[float], currency: Optional[str]) -> None:
        self.conversion_marked = True
        if value is not None:
            self.conversion_value = value
        if currency is not None:
            self.conversion_currency = currency

    def cx_attributes(self) -> Mapping[str, Union[str, int]]:
        """What every span started inside this request carries."""
        step = self.step
        visit = self.visit
        if visit is not None:
            if step is None:
                return {sc.CX_SEGMENT: self.segment, sc.CX_VISIT_ID: visit.id}
            return {sc.CX_SEGMENT: self.segment, **step.attributes, sc.CX_VISIT_ID: visit.id}
        if step is None:
            return {sc.CX_SEGMENT: self.segment}
        return {sc.CX_SEGMENT: self.segment, **step.attributes}

    def fail(self, exc: BaseException) -> None:
        """An exception the framework did not handle: the request is an error."""
        if exc is self.error:
            return
        self.error = exc
        if self.recording and exc is not self.error_handled:
            self.span.record_exception(exc)

    def record_handled(self, exc: BaseException) -> None:
        """An exception the app's own error handler turned into a response."""
        if exc is self.error or exc is self.error_handled:
            return
        self.error_handled = exc
        if self.recording:
            self.span.record_exception(exc)

    def detach(self) -> None:
        """Leave the request's context; call in the context (thread/task) that began it."""
        if self.token is not None:
            _current.reset(self.token)
            self.token = None
        if self.otel_token is not None:
            otel_context.detach(self.otel_token)
            self.otel_token = None

    def enter(self) -> tuple[Optional[Token[Context]], Token[Optional[RequestState]]]:
        """Re-enter the request's context, e.g. while a streamed body produces a chunk."""
        otel_token = otel_context.attach(self.context) if self.context is not None else None
        return otel_token, _current.set(self)

    @staticmethod
    def leave(tokens: tuple[Optional[Token[Context]], Token[Optional[RequestState]]]) -> None:
        otel_token, token = tokens
        _current.reset(token)
        if otel_token is not None:
            otel_context.detach(otel_token)

    # ------------------------------------------------------------------ the end

    def finish(self, end_ns: Optional[int] = None) -> None:
        """The body has been sent (or the client went away): classify and record."""
        if self.finished:
            return
        self.finished = True
        duration_s = ((end_ns or time.perf_counter_ns()) - self.start_ns) / 1e9
        if not self.resolved:
            self.resolve(self.route)
        verdict = self._judge(duration_s)
        self._count(verdict, duration_s)
        visit = self.visit
        if visit is not None and not visit.done:  # no response headers went out (a crash)
            self._count_visit(visit, verdict)
        if self.deferred and self.span is None:
            self._start_late_span()
        if not self.span_written:
            self._write_span(verdict)
        if self.owns_span and self.span is not None:
            self.span.end()

    def _start_late_span(self) -> None:
        """A deferred request whose contrib span never showed up: trace it ourselves.

        Deferring must never lose a request's span; this one starts at the request's start
        (wall clock taken at begin) and ends now.
        """
        rec = self.recorder
        span = rec.tracer.start_span(
            sc.span_method(self.method),
            kind=SpanKind.SERVER,
            start_time=self.start_wall_ns,
            attributes={
                sc.HTTP_REQUEST_METHOD: self.method,
                sc.URL_PATH: self.path,
                sc.URL_SCHEME: self.scheme,
            },
        )
        self.span = span
        self.owns_span = True
        self.recording = span.is_recording()

    def adopt_current_span(self) -> None:
        """Take the server span someone else started inside our request (contrib)."""
        if self.span is not None:
            return
        span = trace.get_current_span()
        if span.is_recording() and getattr(span, "kind", None) is SpanKind.SERVER:
            self.span = span
            self.owns_span = False
            self.recording = True

    def hand_over(self, status: int) -> None:
        """Write our attributes now, on a span its owner ends before the body is sent.

        OpenTelemetry contrib ends its Flask span at request teardown and its Django span
        in ``process_response``, both before a streamed body is sent: the span then gets
        the outcome as known at that moment, while the metrics (recorded by ``finish``)
        still measure until the last byte.
        """
        if self.span_written or not self.recording:
            return
        if status:
            self.status = status
        if not self.resolved:
            self.resolve(self.route)
        self._write_span(self._judge((time.perf_counter_ns() - self.start_ns) / 1e9))

    def visit_headers(self) -> tuple[tuple[str, str], ...]:
        """The response headers are going out: count this request in its visit (as it
        stands now: status, time so far) and return the headers to add, maybe none."""
        visit = self.visit
        if visit is None or visit.inherited:
            return ()
        if visit.done:
            return visit.headers
        if not self.resolved:
            self.resolve(self.route)
        return self._count_visit(visit, self._judge((time.perf_counter_ns() - self.start_ns) / 1e9))

    def _count_visit(self, visit: Visit, verdict: _Verdict) -> tuple[tuple[str, str], ...]:
        visits = self.recorder.visits
        if visits is None:
            return ()
        outcome, _, _, converted = verdict
        return visits.respond(
            visit,
            segment=self.segment,
            step=None if self.step_inherited else self.step,
            outcome=outcome,
            converted=converted,
        )

    def _judge(self, duration_s: float) -> _Verdict:
        """(outcome, threshold_ms attribute, error.type, converted)."""
        rec = self.recorder
        step = self.step
        threshold_s = rec.threshold_s
        threshold_attr = rec.threshold_attr
        if step is not None and step.threshold_ms is not None:
            threshold_s = step.threshold_ms / 1000.0
            threshold_attr = round(step.threshold_ms)
        status = self.status
        error = self.error
        is_error = error is not None or status in rec.frustrated_status
        outcome = classify(duration_s, threshold_s, is_error=is_error)
        converted = bool(
            (
                self.conversion_marked
                or (step is not None and step.conversion and not self.step_inherited)
            )
            and not is_error
            and 0 < status < 400
        )
        error_type: Optional[str] = None
        if error is not None:
            error_type = exception_type(error)
        elif status >= 500 or status in rec.frustrated_status:
            error_type = str(status)
        return outcome, threshold_attr, error_type, converted

    def _count(self, verdict: _Verdict, duration_s: float) -> None:
        rec = self.recorder
        step = self.step
        status = self.status
        segment = self.segment
        route = self.route
        method = self.method
        outcome, _, error_type, converted = verdict
        journey = step.journey if step is not None else None
        step_name = step.step if step is not None else None
        rec.requests_tally.add((outcome.satisfaction, segment, journey, step_name, route, method))
        durations = rec.durations
        if durations is not None:
            key = (
                method,
                self.scheme,
                segment,
                route,
                step_name,
                status or None,
                error_type,
                self.protocol_version,
            )
            durations.record(key, duration_s, self.span if self.recording else None)
        else:
            self._record_sdk(rec, duration_s, step_name, error_type)
        if converted:
            rec.conversions_tally.add((journey, step_name, segment))
            value = self.conversion_value
            if value is not None:
                rec.conversion_values.add(
                    (journey, step_name, segment, self.conversion_currency), value
                )

    def _record_sdk(
        self,
        rec: Recorder,
        duration_s: float,
        step_name: Optional[str],
        error_type: Optional[str],
    ) -> None:
        """The duration into the SDK's histogram (a provider cxtrace cannot collect from)."""
        status = self.status
        route = self.route
        attributes: dict[str, Union[str, int]] = {
            sc.HTTP_REQUEST_METHOD: self.method,
            sc.URL_SCHEME: self.scheme,
            sc.CX_SEGMENT: self.segment,
        }
        if route is not None:
            attributes[sc.HTTP_ROUTE] = route
        if step_name is not None:
            attributes[sc.CX_STEP] = step_name
        if status:
            attributes[sc.HTTP_RESPONSE_STATUS_CODE] = status
        if error_type is not None:
            attributes[sc.ERROR_TYPE] = error_type
        if self.protocol_version is not None:
            attributes[sc.NETWORK_PROTOCOL_VERSION] = self.protocol_version
        if rec.duration_histogram is not None:
            rec.duration_histogram.record(duration_s, attributes)

    def _write_span(self, verdict: _Verdict) -> None:
        self.span_written = True
        if not self.recording:
            return
        span = self.span
        step = self.step
        status = self.status
        route = self.route
        outcome, threshold_attr, error_type, converted = verdict
        attrs: dict[str, Union[str, int, float, bool]] = {
            sc.CX_APDEX_THRESHOLD_MS: threshold_attr,
            sc.CX_SATISFACTION: outcome.satisfaction,
            sc.CX_SATISFACTION_SCORE: outcome.score,
            sc.CX_CONVERSION: converted,
        }
        if self.segment != self.span_segment:  # set_segment() or a resolver changed it
            attrs[sc.CX_SEGMENT] = self.segment
        if outcome.reason is not None:
            attrs[sc.CX_FRUSTRATION_REASON] = outcome.reason
        if step is not None:
            attrs.update(step.attributes)
        if self.user_hash is not None:
            attrs[sc.USER_HASH] = self.user_hash
        visit = self.visit
        if visit is not None:
            attrs[sc.CX_VISIT_ID] = visit.id
            attrs[sc.CX_VISIT_NEW] = visit.new
        if route is not None:
            attrs[sc.HTTP_ROUTE] = route
            if self.owns_span:
                method = self.method
                span.update_name(f"{'HTTP' if method is sc.OTHER_METHOD else method} {route}")
        if status:
            attrs[sc.HTTP_RESPONSE_STATUS_CODE] = status
        if error_type is not None:
            attrs[sc.ERROR_TYPE] = error_type
        if converted and self.conversion_value is not None:
            attrs[sc.CX_CONVERSION_VALUE] = self.conversion_value
        if converted and self.conversion_currency is not None:
            attrs[sc.CX_CONVERSION_CURRENCY] = self.conversion_currency
        span.set_attributes(attrs)
        if self.error is not None or status >= 500:
            span.set_status(Status(StatusCode.ERROR, error_type))


# (outcome, cx.apdex.threshold_ms, error.type or None, converted): a plain tuple, one
# allocation and no Python-level constructor call per request.
_Verdict = tuple[Outcome, int, Optional[str], bool]

_REQUEST_KEYS: Final = (
    sc.CX_SATISFACTION,
    sc.CX_SEGMENT,
    sc.CX_JOURNEY,
    sc.CX_STEP,
    sc.HTTP_ROUTE,
    sc.HTTP_REQUEST_METHOD,
)
_CONVERSION_KEYS: Final = (sc.CX_JOURNEY, sc.CX_STEP, sc.CX_SEGMENT)
_CONVERSION_VALUE_KEYS: Final = (*_CONVERSION_KEYS, sc.CX_CONVERSION_CURRENCY)
# http.server.request.duration's attributes, in the order of the keys _count() builds.
_DURATION_KEYS: Final = (
    sc.HTTP_REQUEST_METHOD,
    sc.URL_SCHEME,
    sc.CX_SEGMENT,
    sc.HTTP_ROUTE,
    sc.CX_STEP,
    sc.HTTP_RESPONSE_STATUS_CODE,
    sc.ERROR_TYPE,
    sc.NETWORK_PROTOCOL_VERSION,
)


def check_conversion_value(value: object) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"mark_conversion(value={value!r}): expected a finite number")
    return float(value)


class CxSpanProcessor(SpanProcessor):
    """Stamps the current request's cx.* attributes on every span started inside it."""

    def __init__(self, is_active: Callable[[], bool]) -> None:
        self._is_active = is_active

    def on_start(self, span: SdkSpan, parent_context: Optional[Context] = None) -> None:
        try:  # a guard as ``try``: this runs for every span (see cxtrace._guard)
            state = _current.get()
            if state is not None and state.span is not span and self._is_active():
                span.set_attributes(state.cx_attributes())
        except Exception as exc:  # noqa: BLE001 - a guard
            _SPAN_START.swallow(exc)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
