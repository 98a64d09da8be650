"""``cxtrace demo``: start the cockpit, the example services and the shoppers; stop them all.

Order matters both ways. Up: the cockpit first (the services export to it), the backend,
the shop (it calls the backend), then the shoppers. Down, on ``--duration``, Ctrl-C or
SIGTERM: the shoppers, the shop, the backend (each flushes its telemetry on SIGTERM), and
the cockpit last, so it stores their final export.

With ``--db FILE`` the demo also keeps the shoppers' own record of what they did
(:class:`cxtrace._demo.shoppers.Record`) as JSON in ``FILE.shoppers.json``, written once
they stopped: what the cockpit's customer counts can be held to.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, Optional, TextIO
from urllib.parse import urljoin

import requests

from cxtrace._cockpit import Cockpit
from cxtrace._cockpit.app import ListenError
from cxtrace._cockpit.store import SchemaError
from cxtrace._demo.services import Service, ServiceError, examples_dir
from cxtrace._demo.shoppers import SEGMENTS, Shoppers, frustration_limits

__all__ = ["Options", "record_path", "run"]

_PROGRESS_EVERY_S = 5.0
_FLAGS = {"page": "--port", "otlp_http": "--otlp-http-port", "otlp_grpc": "--otlp-grpc-port"}
_RETENTION_S = 7 * 86400

# The services report every two seconds (spans within half a second), so the cockpit's
# page moves while you watch; the SDK defaults (60 s, 5 s) suit production, not a demo.
_TELEMETRY = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_METRIC_EXPORT_INTERVAL": "2000",
    "OTEL_BSP_SCHEDULE_DELAY": "500",
    "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=demo",
}


class Headline(NamedTuple):
    """One line of the cockpit's headline (``/api/summary``)."""

    segment: str
    step: str
    text: str
    costed: bool  # it says what frustration cost (enough customers to compare)


@dataclass(frozen=True)
class Options:
    port: int
    otlp_http_port: int
    otlp_grpc_port: int
    db: Optional[Path]
    duration_s: Optional[float]
    rate: float


def run(options: Options, out: TextIO = sys.stdout) -> int:
    """Run the demo until ``duration_s`` has passed, Ctrl-C or SIGTERM; the exit status."""
    workdir = Path(tempfile.mkdtemp(prefix="cxtrace-demo-"))
    db = options.db if options.db is not None else workdir / "cockpit.db"
    failed = False
    cockpit: Any = None
    services: list[Service] = []
    shoppers: Optional[Shoppers] = None
    headlines: list[Headline] = []
    record: Optional[Path] = None
    previous = _stop_on_signals()
    try:
        cockpit = Cockpit(
            db,
            host="127.0.0.1",
            port=options.port,
            otlp_http_port=options.otlp_http_port,
            otlp_grpc_port=options.otlp_grpc_port,
            retention_s=_RETENTION_S,
        )
        try:
            cockpit.start()
        except ListenError as exc:
            cockpit = None
            flag = _FLAGS.get(exc.role, "--port")
            print(
                f"cxtrace demo: error: {flag}: {exc} ({flag} 0 picks a free port)", file=sys.stderr
            )
            return 2
        except (OSError, SchemaError) as exc:
            cockpit = None
            print(f"cxtrace demo: error: --db {db}: {exc}", file=sys.stderr)
            return 2
        _say(out, "cxtrace demo: a shop under load, and what its customers experience\n")
        _say(out, f"  Cockpit  {cockpit.page_url}   <- open this in your browser\n")

        env = _service_env(cockpit.otlp_http_endpoint, examples_dir())
        backend = Service(
            "backend",
            [str(examples_dir() / "backend" / "serve.py"), "--port", "0"],
            {**env, "OTEL_SERVICE_NAME": "backend"},
            workdir / "backend.log",
        )
        services.append(backend)
        backend.start()
        shop = Service(
            "shop",
            [str(examples_dir() / "shop" / "app.py"), "--port", "0"],
            {**env, "OTEL_SERVICE_NAME": "shop", "SHOP_BACKEND_URL": backend.url},
            workdir / "shop.log",
        )
        services.append(shop)
        shop.start()
        journeys = examples_dir() / "shop" / "journeys.toml"
        shoppers = Shoppers(shop.url, rate=options.rate, limits=frustration_limits(journeys))
        _say(
            out,
            f"  shop     {shop.url}   Flask storefront, cxtrace run (pid {shop.pid})\n"
            f"  backend  {backend.url}   Django service on uvicorn, cxtrace run "
            f"(pid {backend.pid})\n"
            f"  OTLP     {_receivers(cockpit)}\n"
            f"  data     {db}{'' if options.db else ' (removed at exit; --db to keep it)'}\n"
            f"  logs     {workdir}{os.sep}{{shop,backend}}.log\n\n"
            f"  {shoppers.threads} shoppers ("
            + ", ".join(f"{name} {share:.0%}" for name, share in SEGMENTS)
            + f") send {options.rate:g} requests/s, "
            + (f"for {options.duration_s:g} s" if options.duration_s else "until Ctrl-C")
            + ".\n  Look for: checkout is slow for enterprise customers, who order in bulk (the "
            "backend\n  prices their carts line by line), and a customer kept waiting buys "
            "less often.\n  The cockpit names the customers and orders it costs within a "
            "minute.\n\n",
        )
        shoppers.start()
        _watch(out, shoppers, services, cockpit.page_url, options.duration_s)
    except KeyboardInterrupt:
        _say(out, "\n  stopping ...\n")
    except ServiceError as exc:
        failed = True
        print(f"cxtrace demo: error: {exc}", file=sys.stderr)
    finally:
        # Stop in order, whatever arrives meanwhile: a second Ctrl-C must not strand a child.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if shoppers is not None:
                shoppers.stop()
                if options.db is not None:
                    record = _write_record(shoppers, record_path(options.db))
            for service in reversed(services):
                service.stop()
            if cockpit is not None:
                if shoppers is not None:  # their final export is in: what the page says now
                    headlines = _headlines(cockpit.page_url)
                cockpit.stop()
        finally:
            _restore(previous)
            if failed:
                _say(out, f"  logs kept in {workdir}\n")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    if shoppers is not None:
        _say(out, f"  stopped: {_tally(shoppers)}\n")
        if headlines:
            _say(out, "  the cockpit's headline:\n" + "".join(f"    {h.text}\n" for h in headlines))
        if record is not None:
            _say(out, f"  the shoppers' own record: {record}\n")
    return 1 if failed else 0


