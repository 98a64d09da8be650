"""The load generator: customers of three segments walking the shop's purchase journey.

Every visit is a new customer: a ``requests.Session`` that keeps its cookies (the cart, and
cxtrace's visit cookie) until the customer leaves, sends ``X-Customer-Tier: <segment>`` and
walks the journey, leaving along the way as real shoppers do::

    browse ──80%──> view_product (1-3) ──45%──> add_to_cart ──75%──> checkout ──> purchase
                             enterprise: 70%                  90%
                     after a fine checkout 85% buy, after a frustrating one 30% (everyone)

Enterprise customers come to reorder, and in bulk: more of them fill a cart, with 40-450
line items instead of 1-5, which the backend prices line by line. Their checkout is often
slower than 4 T (2 s), and a customer kept waiting that long is over four times as likely
to leave without buying (:data:`BUY_AFTER_CHECKOUT`). What that costs is not written
anywhere: it follows from how the shoppers behave.

What the shoppers know (:class:`Record`, written by ``cxtrace demo --db FILE`` to
``FILE.shoppers.json``): per segment, the customers (visits), the customers reaching each
step (first time per visit), those frustrated at each step, the visits that converted and
their value, and per step how many of the visits that reached it converted, split by
whether they were frustrated there: the same quantities as the cockpit's funnel and costs.
Most of it is exact. A shopper knows which requests it sent and what came back: a status
of 500 or more is frustrated by an error for cxtrace too, and a 201 from ``POST /orders`` is
a conversion. Slowness is cxtrace's call in the shop: its time runs from the start of the
request until the response headers went out, judged against the step's 4 T. The shopper
holds two bounds of that time. Its own wait is longer (it adds the network, both processes'
scheduling, the body): usually by 2 ms, by up to 0.4 s when a thread waits for the GIL
under load. The shop's ``Server-Timing: app;dur=`` (its own code's time, which cxtrace's
contains) is shorter. Hence, per request:

- waited at most 4 T: not slow for cxtrace either (exact);
- the shop's own time over 4 T: slow for cxtrace too (exact);
- in between (or no ``Server-Timing``): *borderline*, counted apart. cxtrace may have judged
  it either way, so the cockpit's frustrated count at a step lies between the frustrated and
  the frustrated plus the borderline the shoppers recorded there. The band is a few ms wide:
  most runs have no borderline customer at all, and then the counts match exactly.

Each segment has its own pace (its share of ``rate`` requests per second) and enough
threads to keep it while some wait on a slow checkout.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Optional

import requests

from cxtrace._core.config import load_settings

__all__ = [
    "BUY_AFTER_CHECKOUT",
    "JOURNEY",
    "SEGMENTS",
    "Record",
    "Shoppers",
    "frustration_limits",
]

SEGMENTS: Final = (("free", 0.5), ("pro", 0.3), ("enterprise", 0.2))  # share of traffic
JOURNEY: Final = "purchase"  # the journey of examples/shop/journeys.toml the shoppers walk

# The abandonment rule: how likely a shopper who reached checkout goes on to buy, after a
# fine checkout and after a frustrating one (kept waiting more than 4 T, as the shopper
# measured it). Leaving without buying: 15% against 70%, over four times as likely.
BUY_AFTER_CHECKOUT: Final = {"fine": 0.85, "frustrating": 0.30}


@dataclass(frozen=True)
class _Habits:
    """How a segment's customers shop, past the product pages."""

    to_cart: float  # after viewing products, add to the cart
    to_checkout: float  # after that, go to checkout
    lines: tuple[int, int]  # line items in the cart, fewest and most


_HABITS: Final = {
    "free": _Habits(to_cart=0.45, to_checkout=0.75, lines=(1, 5)),
    "pro": _Habits(to_cart=0.45, to_checkout=0.75, lines=(1, 5)),
    "enterprise": _Habits(to_cart=0.70, to_checkout=0.90, lines=(40, 450)),
}
_HEADER: Final = "X-Customer-Tier"
_TIMEOUT_S: Final = 30.0
# The shop's own time in its Server-Timing header, in ms (examples/shop/app.py).
_APP_TIME: Final = re.compile(r"(?:^|,)\s*app;dur=([0-9]+(?:\.[0-9]+)?)")

# A request's verdict, as the shopper knows it; a step keeps its first verdict that is not
# FINE (cxtrace counts a visit's first frustration at a step, and only that one).
_FINE: Final = "fine"
_BORDERLINE: Final = "borderline"
_SLOW: Final = "slow"
_ERROR: Final = "error"


