"""Demo-like traffic for the cockpit, sent as real OTLP/HTTP protobuf payloads.

An hour of a shop's ``purchase`` journey for three segments, in which ``checkout`` turns
slow for ``enterprise`` customers half an hour ago and ``add_to_cart`` fails now and then
for ``pro`` customers. Counts go as delta ``cx.requests`` / ``cx.conversions`` points (one
payload per minute, stamped in the past, which no SDK lets a test do) and as server spans
carrying the ``cx.*`` attributes. ``send()`` returns exactly what was sent, so tests can
compare the page with it.

Regenerate the README's screenshot (docs/images/cockpit.png):

    python tests/cockpit_data.py docs/images/cockpit.png
"""

from __future__ import annotations

import random
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

MINUTE_NS = 60 * 10**9
SEGMENTS = {"free": 40, "pro": 24, "enterprise": 20}  # shoppers starting a journey per minute
# (step, index, T in ms, share of shoppers who reach it)
STEPS = (
    ("browse", 1, 500, 1.0),
    ("view_product", 2, 500, 0.72),
    ("add_to_cart", 3, 500, 0.41),
    ("checkout", 4, 1000, 0.27),
    ("purchase", 5, 2000, 0.22),
)
JOURNEY = "purchase"
NO_STEP_ROUTE = "/search"


def attribute(key: str, value: object) -> common_pb2.KeyValue:
    if isinstance(value, bool):
        any_value = common_pb2.AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = common_pb2.AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = common_pb2.AnyValue(double_value=value)
    else:
        any_value = common_pb2.AnyValue(string_value=str(value))
    return common_pb2.KeyValue(key=key, value=any_value)


def resource(service: str, instance: str) -> resource_pb2.Resource:
    return resource_pb2.Resource(
        attributes=[attribute("service.name", service), attribute("service.instance.id", instance)]
    )


