"""OTLP protobuf requests -> plain records the store aggregates (design.md sections 4, 9, 10).

Pure functions: no I/O, no SQLite. What the cockpit keeps of a payload:

- every point of the ``cx.requests``, ``cx.page_loads``, ``cx.conversions`` and
  ``cx.conversion.value`` monotonic sums and of the five ``cx.visit*`` counters (section 12),
  cumulative or delta, as a ``CounterPoint`` naming its series (resource + scope + metric +
  point attributes; the start time is compared by the store to detect restarts);
- every span that carries ``cx.satisfaction`` (a server span finished by cxtrace, or a
  ``browser.page_load`` span from real-user monitoring) as a ``SpanSample``;
- every span, of any kind and any service, as a ``TraceSpan`` for the trace view (its
  attributes bounded: at most ``MAX_ATTRIBUTES``, values cut at ``MAX_VALUE_CHARS``).

Everything else (other metrics) is accepted and dropped.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final, NamedTuple, Optional

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "BROWSER",
    "SERVER",
    "VISIT_METRICS",
    "CounterPoint",
    "SpanSample",
    "TraceSpan",
    "counter_points",
    "span_samples",
    "step_label",
    "trace_spans",
]

# Metric and attribute names of design.md sections 4 and 10.
CX_REQUESTS: Final = "cx.requests"
CX_CONVERSIONS: Final = "cx.conversions"
CX_PAGE_LOADS: Final = "cx.page_loads"
CX_CONVERSION_VALUE_SUM: Final = "cx.conversion.value"  # the counter (section 4)
# The visit counters of section 12, and the kind of count each is in the store.
VISIT_METRICS: Final = {
    "cx.visits": "visits",
    "cx.visit.steps": "steps",
    "cx.visit.frustrations": "frustrations",
    "cx.visit.conversions": "conversions",
    "cx.visit.converted_steps": "converted_steps",
}
CX_VISIT_FRUSTRATED: Final = "cx.visit.frustrated"
CX_VISIT_ID: Final = "cx.visit.id"
MAX_ATTRIBUTES: Final = 64
MAX_VALUE_CHARS: Final = 512
BROWSER_PAGE_LOAD: Final = "browser.page_load"
CX_SEGMENT: Final = "cx.segment"
CX_JOURNEY: Final = "cx.journey"
CX_STEP: Final = "cx.step"
CX_STEP_INDEX: Final = "cx.step.index"
CX_SATISFACTION: Final = "cx.satisfaction"
CX_FRUSTRATION_REASON: Final = "cx.frustration.reason"
CX_APDEX_THRESHOLD_MS: Final = "cx.apdex.threshold_ms"
CX_CONVERSION: Final = "cx.conversion"
CX_CONVERSION_VALUE: Final = "cx.conversion.value"
CX_CONVERSION_CURRENCY: Final = "cx.conversion.currency"
HTTP_ROUTE: Final = "http.route"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
SERVICE_NAME: Final = "service.name"

SERVER: Final = "server"
BROWSER: Final = "browser"
SATISFACTIONS: Final = ("satisfied", "tolerating", "frustrated")
UNKNOWN_SEGMENT: Final = "unknown"
NO_STEP: Final = "(no step)"
UNKNOWN_SERVICE: Final = "unknown_service"
# Bounds on what one payload can make us store: a hostile sender cannot write huge labels.
_MAX_LABEL: Final = 128

_METRIC_SOURCES: Final = {
    CX_REQUESTS: SERVER,
    CX_PAGE_LOADS: BROWSER,
    CX_CONVERSIONS: SERVER,
    CX_CONVERSION_VALUE_SUM: SERVER,
    **dict.fromkeys(VISIT_METRICS, SERVER),
}
_UNJUDGED: Final = frozenset((CX_CONVERSIONS, CX_CONVERSION_VALUE_SUM, *VISIT_METRICS))


class CounterPoint(NamedTuple):
    """One point of a cx.* counter, before temporality is resolved."""

    metric: str
    series: str  # stable identity of the stream this point belongs to
    is_cumulative: bool
    start_ns: int
    time_ns: int
    value: float
    service: str
    segment: str
    journey: str  # "" when the request maps to no step
    step: str  # the step name, else the route, else "(no step)"; "" for cx.visits
    satisfaction: str  # "" for cx.conversions, cx.conversion.value and visits
    # cx.visit.frustrations: the reason; cx.visit.converted_steps: "true" / "false";
    # cx.conversion.value: the currency; else "".
    detail: str = ""


class SpanSample(NamedTuple):
    """A span with a satisfaction verdict: an example, a duration, maybe a conversion value."""

    source: str  # "server" or "browser"
    service: str
    segment: str
    journey: str
    step: str
    step_index: int  # 0 when unknown
    satisfaction: str
    reason: str  # "slow", "error" or ""
    threshold_ms: int  # 0 when unknown
    trace_id: str
    span_id: str
    end_ns: int
    duration_ms: float
    is_error: bool
    http_status: int  # 0 when unknown
    conversion_value: Optional[float]
    currency: str
    is_root: bool  # no parent span: the request came from outside the traced services


def step_label(journey: object, step: object, route: object) -> tuple[str, str]:
    """(journey, step) as the cockpit shows them: a request with no step shows its route."""
    if isinstance(step, str) and step:
        return (_label(journey, ""), _label(step, NO_STEP))
    return ("", _label(route, NO_STEP))


def _label(value: object, default: str) -> str:
    if not isinstance(value, str) or not value:
        return default
    return value[:_MAX_LABEL]


def _any_value(value: common_pb2.AnyValue) -> object:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {pair.key: _any_value(pair.value) for pair in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    result: object = getattr(value, which)
    return result


def _attributes(pairs: Any) -> dict[str, object]:
    return {pair.key: _any_value(pair.value) for pair in pairs}


def _service(resource: Any) -> str:
    """``service.name`` of a resource's attributes (the last one, if repeated)."""
    service = UNKNOWN_SERVICE
    for pair in resource:
        if pair.key == SERVICE_NAME:
            service = _label(_any_value(pair.value), UNKNOWN_SERVICE)
    return service


