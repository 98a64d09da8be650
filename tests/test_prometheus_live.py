"""The deployment kit against the real thing: Prometheus scraping a cxtrace app.

promtool (tests/test_deploy_kit.py) checks the rules on series typed by hand. Here nothing
is typed by hand:

1. a cxtrace-instrumented Flask shop runs in its own process (this file, run as a script),
   with visits on and its metrics served by ``opentelemetry-exporter-prometheus``, so the
   series are named by a real OTLP -> Prometheus translation;
2. shoppers (one ``requests.Session`` each) walk known paths through its purchase journey:
   some fast, some slow at checkout, some failing there, some buying;
3. Debian's ``prometheus`` scrapes the shop every second and evaluates the kit's rule files
   (their groups' ``interval`` cut from 1m to 1s, nothing else changed);
4. every series the customer rules record, and every Prometheus query of the Grafana
   dashboard, is read through the HTTP API and compared with what the shoppers did, worked
   out here from design.md sections 4 and 12, not from the rules.

**Why the numbers are exact.** ``increase()`` (and ``rate()``) extrapolate: Prometheus
scales the difference between a series' first and last sample in the window by ``(S + what
it adds at both ends) / S``, S the time between those samples. It adds, at each end, the gap
to the window's edge if that is under 1.1 average sample intervals, else half an interval;
at the start, the gap is at most the way back to where the counter would have been 0. A
series born inside the window would also lose the counts of its first sample. So:

- a warm-up pass creates every series before Prometheus starts (its counts are in the first
  sample, never in an increase), then the very same pass runs while Prometheus scrapes;
- as the first sample's value equals the increase, the counter's zero lies S back: more than
  1.1 intervals (n >= 3 samples), so half an interval is added at the start;
- the shop is then stopped, and the checks wait until every rule group has evaluated more
  than 1.1 intervals after the last sample: half an interval at the end too.

All series come from the same scrapes and have the same n samples, so every increase is the
shoppers' count times ``f = (S + S / (n - 1)) / S = n / (n - 1)`` (a 5-minute rate is that
over 300 s). The test reads the sample timestamps, computes f and expects counts x f, and
ratios (where f cancels) as they are, to 1e-9. Only the 95th percentile of a step without
slow requests depends on how fast this machine answered: it must lie below the slow bucket.
Takes about 15 s.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pytest
import requests
import yaml
from flask import Flask, request

import cxtrace
from test_deploy_kit import ALERTS, RULES, _dashboard, _grafana_to_promql, _panels

JOURNEYS = """\
[segments]
header = "X-Customer-Tier"
allowed = ["free", "pro", "enterprise"]

