"""Visits counted exactly: shoppers walk a real shop; every counter equals what they did.

Each shopper is one customer: a ``requests.Session`` that keeps its cookies (or, for an
app client, echoes the ``cx-visit`` header) and walks a known path through the purchase
journey of tests/apps/visit_shop.py. The simulator knows, for every request it made, the
step, the segment it sent, whether the shop made it slow or fail, and whether it bought;
from that alone (design.md section 12, not cxtrace's code) it works out what each
``cx.visit*`` counter must say. The test then compares that with what a real OTLP
receiver decoded off the wire from the shop's processes, counter by counter and attribute
set by attribute set:

- under ``cxtrace run -- gunicorn`` with 2 workers and 1% trace sampling;
- with two shop processes behind a round-robin proxy, every process restarted in the
  middle of the visits (state lives only in the cookie: no count may change).
"""

from __future__ import annotations

import http.client
import http.cookiejar
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests

from design_journeys import DESIGN_JOURNEYS
from otlp_receiver import Receiver
from test_run import APPS, SCRIPT, Server, Start, environment, free_port, start  # noqa: F401

pytest.importorskip("gunicorn")

# design.md's purchase journey, with a checkout quick to frustrate (T = 100 ms).
JOURNEYS = DESIGN_JOURNEYS.replace("apdex_threshold_ms = 1000", "apdex_threshold_ms = 100")
assert JOURNEYS != DESIGN_JOURNEYS
STEPS = ("browse", "view_product", "add_to_cart", "checkout", "purchase")
SLOW_S = 0.6  # checkout's T is 100 ms: over 4T is frustrated, reason slow
SHORT_TIMEOUT_S = 3  # CXTRACE_VISIT_TIMEOUT_S where a shopper comes back after it
KEY = "visit-test-key"

VISIT_METRICS = (
    "cx.visits",
    "cx.visit.steps",
    "cx.visit.frustrations",
    "cx.visit.conversions",
    "cx.visit.converted_steps",
)


# --------------------------------------------------------------------------- ground truth


@dataclass
class Truth:
    """What the counters must say, worked out from what the shoppers did."""

    timeout_s: float
    counts: Counter[tuple[str, frozenset[tuple[str, object]]]] = field(default_factory=Counter)
    values: Counter[frozenset[tuple[str, object]]] = field(default_factory=Counter)
    states: set[str] = field(default_factory=set)  # every visit value the shop sent
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, metric: str, amount: float = 1, **attrs: object) -> None:
        key = frozenset((name.replace("__", "."), v) for name, v in attrs.items())
        with self.lock:
            if metric == "cx.conversion.value":
                self.values[key] += amount
            else:
                self.counts[(metric, key)] += 1


@dataclass
class Progress:
    """One visit as the shopper lived it."""

    reached: list[str] = field(default_factory=list)
    frustrated: set[str] = field(default_factory=set)
    converted: bool = False