def frustration_limits(journeys_file: Path) -> dict[str, float]:
    """Each step of :data:`JOURNEY` -> 4 T in seconds, read as the services read the file."""
    settings = load_settings({"CXTRACE_JOURNEYS_FILE": str(journeys_file)})
    journey = next(j for j in settings.journeys if j.name == JOURNEY)
    return {
        step.name: 4 * (step.apdex_threshold_ms or settings.apdex_threshold_ms) / 1000
        for step in journey.steps
    }


class _Pace:
    """Hands out request slots ``1 / rate`` seconds apart, shared by a segment's threads."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()
        self._stop = stop

    def wait(self) -> bool:
        """Wait for the next slot; False once the demo is stopping."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)  # no burst to catch up after slow requests
            self._next = slot + self._interval
        return not self._stop.wait(slot - now) if slot > now else not self._stop.is_set()


@dataclass
class StepCount:
    """What the shoppers know of one segment's customers at one step."""

    customers: int = 0  # visits that reached it
    frustrated_slow: int = 0  # ... and were frustrated there, first by a slow response
    frustrated_error: int = 0  # ... first by a status of 500 or more
    borderline: int = 0  # ... first waited over 4 T that the shop's time did not confirm
    converted_frustrated: int = 0  # visits that reached it, were frustrated there, bought
    converted_borderline: int = 0
    converted_others: int = 0


@dataclass
class SegmentCount:
    visits: int = 0
    conversions: int = 0  # visits that bought (a visit buys at most once)
    value: float = 0.0  # what their orders were worth (EUR)
    steps: dict[str, StepCount] = field(default_factory=dict)


class _Visit:
    """One customer's visit as the shopper lived it: their session, their segment's pace."""

    __slots__ = ("answered", "converted", "http", "pace", "segment", "steps", "value")

    def __init__(self, segment: str, http: requests.Session, pace: _Pace) -> None:
        self.segment = segment
        self.http = http
        self.pace = pace
        self.answered = False  # a response came back: the shop has counted this visit
        self.steps: dict[str, str] = {}  # step -> verdict, in the order reached
        self.converted = False
        self.value = 0.0

    def note(self, step: str, verdict: str) -> None:
        if self.steps.get(step, _FINE) == _FINE:
            self.steps[step] = verdict
        self.answered = True


class Record:
    """The shoppers' own count, per segment, of what they did and met (thread-safe)."""

    def __init__(self, limits: dict[str, float]) -> None:
        self.limits = limits
        self.segments = {name: SegmentCount() for name, _ in SEGMENTS}
        self.unanswered = 0  # requests sent that got no response: the shop may have counted them
        self.open_visits = 0  # visits begun and not added yet
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self.open_visits += 1

    def add(self, visit: _Visit) -> None:
        with self._lock:
            self.open_visits -= 1
            if not visit.answered:
                return
            counts = self.segments[visit.segment]
            counts.visits += 1
            counts.conversions += int(visit.converted)
            counts.value += visit.value
            for step, verdict in visit.steps.items():
                at = counts.steps.setdefault(step, StepCount())
                at.customers += 1
                if verdict == _SLOW:
                    at.frustrated_slow += 1
                elif verdict == _ERROR:
                    at.frustrated_error += 1
                elif verdict == _BORDERLINE:
                    at.borderline += 1
                if not visit.converted:
                    continue
                if verdict in (_SLOW, _ERROR):
                    at.converted_frustrated += 1
                elif verdict == _BORDERLINE:
                    at.converted_borderline += 1
                else:
                    at.converted_others += 1

    def unanswered_request(self) -> None:
        with self._lock:
            self.unanswered += 1

    def totals(self) -> tuple[int, int]:
        """(customers, orders) so far, all segments."""
        with self._lock:
            counts = self.segments.values()
            return sum(c.visits for c in counts), sum(c.conversions for c in counts)

    def as_json(self) -> dict[str, Any]:
        """Everything, for ``FILE.shoppers.json``; meant once the shoppers stopped."""
        with self._lock:
            return {
                "journey": JOURNEY,
                "frustrated_after_s": dict(self.limits),
                "buy_after_checkout": dict(BUY_AFTER_CHECKOUT),
                "unanswered_requests": self.unanswered,
                "unfinished_visits": self.open_visits,
                "segments": {
                    name: {**asdict(counts), "value": round(counts.value, 2)}
                    for name, counts in self.segments.items()
                },
            }