[[journeys]]
name = "purchase"
steps = [
  { name = "browse",   route = "/products" },
  { name = "checkout", route = "/checkout", apdex_threshold_ms = 100 },
  { name = "purchase", route = "/orders", method = "POST", conversion = true },
]
"""
STEPS = ("browse", "checkout", "purchase")  # the journey's order; browse is its first step
JOB = "shop"  # the scrape job: the `job` label, as service.name gives it through the Collector
SLOW_S = 0.6  # checkout's T is 100 ms: frustrated (over 4T), in the (0.5 s, 0.75 s] bucket
FAST_S = 0.5  # every other request: satisfied, far below the slow requests' bucket
PRICES = {"enterprise": (30.0, "EUR"), "free": (10.0, "EUR"), "pro": (50.0, "USD")}

# Who shops: (segment, how many, their path). "checkout:slow" waits SLOW_S, ":fail" answers
# 503 (checkout) or 500 (purchase); a purchase that succeeds buys at the segment's price.
SHOPPERS: list[tuple[str, int, str]] = [
    ("enterprise", 4, "browse checkout purchase"),
    ("enterprise", 2, "browse checkout:slow purchase"),  # frustrated, still bought
    ("enterprise", 2, "browse checkout:fail"),
    ("enterprise", 2, "browse checkout:slow"),
    ("enterprise", 1, "browse checkout purchase:fail purchase"),  # retried and bought
    ("enterprise", 1, "browse"),
    ("free", 2, "browse checkout purchase"),  # free: frustrated or not, half of them buy
    ("free", 2, "browse checkout:slow purchase"),
    ("free", 2, "browse checkout:slow"),
    ("free", 2, "browse checkout"),
    ("pro", 2, "browse checkout purchase"),  # pro pays in USD
    ("pro", 1, "browse checkout:fail"),
]

Labels = frozenset[tuple[str, str]]


# --------------------------------------------------------------------------- the shop


def _serve_shop() -> None:
    """The shop's process: cxtrace on Flask, metrics through opentelemetry-exporter-prometheus."""
    # Imported here: the exporter is a test dependency the test process may not have.
    from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from prometheus_client import start_http_server  # noqa: PLC0415
    from werkzeug.serving import make_server  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    resource = Resource.create({"service.name": JOB})
    cxtrace.instrument(
        meter_provider=MeterProvider(metric_readers=[PrometheusMetricReader()], resource=resource),
        tracer_provider=TracerProvider(resource=resource),  # spans stay in the process
    )
    app = Flask(JOB)

    @app.get("/products")
    def products() -> str:
        return "products"

    @app.get("/checkout")
    def checkout() -> tuple[str, int]:
        time.sleep(float(request.args.get("slow", "0")))
        if request.args.get("fail"):
            return "checkout is down", 503
        return "checkout", 200

    @app.post("/orders")
    def orders() -> tuple[str, int]:
        if request.args.get("fail"):
            return "order failed", 500
        cxtrace.mark_conversion(
            value=float(request.args["value"]), currency=request.args["currency"]
        )
        return "ordered", 201

    metrics, _ = start_http_server(0, addr="127.0.0.1")
    shop = make_server("127.0.0.1", 0, app, threaded=True)
    print(json.dumps({"shop": shop.server_port, "metrics": metrics.server_port}), flush=True)
    shop.serve_forever()


# --------------------------------------------------------------------------- what happened


@dataclass(frozen=True)
class Hit:
    step: str
    slow: bool = False
    fail: bool = False


def _path(path: str) -> list[Hit]:
    hits = []
    for word in path.split():
        step, _, how = word.partition(":")
        hits.append(Hit(step, slow=how == "slow", fail=how == "fail"))
    return hits