class Shopper:
    """One customer with one browser (or one app), walking the shop."""

    def __init__(self, url: Callable[[], str], truth: Truth, segment: str, *, app: bool) -> None:
        self.url = url
        self.truth = truth
        self.segment = segment
        self.app = app  # keeps no cookies: echoes cx-visit instead
        self.session = requests.Session()
        if app:
            self.session.cookies.set_policy(_NoCookies())
        self.echo: Optional[str] = None
        self.visit: Optional[Progress] = None
        self.last = (0.0, 0.0)  # the previous request: (sent, answered), monotonic
        self.sent = 0.0

    def go(
        self,
        step: str,
        *,
        slow: bool = False,
        fail: bool = False,
        value: float = 0.0,
    ) -> requests.Response:
        method, path = {
            "browse": ("GET", "/products"),
            "view_product": ("GET", "/products/7"),
            "add_to_cart": ("POST", "/cart"),
            "checkout": ("GET", "/checkout"),
            "purchase": ("POST", "/orders"),
        }[step]
        params: dict[str, Any] = {}
        if slow:
            params["slow"] = SLOW_S
        if fail:
            params["fail"] = 1
        if step == "purchase" and not fail:
            params["value"] = value
        response = self._send(method, path, params)
        expected = 201 if method == "POST" else 200
        if fail:
            expected = 503 if step == "checkout" else 500
        assert response.status_code == expected, response.text
        frustration = "slow" if slow else "error" if fail else None
        self._happened(step, frustration, bought=step == "purchase" and not fail, value=value)
        return response

    def login(self, segment: str) -> None:
        assert self._send("GET", "/login", {}).cookies.get("shop_session") or self.app
        self._happened(None, None, bought=False, value=0.0)
        self.segment = segment

    def _send(self, method: str, path: str, params: dict[str, Any]) -> requests.Response:
        headers = {"X-Customer-Tier": self.segment}
        if self.echo is not None:
            headers["cx-visit"] = self.echo
        self.sent = time.monotonic()
        response = self.session.request(
            method, self.url() + path, params=params, headers=headers, timeout=30
        )
        if self.app and "cx-visit" in response.headers:
            self.echo = response.headers["cx-visit"]
        if "cx_visit" in response.cookies:
            with self.truth.lock:
                self.truth.states.add(response.cookies["cx_visit"])
        if "cx-visit" in response.headers:
            with self.truth.lock:
                self.truth.states.add(response.headers["cx-visit"])
        return response

    def _happened(
        self, step: Optional[str], frustration: Optional[str], *, bought: bool, value: float
    ) -> None:
        """design.md section 12, applied to one request of this shopper."""
        truth, segment = self.truth, self.segment
        sent, answered = self.sent, time.monotonic()
        if self.visit is None:
            new = True
        else:
            # The server saw a gap between these bounds, and compares whole seconds:
            # over the timeout by a second is certainly expired, within it certainly not.
            least, most = sent - self.last[1], answered - self.last[0]
            new = least >= truth.timeout_s + 1
            assert new or most <= truth.timeout_s, f"too close to call: {least:.2f}-{most:.2f} s"
        self.last = (sent, answered)
        if new:
            self.visit = Progress()
            truth.add("cx.visits", cx__segment=segment)
        visit = self.visit
        if step is None:
            return
        where = {"cx__segment": segment, "cx__journey": "purchase"}
        if step not in visit.reached:
            visit.reached.append(step)
            truth.add("cx.visit.steps", cx__step=step, **where)
        if frustration and step not in visit.frustrated:
            visit.frustrated.add(step)
            truth.add(
                "cx.visit.frustrations", cx__step=step, cx__frustration__reason=frustration, **where
            )
        if bought:  # every order counts its value (a request counter, section 4)
            truth.add(
                "cx.conversion.value", value, cx__step=step, **where, cx__conversion__currency="EUR"
            )
        if bought and not visit.converted:
            visit.converted = True
            truth.add("cx.visit.conversions", **where)
            for reached in visit.reached:
                truth.add(
                    "cx.visit.converted_steps",
                    cx__step=reached,
                    cx__visit__frustrated=reached in visit.frustrated,
                    **where,
                )


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False


# The paths of the issue, each as two halves: the test may restart every process between.
def browse_only(s: Shopper, half: int) -> None:
    for _ in range(3):  # an impatient customer reloading: one customer, one browse
        s.go("browse")


def buys(s: Shopper, half: int) -> None:
    if half == 0:
        s.go("browse")
        s.go("view_product")
        s.go("add_to_cart")
    else:
        s.go("checkout")
        s.go("purchase", value=40.0)


def frustrated_then_leaves(s: Shopper, half: int) -> None:
    if half == 0:
        s.go("browse")
        s.go("add_to_cart")
    else:
        s.go("checkout", fail=True)
        s.go("checkout", fail=True)  # frustrated twice at one step: once for the visit


def frustrated_then_buys(s: Shopper, half: int) -> None:
    if half == 0:
        s.go("view_product")
        s.go("checkout", slow=True)
    else:
        s.go("checkout")
        s.go("purchase", fail=True)  # a failed order is no purchase
        s.go("purchase", value=25.5)
        s.go("purchase", value=10.0)  # a second order: converts the visit no further


