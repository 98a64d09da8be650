"""`nox -s bench`: what cxtrace costs per request, next to its peers, measured in one run.

Each configuration runs in a fresh process (``target.py``), one after the other, in rounds
(round 1: every configuration once, round 2: again, ...), so a slow minute of the machine
hits all of them alike. Timings of all rounds are pooled per configuration; the overhead
of a configuration is its median (p99) minus bare's median (p99).

    python tests/bench/run.py            # the full run (~10 minutes on 2 cores)
    python tests/bench/run.py --quick    # a sanity run (~1.5 minutes)
    python tests/bench/run.py --no-otlp  # without the runs exporting to an OTLP receiver
    python tests/bench/run.py --breakdown --frameworks flask   # where cxtrace's time goes

Server configurations run twice over: with an in-process exporter that only counts spans,
and (first 3 rounds) exporting OTLP/HTTP to ``receiver.py`` in another process.

Prints the tables and writes them, with the machine, the versions and the command, to
docs/performance.md. A benchmark, not a test: nothing here judges the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional

# The configurations (cxtrace-unsampled: all cxtrace does but record its span, the floor
# target's why; cxtrace+visits(-new): visits on, a returning customer or a new one).
from target import (  # this directory
    BREAKDOWN_CONFIGS,
    CLIENT_CONFIGS,
    SERVER_CONFIGS,
    VISIT_CONFIGS,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TARGET = HERE / "target.py"
FRAMEWORKS = ("flask", "django")

RECEIVER = HERE / "receiver.py"
# Exporting to a real OTLP receiver: every configuration but bare (which has no pipeline)
# and the --breakdown ones; in the first OTLP_ROUNDS rounds only, to keep the run short.
OTLP_CONFIGS = ("contrib", "contrib+metrics", "floor", "cxtrace")
OTLP_ROUNDS = 3
PACKAGES = (
    "cxtrace",
    "flask",
    "werkzeug",
    "django",
    "requests",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation-flask",
    "opentelemetry-instrumentation-django",
    "opentelemetry-instrumentation-requests",
    "opentelemetry-instrumentation-wsgi",
    "wrapt",
)
# Targets of issue 7, shown next to the ratios (nothing fails on them).
TARGET_VS_FLOOR = 1.3
TARGET_VS_CONTRIB = 0.35
# Of the visits issue: what visits on add to cxtrace per request, in µs (median).
TARGET_VISITS_US = 10.0
# What the cxtrace span of every benchmarked server request carries: checked, so the run
# measures the path with a matched step and segment, not a fallback.
EXPECTED_CX = {"cx.segment": "pro", "cx.journey": "purchase", "cx.step": "view_product"}
DESCRIPTIONS = {
    "bare": "no instrumentation",
    "contrib": "OpenTelemetry contrib, spans (MeterProvider without a reader)",
    "contrib+metrics": "OpenTelemetry contrib, spans + its HTTP metrics",
    "floor": "hand-written minimal middleware: one SERVER span per request",
    "cxtrace": "cxtrace: spans + CX (journeys file, segment header) + metrics "
    "(`tests/bench/journeys.toml`: the route is the step `purchase/view_product`, the "
    "segment comes from the `X-Customer-Tier: pro` header)",
    "cxtrace+visits": "the same cxtrace with visits on (`CXTRACE_VISITS=cookie`), a "
    "returning customer: every request carries the `cx_visit` cookie a first response set "
    "(`Cookie: cx_visit=<value>`, as a browser sends it back) and repeats a step the visit "
    "already reached, so cxtrace reads the cookie, verifies its HMAC, decodes it and "
    "observes the request, and the state does not change: no `Set-Cookie` (the common path)",
    "cxtrace+visits-new": "the same cxtrace with visits on, no cookie: every request starts "
    "a visit (a new random id, the state encoded and signed, `Set-Cookie` and `cx-visit` "
    "response headers added): the most expensive path",
    "cxtrace-unsampled": "the same cxtrace, its spans not sampled (`ALWAYS_OFF`): all of "
    "cxtrace's work but recording the span",
    # --breakdown only
    "cxtrace-noreader": "cxtrace, spans on, a MeterProvider without a reader",
    "cxtrace-neither": "cxtrace, spans not sampled and no metric reader",
}


@dataclass
class Options:
    rounds: int
    requests: int
    warmup: int
    client_requests: int
    memory_requests: int
    import_repeats: int
    frameworks: tuple[str, ...]
    server_configs: tuple[str, ...]
    output: Optional[Path]
    quick: bool
    otlp: bool
    argv: list[str]


@dataclass
class Series:
    """All timings of one configuration, pooled over the rounds."""

    timings: list[int] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    spans: int = 0
    received: int = 0  # spans the OTLP receiver decoded (OTLP runs only)
    requests: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    first_span: Optional[dict[str, Any]] = None

    def add(self, result: dict[str, Any]) -> None:
        timings = result["timings"]
        self.timings.extend(timings)
        self.round_medians.append(statistics.median(timings) / 1000)
        self.spans += result["spans"]
        self.requests += result["requests"]
        for name, value in result["metrics"].items():
            self.metrics[name] = self.metrics.get(name, 0.0) + value
        self.first_span = self.first_span or result["first_span"]

    def summary(self) -> tuple[float, float]:
        """Median and p99 in µs."""
        ordered = sorted(self.timings)
        return _quantile(ordered, 0.5) / 1000, _quantile(ordered, 0.99) / 1000


def _quantile(ordered: list[int], q: float) -> float:
    """Nearest rank; the median of an even count is the mean of the middle two."""
    if q == 0.5:
        return float(statistics.median(ordered))
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


def _child_env() -> dict[str, str]:
    """This environment without OTEL_* / CXTRACE_*: each configuration sets up its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CXTRACE_"))}