@dataclass
class Truth:
    """What one pass of SHOPPERS must have counted, from design.md sections 4 and 12."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # seg, step, sat
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    slow: Counter[tuple[str, str]] = field(default_factory=Counter)  # in the SLOW_S bucket
    conversions: Counter[str] = field(default_factory=Counter)
    values: defaultdict[tuple[str, str], float] = field(  # segment, currency
        default_factory=lambda: defaultdict(float)
    )
    visits: Counter[str] = field(default_factory=Counter)
    reached: Counter[tuple[str, str]] = field(default_factory=Counter)
    frustrated: Counter[tuple[str, str]] = field(default_factory=Counter)
    converted: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    visit_conversions: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, shoppers: list[tuple[str, int, str]]) -> Truth:
        truth = cls()
        for segment, count, path in shoppers:
            for _ in range(count):
                truth.add_visit(segment, _path(path))
        return truth

    def add_visit(self, segment: str, hits: list[Hit]) -> None:
        self.visits[segment] += 1
        reached: list[str] = []
        frustrated: set[str] = set()
        converted = False
        for hit in hits:
            bad = hit.slow or hit.fail
            self.requests[segment, hit.step, "frustrated" if bad else "satisfied"] += 1
            self.errors[segment, hit.step] += hit.fail
            self.slow[segment, hit.step] += hit.slow
            if hit.step not in reached:
                reached.append(hit.step)
                self.reached[segment, hit.step] += 1
            if bad and hit.step not in frustrated:
                frustrated.add(hit.step)
                self.frustrated[segment, hit.step] += 1
            if hit.step == "purchase" and not hit.fail:
                self.conversions[segment] += 1
                price, currency = PRICES[segment]
                self.values[segment, currency] += price
                if not converted:  # the visit's first conversion in the journey
                    converted = True
                    self.visit_conversions[segment] += 1
                    for step in reached:
                        self.converted[segment, step, step in frustrated] += 1

    def total(self, counter: Mapping[Any, float]) -> float:
        return float(sum(counter.values()))


def _labels(**kv: str) -> Labels:
    return frozenset(kv.items())


def _step(segment: str, step: str, **kv: str) -> Labels:
    return _labels(job=JOB, cx_segment=segment, cx_journey="purchase", cx_step=step, **kv)


# --------------------------------------------------------------------------- the shoppers


class Shop:
    def __init__(self, url: str) -> None:
        self.url = url

    def walk(self, segment: str, path: str) -> None:
        session = requests.Session()  # one customer, one browser: the visit cookie
        session.headers["X-Customer-Tier"] = segment
        for hit in _path(path):
            params: dict[str, str] = {}
            if hit.slow:
                params["slow"] = str(SLOW_S)
            if hit.fail:
                params["fail"] = "1"
            if hit.step == "browse":
                response = session.get(f"{self.url}/products", timeout=10)
            elif hit.step == "checkout":
                response = session.get(f"{self.url}/checkout", params=params, timeout=10)
            else:
                price, currency = PRICES[segment]
                params.update(value=str(price), currency=currency)
                response = session.post(f"{self.url}/orders", params=params, timeout=10)
            assert (response.status_code >= 500) == hit.fail, (hit, response.status_code)

    def run(self, shoppers: list[tuple[str, int, str]]) -> None:
        walks = [(segment, path) for segment, count, path in shoppers for _ in range(count)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            for done in [pool.submit(self.walk, segment, path) for segment, path in walks]:
                done.result()


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing on CI: .ci/run installs Debian's prometheus package")
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    try:
        import opentelemetry.exporter.prometheus  # noqa: F401, PLC0415 - the check itself
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("opentelemetry-exporter-prometheus is missing from the test dependencies")
        pytest.skip("opentelemetry-exporter-prometheus is not installed")
    return path


def _wait(what: str, predicate: Callable[[], bool], timeout: float = 20) -> None:
    """Poll an outside process (Prometheus has no event to wait on) until ``predicate``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class ShopProcess:
    process: subprocess.Popen[str]
    url: str
    metrics_port: int

    def counts(self) -> dict[str, float]:
        """Sample name -> total, straight from the shop's /metrics page."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        totals: dict[str, float] = defaultdict(float)
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name = line.split("{", 1)[0].split(" ", 1)[0]
                totals[name] += float(line.rsplit(" ", 1)[1])
        return totals


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[ShopProcess]:
    journeys = tmp_path / "journeys.toml"
    journeys.write_text(JOURNEYS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CXTRACE_", "OTEL_"))}
    env.update(
        CXTRACE_VISITS="cookie",
        CXTRACE_VISIT_KEY="live-test-visit-key",
        CXTRACE_JOURNEYS_FILE=str(journeys),
        OTEL_SERVICE_NAME=JOB,
    )
    stderr = (tmp_path / "shop.log").open("w")
    process = subprocess.Popen(
        [sys.executable, __file__],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, (tmp_path / "shop.log").read_text()
        ports = json.loads(line)
        yield ShopProcess(process, f"http://127.0.0.1:{ports['shop']}", ports["metrics"])
    finally:
        process.kill()
        process.wait(10)
        stderr.close()


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        response = requests.get(f"{self.url}{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str, at: Optional[float] = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        result: list[dict[str, Any]] = self.get("/api/v1/query", **params)["result"]
        return result

    def value(self, expr: str, at: Optional[float] = None) -> Optional[float]:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], Prometheus]]:
    binary = _prometheus()
    started: list[subprocess.Popen[bytes]] = []

    def start(metrics_port: int) -> Prometheus:
        rule_files = []
        for path in (RULES, ALERTS):
            rules = yaml.safe_load(path.read_text())
            for group in rules["groups"]:
                group["interval"] = "1s"  # the kit evaluates every minute; a test cannot wait
            copy = tmp_path / path.name
            copy.write_text(yaml.safe_dump(rules, sort_keys=False))
            rule_files.append(str(copy))
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "evaluation_interval": "1s",
            },
            "rule_files": rule_files,
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = _free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        started.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert started[0].poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        _wait("Prometheus to start", ready)
        return Prometheus(url)

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


# --------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Within:
    """A value the load only bounds (the p95 of a fast step depends on the machine)."""

    low: float
    high: float


Expected = Mapping[Labels, Union[float, Within]]
APDEX = {"satisfied": 1.0, "tolerating": 0.5, "frustrated": 0.0}  # design.md section 4


def _p95(fast: float, slow: float) -> Union[float, Within]:
    """histogram_quantile(0.95) of ``fast`` requests (under FAST_S) and ``slow`` ones in
    (FAST_S, 0.75]: linear inside the slow bucket when the 95th percentile falls in it, else
    somewhere in the fast buckets, depending on how fast this machine answered."""
    rank = 0.95 * (fast + slow)
    if rank <= fast:
        return Within(0, FAST_S)
    return FAST_S + 0.25 * (rank - fast) / slow


class Model:
    """Every series a rule or a panel shows, from the truth of one pass and Prometheus's
    extrapolation factor ``f`` (counts come out as count x f, see the module docstring)."""

    def __init__(self, truth: Truth, f: float) -> None:
        self.t = truth
        self.f = f
        self.slices = sorted({(seg, step) for seg, step, _ in truth.requests})

    # requests -----------------------------------------------------------------------
    def requests(self, seg: str, step: str, satisfaction: Optional[str] = None) -> int:
        sats = (satisfaction,) if satisfaction else ("satisfied", "tolerating", "frustrated")
        return sum(self.t.requests[seg, step, sat] for sat in sats)

    def step_frustrated_share(self) -> dict[Labels, float]:
        return {
            _step(seg, step): self.requests(seg, step, "frustrated") / self.requests(seg, step)
            for seg, step in self.slices
        }

    def segment_ratio(self, weights: dict[str, float]) -> dict[Labels, float]:
        out: dict[Labels, float] = {}
        for seg in sorted({seg for seg, _ in self.slices}):
            steps = [step for s, step in self.slices if s == seg]
            total = sum(self.requests(seg, step) for step in steps)
            score = sum(
                weight * self.requests(seg, step, sat)
                for step in steps
                for sat, weight in weights.items()
            )
            out[_labels(job=JOB, cx_segment=seg)] = score / total
        return out

    def reasons(self) -> dict[tuple[str, str, str], float]:
        """cx_segment_step_reason:cx_frustrated: (segment, step, reason) -> requests."""
        out: dict[tuple[str, str, str], float] = {}
        for seg, step in self.slices:
            errors = self.t.errors[seg, step]
            frustrated = self.requests(seg, step, "frustrated")
            if errors:
                out[seg, step, "error"] = errors
            if frustrated:
                out[seg, step, "slow"] = max(frustrated - errors, 0)
        return out

    def conversion_rate(self) -> dict[Labels, float]:
        return {
            _labels(job=JOB, cx_segment=seg, cx_journey="purchase"): self.t.conversions[seg]
            / self.requests(seg, "browse")
            for seg in sorted({seg for seg, _ in self.slices})
        }

    # customers ----------------------------------------------------------------------
    def customer_slices(self) -> list[tuple[str, str]]:
        return sorted(self.t.reached)

    def frustrated(self, seg: str, step: str) -> int:
        return self.t.frustrated[seg, step]

    def others(self, seg: str, step: str) -> int:
        return self.t.reached[seg, step] - self.t.frustrated[seg, step]

    def rate(self, seg: str, step: str, frustrated: bool) -> Optional[float]:
        people = self.frustrated(seg, step) if frustrated else self.others(seg, step)
        return self.t.converted[seg, step, frustrated] / people if people else None

    def lost(self, seg: str, step: str) -> Optional[float]:
        """Conversions lost (count, before f); None where nobody else is to compare with."""
        others = self.rate(seg, step, False)
        if others is None:
            return None
        frustrated = self.frustrated(seg, step)
        return max(frustrated * others - self.t.converted[seg, step, True], 0)

    def mean_value(self, seg: str, currency: str) -> Optional[float]:
        value = self.t.values[seg, currency]
        return value / self.t.conversions[seg] if value else None

    def value_lost(self, currency: str = "EUR") -> Expected:
        out: dict[Labels, float] = {}
        for seg, step in self.customer_slices():
            lost, mean = self.lost(seg, step), self.mean_value(seg, currency)
            if lost is not None and mean is not None:
                out[_step(seg, step, cx_conversion_currency=currency)] = self.f * lost * mean
        return out

    def recorded(self) -> dict[str, Expected]:
        """Every series of the cx-visits-1h group."""
        f, t = self.f, self.t
        split: dict[Labels, float] = {}
        converted: dict[Labels, float] = {}
        rates: dict[Labels, float] = {}
        for seg, step in self.customer_slices():
            for flag, people in (
                (True, self.frustrated(seg, step)),
                (False, self.others(seg, step)),
            ):
                key = _step(seg, step, cx_visit_frustrated=str(flag).lower())
                split[key] = f * people
                converted[key] = f * t.converted[seg, step, flag]
                rate = self.rate(seg, step, flag)
                if rate is not None:
                    rates[key] = rate
        lost: dict[Labels, float] = {}
        for seg, step in self.customer_slices():
            conversions = self.lost(seg, step)
            if conversions is not None:
                lost[_step(seg, step)] = f * conversions
        return {
            "cx_segment:cx_visits:increase1h": {
                _labels(job=JOB, cx_segment=seg): f * n for seg, n in t.visits.items()
            },
            "cx_step:cx_visit_steps:increase1h": {
                _step(seg, step): f * n for (seg, step), n in t.reached.items()
            },
            "cx_journey:cx_visit_conversions:increase1h": {
                _labels(job=JOB, cx_segment=seg, cx_journey="purchase"): f * n
                for seg, n in t.visit_conversions.items()
            },
            "cx_step_frustrated:cx_visit_steps:increase1h": split,
            "cx_step_frustrated:cx_visit_converted_steps:increase1h": converted,
            "cx_step:cx_visit_frustrated:ratio_increase1h": {
                _step(seg, step): self.frustrated(seg, step) / t.reached[seg, step]
                for seg, step in self.customer_slices()
            },
            "cx_step_frustrated:cx_visit_conversion:ratio_increase1h": rates,
            "cx_step:cx_visit_conversions_lost:increase1h": lost,
            "cx_journey_currency:cx_conversion_value:mean1h": {
                _labels(
                    job=JOB, cx_segment=seg, cx_journey="purchase", cx_conversion_currency=cur
                ): value / t.conversions[seg]
                for (seg, cur), value in t.values.items()
            },
            "cx_step_currency:cx_visit_value_lost:increase1h": self.value_lost(),
        }

    # the dashboard ------------------------------------------------------------------
    def panels(self) -> dict[tuple[str, str], tuple[Expected, Optional[int]]]:
        """(panel title, refId) -> (expected series, k of a topk query or None)."""
        f, t = self.f, self.t
        rec = self.recorded()

        def by(key: Callable[[str, str], Labels], value: Callable[[str, str], float]) -> Expected:
            out: dict[Labels, float] = defaultdict(float)
            for seg, step in self.slices:
                out[key(seg, step)] += value(seg, step)
            return dict(out)

        def flag(name: str, value: str) -> Expected:
            return {
                frozenset(kv for kv in k if kv[0] != "cx_visit_frustrated"): v
                for k, v in rec[name].items()
                if ("cx_visit_frustrated", value) in k
            }

        def segment_step(seg: str, step: str) -> Labels:
            return _labels(cx_segment=seg, cx_journey="purchase", cx_step=step)

        reasons = self.reasons()
        apdex = self.segment_ratio(APDEX)
        frustrated_share = self.step_frustrated_share()
        conversion = self.conversion_rate()
        steps_all = {step for _, step in self.slices}
        errors_by_step = {
            step: sum(self.t.errors[seg, s] for seg, s in self.slices if s == step)
            for step in steps_all
        }
        p95_step = {
            _labels(cx_step=step): _p95(
                sum(self.requests(seg, s) - t.slow[seg, s] for seg, s in self.slices if s == step),
                sum(t.slow[seg, s] for seg, s in self.slices if s == step),
            )
            for step in steps_all
        }
        p95_slice = {
            _labels(job=JOB, cx_segment=seg, cx_step=step): _p95(
                self.requests(seg, step) - t.slow[seg, step], t.slow[seg, step]
            )
            for seg, step in self.slices
        }
        by_reason: dict[Labels, float] = defaultdict(float)
        for (_, _, reason), n in reasons.items():
            by_reason[_labels(cx_frustration_reason=reason)] += f * n / 300
        by_satisfaction: dict[Labels, float] = defaultdict(float)
        for (seg, _, sat), n in t.requests.items():
            by_satisfaction[_labels(cx_segment=seg, cx_satisfaction=sat)] += f * n / 300
        funnel: dict[Labels, float] = defaultdict(float)
        for (_, step), n in t.reached.items():
            funnel[_labels(cx_journey="purchase", cx_step=step)] += f * n
        return {
            ("Headline: where customers are frustrated (last hour)", "A"): (
                {k: v for k, v in frustrated_share.items() if v > 0},
                3,
            ),
            ("Apdex by segment (last hour)", "A"): (apdex, None),
            ("Apdex by segment and step", "A"): (
                by(
                    segment_step,
                    lambda seg, step: (
                        sum(w * self.requests(seg, step, s) for s, w in APDEX.items())
                        / self.requests(seg, step)
                    ),
                ),
                None,
            ),
            ("Apdex by segment and step", "B"): (
                by(segment_step, lambda seg, step: f * self.requests(seg, step)),
                None,
            ),
            ("Apdex by segment and step", "C"): (
                {
                    segment_step(seg, step): self.requests(seg, step, "frustrated")
                    / self.requests(seg, step)
                    for seg, step in self.slices
                    if self.requests(seg, step, "frustrated")
                },
                None,
            ),
            ("Funnel: requests reaching each step ($segment)", "A"): (
                by(
                    lambda _, step: _labels(cx_journey="purchase", cx_step=step),
                    lambda seg, step: f * self.requests(seg, step),
                ),
                None,
            ),
            ("Funnel: conversions and conversion rate per journey", "A"): (
                {
                    _labels(cx_segment=seg, cx_journey="purchase"): f * n
                    for seg, n in t.conversions.items()
                },
                None,
            ),
            ("Funnel: conversions and conversion rate per journey", "B"): (conversion, None),
            ("Funnel: conversion rate over time", "A"): (conversion, None),
            ("Frustration reasons: slow vs error", "A"): (dict(by_reason), None),
            ("Frustration reasons by step (per hour, last hour)", "A"): (
                {
                    _labels(cx_segment=seg, cx_step=step, cx_frustration_reason=reason): f * n
                    for (seg, step, reason), n in reasons.items()
                    if n > 0
                },
                None,
            ),
            ("Slowest steps (p95 duration)", "A"): (p95_step, 10),
            ("Failing steps (share of errors)", "A"): (
                {
                    _labels(cx_step=step): errors_by_step[step]
                    / sum(self.requests(seg, s) for seg, s in self.slices if s == step)
                    for step in steps_all
                    if errors_by_step[step]
                },
                10,
            ),
            ("Slowest steps: p95 duration over time", "A"): (p95_slice, None),
            ("Apdex over time per segment", "A"): (apdex, None),
            ("Frustrated share over time per segment", "A"): (
                self.segment_ratio({"frustrated": 1}),
                None,
            ),
            ("Requests per second by segment", "A"): (dict(by_satisfaction), None),
            ("Customers: funnel per journey ($segment, last hour)", "A"): (
                {frozenset(): f * t.total(t.visits)},
                None,
            ),
            ("Customers: funnel per journey ($segment, last hour)", "B"): (dict(funnel), None),
            ("Customers: funnel per journey ($segment, last hour)", "C"): (
                {_labels(cx_journey="purchase"): f * t.total(t.visit_conversions)},
                None,
            ),
            ("Customers frustrated at each step (share, last hour)", "A"): (
                {
                    k: v
                    for k, v in rec["cx_step:cx_visit_frustrated:ratio_increase1h"].items()
                    if isinstance(v, float) and v > 0
                },
                None,
            ),
            ("Conversion rate: customers frustrated at a step vs the others (last hour)", "A"): (
                rec["cx_step:cx_visit_steps:increase1h"],
                None,
            ),
            ("Conversion rate: customers frustrated at a step vs the others (last hour)", "B"): (
                flag("cx_step_frustrated:cx_visit_steps:increase1h", "true"),
                None,
            ),
            ("Conversion rate: customers frustrated at a step vs the others (last hour)", "C"): (
                flag("cx_step_frustrated:cx_visit_conversion:ratio_increase1h", "true"),
                None,
            ),
            ("Conversion rate: customers frustrated at a step vs the others (last hour)", "D"): (
                flag("cx_step_frustrated:cx_visit_conversion:ratio_increase1h", "false"),
                None,
            ),
            ("Conversion rate: customers frustrated at a step vs the others (last hour)", "E"): (
                rec["cx_step:cx_visit_conversions_lost:increase1h"],
                None,
            ),
            ("Value lost to frustration per hour, by step and segment", "A"): (
                {
                    k: v
                    for k, v in rec["cx_step_currency:cx_visit_value_lost:increase1h"].items()
                    if isinstance(v, float) and v > 0
                },
                None,
            ),
            ("Value lost to frustration over time", "A"): (
                rec["cx_step_currency:cx_visit_value_lost:increase1h"],
                None,
            ),
        }


# --------------------------------------------------------------------------- comparing


def _close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


def _check(
    name: str, result: list[dict[str, Any]], expected: Expected, topk: Optional[int] = None
) -> list[str]:
    """What differs between a query's result and the expected series (empty: all good)."""
    got = {
        frozenset((k, v) for k, v in r["metric"].items() if k != "__name__"): float(r["value"][1])
        for r in result
    }
    problems = []
    if topk is not None and len(expected) > topk:
        # ties may pick either series: the k returned must be k of the largest
        if len(got) != topk or not set(got) <= set(expected):
            problems.append(f"{name}: top {topk} {sorted(got)} of {sorted(expected)}")
        else:
            left_out = [v for k, v in expected.items() if k not in got and isinstance(v, float)]
            if left_out and min(got.values()) < max(left_out) - 1e-9:
                problems.append(f"{name}: top {topk} {got} but not the largest of {expected}")
        expected = {k: v for k, v in expected.items() if k in got}
    if set(got) != set(expected):
        missing = [dict(k) for k in set(expected) - set(got)]
        extra = [dict(k) for k in set(got) - set(expected)]
        problems.append(f"{name}: missing {missing}, unexpected {extra}")
    for key in set(got) & set(expected):
        want = expected[key]
        ok = (
            want.low < got[key] <= want.high if isinstance(want, Within) else _close(got[key], want)
        )
        if not ok:
            problems.append(f"{name} {dict(key)}: {got[key]!r}, expected {want!r}")
    return problems