def logs_in_mid_visit(s: Shopper, half: int) -> None:
    if half == 0:
        s.go("browse")
        s.login("enterprise")
    else:
        s.go("view_product")  # counted for the segment of the request it happens on
        s.go("checkout")
        s.go("purchase", value=99.0)


def returns_after_the_timeout(s: Shopper, half: int) -> None:
    if half == 0:
        s.go("browse")
        s.go("view_product")
    else:
        time.sleep(s.truth.timeout_s + 2)
        s.go("view_product")  # a new visit: reaches view_product again
        s.go("checkout")


PATHS = (
    browse_only,
    buys,
    frustrated_then_leaves,
    frustrated_then_buys,
    logs_in_mid_visit,
    returns_after_the_timeout,
)
SEGMENTS = ("free", "pro", "enterprise")


def shoppers(
    url: Callable[[], str], truth: Truth, per_path: int, paths: tuple[Any, ...] = PATHS
) -> list[tuple[Shopper, Any]]:
    made = []
    for p, path in enumerate(paths):
        for n in range(per_path):
            segment = SEGMENTS[(p + n) % len(SEGMENTS)]
            app = n % 3 == 2  # every third one an app that keeps no cookies
            if path is logs_in_mid_visit:
                segment = "free"
            made.append((Shopper(url, truth, segment, app=app), path))
    return made


def walk(crowd: list[tuple[Shopper, Any]], *halves: int) -> None:
    """Every shopper walks these halves of its path; shoppers run concurrently, each one's
    requests one after another (as one customer's clicks)."""

    def one(shopper: Shopper, path: Any) -> None:
        for half in halves:
            path(shopper, half)

    with ThreadPoolExecutor(max_workers=6) as pool:
        for done in pool.map(lambda pair: one(*pair), crowd):
            assert done is None


# --------------------------------------------------------------------------- comparison


def exported(otlp: Receiver) -> tuple[dict[Any, float], dict[Any, float]]:
    """(counts, conversion values) as the receiver decoded them, keyed like Truth."""
    streams: dict[str, set[frozenset[tuple[str, object]]]] = {}
    for point in otlp.points:
        if point.metric in (*VISIT_METRICS, "cx.conversion.value"):
            streams.setdefault(point.metric, set()).add(frozenset(point.attributes.items()))
    counts = {
        (metric, attrs): otlp.metric_total(metric, **dict(attrs))
        for metric in VISIT_METRICS
        for attrs in streams.get(metric, ())
    }
    values = {
        attrs: otlp.metric_total("cx.conversion.value", **dict(attrs))
        for attrs in streams.get("cx.conversion.value", ())
    }
    return counts, values


def table(truth: Truth, counts: dict[Any, float]) -> str:
    """Expected against exported, one line per counter and attribute set (for the note)."""
    lines = []
    for metric, attrs in sorted(set(truth.counts) | set(counts), key=str):
        shown = ",".join(f"{k}={v}" for k, v in sorted(attrs, key=str) if k != "cx.journey")
        lines.append(
            f"{metric:26} {shown:78} {truth.counts.get((metric, attrs), 0):4} "
            f"{counts.get((metric, attrs), 0):6g}"
        )
    return "\n".join(lines)


def check(otlp: Receiver, truth: Truth) -> None:
    counts, values = exported(otlp)
    print("\n" + table(truth, counts))  # shown with -s, for the closing note
    assert counts == {key: float(n) for key, n in truth.counts.items()}
    assert values == pytest.approx({key: float(v) for key, v in truth.values.items()})
    assert truth.counts[("cx.visits", frozenset({("cx.segment", "free")}))] > 0
    # Privacy on the wire: no visit value, nor its payload or signature, in any export.
    wire = b"".join(raw for _, raw in otlp.payloads)
    assert len(truth.states) > len(truth.counts)
    for value in truth.states:
        for part in (value, *value.split(".")[1:]):
            assert part.encode() not in wire


