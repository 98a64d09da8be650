"""``http.server.request.duration`` aggregated by cxtrace, collected by the SDK's readers.

One ``Histogram.record()`` of the OpenTelemetry Python SDK cleans the attribute dict, sorts
and hashes it, and builds a measurement object: about 117,000 instructions, a quarter of
what cxtrace costs per request (docs/performance.md). cxtrace builds its attribute sets
itself, as tuples of bounded values; aggregating them here costs a ``bisect`` and a dict
lookup under a lock.

The SDK has no MetricProducer (checked up to 1.45), so the points reach the exporters this
way: every ``MetricReader`` collects through a callback its ``MeterProvider`` gave it, and
:func:`attach` wraps that callback to append this histogram to what the SDK collected, in
the ``cxtrace`` scope. Readers then export it like any SDK metric (OTLP, Prometheus,
in-memory); readers added to the provider later get the same callback.

Used only where the result is what the SDK itself would report: an SDK ``MeterProvider``
without Views whose readers want cumulative temporality and the default explicit-bucket
aggregation for histograms. Anything else (a View, delta temporality, exponential
histograms, another SDK) gets an SDK histogram, as before: :func:`attach` returns None.
Exemplars follow the provider's exemplar filter: one per bucket, the latest since the
previous collection, with the trace and span of the request it measured.
"""

from __future__ import annotations

import time
import weakref
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Callable, Optional

from opentelemetry import trace
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Exemplar,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import DefaultAggregation, ExplicitBucketHistogramAggregation
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from cxtrace._core.locks import ForkSafeLock
from cxtrace._guard import Guard

__all__ = ["FastHistogram", "attach"]

_COLLECT = Guard("histogram collection")

# Exemplar modes, from the provider's exemplar filter.
_OFF, _SAMPLED, _ALL = 0, 1, 2


class _Point:
    """One attribute set's cumulative histogram (and its exemplars since the last collect)."""

    __slots__ = ("attributes", "buckets", "count", "exemplars", "max", "min", "start_ns", "sum")

    def __init__(self, attributes: dict[str, Any], buckets: int, start_ns: int) -> None:
        self.attributes = attributes
        self.buckets = [0] * buckets
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.start_ns = start_ns
        # bucket -> (value, time_ns, span_id, trace_id) of the latest sampled measurement
        self.exemplars: Optional[dict[int, tuple[float, int, Optional[int], Optional[int]]]] = None


class FastHistogram:
    """An explicit-bucket histogram keyed by tuples of attribute values.

    ``names`` gives each key position its attribute name; None in a key means "absent".
    Keys must be bounded (cxtrace's are: segments by the SegmentGate, steps and routes by
    configuration and templates, methods and status codes by HTTP).
    """

    __slots__ = (
        "_bounds",
        "_exemplars",
        "_lock",
        "_names",
        "_points",
        "description",
        "name",
        "scope",
        "unit",
    )

    def __init__(
        self,
        name: str,
        unit: str,
        description: str,
        bounds: Sequence[float],
        *,
        names: tuple[str, ...],
        scope: InstrumentationScope,
        exemplars: int = _OFF,
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.scope = scope
        self._bounds = tuple(bounds)
        self._names = names
        self._exemplars = exemplars
        self._points: dict[tuple[Any, ...], _Point] = {}
        self._lock = ForkSafeLock()

    def record(self, key: tuple[Any, ...], value: float, span: Optional[trace.Span]) -> None:
        """Count ``value`` (>= 0, finite) for ``key``; ``span``: the request's, for exemplars."""
        bucket = bisect_left(self._bounds, value)
        exemplar = None
        mode = self._exemplars
        if mode and span is not None:
            context = span.get_span_context()
            if mode == _ALL or context.trace_flags.sampled:
                exemplar = (value, time.time_ns(), context.span_id, context.trace_id)
        with self._lock.raw:  # once per request: the lock itself (cxtrace._core.locks)
            point = self._points.get(key)
            if point is None:
                point = self._points[key] = _Point(
                    {name: v for name, v in zip(self._names, key) if v is not None},
                    len(self._bounds) + 1,
                    time.time_ns(),
                )
            point.count += 1
            point.sum += value
            point.buckets[bucket] += 1
            point.min = min(point.min, value)
            point.max = max(point.max, value)
            if exemplar is not None:
                if point.exemplars is None:
                    point.exemplars = {}
                point.exemplars[bucket] = exemplar

    def collect(self, now_ns: int) -> Optional[Metric]:
        """A cumulative snapshot of every attribute set; None before the first record."""
        with self._lock:
            taken = [
                (p.attributes, p.start_ns, p.count, p.sum, p.buckets[:], p.min, p.max, p.exemplars)
                for p in self._points.values()
            ]
            for point in self._points.values():
                point.exemplars = None
        if not taken:
            return None
        bounds = self._bounds
        points = [
            HistogramDataPoint(
                attributes=attributes,
                start_time_unix_nano=start_ns,
                time_unix_nano=now_ns,
                count=count,
                sum=total,
                bucket_counts=buckets,
                explicit_bounds=bounds,
                min=low,
                max=high,
                **({"exemplars": _exemplars(exemplars)} if exemplars else {}),
            )
            for attributes, start_ns, count, total, buckets, low, high, exemplars in taken
        ]
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(
                data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE
            ),
        )


def _exemplars(
    found: dict[int, tuple[float, int, Optional[int], Optional[int]]],
) -> list[Any]:
    return [
        Exemplar(  # the SDK's, so its exporters encode it
            filtered_attributes=None,
            value=value,
            time_unix_nano=at,
            span_id=span_id,
            trace_id=trace_id,
        )
        for _, (value, at, span_id, trace_id) in sorted(found.items())
    ]


