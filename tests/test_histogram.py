"""cxtrace's own aggregation of http.server.request.duration (cxtrace._telemetry.histogram).

It must report exactly what the SDK's histogram would: the same points, decoded off the wire
by a real receiver, and the SDK's histogram wherever cxtrace cannot reproduce it.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
)
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import cxtrace
from cxtrace._telemetry import histogram as fast
from cxtrace._telemetry.semconv import DURATION_BUCKETS_S
from flask_app import make_app
from otlp_receiver import Receiver

SCOPE = InstrumentationScope("cxtrace", "test")
NAMES = ("http.request.method", "cx.segment", "http.response.status_code")


def attach(provider: Any, name: str = "d") -> fast.FastHistogram | None:
    return fast.attach(
        provider,
        name,
        unit="s",
        description="test",
        bounds=DURATION_BUCKETS_S,
        names=NAMES,
        scope=SCOPE,
    )


def points(reader: InMemoryMetricReader, name: str) -> list[HistogramDataPoint]:
    data = reader.get_metrics_data()
    found = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
                    found.extend(metric.data.data_points)
    return found


def comparable(point: HistogramDataPoint) -> tuple[Any, ...]:
    return (
        tuple(sorted(point.attributes.items())),
        point.count,
        round(point.sum, 9),
        tuple(point.bucket_counts),
        tuple(point.explicit_bounds),
        point.min,
        point.max,
    )


# A key: method, segment, status (None: the attribute is absent). Values include every
# bucket boundary itself, where bisect_left and bisect_right would differ.
KEYS = st.tuples(
    st.sampled_from(["GET", "POST"]),
    st.sampled_from(["pro", "enterprise", "unknown"]),
    st.sampled_from([200, 404, None]),
)
VALUES = st.one_of(
    st.sampled_from(DURATION_BUCKETS_S),
    st.floats(min_value=0, max_value=20, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=60))
def test_points_equal_the_sdk_histogram_for_the_same_measurements(
    measurements: list[tuple[tuple[Any, ...], float]],
) -> None:
    sdk_reader, our_reader = InMemoryMetricReader(), InMemoryMetricReader()
    sdk_histogram = (
        MeterProvider(metric_readers=[sdk_reader])
        .get_meter("cxtrace", "test")
        .create_histogram("d", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S)
    )
    ours = attach(MeterProvider(metric_readers=[our_reader]))
    assert ours is not None
    for key, value in measurements:
        sdk_histogram.record(value, {n: v for n, v in zip(NAMES, key) if v is not None})
        ours.record(key, value, None)

    expected = sorted(comparable(p) for p in points(sdk_reader, "d"))
    assert sorted(comparable(p) for p in points(our_reader, "d")) == expected
    assert sum(p.count for p in points(our_reader, "d")) == len(measurements)  # cumulative


def test_metric_joins_the_sdk_metrics_of_its_scope_and_every_reader_sees_it() -> None:
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[first, second])
    counter = provider.get_meter("cxtrace", "test").create_counter("c")
    ours = attach(provider)
    assert ours is not None
    assert attach(provider) is ours  # the same series when taken again
    counter.add(1)
    ours.record(("GET", "pro", 200), 0.2, None)

    for reader in (first, second):
        data = reader.get_metrics_data()
        assert data is not None
        (resource_metrics,) = data.resource_metrics
        (scope_metrics,) = resource_metrics.scope_metrics  # one cxtrace scope, not two
        assert scope_metrics.scope == SCOPE
        assert sorted(m.name for m in scope_metrics.metrics) == ["c", "d"]


@pytest.mark.skipif(
    not hasattr(MeterProvider, "add_metric_reader"), reason="SDK without add_metric_reader"
)
def test_reader_added_later_collects_it_too() -> None:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    ours = attach(provider)
    assert ours is not None
    later = InMemoryMetricReader()
    provider.add_metric_reader(later)
    ours.record(("GET", "pro", 200), 0.2, None)
    assert [p.count for p in points(later, "d")] == [1]


@pytest.mark.skipif(
    not hasattr(MeterProvider, "add_metric_reader"), reason="SDK without add_metric_reader"
)
def test_taken_again_after_a_delta_reader_joined_it_stays_one_series() -> None:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    ours = attach(provider)
    assert ours is not None
    provider.add_metric_reader(
        InMemoryMetricReader(preferred_temporality={SdkHistogram: AggregationTemporality.DELTA})
    )
    # No SDK histogram of the same name beside it (two series for one metric).
    assert attach(provider) is ours
    assert attach(provider, "another") is None  # a new one, though, must respect the reader


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: MeterProvider(views=[View(instrument_name="*")]), id="views"),
        pytest.param(
            lambda: MeterProvider(
                metric_readers=[
                    InMemoryMetricReader(
                        preferred_temporality={SdkHistogram: AggregationTemporality.DELTA}
                    )
                ]
            ),
            id="delta",
        ),
        pytest.param(
            lambda: MeterProvider(
                metric_readers=[
                    InMemoryMetricReader(
                        preferred_aggregation={
                            SdkHistogram: ExponentialBucketHistogramAggregation()
                        }
                    )
                ]
            ),
            id="exponential",
        ),
        pytest.param(
            lambda: MeterProvider(
                metric_readers=[
                    InMemoryMetricReader(
                        preferred_aggregation={
                            SdkHistogram: ExplicitBucketHistogramAggregation(boundaries=(1.0, 2.0))
                        }
                    )
                ]
            ),
            id="own-boundaries",
        ),
        pytest.param(NoOpMeterProvider, id="not-the-sdk"),
    ],
)
def test_anything_cxtrace_cannot_reproduce_keeps_the_sdk_histogram(make: Any) -> None:
    assert attach(make()) is None


@pytest.mark.expect_internal_error
def test_failing_aggregation_never_stops_the_sdk_metrics(
    monkeypatch: pytest.MonkeyPatch, internal_errors: list[tuple[str, BaseException]]
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("app").create_counter("app.counter").add(3)
    ours = attach(provider)
    assert ours is not None
    ours.record(("GET", "pro", 200), 0.2, None)

    def broken(self: fast.FastHistogram, now_ns: int) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(fast.FastHistogram, "collect", broken)
    data = reader.get_metrics_data()
    assert data is not None
    names = [m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert names == ["app.counter"]
    assert [site for site, _ in internal_errors] == ["histogram collection"]


def test_exemplars_follow_the_filter_and_name_the_request_span() -> None:
    reader = InMemoryMetricReader()
    ours = attach(MeterProvider(metric_readers=[reader]))  # default: trace_based
    assert ours is not None
    tracer = TracerProvider().get_tracer("t")
    sampled = tracer.start_span("request")
    ours.record(("GET", "pro", 200), 0.003, sampled)
    ours.record(("GET", "pro", 200), 0.004, sampled)  # same bucket: the latest is kept
    ours.record(("GET", "pro", 200), 0.3, None)  # no span: no exemplar
    (point,) = points(reader, "d")
    context = sampled.get_span_context()
    assert [(e.value, e.trace_id, e.span_id) for e in point.exemplars] == [
        (0.004, context.trace_id, context.span_id)
    ]
    (again,) = points(reader, "d")  # reported once, then gone until the next ones
    assert again.exemplars == []
    assert again.count == 3


# --------------------------------------------------------------------------- on the wire


def _duration_points(otlp: Receiver, handle: cxtrace.Instrumentation, requests_done: int) -> Any:
    otlp.wait_for(lambda r: sum(s.kind == "SERVER" for s in r.spans) >= requests_done)
    handle.force_flush()
    otlp.wait_for(lambda r: any(p.metric == "http.server.request.duration" for p in r.points))
    return [p for p in otlp.points if p.metric == "http.server.request.duration"]


def test_wire_points_carry_exemplars_of_the_server_spans(
    otlp_any: Receiver, instrument: Any, serve: Any
) -> None:
    handle = instrument(otlp_any)
    base = serve(make_app())
    for _ in range(3):
        assert requests.get(f"{base}/products/7").status_code == 200

    (point,) = _duration_points(otlp_any, handle, 3)
    assert point.temporality == "CUMULATIVE"
    assert point.count == 3
    assert point.bounds == list(DURATION_BUCKETS_S)
    assert sum(point.bucket_counts) == 3
    assert point.attributes["http.route"] == "/products/<int:product_id>"
    servers = {(s.trace_id, s.span_id) for s in otlp_any.spans if s.kind == "SERVER"}
    assert point.exemplars, "no exemplar for sampled requests"
    for value, trace_id, span_id in point.exemplars:
        assert (trace_id, span_id) in servers
        assert 0 < value < 5


@pytest.mark.parametrize(
    ("env", "temporality", "exemplars"),
    [
        ({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"}, "DELTA", None),
        ({"OTEL_METRICS_EXEMPLAR_FILTER": "always_off"}, "CUMULATIVE", False),
    ],
    ids=["delta-uses-the-sdk", "exemplars-off"],
)
def test_wire_honours_temporality_and_exemplar_settings(
    otlp: Receiver,
    instrument: Any,
    serve: Any,
    env: dict[str, str],
    temporality: str,
    exemplars: bool | None,
) -> None:
    handle = instrument(otlp, env=env)
    base = serve(make_app())
    for _ in range(2):
        assert requests.get(f"{base}/products/7").status_code == 200

    found = _duration_points(otlp, handle, 2)
    assert {p.temporality for p in found} == {temporality}
    assert sum(p.count for p in found) == 2
    if exemplars is False:
        assert all(p.exemplars == () for p in found)