def _series_key(metric: str, origin: str, attributes: dict[str, object]) -> str:
    """A short digest of everything that identifies one stream of points.

    ``origin`` is the canonical resource + scope; the resource includes ``service.name``
    and ``service.instance.id``, so two processes of one service are two series, as the
    OpenTelemetry data model says.
    """
    canonical = json.dumps([metric, origin, attributes], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _number(point: metrics_pb2.NumberDataPoint) -> Optional[float]:
    which = point.WhichOneof("value")
    if which == "as_int":
        return float(point.as_int)
    if which == "as_double":
        return float(point.as_double)
    return None


# Counts and timestamps a hostile payload could send that SQLite cannot store (NaN becomes
# NULL, integers over 2**63 overflow) or that would poison sums: such points are skipped.
_MAX_COUNT: Final = 1e15
_MAX_TIME_NS: Final = 2**62


def _is_count(value: float) -> bool:
    return 0 <= value < _MAX_COUNT  # also False for NaN


def _is_time(item: Any) -> bool:
    return bool(item.start_time_unix_nano < _MAX_TIME_NS and 0 < item.time_unix_nano < _MAX_TIME_NS)


def counter_points(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[CounterPoint]:
    """The points of the cx.* counters in ``request``; other metrics are skipped."""
    cumulative = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    delta = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    records: list[CounterPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = resource_metrics.resource.attributes
        service = _service(resource)
        resource_text = json.dumps(_attributes(resource), sort_keys=True, default=str)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            origin = f"{resource_text}|{scope.name}/{scope.version}"
            for metric in scope_metrics.metrics:
                if metric.name not in _METRIC_SOURCES or metric.WhichOneof("data") != "sum":
                    continue
                temporality = metric.sum.aggregation_temporality
                if not metric.sum.is_monotonic or temporality not in (cumulative, delta):
                    continue
                for point in metric.sum.data_points:
                    value = _number(point)
                    if value is None or not _is_count(value) or not _is_time(point):
                        continue
                    if temporality == delta and value == 0:
                        continue
                    attrs = _attributes(point.attributes)
                    journey, step = step_label(
                        attrs.get(CX_JOURNEY), attrs.get(CX_STEP), attrs.get(HTTP_ROUTE)
                    )
                    satisfaction = attrs.get(CX_SATISFACTION)
                    if metric.name not in _UNJUDGED and satisfaction not in SATISFACTIONS:
                        continue
                    detail = ""
                    if metric.name in VISIT_METRICS:
                        visit_detail = _visit_detail(metric.name, attrs)
                        if visit_detail is None:
                            continue
                        detail = visit_detail
                        # Visit counts carry the journey (and step) they count, or none.
                        journey = _label(attrs.get(CX_JOURNEY), "")
                        step = _label(attrs.get(CX_STEP), "")
                        if metric.name != "cx.visits" and not journey:
                            continue
                        if metric.name == "cx.visits":
                            journey = step = ""
                    elif metric.name == CX_CONVERSION_VALUE_SUM:
                        detail = _label(attrs.get(CX_CONVERSION_CURRENCY), "")
                    records.append(
                        CounterPoint(
                            metric=metric.name,
                            series=_series_key(metric.name, origin, attrs),
                            is_cumulative=temporality == cumulative,
                            start_ns=point.start_time_unix_nano,
                            time_ns=point.time_unix_nano,
                            value=value,
                            service=service,
                            segment=_label(attrs.get(CX_SEGMENT), UNKNOWN_SEGMENT),
                            journey=journey,
                            step=step,
                            satisfaction=str(satisfaction or ""),
                            detail=detail,
                        )
                    )
    return records


def _visit_detail(metric: str, attrs: dict[str, object]) -> Optional[str]:
    """The extra attribute of a visit counter as the store keeps it; None: malformed."""
    if metric == "cx.visit.frustrations":
        reason = attrs.get(CX_FRUSTRATION_REASON)
        return reason if reason in ("slow", "error") else None
    if metric == "cx.visit.converted_steps":
        frustrated = attrs.get(CX_VISIT_FRUSTRATED)
        return ("true" if frustrated else "false") if isinstance(frustrated, bool) else None
    return ""


def _int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)) and value == value and abs(value) < 2**62:  # noqa: PLR0124 - NaN
        return int(value)
    return 0


def span_samples(request: trace_service_pb2.ExportTraceServiceRequest) -> list[SpanSample]:
    """The spans of ``request`` that carry a satisfaction verdict."""
    error = trace_pb2.Status.STATUS_CODE_ERROR
    samples: list[SpanSample] = []
    for resource_spans in request.resource_spans:
        service = _service(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attrs = _attributes(span.attributes)
                satisfaction = attrs.get(CX_SATISFACTION)
                if satisfaction not in SATISFACTIONS:
                    continue
                if not 0 < span.end_time_unix_nano < _MAX_TIME_NS:
                    continue
                journey, step = step_label(
                    attrs.get(CX_JOURNEY), attrs.get(CX_STEP), attrs.get(HTTP_ROUTE)
                )
                reason = attrs.get(CX_FRUSTRATION_REASON)
                value = attrs.get(CX_CONVERSION_VALUE)
                has_value = (
                    attrs.get(CX_CONVERSION) is True
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and abs(value) < 1e15  # also false for NaN
                )
                duration_ns = max(0, span.end_time_unix_nano - span.start_time_unix_nano)
                samples.append(
                    SpanSample(
                        source=BROWSER if span.name == BROWSER_PAGE_LOAD else SERVER,
                        service=service,
                        segment=_label(attrs.get(CX_SEGMENT), UNKNOWN_SEGMENT),
                        journey=journey,
                        step=step,
                        step_index=_int(attrs.get(CX_STEP_INDEX)),
                        satisfaction=str(satisfaction),
                        reason=reason if reason in ("slow", "error") else "",
                        threshold_ms=_int(attrs.get(CX_APDEX_THRESHOLD_MS)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        end_ns=span.end_time_unix_nano,
                        duration_ms=duration_ns / 1e6,
                        is_error=span.status.code == error,
                        http_status=_int(attrs.get(HTTP_RESPONSE_STATUS_CODE)),
                        conversion_value=float(value) if has_value else None,  # type: ignore[arg-type]
                        currency=_label(attrs.get(CX_CONVERSION_CURRENCY), ""),
                        is_root=not span.parent_span_id,
                    )
                )
    return samples


class TraceSpan(NamedTuple):
    """Any span, as the trace view shows it."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    service: str
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER, UNSPECIFIED
    start_ns: int
    end_ns: int
    status: str  # OK, ERROR, UNSET
    status_message: str
    visit_id: str  # cx.visit.id, else ""
    satisfaction: str  # cx.satisfaction, else ""
    attributes: str  # JSON object, bounded


_KINDS: Final = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: "INTERNAL",
    trace_pb2.Span.SPAN_KIND_SERVER: "SERVER",
    trace_pb2.Span.SPAN_KIND_CLIENT: "CLIENT",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "PRODUCER",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
_STATUSES: Final = {
    trace_pb2.Status.STATUS_CODE_OK: "OK",
    trace_pb2.Status.STATUS_CODE_ERROR: "ERROR",
}


def _bounded(value: object) -> object:
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return json.dumps(value, default=str)[:MAX_VALUE_CHARS]


def trace_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[TraceSpan]:
    """Every span of ``request`` with a trace and span id, for the trace view."""
    spans: list[TraceSpan] = []
    for resource_spans in request.resource_spans:
        service = _service(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8:
                    continue
                if not 0 < span.start_time_unix_nano <= span.end_time_unix_nano < _MAX_TIME_NS:
                    continue
                attrs = _attributes(span.attributes)
                kept = {
                    k[:_MAX_LABEL]: _bounded(v) for k, v in list(attrs.items())[:MAX_ATTRIBUTES]
                }
                visit = attrs.get(CX_VISIT_ID)
                satisfaction = attrs.get(CX_SATISFACTION)
                spans.append(
                    TraceSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex()
                        if len(span.parent_span_id) == 8
                        else "",
                        service=service,
                        name=_label(span.name, "(unnamed)"),
                        kind=_KINDS.get(span.kind, "UNSPECIFIED"),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status=_STATUSES.get(span.status.code, "UNSET"),
                        status_message=span.status.message[:MAX_VALUE_CHARS],
                        visit_id=visit if isinstance(visit, str) and len(visit) == 32 else "",
                        satisfaction=satisfaction if satisfaction in SATISFACTIONS else "",
                        attributes=json.dumps(kept, sort_keys=True),
                    )
                )
    return spans
