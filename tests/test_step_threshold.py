"""A step's own ``apdex_threshold_ms`` decides its requests' satisfaction (design.md
section 4: "T is the step's own apdex_threshold_ms when it sets one, else the global T").

The journeys file sets a global T of 50 ms and one step with its own T of 1000 ms. Two
requests take the same ~250 ms, well past the global 4T (200 ms) and well inside the
step's T: the one to the step with its own T is satisfied, on its span and in
``cx.requests``; the one to a step without is frustrated (slow) against the global T.
"""

from __future__ import annotations

from typing import Any

import requests

from framework_servers import Served, server  # noqa: F401 - the server fixture
from otlp_receiver import Receiver

GLOBAL_T_MS, STEP_T_MS = 50, 1000
SLEEP_S = 0.25  # > 4 x GLOBAL_T_MS and < STEP_T_MS, with room for a loaded machine

JOURNEYS = f"""
apdex_threshold_ms = {GLOBAL_T_MS}
[[journeys]]
name = "shop"
steps = [
  {{ name = "patient", route = "/sleep", apdex_threshold_ms = {STEP_T_MS} }},
  {{ name = "checkout", route = "/checkout" }},
  {{ name = "async_product", route = "/async/products/<int:product_id>" }},
]
"""

# Per framework: a view that sleeps, matched by the step with its own T ("patient"), and
# one matched by a step without (its name), each told to sleep SLEEP_S.
OWN_T_PATH = {
    "flask": f"/sleep?s={SLEEP_S}",
    "django-wsgi": f"/sleep/?s={SLEEP_S}",
    "django-asgi": f"/sleep/?s={SLEEP_S}",
}
GLOBAL_T = {
    "flask": (f"/checkout?sleep={SLEEP_S}", "checkout"),
    "django-wsgi": (f"/async/products/1/?sleep={SLEEP_S}", "async_product"),
    "django-asgi": (f"/async/products/1/?sleep={SLEEP_S}", "async_product"),
}


def test_a_steps_own_threshold_decides_its_satisfaction(
    otlp: Receiver,
    instrument: Any,
    server: Served,  # noqa: F811 - the fixture imported above
    journeys_file: str,
) -> None:
    handle = instrument(otlp, env={"CXTRACE_JOURNEYS_FILE": journeys_file})
    global_path, global_step = GLOBAL_T[server.framework]

    assert requests.get(server.url + OWN_T_PATH[server.framework], timeout=10).ok
    assert requests.get(server.url + global_path, timeout=10).ok
    server.finished(2)
    handle.force_flush()  # spans and metrics: returns once they were exported

    spans = {s.attributes["cx.step"]: s for s in otlp.spans if s.kind == "SERVER"}
    patient, judged_globally = spans["patient"], spans[global_step]
    # Both took longer than the global 4T and less than the step's T.
    for span in (patient, judged_globally):
        assert 4 * GLOBAL_T_MS / 1000 < span.duration_s < STEP_T_MS / 1000, span.duration_s

    assert patient.attributes["cx.apdex.threshold_ms"] == STEP_T_MS
    assert patient.attributes["cx.satisfaction"] == "satisfied"
    assert patient.attributes["cx.satisfaction.score"] == 1.0
    assert "cx.frustration.reason" not in patient.attributes
    assert judged_globally.attributes["cx.apdex.threshold_ms"] == GLOBAL_T_MS
    assert judged_globally.attributes["cx.satisfaction"] == "frustrated"
    assert judged_globally.attributes["cx.frustration.reason"] == "slow"

    satisfied = {"cx.step": "patient", "cx.satisfaction": "satisfied"}
    assert otlp.metric_total("cx.requests", **satisfied) == 1
    assert otlp.metric_total("cx.requests", **{"cx.step": "patient"}) == 1
    frustrated = {"cx.step": global_step, "cx.satisfaction": "frustrated"}
    assert otlp.metric_total("cx.requests", **frustrated) == 1
    assert otlp.metric_total("cx.requests", **{"cx.step": global_step}) == 1