# ------------------------------------------------------------------ the collect hook

_Collect = Callable[..., Optional[MetricsData]]


class _Hook:
    """The collect callback of one MeterProvider's readers: the SDK's, plus cxtrace's."""

    __slots__ = ("histograms", "original", "resource")

    def __init__(self, original: _Collect, resource: Any) -> None:
        self.original = original
        self.resource = resource
        self.histograms: dict[str, FastHistogram] = {}

    def __call__(self, reader: Any, timeout_millis: float = 10_000) -> Optional[MetricsData]:
        data = self.original(reader, timeout_millis=timeout_millis)
        try:
            return self._merge(data)
        except Exception as exc:  # noqa: BLE001 - a guard: the SDK's metrics still go out
            _COLLECT.swallow(exc)
            return data

    def _merge(self, data: Optional[MetricsData]) -> Optional[MetricsData]:
        now = time.time_ns()
        by_scope: dict[InstrumentationScope, list[Metric]] = {}
        for histogram in list(self.histograms.values()):
            metric = histogram.collect(now)
            if metric is not None:
                by_scope.setdefault(histogram.scope, []).append(metric)
        if not by_scope:
            return data
        if data is None or not data.resource_metrics:
            return MetricsData(
                resource_metrics=[
                    ResourceMetrics(
                        resource=self.resource,
                        scope_metrics=[_scope_metrics(s, m) for s, m in by_scope.items()],
                        schema_url=self.resource.schema_url,
                    )
                ]
            )
        first, *rest = data.resource_metrics
        scopes = []
        for found in first.scope_metrics:
            extra = by_scope.pop(found.scope, None)
            if extra is not None:
                found = ScopeMetrics(  # noqa: PLW2901 - the SDK's scope, with ours added
                    scope=found.scope,
                    metrics=[*found.metrics, *extra],
                    schema_url=found.schema_url,
                )
            scopes.append(found)
        scopes.extend(_scope_metrics(s, m) for s, m in by_scope.items())
        merged = ResourceMetrics(
            resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url
        )
        return MetricsData(resource_metrics=[merged, *rest])


def _scope_metrics(scope: InstrumentationScope, metrics: list[Metric]) -> ScopeMetrics:
    return ScopeMetrics(scope=scope, metrics=metrics, schema_url=scope.schema_url or "")


_hooks: weakref.WeakKeyDictionary[Any, _Hook] = weakref.WeakKeyDictionary()
_hooks_lock = ForkSafeLock()


def _exemplar_mode(sdk_config: Any) -> Optional[int]:
    """The exemplar filter as a mode; None: one cxtrace does not know (use the SDK)."""
    found = getattr(sdk_config, "exemplar_filter", None)
    if type(found) is TraceBasedExemplarFilter:
        return _SAMPLED
    if type(found) is AlwaysOffExemplarFilter:
        return _OFF
    if type(found) is AlwaysOnExemplarFilter:
        return _ALL
    return None


def _for_histograms(table: object) -> object:
    """A reader's per-instrument-class entry for histograms (keyed by the SDK's subclass)."""
    if isinstance(table, dict):
        for cls, value in table.items():
            if isinstance(cls, type) and issubclass(cls, HistogramInstrument):
                return value
    return None


def _reader_ok(reader: Any) -> bool:
    """Whether this reader wants what cxtrace reports: cumulative explicit buckets."""
    temporality = _for_histograms(getattr(reader, "_instrument_class_temporality", None))
    aggregation = _for_histograms(getattr(reader, "_instrument_class_aggregation", None))
    if temporality is not AggregationTemporality.CUMULATIVE:
        return False
    if type(aggregation) is DefaultAggregation:
        return True
    # explicit buckets without boundaries of its own: the advisory ones apply, as here
    return (
        type(aggregation) is ExplicitBucketHistogramAggregation
        and getattr(aggregation, "_boundaries", None) is None
        and getattr(aggregation, "_record_min_max", True) is True
    )


def attach(
    provider: Any,
    name: str,
    *,
    unit: str,
    description: str,
    bounds: Sequence[float],
    names: tuple[str, ...],
    scope: InstrumentationScope,
) -> Optional[FastHistogram]:
    """A :class:`FastHistogram` that ``provider``'s readers collect; None: use the SDK's.

    The same provider and name give the same histogram again (after ``uninstrument()`` and
    ``instrument()``), as the SDK gives the same instrument: one cumulative series.
    """
    if type(provider) is not MeterProvider:
        return None
    consumer = getattr(provider, "_measurement_consumer", None)
    sdk_config = getattr(provider, "_sdk_config", None)
    if consumer is None or sdk_config is None or getattr(sdk_config, "views", None):
        return None
    mode = _exemplar_mode(sdk_config)
    if mode is None:
        return None
    storages = getattr(consumer, "_reader_storages", None)  # every reader, also added ones
    if not isinstance(storages, dict):
        return None
    readers = list(storages)
    with _hooks_lock:
        hook = _hooks.get(provider)
        histogram = hook.histograms.get(name) if hook is not None else None
        if histogram is not None:
            return histogram  # the same series again, whatever readers joined since
        if not all(_reader_ok(r) for r in readers):
            return None
        if hook is None:
            original = getattr(consumer, "collect", None)
            if original is None or any(getattr(r, "_collect", None) != original for r in readers):
                return None  # someone else wraps the readers' collect: leave it alone
            hook = _hooks[provider] = _Hook(original, sdk_config.resource)
            consumer.collect = hook  # what readers added later are given
            for reader in readers:
                reader._collect = hook
        histogram = hook.histograms[name] = FastHistogram(
            name, unit, description, bounds, names=names, scope=scope, exemplars=mode
        )
        return histogram