def shop_env(otlp: Receiver, journeys: Path, timeout_s: int, **extra: str) -> dict[str, str]:
    return environment(
        otlp,
        CXTRACE_JOURNEYS_FILE=str(journeys),
        CXTRACE_EXCLUDED_URLS="^/pid$",
        CXTRACE_VISITS="cookie",
        CXTRACE_VISIT_KEY=KEY,
        CXTRACE_VISIT_TIMEOUT_S=str(timeout_s),
        OTEL_TRACES_SAMPLER="traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.01",
        OTEL_SERVICE_NAME="shop",
        **extra,
    )


def gunicorn(port: int, workers: int) -> list[str]:
    return [
        *SCRIPT,
        "run",
        "--",
        "gunicorn",
        f"--chdir={APPS}",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        "--threads=4",  # one customer's slow checkout does not hold up the others
        "visit_shop:app",
    ]


@pytest.fixture
def journeys(tmp_path: Path) -> Path:
    path = tmp_path / "journeys.toml"
    path.write_text(JOURNEYS)
    return path


# --------------------------------------------------------------------------- the tests


def test_two_gunicorn_workers_count_every_customer_exactly_at_one_percent_sampling(
    otlp: Receiver,
    start: Start,  # noqa: F811 - the fixture of tests/test_run.py, imported above
    tmp_path: Path,
    journeys: Path,
) -> None:
    port = free_port()
    env = shop_env(otlp, journeys, SHORT_TIMEOUT_S, HOME=str(tmp_path))
    server = start(gunicorn(port, workers=2), env, port=port)
    truth = Truth(SHORT_TIMEOUT_S)
    crowd = shoppers(lambda: server.url, truth, per_path=6)
    walk(crowd, 0, 1)
    pids = {requests.get(server.url + "/pid", timeout=10).text for _ in range(40)}
    server.stop(0)

    assert len(pids) == 2  # both workers were serving
    check(otlp, truth)
    requests_made = otlp.metric_total("cx.requests")
    assert requests_made > 100
    assert len(otlp.spans_named("GET /products")) < requests_made / 4  # 1% sampled
    server.assert_quiet()


class RoundRobin:
    """A reverse proxy on loopback sending each request to the next backend in turn, as a
    load balancer without session affinity does; it relays every header both ways."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.turn = 0
        self.served: Counter[int] = Counter()
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                with lock:
                    port = proxy.backends[proxy.turn % len(proxy.backends)]
                    proxy.turn += 1
                    proxy.served[port] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = _relay  # noqa: N815 - BaseHTTPRequestHandler's names

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy() -> Iterator[Callable[[list[int]], RoundRobin]]:
    made: list[RoundRobin] = []

    def make(backends: list[int]) -> RoundRobin:
        made.append(RoundRobin(backends))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_two_processes_behind_a_round_robin_proxy_restarted_mid_visit_count_exactly(
    otlp: Receiver,
    start: Start,  # noqa: F811 - the fixture of tests/test_run.py, imported above
    tmp_path: Path,
    journeys: Path,
    proxy: Callable[[list[int]], RoundRobin],
) -> None:
    ports = [free_port(), free_port()]
    # A restart takes seconds: a timeout no restart comes near (the short one is tested above).
    env = shop_env(otlp, journeys, 120, HOME=str(tmp_path))

    def start_all() -> list[Server]:
        return [start(gunicorn(port, workers=1), env, port=port) for port in ports]

    balancer = proxy(ports)
    truth = Truth(120)
    paths = tuple(path for path in PATHS if path is not returns_after_the_timeout)
    crowd = shoppers(lambda: balancer.url, truth, per_path=4, paths=paths)
    servers = start_all()
    walk(crowd, 0)
    for server in servers:  # every process goes away in the middle of every visit
        server.stop(0)
    servers = start_all()
    walk(crowd, 1)
    for server in servers:
        server.stop(0)

    assert min(balancer.served[port] for port in ports) > 20
    instances = {p.resource["service.instance.id"] for p in otlp.points}
    assert len(instances) == 4  # two processes, each started twice
    check(otlp, truth)