# --------------------------------------------------------------------------- the test


def test_recorded_series_and_panels_match_the_load(
    prometheus: Callable[[int], Prometheus], shop: ShopProcess
) -> None:
    truth = Truth.of(SHOPPERS)
    requests_per_pass = truth.total(truth.requests)
    shoppers = Shop(shop.url)

    # 1. Warm-up: every series exists, with a pass's counts, before Prometheus first looks.
    shoppers.run(SHOPPERS)
    _wait(
        "the warm-up pass to be counted",
        lambda: (
            shop.counts().get("http_server_request_duration_seconds_count") == requests_per_pass
        ),
    )
    counts = shop.counts()
    assert counts["cx_requests_total"] == requests_per_pass
    assert counts["cx_visits_total"] == truth.total(truth.visits)

    # 2. Prometheus watches the warm-up state for a few scrapes, then the same pass again.
    prom = prometheus(shop.metrics_port)
    _wait(
        "three scrapes of the warm-up state",
        lambda: (prom.value(f'min(count_over_time(cx_visits_total{{job="{JOB}"}}[1h]))') or 0) >= 3,
    )
    shoppers.run(SHOPPERS)
    # Instant values of the raw counters are exact: every metric holds two passes.
    totals = {
        "cx_requests_total": requests_per_pass,
        "http_server_request_duration_seconds_count": requests_per_pass,
        "cx_conversions_total": truth.total(truth.conversions),
        "cx_conversion_value_total": truth.total(truth.values),
        "cx_visits_total": truth.total(truth.visits),
        "cx_visit_steps_total": truth.total(truth.reached),
        "cx_visit_frustrations_total": truth.total(truth.frustrated),
        "cx_visit_conversions_total": truth.total(truth.visit_conversions),
        "cx_visit_converted_steps_total": truth.total(truth.converted),
    }
    _wait(
        "the second pass to be scraped",
        lambda: all(
            prom.value(f'sum({name}{{job="{JOB}"}})') == 2 * total for name, total in totals.items()
        ),
    )
    # 3. No more samples: every series ends on the same scrape.
    shop.process.terminate()
    shop.process.wait(10)
    # A failed scrape: the one loop that scrapes the shop has stored its last sample.
    _wait("a failed scrape of the stopped shop", lambda: prom.value(f'up{{job="{JOB}"}}') == 0)

    samples = prom.query(f'cx_visits_total{{job="{JOB}", cx_segment="enterprise"}}[1h]')[0]
    stamps = [float(t) for t, _ in samples["values"]]
    n, first, last = len(stamps), stamps[0], stamps[-1]
    average = (last - first) / (n - 1)
    assert n >= 3
    # Extrapolation: half an interval at each end (see the module docstring).
    f = (last - first + average / 2 + average / 2) / (last - first)
    settled = last + 1.1 * average  # from here the end extrapolation is half an interval

    groups = {
        "cx-5m": "cx_segment:cx_requests:rate5m",
        "cx-1h": "cx_segment:cx_requests:rate1h",
        "cx-visits-1h": "cx_segment:cx_visits:increase1h",
    }

    def evaluated_after_settling() -> bool:
        at = time.time() - 0.2  # evaluations up to then have been written
        return all(
            (prom.value(f"min(timestamp({series}))", at) or 0) > settled
            for series in groups.values()
        )

    _wait("every rule group to evaluate on the final samples", evaluated_after_settling)
    at = time.time() - 0.2
    # Every raw series has the same samples (the same n), so the same f.
    counts_of_samples = {
        float(r["value"][1])
        for name in [*totals, "http_server_request_duration_seconds_bucket"]
        for r in prom.query(f'count_over_time({name}{{job="{JOB}"}}[1h])', at)
    }
    assert counts_of_samples == {n}, counts_of_samples

    rules = prom.get("/api/v1/rules")
    unhealthy = [
        (rule["name"], rule.get("lastError"))
        for group in rules["groups"]
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]
    assert not unhealthy

    model = Model(truth, f)
    problems: list[str] = []
    recorded = model.recorded()
    kit_records = {
        rule["record"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        if group["name"] == "cx-visits-1h"
        for rule in group["rules"]
    }
    assert set(recorded) == kit_records
    for name, expected in recorded.items():
        problems += _check(name, prom.query(name, at), expected)

    panels = model.panels()
    targets = [
        (panel["title"], target["refId"], target["expr"])
        for panel in _panels(_dashboard())
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert {(title, ref) for title, ref, _ in targets} == set(panels)
    for title, ref, expr in targets:
        expected, topk = panels[title, ref]
        result = prom.query(_grafana_to_promql(expr), at)
        problems += _check(f"{title} [{ref}]", result, expected, topk)
    assert not problems, "\n".join([f"f = {f} ({n} samples)", *problems])


if __name__ == "__main__":
    _serve_shop()