class Shoppers:
    """Threads sending ``rate`` requests per second to the shop at ``base_url``.

    ``limits`` is each step's 4 T in seconds (:func:`frustration_limits`).
    """

    def __init__(self, base_url: str, *, rate: float, limits: dict[str, float]) -> None:
        self.base_url = base_url.rstrip("/")
        self.rate = rate
        self.sent = 0
        self.errors = 0
        self.record = Record(limits)
        self._limits = limits
        self._tally = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        for segment, share in SEGMENTS:
            pace = _Pace(rate * share, self._stop)
            for i in range(max(2, math.ceil(rate * share / 2))):
                self._threads.append(
                    threading.Thread(
                        target=self._shop,
                        args=(segment, pace),
                        name=f"cxtrace-demo-{segment}-{i}",
                        daemon=True,
                    )
                )

    @property
    def threads(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sending; requests under way get ``timeout_s`` to finish (the slowest
        checkout takes under 3.5 s), so that the record holds every answered request."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _shop(self, segment: str, pace: _Pace) -> None:
        rng = random.Random()  # noqa: S311 - shoppers' whims, not secrets
        while not self._stop.is_set():
            self.record.begin()
            with requests.Session() as http:
                http.headers[_HEADER] = segment
                visit = _Visit(segment, http, pace)
                try:
                    self._visit(visit, rng)
                finally:
                    self.record.add(visit)

    def _visit(self, visit: _Visit, rng: random.Random) -> None:
        """One customer's visit; returns where they leave (or an error sends them away)."""
        browse = self._send(visit, "browse", "GET", "/products")
        if not self._goes_on(browse) or rng.random() < 0.2:
            return
        for _ in range(rng.randint(1, 3)):
            path = f"/products/{rng.randint(1, 20)}"
            if not self._goes_on(self._send(visit, "view_product", "GET", path)):
                return
        habits = _HABITS[visit.segment]
        if rng.random() >= habits.to_cart:
            return
        lines = rng.randint(*habits.lines)
        cart = self._send(visit, "add_to_cart", "POST", "/cart", {"lines": lines})
        if not self._goes_on(cart) or rng.random() >= habits.to_checkout:
            return
        checkout = self._send(visit, "checkout", "GET", "/checkout")
        if checkout is None or not self._goes_on(checkout):
            return
        kept_waiting = checkout.elapsed_s > self._limits["checkout"]
        if rng.random() >= BUY_AFTER_CHECKOUT["frustrating" if kept_waiting else "fine"]:
            return
        order = self._send(visit, "purchase", "POST", "/orders")
        if order is not None and order.status == 201:  # even while stopping: the shop counted it
            visit.converted = True
            visit.value = float(order.body.get("value", 0.0))

    def _goes_on(self, answer: Optional[_Answer]) -> bool:
        """Whether the customer carries on after this answer: it came, it was no error,
        and the demo is not stopping."""
        return answer is not None and answer.status < 500 and not self._stop.is_set()

    def _send(
        self,
        visit: _Visit,
        step: str,
        method: str,
        path: str,
        body: Optional[dict[str, int]] = None,
    ) -> Optional[_Answer]:
        """One request at the segment's pace, noted in the visit; None when none was sent
        (the demo is stopping) or none came back."""
        if not visit.pace.wait():
            return None
        answer: Optional[_Answer] = None
        started = time.perf_counter()
        try:
            response = visit.http.request(
                method, self.base_url + path, json=body, timeout=_TIMEOUT_S
            )
        except requests.RequestException:
            failed = not self._stop.is_set()  # the shop going away at the end is no error
            self.record.unanswered_request()
        else:
            answer = _Answer(response, time.perf_counter() - started)
            failed = answer.status >= 500
            visit.note(step, self._verdict(step, answer))
        with self._tally:
            self.sent += 1
            self.errors += int(failed)
        return answer

    def _verdict(self, step: str, answer: _Answer) -> str:
        if answer.status >= 500:  # CXTRACE_FRUSTRATED_STATUS, the default the demo keeps
            return _ERROR
        limit = self._limits[step]
        if answer.elapsed_s <= limit:  # cxtrace's time is shorter than the wait
            return _FINE
        if answer.app_s is not None and answer.app_s > limit:  # ... and longer than the shop's
            return _SLOW
        return _BORDERLINE


class _Answer:
    """A response: its status, how long the shopper waited for all of it, how long the
    shop's code took (``Server-Timing``; None if it did not say) and its JSON body."""

    __slots__ = ("app_s", "body", "elapsed_s", "status")

    def __init__(self, response: requests.Response, elapsed_s: float) -> None:
        self.status = response.status_code
        self.elapsed_s = elapsed_s
        timing = _APP_TIME.search(response.headers.get("Server-Timing", ""))
        self.app_s = float(timing.group(1)) / 1000 if timing else None
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        self.body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