def record_path(db: Path) -> Path:
    """Where ``--db FILE`` keeps the shoppers' record: ``FILE.shoppers.json``."""
    return db.with_name(db.name + ".shoppers.json")


def _write_record(shoppers: Shoppers, path: Path) -> Optional[Path]:
    """The shoppers' record as JSON at ``path``; None (and a line on stderr) if it cannot."""
    try:
        path.write_text(json.dumps(shoppers.record.as_json(), indent=2) + "\n")
    except OSError as exc:
        print(f"cxtrace demo: the shoppers' record was not written: {exc}", file=sys.stderr)
        return None
    return path


def _headlines(page_url: str, timeout_s: float = 5.0) -> list[Headline]:
    """The cockpit's headline (``/api/summary``): the worst slices, in customers and money
    (visits are on), in requests until the first visit counts reach the cockpit.

    Empty when the cockpit cannot say (yet): the demo's output is no place for a traceback.
    """
    try:
        summary = requests.get(urljoin(page_url, "api/summary"), timeout=timeout_s).json()
        return [
            Headline(
                str(h["segment"]),
                str(h["step"]),
                str(h["text"]),
                h.get("conversions_lost") is not None,
            )
            for h in summary["headlines"]
        ]
    except (requests.RequestException, ValueError, LookupError, TypeError, AttributeError):
        return []


def _receivers(cockpit: Any) -> str:
    grpc = cockpit.otlp_grpc_endpoint
    http = f"{cockpit.otlp_http_endpoint} (http/protobuf)"
    return f"{http}, {grpc} (gRPC)" if grpc else f"{http}; gRPC off (grpcio not installed)"


def _service_env(otlp_endpoint: str, examples: Path) -> dict[str, str]:
    """The services' environment: only what the demo sets, none of the caller's OTEL_/CXTRACE_.

    A shell with OTEL_* set for something else would otherwise send the demo's telemetry
    there; the propagation key signs the shop's CX baggage so the backend trusts its
    segments (and the visit it names), and the visit key signs the customers' visit cookies.
    Both are new for each run, and the same for both services.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CXTRACE_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(_TELEMETRY)
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
    env["CXTRACE_JOURNEYS_FILE"] = str(examples / "shop" / "journeys.toml")
    env["CXTRACE_PROPAGATION_KEY"] = secrets.token_urlsafe(32)
    env["CXTRACE_VISITS"] = "cookie"
    env["CXTRACE_VISIT_KEY"] = secrets.token_urlsafe(32)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _watch(
    out: TextIO,
    shoppers: Shoppers,
    services: list[Service],
    page_url: str,
    duration_s: Optional[float],
) -> None:
    """Print progress every few seconds until the duration is over; a dead service raises.

    When the cockpit's headline names a new worst slice, or first says what the worst one
    costs, that gets a line of its own: the terminal then says when the story is on the page.
    """
    started = time.monotonic()
    end = started + duration_s if duration_s else float("inf")
    next_report = started + _PROGRESS_EVERY_S
    live = out.isatty()
    worst: Optional[tuple[str, str, bool]] = None
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for service in services:
            service.check()
        if now >= next_report:
            next_report += _PROGRESS_EVERY_S
            elapsed = int(now - started)
            clock = f"  {elapsed // 60:d}:{elapsed % 60:02d}  "
            headlines = _headlines(page_url, timeout_s=2.0)
            top = headlines[0] if headlines else None
            if top is not None and (top.segment, top.step, top.costed) != worst:
                worst = (top.segment, top.step, top.costed)
                _status(out, f"{clock}the cockpit says: {top.text}", live=live, keep=True)
            _status(out, f"{clock}{_tally(shoppers)}", live=live, keep=False)
        time.sleep(max(0.0, min(0.5, end - now, next_report - now)))
    if live:
        _say(out, "\n")


def _status(out: TextIO, line: str, *, live: bool, keep: bool) -> None:
    """A line of progress; on a terminal the next one overwrites it unless ``keep``."""
    if live:
        _say(out, f"\r{line}\x1b[K" + ("\n" if keep else ""))
    else:
        _say(out, f"{line}\n")


def _tally(shoppers: Shoppers) -> str:
    errors = shoppers.errors
    customers, orders = shoppers.record.totals()
    return (
        f"{shoppers.sent} requests sent, {errors} error{'' if errors == 1 else 's'}; "
        f"{customers} customers served, {orders} bought"
    )


def _say(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


def _raise_interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> tuple[Any, Any]:
    """Ctrl-C and SIGTERM both stop the demo cleanly, even where SIGINT was ignored at start
    (a job started in the background by a script); the previous handlers come back after."""
    previous = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return previous


def _restore(previous: tuple[Any, Any]) -> None:
    signal.signal(signal.SIGINT, previous[0])
    signal.signal(signal.SIGTERM, previous[1])