def post(endpoint: str, signal: str, payload: bytes) -> int:
    request = urllib.request.Request(
        f"{endpoint}/v1/{signal}",
        data=payload,
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


@dataclass
class Sent:
    """What ``send`` sent: request counts per (segment, step, satisfaction), and more."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    conversions: Counter[str] = field(default_factory=Counter)  # per segment
    value: dict[str, float] = field(default_factory=dict)  # conversion value per segment
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # spans with reason error
    trace_ids: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)

    def count(self, segment: str, step: str, satisfaction: str | None = None) -> int:
        return sum(
            n
            for (seg, st, sat), n in self.requests.items()
            if seg == segment and st == step and satisfaction in (None, sat)
        )


def _mix(segment: str, step: str, minutes_ago: int) -> tuple[float, float, float]:
    """(satisfied, tolerating, frustrated) shares for one slice and minute."""
    if segment == "enterprise" and step == "checkout" and minutes_ago < 30:
        return (0.35, 0.2, 0.45)
    if segment == "pro" and step == "add_to_cart":
        return (0.86, 0.05, 0.09)
    if step == "browse":
        return (0.96, 0.03, 0.01)
    return (0.93, 0.05, 0.02)


def send(endpoint: str, *, minutes: int = 60, seed: int = 8, now_ns: int | None = None) -> Sent:
    """Post ``minutes`` of traffic ending now to the cockpit at ``endpoint``."""
    rng = random.Random(seed)
    now_ns = time.time_ns() if now_ns is None else now_ns
    current = now_ns // MINUTE_NS
    sent = Sent()
    shop = resource("shop", "web-1")
    spans: list[trace_pb2.Span] = []
    for minutes_ago in range(minutes - 1, -1, -1):
        minute = current - minutes_ago
        start_ns = minute * MINUTE_NS
        time_ns = min(start_ns + 50 * 10**9, now_ns)
        request_points: list[metrics_pb2.NumberDataPoint] = []
        conversion_points: list[metrics_pb2.NumberDataPoint] = []
        for segment, shoppers in SEGMENTS.items():
            arriving = shoppers + rng.randint(-3, 3)
            for step, index, threshold_ms, reach in STEPS:
                reached = round(arriving * reach * rng.uniform(0.9, 1.1))
                if segment == "enterprise" and step == "purchase" and minutes_ago < 30:
                    reached = round(reached * 0.6)  # a slow checkout loses buyers
                satisfied_share, tolerating_share, _ = _mix(segment, step, minutes_ago)
                satisfied = round(reached * satisfied_share)
                tolerating = round(reached * tolerating_share)
                frustrated = max(0, reached - satisfied - tolerating)
                for satisfaction, n in (
                    ("satisfied", satisfied),
                    ("tolerating", tolerating),
                    ("frustrated", frustrated),
                ):
                    if not n:
                        continue
                    sent.requests[(segment, step, satisfaction)] += n
                    request_points.append(
                        metrics_pb2.NumberDataPoint(
                            attributes=[
                                attribute("cx.satisfaction", satisfaction),
                                attribute("cx.segment", segment),
                                attribute("cx.journey", JOURNEY),
                                attribute("cx.step", step),
                                attribute("http.route", f"/{step}"),
                                attribute("http.request.method", "GET"),
                            ],
                            start_time_unix_nano=start_ns,
                            time_unix_nano=time_ns,
                            as_int=n,
                        )
                    )
                    for _ in range(n if satisfaction != "satisfied" else min(n, 1)):
                        spans.append(
                            _span(
                                rng,
                                sent,
                                segment,
                                step,
                                index,
                                threshold_ms,
                                satisfaction,
                                start_ns,
                                minutes_ago,
                            )
                        )
                if step == "purchase":
                    bought = satisfied + tolerating
                    sent.conversions[segment] += bought
                    conversion_points.append(
                        metrics_pb2.NumberDataPoint(
                            attributes=[
                                attribute("cx.segment", segment),
                                attribute("cx.journey", JOURNEY),
                                attribute("cx.step", step),
                            ],
                            start_time_unix_nano=start_ns,
                            time_unix_nano=time_ns,
                            as_int=bought,
                        )
                    )
            searches = 6 + rng.randint(0, 4)
            sent.requests[(segment, NO_STEP_ROUTE, "satisfied")] += searches
            request_points.append(
                metrics_pb2.NumberDataPoint(
                    attributes=[
                        attribute("cx.satisfaction", "satisfied"),
                        attribute("cx.segment", segment),
                        attribute("http.route", NO_STEP_ROUTE),
                    ],
                    start_time_unix_nano=start_ns,
                    time_unix_nano=time_ns,
                    as_int=searches,
                )
            )
        delta = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
        metrics = [
            metrics_pb2.Metric(
                name=name,
                unit=unit,
                sum=metrics_pb2.Sum(
                    data_points=points, aggregation_temporality=delta, is_monotonic=True
                ),
            )
            for name, unit, points in (
                ("cx.requests", "{request}", request_points),
                ("cx.conversions", "{conversion}", conversion_points),
            )
        ]
        payload = metrics_service_pb2.ExportMetricsServiceRequest(
            resource_metrics=[
                metrics_pb2.ResourceMetrics(
                    resource=shop,
                    scope_metrics=[metrics_pb2.ScopeMetrics(metrics=metrics)],
                )
            ]
        )
        assert post(endpoint, "metrics", payload.SerializeToString()) == 200
        if len(spans) > 500 or minutes_ago == 0:
            traces = trace_service_pb2.ExportTraceServiceRequest(
                resource_spans=[
                    trace_pb2.ResourceSpans(
                        resource=shop, scope_spans=[trace_pb2.ScopeSpans(spans=spans)]
                    )
                ]
            )
            assert post(endpoint, "traces", traces.SerializeToString()) == 200
            spans = []
    # Conversion values come from purchase spans: one purchase span per conversion would
    # be a lot of spans, so the value rides on the sampled satisfied purchase spans.
    return sent


def _span(
    rng: random.Random,
    sent: Sent,
    segment: str,
    step: str,
    index: int,
    threshold_ms: int,
    satisfaction: str,
    minute_start_ns: int,
    minutes_ago: int,
) -> trace_pb2.Span:
    reason = ""
    if satisfaction == "satisfied":
        duration_ms = threshold_ms * rng.uniform(0.1, 0.8)
    elif satisfaction == "tolerating":
        duration_ms = threshold_ms * rng.uniform(1.2, 3.5)
        reason = "slow"
    elif segment == "pro" and step == "add_to_cart":
        duration_ms = threshold_ms * rng.uniform(0.1, 0.5)
        reason = "error"
    else:
        duration_ms = threshold_ms * rng.uniform(4.5, 9.0)
        reason = "slow"
    trace_id = rng.randbytes(16)
    start_ns = minute_start_ns + rng.randint(0, 40) * 10**9
    attrs = [
        attribute("cx.segment", segment),
        attribute("cx.journey", JOURNEY),
        attribute("cx.step", step),
        attribute("cx.step.index", index),
        attribute("cx.satisfaction", satisfaction),
        attribute("cx.apdex.threshold_ms", threshold_ms),
        attribute("http.route", f"/{step}"),
        attribute("http.response.status_code", 500 if reason == "error" else 200),
    ]
    if reason:
        attrs.append(attribute("cx.frustration.reason", reason))
    if reason == "error":
        sent.errors[(segment, step)] += 1
    if step == "purchase" and satisfaction == "satisfied":
        value = round(rng.uniform(20, 400), 2)
        sent.value[segment] = round(sent.value.get(segment, 0.0) + value, 2)
        attrs += [
            attribute("cx.conversion", True),
            attribute("cx.conversion.value", value),
            attribute("cx.conversion.currency", "EUR"),
        ]
    sent.trace_ids.setdefault((segment, step, satisfaction), []).append(trace_id.hex())
    status = trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR if reason == "error" else 0)
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=rng.randbytes(8),
        name=f"GET /{step}",
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + int(duration_ms * 1e6),
        attributes=attrs,
        status=status,
    )


def _screenshot(path: str) -> None:
    """Start a cockpit on a scratch database, fill it, and photograph the page."""
    import tempfile  # noqa: PLC0415

    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).parent))
    from browser import CHROMIUM_ARGS, chromium_path  # noqa: PLC0415
    from cxtrace._cockpit import Cockpit  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as scratch:
        cockpit = Cockpit(
            Path(scratch) / "cockpit.sqlite3", port=0, otlp_http_port=0, otlp_grpc_port=None
        )
        cockpit.start()
        try:
            send(cockpit.otlp_http_endpoint)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1366, "height": 768})
                page.goto(cockpit.page_url + "?window=1h")
                page.screenshot(path=path, full_page=True)
                browser.close()
        finally:
            cockpit.stop()
    print(f"wrote {path}")


if __name__ == "__main__":
    _screenshot(sys.argv[1] if len(sys.argv) > 1 else "docs/images/cockpit.png")
