"""The cxtrace demo: an example shop under load, and what cxtrace exported, in business words.

    python3 -m pip install nox && python3 -m nox -s demo        # or: python examples/demo.py

It starts an OTLP receiver on loopback, the example shop (examples/shop/app.py, configured
only by environment variables, as a deployment would be), and a load generator sending
three customer segments through the purchase journey. Then it prints, per segment and
journey step, what the shop's cxtrace exported: requests, Apdex, frustration, conversions.

Until the Customer Experience Cockpit lands (issue #8) the receiver is the test suite's.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from otlp_receiver import Receiver  # noqa: E402

SEGMENTS = {"free": 5, "pro": 3, "enterprise": 2}  # relative traffic
STEPS = ["browse", "view_product", "add_to_cart", "checkout", "purchase"]
WORDS = {"satisfied": "satisfied", "tolerating": "tolerating", "frustrated": "frustrated"}


def start(argv: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], str]:
    """Start a service that prints 'listening on URL' when ready; return it and its URL."""
    proc = subprocess.Popen(
        [sys.executable, *argv],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"{argv[0]} did not start; see {log}")
    return proc, line.rsplit(" ", 1)[1].strip()


def shopper(base: str, segment: str, stop: threading.Event, sent: list[int]) -> None:
    """One customer after another walks the journey; some leave at each step."""
    rng = random.Random()
    headers = {"X-Customer-Tier": segment}
    with requests.Session() as http:
        while not stop.is_set():
            try:
                http.get(f"{base}/products", headers=headers)
                sent[0] += 1
                for _ in range(rng.randint(1, 3)):
                    http.get(f"{base}/products/{rng.randint(1, 20)}", headers=headers)
                    sent[0] += 1
                if rng.random() < 0.6:
                    http.post(f"{base}/cart", headers=headers)
                    http.get(f"{base}/checkout", headers=headers)
                    sent[0] += 2
                    if rng.random() < 0.7:
                        http.post(f"{base}/orders", headers=headers)
                        sent[0] += 1
            except requests.RequestException:
                return


def summarize(receiver: Receiver) -> None:
    # Latest cumulative point per attribute set = the total for that slice.
    counts: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    latest: dict[tuple[tuple[str, object], ...], tuple[int, float, dict[str, object]]] = {}
    for point in receiver.points:
        if point.metric != "cx.requests" or point.resource.get("service.name") != "shop":
            continue
        key = tuple(sorted(point.attributes.items()))
        if key not in latest or point.time_ns >= latest[key][0]:
            latest[key] = (point.time_ns, float(point.value or 0), point.attributes)
    for _, value, attrs in latest.values():
        slice_ = (str(attrs.get("cx.segment", "unknown")), str(attrs.get("cx.step", "-")))
        counts[slice_][str(attrs["cx.satisfaction"])] += value
    conversions = {
        str(seg): receiver.metric_total("cx.conversions", **{"cx.segment": seg}) for seg in SEGMENTS
    }
    thresholds = {
        s.attributes.get("cx.step"): s.attributes.get("cx.apdex.threshold_ms")
        for s in receiver.spans
        if s.kind == "SERVER"
    }

    print("\nWhat cxtrace exported (cx.requests by segment and journey step)\n")
    print(
        f"{'segment':<11} {'step':<13} {'requests':>8} {'Apdex':>6} "
        f"{'satisfied':>10} {'tolerating':>10} {'frustrated':>10}"
    )
    worst: list[tuple[float, str, str, float, float]] = []
    for segment in SEGMENTS:
        for step in STEPS:
            c = counts.get((segment, step))
            if not c:
                continue
            total = sum(c.values())
            apdex = (c["satisfied"] + c["tolerating"] / 2) / total
            frustrated = c["frustrated"] / total
            worst.append((frustrated, segment, step, apdex, total))
            print(
                f"{segment:<11} {step:<13} {int(total):>8} {apdex:>6.2f} "
                f"{int(c['satisfied']):>10} {int(c['tolerating']):>10} {int(c['frustrated']):>10}"
            )
    print("\nconversions: " + ", ".join(f"{s} {int(n)}" for s, n in conversions.items()))
    backend = [
        p
        for p in receiver.points
        if p.metric == "cx.requests" and p.resource.get("service.name") == "backend"
    ]
    if backend:
        routes = sorted({str(p.attributes.get("http.route")) for p in backend})
        total = receiver.metric_total("cx.requests") - sum(sum(c.values()) for c in counts.values())
        print(f"backend (Django): {int(total)} requests on {', '.join(routes)}")
    worst.sort(reverse=True)
    print("\nIn business words:")
    for frustrated, segment, step, apdex, _total in worst[:3]:
        if frustrated == 0:
            break
        t_ms = thresholds.get(step)
        t_text = f"{t_ms / 1000:g} s" if isinstance(t_ms, int) and t_ms >= 1000 else f"{t_ms} ms"
        print(
            f"  - {step.replace('_', ' ')} is frustrating {frustrated:.0%} of {segment} "
            f"customers (Apdex {apdex:.2f}, T = {t_text})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description="cxtrace demo: an example shop under load")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (20)")
    args = parser.parse_args()

    with Receiver("http/protobuf") as receiver:
        print(f"OTLP receiver on {receiver.endpoint}")
        logs = Path(tempfile.gettempdir())
        telemetry = {
            **receiver.env(),
            "OTEL_METRIC_EXPORT_INTERVAL": "2000",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }
        backend, backend_url = start(
            [str(ROOT / "examples" / "backend" / "serve.py"), "--port", "0"],
            telemetry,
            logs / "cxtrace-demo-backend.log",
        )
        print(f"backend (Django ASGI + cxtrace) on {backend_url}, service.name=backend")
        shop, base = start(
            [str(ROOT / "examples" / "shop" / "app.py"), "--port", "0"],
            {
                **telemetry,
                "SHOP_BACKEND_URL": backend_url,
                "CXTRACE_JOURNEYS_FILE": str(ROOT / "examples" / "shop" / "journeys.toml"),
            },
            logs / "cxtrace-demo-shop.log",
        )
        print(f"shop (Flask + cxtrace) on {base}, service.name=shop")
        print(f"service logs: {logs}/cxtrace-demo-*.log")
        stop, sent = threading.Event(), [0]
        shoppers = [
            threading.Thread(target=shopper, args=(base, segment, stop, sent), daemon=True)
            for segment, weight in SEGMENTS.items()
            for _ in range(weight)
        ]
        for thread in shoppers:
            thread.start()
        print(f"load: {len(shoppers)} shoppers ({', '.join(SEGMENTS)}) for {args.duration:g} s")
        try:
            deadline = time.monotonic() + args.duration
            while time.monotonic() < deadline:
                time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
                print(
                    f"  {sent[0]:>6} requests sent, {len(receiver.spans):>6} spans received",
                    flush=True,
                )
        except KeyboardInterrupt:
            print("  interrupted; summarising what arrived")
        finally:
            stop.set()
            for thread in shoppers:
                thread.join(timeout=5)
            for service in (shop, backend):
                service.terminate()  # each flushes its telemetry on SIGTERM
            for service in (shop, backend):
                service.wait(timeout=30)
        summarize(receiver)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
