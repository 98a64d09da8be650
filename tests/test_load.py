"""Load and concurrency: many requests at once, each keeps its own CX context.

Real servers, each its own process under ``cxtrace run`` (as deployed): gunicorn with
gthread workers (2 x 32 threads) serving Flask, and uvicorn serving Django's async and
sync views. Requests carry mixed segments; the app echoes what it was sent. Every span
(the server span and one the app starts) must carry its own request's segment, route and
step; the ``cx.requests`` totals must equal the requests sent, per segment and step (none
lost, none counted twice); and SIGTERM must end the server promptly (no deadlock while
the exporters flush).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from otlp_receiver import Receiver
from test_run import APPS, CXTRACE, SCRIPT, TESTS, Start, environment, free_port, start  # noqa: F401

TIERS = [f"tier-{i}" for i in range(10)]
SOAK = pytest.mark.skipif(os.environ.get("RUN_SOAK") != "1", reason="long; run by nox -s soak")
SIZES = [
    pytest.param(400, id="400"),
    pytest.param(5_000, id="5000", marks=[pytest.mark.soak, SOAK]),
]

FLASK_JOURNEYS = """
[[journeys]]
name = "shop"
steps = [
  { name = "browse", route = "/echo/<int:n>" },
  { name = "add_to_cart", route = "/cart/<int:n>", method = "POST" },
]
"""

DJANGO_JOURNEYS = """
[[journeys]]
name = "shop"
steps = [
  { name = "probe", route = "probe/" },
  { name = "view_product", route = "products/<int:product_id>/" },
]
"""


def blast(calls: list[tuple[str, str, str]], workers: int = 64) -> list[tuple[int, str]]:
    """(method, url, tier) calls, ``workers`` at a time; (status, text) of each, in order."""

    def one(call: tuple[str, str, str]) -> tuple[int, str]:
        method, url, tier = call
        response = requests.request(method, url, headers={"X-Tier": tier}, timeout=60)
        return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, calls))


def stop_within(server: Any, status: int, seconds: float) -> float:
    t0 = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=seconds) == status, server.output()
    return time.monotonic() - t0


def check_spans(otlp: Receiver, expected: dict[str, tuple[str, str, str]], child: str) -> None:
    """``expected``: url.path -> (segment, route, step) of every request sent."""
    served = [s for s in otlp.spans if s.kind == "SERVER"]
    assert Counter(s.attributes["url.path"] for s in served) == Counter(list(expected))  # once each
    by_id = {s.span_id: s for s in served}
    for span in served:
        segment, route, step = expected[span.attributes["url.path"]]  # type: ignore[index]
        got = (
            span.attributes["cx.segment"],
            span.attributes["http.route"],
            span.attributes["cx.step"],
        )
        assert got == (segment, route, step), span
    children = [s for s in otlp.spans if s.name == child]
    assert len(children) == len(expected)
    for span in children:
        parent = by_id[span.parent_span_id]  # type: ignore[index]
        segment, _, step = expected[parent.attributes["url.path"]]  # type: ignore[index]
        assert (span.attributes["cx.segment"], span.attributes["cx.step"]) == (segment, step)


def check_totals(otlp: Receiver, expected: dict[str, tuple[str, str, str]]) -> None:
    assert otlp.metric_total("cx.requests") == len(expected)
    for tier, count in Counter(seg for seg, _, _ in expected.values()).items():
        assert otlp.metric_total("cx.requests", **{"cx.segment": tier}) == count
    for step, count in Counter(step for _, _, step in expected.values()).items():
        assert otlp.metric_total("cx.requests", **{"cx.step": step}) == count
    assert otlp.metric_total("http.server.request.duration") == len(expected)


@pytest.mark.parametrize("total", SIZES)
def test_gunicorn_gthread_keeps_every_request_context_apart(
    otlp: Receiver,
    start: Start,  # noqa: F811 - the fixture of tests/test_run.py, imported above
    tmp_path: Path,
    total: int,
) -> None:
    pytest.importorskip("gunicorn")
    journeys = tmp_path / "journeys.toml"
    journeys.write_text(FLASK_JOURNEYS)
    port = free_port()
    env = environment(otlp, CXTRACE_SEGMENT_HEADER="X-Tier", CXTRACE_JOURNEYS_FILE=str(journeys))
    env["HOME"] = str(tmp_path)  # gunicorn >= 24 keeps a control socket under ~/.gunicorn
    server = start(
        [
            *CXTRACE,
            "run",
            "--",
            "gunicorn",
            f"--chdir={APPS}",
            f"--bind=127.0.0.1:{port}",
            "--workers=2",
            "--worker-class=gthread",
            "--threads=32",
            "load_app:app",
        ],
        env,
        port=port,
    )

    calls, expected = [], {}
    for n in range(total):
        tier = TIERS[n % len(TIERS)]
        if n % 3 == 2:
            calls.append(("POST", f"{server.url}/cart/{n}", tier))
            expected[f"/cart/{n}"] = (tier, "/cart/<int:n>", "add_to_cart")
        else:
            calls.append(("GET", f"{server.url}/echo/{n}", tier))
            expected[f"/echo/{n}"] = (tier, "/echo/<int:n>", "browse")
    answers = blast(calls)

    assert answers == [
        (201 if method == "POST" else 200, f"{n} {tier}")
        for n, (method, _, tier) in enumerate(calls)
    ]
    otlp.wait_for(lambda r: sum(s.kind == "SERVER" for s in r.spans) >= total, timeout=30)
    took = stop_within(server, 0, 20)  # gunicorn exits 0 after its workers' exit hooks
    otlp.wait_for(lambda r: r.metric_total("cx.requests") >= total, timeout=10)
    check_spans(otlp, expected, "work")
    check_totals(otlp, expected)
    assert took < 10, took
    print(f"gunicorn gthread: {total} requests, SIGTERM to exit {took:.2f} s")


@pytest.mark.parametrize("total", SIZES)
def test_uvicorn_django_async_keeps_every_request_context_apart(
    otlp: Receiver,
    start: Start,  # noqa: F811 - the fixture of tests/test_run.py, imported above
    tmp_path: Path,
    total: int,
) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("django")
    journeys = tmp_path / "journeys.toml"
    journeys.write_text(DJANGO_JOURNEYS)
    port = free_port()
    server = start(
        [
            *SCRIPT,
            "run",
            "--",
            "uvicorn",
            f"--app-dir={TESTS}",
            "--host=127.0.0.1",
            f"--port={port}",
            "--lifespan=off",
            "--log-level=warning",
            "django_project.asgi:application",
        ],
        environment(
            otlp,
            DJANGO_SETTINGS_MODULE="django_project.settings",
            CXTRACE_SEGMENT_HEADER="X-Tier",
            CXTRACE_JOURNEYS_FILE=str(journeys),
        ),
        port=port,
    )

    calls, expected = [], {}
    for n in range(total):
        tier = TIERS[n % len(TIERS)]
        if n % 2:
            calls.append(("GET", f"{server.url}/products/{n}/", tier))
            expected[f"/products/{n}/"] = (tier, "/products/<int:product_id>/", "view_product")
        else:
            # One path for all probes: each is told apart by its query (n=...).
            calls.append(("GET", f"{server.url}/probe/?sleep=0.01&n={n}", tier))
    answers = blast(calls)

    for n, (status, text) in enumerate(answers):
        assert status == 200
        assert text == (f"product {n}" if n % 2 else TIERS[n % len(TIERS)])
    otlp.wait_for(lambda r: sum(s.kind == "SERVER" for s in r.spans) >= total, timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM: cxtrace flushed before it.
    took = stop_within(server, -signal.SIGTERM, 20)
    otlp.wait_for(lambda r: r.metric_total("cx.requests") >= total, timeout=10)

    served = [s for s in otlp.spans if s.kind == "SERVER"]
    assert len(served) == total
    probes = [s for s in served if s.attributes["url.path"] == "/probe/"]
    assert len(probes) == total // 2 + total % 2
    by_id = {s.span_id: s for s in served}
    for span in probes:
        n = int(str(span.attributes["url.query"]).rsplit("n=", 1)[1])
        assert span.attributes["cx.segment"] == TIERS[n % len(TIERS)]
        assert (span.attributes["http.route"], span.attributes["cx.step"]) == ("/probe/", "probe")
    for span in (s for s in otlp.spans if s.name == "probe"):  # started by the async view
        parent = by_id[span.parent_span_id]  # type: ignore[index]
        assert span.attributes["cx.segment"] == parent.attributes["cx.segment"]
        assert span.attributes["cx.step"] == "probe"
    check_spans_subset(served, expected)  # the sync product views
    for n in range(0, total, 2):
        expected[f"probe-{n}"] = (TIERS[n % len(TIERS)], "/probe/", "probe")
    check_totals(otlp, expected)
    assert took < 10, took
    print(f"uvicorn django: {total} requests, SIGTERM to exit {took:.2f} s")


def check_spans_subset(served: list[Any], expected: dict[str, tuple[str, str, str]]) -> None:
    spans = [s for s in served if s.attributes["url.path"] in expected]
    assert Counter(s.attributes["url.path"] for s in spans) == Counter(list(expected))
    for span in spans:
        segment, route, step = expected[span.attributes["url.path"]]
        assert (
            span.attributes["cx.segment"],
            span.attributes["http.route"],
            span.attributes["cx.step"],
        ) == (segment, route, step)