# What configurations wrote to stderr: a guard inside cxtrace that swallowed an error logs
# a WARNING there, and the run would then measure an error path. Reported under Checks.
STDERR: dict[str, str] = {}


def run_target(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, str(TARGET), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(), check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    if done.stderr.strip():
        _log(done.stderr.rstrip())
        STDERR.setdefault(" ".join(args[:5]), done.stderr.strip().splitlines()[0])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------- measuring


class OtlpReceiver:
    """``receiver.py`` in a process of its own, for the whole run."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(RECEIVER)], stdout=subprocess.PIPE, text=True, env=_child_env()
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def spans(self) -> int:
        with urllib.request.urlopen(f"{self.url}/counts", timeout=10) as answer:
            counts: dict[str, int] = json.load(answer)
        return counts["spans"]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def otlp_group(fw: str) -> str:
    return f"{fw}-otlp"


def measure_requests(opts: Options) -> dict[tuple[str, str], Series]:
    """Server configurations per framework, then the client ones, in interleaved rounds.

    With ``opts.otlp`` each framework's configurations are also run exporting to the OTLP
    receiver (in the first OTLP_ROUNDS rounds); their baseline is the same bare series.
    """
    series: dict[tuple[str, str], Series] = {}
    jobs = [(fw, config) for fw in opts.frameworks for config in opts.server_configs]
    if opts.otlp:
        jobs += [(otlp_group(fw), config) for fw in opts.frameworks for config in OTLP_CONFIGS]
    jobs += [("requests", config) for config in CLIENT_CONFIGS]
    receiver = OtlpReceiver() if opts.otlp else None
    try:
        for round_ in range(1, opts.rounds + 1):
            for fw, config in jobs:
                if fw.endswith("-otlp") and round_ > OTLP_ROUNDS:
                    continue
                _measure_one(opts, series, receiver, round_, fw, config)
    finally:
        if receiver is not None:
            receiver.stop()
    if opts.otlp:
        for fw in opts.frameworks:
            series[(otlp_group(fw), "bare")] = series[(fw, "bare")]
    return series


def _measure_one(
    opts: Options,
    series: dict[tuple[str, str], Series],
    receiver: Optional[OtlpReceiver],
    round_: int,
    fw: str,
    config: str,
) -> None:
    """One configuration, one round, in a fresh process."""
    received_before = 0
    if fw == "requests":
        n, warmup = opts.client_requests, max(opts.client_requests // 10, 50)
        args = ["client", "--config", config]
    elif fw.endswith("-otlp"):
        assert receiver is not None
        n, warmup = opts.requests, opts.warmup
        framework = fw.removesuffix("-otlp")
        args = ["server", "--framework", framework, "--config", config]
        args += ["--otlp", receiver.url]
        received_before = receiver.spans()
    else:
        n, warmup = opts.requests, opts.warmup
        args = ["server", "--framework", fw, "--config", config]
    started = time.monotonic()
    result = run_target(*args, "--requests", str(n), "--warmup", str(warmup))
    entry = series.setdefault((fw, config), Series())
    entry.add(result)
    if receiver is not None and fw.endswith("-otlp"):
        entry.received += receiver.spans() - received_before
    if fw == "requests":
        loopback = {**result, "timings": result["loopback_timings"]}
        series.setdefault(("requests-loopback", config), Series()).add(loopback)
    _log(
        f"round {round_}/{opts.rounds}  {fw:<8} {config:<16} "
        f"median {entry.round_medians[-1]:8.1f} µs  ({time.monotonic() - started:.1f} s)"
    )


def measure_memory(opts: Options) -> dict[str, list[dict[str, int]]]:
    points = {}
    for fw in opts.frameworks:
        result = run_target("memory", "--framework", fw, "--requests", str(opts.memory_requests))
        points[fw] = result["points"]
        _log(f"memory    {fw:<8} {result['points']}")
    return points


def measure_import(opts: Options) -> dict[str, tuple[float, float]]:
    """Median over fresh processes of (import cxtrace, instrument()) in ms."""
    times = {}
    for fw in opts.frameworks:
        runs = [run_target("import", "--framework", fw) for _ in range(opts.import_repeats)]
        times[fw] = (
            statistics.median(r["import_ns"] for r in runs) / 1e6,
            statistics.median(r["instrument_ns"] for r in runs) / 1e6,
        )
        _log(f"import    {fw:<8} {times[fw][0]:.1f} ms + instrument() {times[fw][1]:.1f} ms")
    return times


# ----------------------------------------------------------------------------- reporting


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator > 0 else "n/a"


def request_table(
    series: dict[tuple[str, str], Series], group: str, configs: tuple[str, ...]
) -> str:
    base_median, base_p99 = series[(group, "bare")].summary()
    lines = [
        "| configuration | median µs | p99 µs | overhead median µs | overhead p99 µs "
        "| x bare | spans/request | round medians µs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in configs:
        entry = series[(group, config)]
        median, p99 = entry.summary()
        over = f"{median - base_median:.1f}" if config != "bare" else "-"
        over99 = f"{p99 - base_p99:.1f}" if config != "bare" else "-"
        spans = entry.spans / entry.requests if entry.requests else 0.0
        rounds = f"{min(entry.round_medians):.1f}-{max(entry.round_medians):.1f}"
        lines.append(
            f"| {config} | {median:.1f} | {p99:.1f} | {over} | {over99} "
            f"| {_ratio(median, base_median)} | {spans:.2f} | {rounds} |"
        )
    return "\n".join(lines)


def overhead(series: dict[tuple[str, str], Series], group: str, config: str) -> float:
    return series[(group, config)].summary()[0] - series[(group, "bare")].summary()[0]


def ratio_table(series: dict[tuple[str, str], Series], frameworks: tuple[str, ...]) -> str:
    lines = [
        "| framework, exporter | cxtrace overhead µs | floor overhead µs "
        "| contrib+metrics overhead µs "
        f"| cxtrace / floor (target ≤ {TARGET_VS_FLOOR}) "
        f"| cxtrace / contrib+metrics (target ≤ {TARGET_VS_CONTRIB}) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    groups = [(fw, f"{fw}, counting") for fw in frameworks]
    groups += [(otlp_group(fw), f"{fw}, OTLP/HTTP") for fw in frameworks]
    for group, label in groups:
        if (group, "cxtrace") not in series:
            continue
        cx, floor, contrib = (
            overhead(series, group, c) for c in ("cxtrace", "floor", "contrib+metrics")
        )
        lines.append(
            f"| {label} | {cx:.1f} | {floor:.1f} | {contrib:.1f} "
            f"| {_verdict(cx, floor, TARGET_VS_FLOOR)} "
            f"| {_verdict(cx, contrib, TARGET_VS_CONTRIB)} |"
        )
    return "\n".join(lines)


def span_table(series: dict[tuple[str, str], Series], frameworks: tuple[str, ...]) -> str:
    """cxtrace's overhead split into recording its span and everything else."""
    lines = [
        "| framework | floor overhead µs | cxtrace without recording its span µs "
        "| recording cxtrace's span µs | cxtrace overhead µs |",
        "|---|---:|---:|---:|---:|",
    ]
    for fw in frameworks:
        if (fw, "cxtrace-unsampled") not in series:
            continue
        cx, floor, rest = (
            overhead(series, fw, c) for c in ("cxtrace", "floor", "cxtrace-unsampled")
        )
        lines.append(
            f"| {fw} | {floor:.1f} | {rest:.1f} ({rest / floor:.2f}x the floor) "
            f"| {cx - rest:.1f} ({(cx - rest) / floor:.2f}x the floor) | {cx:.1f} |"
        )
    return "\n".join(lines)


def visits_table(series: dict[tuple[str, str], Series], frameworks: tuple[str, ...]) -> str:
    """What visits on add to cxtrace: each visit configuration's median minus cxtrace's."""
    lines = [
        "| framework | cxtrace median µs | cxtrace+visits median µs "
        f"| returning customer µs (target < {TARGET_VISITS_US:g}) "
        "| cxtrace+visits-new median µs "
        f"| new visit µs (target < {TARGET_VISITS_US:g}) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for fw in frameworks:
        if not all((fw, c) in series for c in ("cxtrace", *VISIT_CONFIGS)):
            continue
        base = series[(fw, "cxtrace")].summary()[0]
        cells = [f"{base:.1f}"]
        for config in VISIT_CONFIGS:
            median = series[(fw, config)].summary()[0]
            cost = median - base
            verdict = "met" if cost < TARGET_VISITS_US else "not met"
            cells += [f"{median:.1f}", f"{cost:.1f} ({verdict})"]
        lines.append(f"| {fw} | {' | '.join(cells)} |")
    return "\n".join(lines)


def client_verdict(series: dict[tuple[str, str], Series]) -> str:
    cx = overhead(series, "requests", "cxtrace")
    spans, metrics = (overhead(series, "requests", c) for c in ("contrib", "contrib+metrics"))
    return (
        f"cxtrace's client overhead (median) is {cx:.1f} µs; contrib's {spans:.1f} µs "
        f"(ratio {_verdict(cx, spans, 1.0)}), contrib+metrics' {metrics:.1f} µs "
        f"(ratio {_verdict(cx, metrics, 1.0)}); target: ratio ≤ 1."
    )


def _verdict(value: float, reference: float, target: float) -> str:
    if reference <= 0:
        return "n/a"
    ratio = value / reference
    return f"{ratio:.2f} ({'met' if ratio <= target else 'not met'})"


def memory_table(points: dict[str, list[dict[str, int]]]) -> str:
    lines = [
        "| framework | requests | RSS MiB | RSS growth MiB | gc objects | allocated blocks "
        "| blocks growth |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for fw, rows in points.items():
        previous: Optional[dict[str, int]] = None
        for row in rows:
            rss_growth = blocks_growth = "-"
            if previous is not None:
                rss_growth = f"{(row['rss'] - previous['rss']) / 2**20:+.2f}"
                blocks_growth = f"{row['blocks'] - previous['blocks']:+,}"
            lines.append(
                f"| {fw} | {row['requests']:,} | {row['rss'] / 2**20:.2f} | {rss_growth} "
                f"| {row['objects']:,} | {row['blocks']:,} | {blocks_growth} |"
            )
            previous = row
    return "\n".join(lines)


def import_table(times: dict[str, tuple[float, float]]) -> str:
    lines = ["| framework | import cxtrace ms | instrument() ms |", "|---|---:|---:|"]
    lines += [f"| {fw} | {imp:.1f} | {ins:.1f} |" for fw, (imp, ins) in times.items()]
    return "\n".join(lines)


def checks(
    series: dict[tuple[str, str], Series], frameworks: tuple[str, ...], sources: tuple[str, str]
) -> list[str]:
    """What the run verified about itself (so a number is not a measure of a broken setup)."""
    notes = []
    if sources[0] != sources[1]:
        notes.append(
            f"**cxtrace's source changed during the run** ({sources[0]} at the start, "
            f"{sources[1]} at the end): rounds measured different code; run it again."
        )
    for (group, config), entry in series.items():
        if group.endswith("-otlp") and config != "bare":
            notes.append(
                f"{group} {config}: {entry.spans:,} spans exported over OTLP/HTTP for "
                f"{entry.requests:,} requests; the receiver decoded {entry.received:,}."
            )
            continue
        # requests-loopback shares its processes (and so its span counts) with requests
        sampled = config != "bare" and not config.endswith(("unsampled", "neither"))
        if sampled and group != "requests-loopback" and entry.spans != entry.requests:
            notes.append(
                f"{group} {config}: {entry.spans:,} spans exported for {entry.requests:,} "
                "requests (the BatchSpanProcessor drops spans when its queue is full)."
            )
    notes += [f"`target.py {job}` wrote to stderr: `{line}`" for job, line in STDERR.items()]
    if not STDERR:
        notes.append("No configuration wrote to stderr (no error swallowed inside cxtrace).")
    for fw in frameworks:
        entry = series[(fw, "cxtrace")]
        span = entry.first_span or {}
        wrong = {k: span.get(k) for k, v in EXPECTED_CX.items() if span.get(k) != v}
        counted = entry.metrics.get("cx.requests", 0.0)
        notes.append(
            f"{fw}: cxtrace's server span carries "
            + ", ".join(f"{k}={span.get(k)}" for k in EXPECTED_CX)
            + f", http.route={span.get('http.route')}"
            + (f" (UNEXPECTED: {wrong})" if wrong else "")
            + f"; cx.requests counted {counted:,.0f} of {entry.requests:,} requests."
        )
        for config in VISIT_CONFIGS:
            visits = series.get((fw, config))
            if visits is None:
                continue
            span = visits.first_span or {}
            notes.append(
                f"{fw} {config}: the first benchmarked span carries "
                f"cx.visit.id={span.get('cx.visit.id')}, cx.visit.new={span.get('cx.visit.new')}"
                f"; cx.visits counted {visits.metrics.get('cx.visits', 0.0):,.0f} of "
                f"{visits.requests:,} requests (target.py fails the run unless the spans carry "
                "a visit id and only the requests without a cookie start a visit)."
            )
    return notes


def machine() -> list[str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        f"CPU: {cpu}, {os.cpu_count()} cores ({usable} usable)",
        f"OS: {platform.platform()}; load average at start: {load}",
        f"Python: {platform.python_implementation()} {platform.python_version()}",
    ]


def source_state() -> str:
    """The commit of the cxtrace measured, and whether src/ had uncommitted changes."""
    git = ["git", "-C", str(ROOT)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        diff = subprocess.run(
            [*git, "diff", "HEAD", "--", "src"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not diff:
        return f"commit {commit}"
    digest = hashlib.sha1(diff).hexdigest()[:8]
    return f"commit {commit} with uncommitted changes in src/ (diff {digest})"


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def report(
    opts: Options,
    series: dict[tuple[str, str], Series],
    memory: dict[str, list[dict[str, int]]],
    imports: dict[str, tuple[float, float]],
    about: list[str],
    elapsed_s: float,
    sources: tuple[str, str],
) -> str:
    command = "nox -s bench" + (" -- " + " ".join(opts.argv) if opts.argv else "")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Performance",
        "",
        "Written by `nox -s bench` (`tests/bench/run.py`); do not edit by hand, run it again."
        + (" **This is a `--quick` sanity run: too few requests to cite.**" if opts.quick else ""),
        "",
        f"Run on {date}, took {elapsed_s / 60:.1f} min. Reproduce with `{command}`.",
        "",
        *[f"- {line}" for line in about],
        f"- cxtrace source: {sources[1]}",
        f"- Packages: {versions()}",
        "",
        "## How it is measured",
        "",
        "Each configuration runs in a fresh process; configurations follow each other in "
        f"{opts.rounds} interleaved rounds (round 1: every configuration once, round 2: "
        "again, ...). Per round and configuration: "
        f"{opts.warmup:,} warm-up requests, then {opts.requests:,} timed ones, each timed "
        "alone with `time.perf_counter_ns()` through the WSGI callable (a prepared environ "
        "copied per request outside the timing, a no-op `start_response`, the body iterated "
        "and closed; no sockets). Timings of all rounds are pooled. **Overhead** is a "
        "configuration's median (p99) minus bare's median (p99); the round medians column "
        "shows how much the machine moved between rounds.",
        "",
        "The app: `GET /products/42`, the route `/products/<int:product_id>` returning a "
        "short string (Flask, and a Django project with `SecurityMiddleware` and "
        "`CommonMiddleware`). Every configuration has the same telemetry pipeline: a "
        "`TracerProvider` with a `BatchSpanProcessor` into an exporter that only counts "
        "spans, and a `MeterProvider` with an `InMemoryMetricReader` (recorded, collected "
        "once at the end) where metrics are on. The environment has no `OTEL_*` / "
        "`CXTRACE_*` variables besides what each configuration sets; contrib therefore "
        "uses its default (old) HTTP semantic conventions.",
        "",
        *[f"- `{name}`: {DESCRIPTIONS[name]}" for name in opts.server_configs],
        "",
        "## Ratios (medians of overhead)",
        "",
        ratio_table(series, opts.frameworks),
        "",
        "### What the floor target asks",
        "",
        span_table(series, opts.frameworks),
        "",
        "The floor is one SDK span with three attributes. cxtrace's span carries the stable "
        "HTTP attributes and the CX ones (19 in this request); recording it through the "
        "SDK (attribute cleaning, the span processors, the batch queue) is the difference "
        "between `cxtrace` and `cxtrace-unsampled`. 1.3x the floor would need that span "
        "and all the rest of cxtrace to fit in 1.3x the floor's overhead.",
        "",
    ]
    if all(c in opts.server_configs for c in VISIT_CONFIGS):
        parts += [
            "## Visits",
            "",
            "What visits on (`CXTRACE_VISITS=cookie` with a `CXTRACE_VISIT_KEY`) add to "
            "cxtrace per request: a configuration's median minus `cxtrace`'s (visits off), "
            "measured in the same rounds. `cxtrace+visits` is a returning customer repeating "
            "a step (read the cookie, verify, decode, observe; no `Set-Cookie`): the common "
            "path. `cxtrace+visits-new` is a request without a cookie (a new visit, encoded, "
            "signed and sent back): the most expensive one. Before each run a first request "
            "without a cookie must answer with `Set-Cookie: cx_visit=...` and a returning "
            "customer's repeat with none, and the benchmarked spans must carry `cx.visit.id` "
            "(see Checks). Visits off must cost nothing: `cxtrace` is the configuration it "
            "was before visits existed; compare it across commits by instructions per "
            "request (see Digging in). A wall-clock cost well above what `instructions.py` "
            "counts for the same configurations points at waiting (the GIL, system calls), "
            "not at Python work.",
            "",
            visits_table(series, opts.frameworks),
            "",
        ]
    for fw in opts.frameworks:
        parts += [
            f"## {fw.capitalize()} server, per request",
            "",
            request_table(series, fw, opts.server_configs),
            "",
        ]
    if opts.otlp:
        parts += [
            "## Exporting to an OTLP receiver in another process",
            "",
            "The same server runs, but every configuration with a pipeline exports through the "
            "SDK's OTLP/HTTP exporters (protobuf, no compression) to `tests/bench/receiver.py`, "
            "a receiver in a process of its own that decodes every request, as a collector "
            "would: spans through the `BatchSpanProcessor` (its thread encodes and posts them, "
            "competing for the GIL with the requests), metrics through a "
            "`PeriodicExportingMetricReader` at the SDK's default interval (so exported at "
            f"shutdown). The first {min(OTLP_ROUNDS, opts.rounds)} rounds only; `bare` is the "
            "same series as above.",
            "",
        ]
        for fw in opts.frameworks:
            parts += [
                f"### {fw.capitalize()} server, OTLP/HTTP, per request",
                "",
                request_table(series, otlp_group(fw), ("bare", *OTLP_CONFIGS)),
                "",
            ]
    parts += [
        "## `requests` client, per call",
        "",
        f"A keep-alive `requests.Session().get(...)`, {opts.client_requests:,} timed calls per "
        "round and transport, outside any server request (so without CX baggage); contrib: "
        "`RequestsInstrumentor`, cxtrace: `instrument()` with the requests integration. "
        "First through a transport adapter that answers `200 ok` without a socket (the cost "
        "of the instrumentation on `Session.send`, as precise as the server numbers):",
        "",
        request_table(series, "requests", CLIENT_CONFIGS),
        "",
        client_verdict(series),
        "",
        "Then from the same processes to a loopback server (werkzeug, threaded) in a process "
        "of its own. Socket round trips on a shared machine make these numbers noisy: read "
        "an overhead against the spread of the round medians.",
        "",
        request_table(series, "requests-loopback", CLIENT_CONFIGS),
        "",
        "## Memory",
        "",
        "cxtrace configuration, one process per framework, measured after each quarter of "
        "the requests with the span queue flushed and after a `gc.collect()`: RSS from "
        "`/proc/self/statm`, `len(gc.get_objects())`, and `sys.getallocatedblocks()` (the "
        "interpreter's live memory blocks: what a leak grows; RSS also moves with how the "
        "allocator's arenas happen to be laid out).",
        "",
        memory_table(memory),
        "",
        "## Start-up",
        "",
        f"Median of {opts.import_repeats} fresh processes; the framework and the OpenTelemetry "
        "SDK already imported; `instrument()` with given providers and the journeys file.",
        "",
        import_table(imports),
        "",
        "## Digging in",
        "",
        "Profile one configuration with "
        "`python tests/bench/target.py server --framework flask --config cxtrace --profile`; "
        "`--breakdown` adds cxtrace without a metric reader, and unsampled without a "
        "reader, to the rounds. On a busy machine compare changes by instructions "
        "per request, which do not move with the load: "
        "`python tests/bench/instructions.py --framework flask bare floor cxtrace` "
        "(valgrind's callgrind; repeat runs agree within a few dozen instructions); "
        "visits: `python tests/bench/instructions.py --framework flask cxtrace "
        "cxtrace+visits cxtrace+visits-new`.",
        "",
        "## Checks",
        "",
        *[f"- {note}" for note in checks(series, opts.frameworks, sources)],
        "",
    ]
    return "\n".join(parts)


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 minute sanity run")
    parser.add_argument("--rounds", type=int, help="rounds of every configuration (5; --quick 2)")
    parser.add_argument("--requests", type=int, help="timed server requests per round (20000)")
    parser.add_argument("--warmup", type=int, help="warm-up server requests per round (2000)")
    parser.add_argument("--client-requests", type=int, help="timed client calls per round (2000)")
    parser.add_argument("--memory-requests", type=int, help="requests of the memory run (100000)")
    parser.add_argument("--import-repeats", type=int, help="fresh processes timing import (5)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="flask,django")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also cxtrace without a metric reader / unsampled and without a reader",
    )
    parser.add_argument(
        "--no-otlp",
        action="store_true",
        help="skip the runs that export to an OTLP receiver in another process",
    )
    parser.add_argument(
        "--output",
        default=str(ROOT / "docs" / "performance.md"),
        help="where to write the report ('' for nowhere)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    frameworks = tuple(f.strip() for f in args.frameworks.split(",") if f.strip())
    if not frameworks or not set(frameworks) <= set(FRAMEWORKS):
        parser.error(f"--frameworks {args.frameworks!r}: expected a comma list of flask, django")

    def pick(value: Optional[int], full: int, short: int) -> int:
        return value if value is not None else (short if quick else full)

    return Options(
        rounds=pick(args.rounds, 5, 2),
        requests=pick(args.requests, 20_000, 3_000),
        warmup=pick(args.warmup, 2_000, 500),
        client_requests=pick(args.client_requests, 2_000, 300),
        memory_requests=pick(args.memory_requests, 100_000, 10_000),
        import_repeats=pick(args.import_repeats, 5, 2),
        frameworks=frameworks,
        server_configs=SERVER_CONFIGS + (BREAKDOWN_CONFIGS if args.breakdown else ()),
        output=Path(args.output) if args.output else None,
        quick=quick,
        otlp=not args.no_otlp,
        argv=argv,
    )


def main(argv: Optional[list[str]] = None) -> None:
    opts = parse(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    about = machine()  # the load average before this run adds its own
    source_at_start = source_state()
    series = measure_requests(opts)
    memory = measure_memory(opts)
    imports = measure_import(opts)
    sources = (source_at_start, source_state())
    text = report(opts, series, memory, imports, about, time.monotonic() - started, sources)
    sys.stdout.write("\n" + text)
    if opts.output is not None:
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        opts.output.write_text(text, encoding="utf-8")
        _log(f"\nwrote {opts.output}")


if __name__ == "__main__":
    main()
