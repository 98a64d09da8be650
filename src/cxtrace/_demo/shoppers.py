"""The load generator: customers of three segments walking the shop's purchase journey.

Every visit is a new customer (a new ``requests.Session``, so a new cart cookie) who sends
``X-Customer-Tier: <segment>`` and leaves along the way as real shoppers do::

    browse ──80%──> view_product (1-3) ──45%──> add_to_cart ──75%──> checkout ──85%──> purchase
                                                                     (frustrated: 40%)

Enterprise customers order in bulk (40-450 line items instead of 1-5), which the backend
prices line by line: their checkout is slow, and a customer kept waiting more than two
seconds buys less often. That is the story the cockpit shows.

Each segment has its own pace (its share of ``rate`` requests per second) and enough
threads to keep it while some wait on a slow checkout.
"""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Final, Optional

import requests

__all__ = ["SEGMENTS", "Shoppers"]

SEGMENTS: Final = (("free", 0.5), ("pro", 0.3), ("enterprise", 0.2))  # share of traffic
_HEADER: Final = "X-Customer-Tier"
_TIMEOUT_S: Final = 30.0
_PATIENCE_S: Final = 2.0  # a checkout slower than this is frustrating (4 T, T = 0.5 s)


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


class Shoppers:
    """Threads sending ``rate`` requests per second to the shop at ``base_url``."""

    def __init__(self, base_url: str, *, rate: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.rate = rate
        self.sent = 0
        self.errors = 0
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

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop sending; requests under way get ``timeout_s`` to finish."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _shop(self, segment: str, pace: _Pace) -> None:
        rng = random.Random()  # noqa: S311 - shoppers' whims, not secrets
        while not self._stop.is_set():
            with requests.Session() as http:
                http.headers[_HEADER] = segment
                self._visit(http, segment, pace, rng)

    def _visit(self, http: requests.Session, segment: str, pace: _Pace, rng: random.Random) -> None:
        """One customer's visit; returns where they leave (or an error sends them away)."""
        if not self._send(http, pace, "GET", "/products") or rng.random() < 0.2:
            return
        for _ in range(rng.randint(1, 3)):
            if not self._send(http, pace, "GET", f"/products/{rng.randint(1, 20)}"):
                return
        if rng.random() < 0.55:
            return
        lines = rng.randint(40, 450) if segment == "enterprise" else rng.randint(1, 5)
        if not self._send(http, pace, "POST", "/cart", {"lines": lines}) or rng.random() < 0.25:
            return
        started = time.monotonic()
        if not self._send(http, pace, "GET", "/checkout"):
            return
        kept_waiting = time.monotonic() - started > _PATIENCE_S
        if rng.random() < (0.4 if kept_waiting else 0.85):
            self._send(http, pace, "POST", "/orders")

    def _send(
        self,
        http: requests.Session,
        pace: _Pace,
        method: str,
        path: str,
        body: Optional[dict[str, int]] = None,
    ) -> bool:
        """One request at the segment's pace; False when it failed or the demo is stopping."""
        if not pace.wait():
            return False
        failed = False
        try:
            response = http.request(method, self.base_url + path, json=body, timeout=_TIMEOUT_S)
            failed = response.status_code >= 500
        except requests.RequestException:
            failed = not self._stop.is_set()  # the shop going away at the end is no error
        with self._tally:
            self.sent += 1
            self.errors += int(failed)
        return not failed and not self._stop.is_set()
