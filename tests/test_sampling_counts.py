"""Counts are exact whatever the trace sampler decides (design.md section 4, Metrics).

A sampler that drops nearly every trace (``traceidratio`` 0.01), or every one (ratio 0,
``always_off``), must not drop a request from ``cx.requests``, a conversion from
``cx.conversions`` or a duration from ``http.server.request.duration``: the cockpit and
the Prometheus rules count from those, and a sampled-away request is still a customer.
Each run sends N requests, a third of them to a conversion step, to Flask, Django WSGI and
Django ASGI, then reads the totals the receiver decoded off the wire.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest
import requests

from framework_servers import Served, server  # noqa: F401 - the server fixture
from otlp_receiver import Receiver

JOURNEYS = """
[[journeys]]
name = "shop"
steps = [
  { name = "view_product", route = "/products/<int:product_id>" },
  { name = "purchase", route = "/orders", method = "POST", conversion = true },
  { name = "buy_item", route = "/api/items/<int:pk>", conversion = true },
]
"""

# Per framework: (method, URL path) of a plain step and of a conversion step, and the
# name of that conversion step. Both answer 2xx, so every conversion request converts.
BROWSE = {
    "flask": "/products/{n}",
    "django-wsgi": "/products/{n}/",
    "django-asgi": "/products/{n}/",
}
CONVERT = {
    "flask": ("POST", "/orders", "purchase"),
    "django-wsgi": ("GET", "/api/items/{n}/", "buy_item"),
    "django-asgi": ("GET", "/api/items/{n}/", "buy_item"),
}

SAMPLERS = [
    pytest.param("traceidratio", "0.01", id="traceidratio-0.01"),
    pytest.param("traceidratio", "0", id="traceidratio-0"),
    pytest.param("always_off", None, id="always_off"),
]
REQUESTS = 300  # every third one to the conversion step


@pytest.mark.parametrize(("sampler", "ratio"), SAMPLERS)
def test_requests_conversions_and_durations_are_counted_whatever_the_sampler(
    otlp: Receiver,
    instrument: Any,
    server: Served,  # noqa: F811 - the fixture imported above
    journeys_file: str,
    sampler: str,
    ratio: Optional[str],
) -> None:
    env = {"CXTRACE_JOURNEYS_FILE": journeys_file, "OTEL_TRACES_SAMPLER": sampler}
    if ratio is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = ratio
    handle = instrument(otlp, env=env)
    method, convert_path, convert_step = CONVERT[server.framework]

    conversions = 0
    with requests.Session() as http:
        for n in range(REQUESTS):
            if n % 3 == 2:
                response = http.request(method, server.url + convert_path.format(n=n))
                conversions += 1
            else:
                response = http.get(server.url + BROWSE[server.framework].format(n=n))
            assert response.ok, (n, response.status_code)
    server.finished(REQUESTS)  # cxtrace has recorded every request: nothing is in flight
    handle.force_flush()  # spans and metrics: returns once they were exported

    assert otlp.metric_total("cx.requests") == REQUESTS
    assert otlp.metric_total("cx.requests", **{"cx.step": "view_product"}) == (
        REQUESTS - conversions
    )
    assert otlp.metric_total("cx.requests", **{"cx.step": convert_step}) == conversions
    assert otlp.metric_total("cx.conversions") == conversions
    assert otlp.metric_total("cx.conversions", **{"cx.step": convert_step}) == conversions
    assert otlp.metric_total("http.server.request.duration") == REQUESTS
    # The sampler really dropped requests: their counts came without their spans.
    spans = [s for s in otlp.spans if s.kind == "SERVER"]
    if ratio == "0.01":
        assert len(spans) < REQUESTS // 10, len(spans)
    else:
        assert spans == []
