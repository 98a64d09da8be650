"""What the page and ``/api/`` show, read from the per-minute buckets (never raw requests).

Each public function takes a read connection and a ``Window`` and returns plain dicts and
lists (JSON as is). Apdex for any slice = (satisfied + tolerating / 2) / total.
"""

from __future__ import annotations

import re
import sqlite3
from collections import defaultdict
from typing import Any, Final, NamedTuple, Optional, Union

from cxtrace._cockpit.decode import SATISFACTIONS
from cxtrace._cockpit.store import HOURLY, MINUTE_NS

__all__ = [
    "WINDOWS",
    "Window",
    "apdex",
    "downstream_services",
    "funnel",
    "grid",
    "reasons",
    "services",
    "slowest",
    "summary",
    "timeline",
    "window",
]

# The window selector's choices: label -> (minutes, minutes per timeline point).
WINDOWS: Final = {
    "5m": (5, 1),
    "15m": (15, 1),
    "1h": (60, 1),
    "6h": (360, 10),
    "24h": (1440, 60),
    "7d": (10080, 180),
}
DEFAULT_WINDOW: Final = "15m"
_WINDOW_RE: Final = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
_UNIT_MINUTES: Final = {"m": 1, "h": 60, "d": 1440}
# A slice needs this many requests before the headline names it.
HEADLINE_MIN_REQUESTS: Final = 5
# Apdex at or above this is "satisfied" in the page's words (the classic "excellent").
GOOD_APDEX: Final = 0.94
# Below this a slice is "frustrated" in the page's words (the usual alerting line).
FAIR_APDEX: Final = 0.85
EXAMPLES_SHOWN: Final = 3

Key = tuple[str, str, str]  # (segment, journey, step)


class Window(NamedTuple):
    """A time window, and which services' requests it counts."""

    label: str
    first_minute: int
    last_minute: int
    bucket_minutes: int  # timeline resolution
    only: Optional[str] = None  # count this service only
    excluded: tuple[str, ...] = ()  # leave these services out (downstream ones)

    def scoped(self, only: Optional[str], excluded: tuple[str, ...] = ()) -> Window:
        return self._replace(only=only, excluded=excluded)

    @property
    def minutes(self) -> int:
        return self.last_minute - self.first_minute + 1

    @property
    def first_ns(self) -> int:
        return self.first_minute * MINUTE_NS


def window(label: str, now_ns: int) -> Window:
    """The window ``label`` (``5m``, ``15m``, ``1h``, ``24h``, ``7d``...) ending now.

    Raises ValueError for anything else.
    """
    if label in WINDOWS:
        minutes, bucket = WINDOWS[label]
    else:
        match = _WINDOW_RE.match(label)
        if match is None:
            raise ValueError(f"window={label!r}: expected e.g. 5m, 15m, 1h, 24h or 7d")
        minutes = int(match.group(1)) * _UNIT_MINUTES[match.group(2)]
        if minutes > 366 * 1440:
            raise ValueError(f"window={label!r}: at most a year")
        bucket = max(1, minutes // 60)
        if minutes >= 1440:  # whole hours: the hourly rollups can answer
            bucket = -(-bucket // 60) * 60
    last = now_ns // MINUTE_NS
    return Window(label, last - minutes + 1, last, bucket)


def _source(table: str, w: Window) -> tuple[str, tuple[Union[int, str], ...]]:
    """A subquery over ``table``'s rows in the window, and its parameters.

    When the timeline counts whole hours, the full hours inside the window come from the
    hourly rollup and only the partial hours at its edges from the minute buckets.
    """
    first, last = w.first_minute, w.last_minute
    scope, scope_params = _service_filter(w)
    hour_first = -(-first // 60) * 60  # the first hour starting inside the window
    hour_last = (last + 1) // 60 * 60 - 60  # the last hour ending inside it
    if w.bucket_minutes % 60 or hour_first > hour_last:
        sql = f"(SELECT * FROM {table} WHERE minute BETWEEN ? AND ?{scope})"  # noqa: S608
        return sql, (first, last, *scope_params)
    sql = (
        f"(SELECT * FROM {table} WHERE minute BETWEEN ? AND ?{scope}"  # noqa: S608
        f" UNION ALL SELECT * FROM {table}{HOURLY} WHERE minute BETWEEN ? AND ?{scope}"
        f" UNION ALL SELECT * FROM {table} WHERE minute BETWEEN ? AND ?{scope})"
    )
    params: tuple[Union[int, str], ...] = (first, hour_first - 1, *scope_params)
    params += (hour_first, hour_last, *scope_params)
    params += (hour_last + 60, last, *scope_params)
    return sql, params


def _service_filter(w: Window) -> tuple[str, tuple[str, ...]]:
    if w.only is not None:
        return " AND service = ?", (w.only,)
    if w.excluded:
        marks = ", ".join("?" * len(w.excluded))
        return f" AND service NOT IN ({marks})", w.excluded
    return "", ()


def downstream_services(conn: sqlite3.Connection) -> tuple[str, ...]:
    """Services whose requests mostly continue a trace begun elsewhere.

    Their server spans have parent spans: they serve requests of another traced service,
    so counting them too would count a customer's request twice. Customers are counted
    where they arrive. When every known service looks downstream (say, behind a proxy that
    starts traces), nothing is left out.
    """
    rows = conn.execute("SELECT service, root_spans, child_spans FROM services").fetchall()
    downstream = tuple(sorted(s for s, roots, children in rows if children > roots))
    if len(downstream) == len(rows):
        return ()
    return downstream


def services(conn: sqlite3.Connection, w: Window) -> dict[str, Any]:
    """The services that sent requests, and which of them the default view leaves out."""
    source, params = _source("requests", w.scoped(None))
    names = [row[0] for row in conn.execute(f"SELECT DISTINCT service FROM {source}", params)]  # noqa: S608
    return {
        "window": w.label,
        "services": sorted(names),
        "downstream": list(downstream_services(conn)),
        "only": w.only,
        "excluded": list(w.excluded),
    }


def apdex(satisfied: float, tolerating: float, total: float) -> Optional[float]:
    if total <= 0:
        return None
    return (satisfied + tolerating / 2) / total


def _counts(satisfied: float = 0, tolerating: float = 0, frustrated: float = 0) -> dict[str, Any]:
    total = satisfied + tolerating + frustrated
    score = apdex(satisfied, tolerating, total)
    return {
        "total": round(total),
        "satisfied": round(satisfied),
        "tolerating": round(tolerating),
        "frustrated": round(frustrated),
        "apdex": None if score is None else round(score, 4),
        "verdict": verdict(score),
    }


def verdict(score: Optional[float]) -> str:
    """A slice's Apdex in a word a non-engineer reads."""
    if score is None:
        return "no data"
    if score >= GOOD_APDEX:
        return "satisfied"
    if score >= FAIR_APDEX:
        return "tolerating"
    return "frustrated"


def _slices(conn: sqlite3.Connection, w: Window, table: str) -> dict[Key, dict[str, float]]:
    source, params = _source(table, w)
    rows = conn.execute(
        f"SELECT segment, journey, step, satisfaction, sum(count) FROM {source}"  # noqa: S608
        " GROUP BY segment, journey, step, satisfaction",
        params,
    )
    slices: dict[Key, dict[str, float]] = defaultdict(lambda: dict.fromkeys(SATISFACTIONS, 0.0))
    for segment, journey, step, satisfaction, count in rows:
        if satisfaction in SATISFACTIONS:
            slices[(segment, journey, step)][satisfaction] += count
    return slices


class _Step(NamedTuple):
    position: int
    threshold_ms: int
    page_threshold_ms: int


def _steps(conn: sqlite3.Connection) -> dict[tuple[str, str], _Step]:
    rows = conn.execute(
        "SELECT journey, step, step_index, threshold_ms, page_threshold_ms FROM steps"
    )
    return {(j, s): _Step(i, t, p) for j, s, i, t, p in rows}


def _step_order(steps: dict[tuple[str, str], _Step], journey: str, step: str) -> tuple[Any, ...]:
    # Journeys first (by name, then position), requests without a step last (by route).
    meta = steps.get((journey, step))
    return (journey == "", journey, meta.position if meta else 1 << 30, step)


def threshold_text(ms: int) -> str:
    if ms <= 0:
        return "unknown"
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    return f"{seconds:g} s"


def _total(counts: dict[str, float]) -> float:
    return sum(counts.values())


def summary(conn: sqlite3.Connection, w: Window) -> dict[str, Any]:
    """Totals, and the headline: the worst slices (segment x step) in business words."""
    slices = _slices(conn, w, "requests")
    steps = _steps(conn)
    overall = dict.fromkeys(SATISFACTIONS, 0.0)
    for counts in slices.values():
        for name in SATISFACTIONS:
            overall[name] += counts[name]
    browser_overall = dict.fromkeys(SATISFACTIONS, 0.0)
    for counts in _slices(conn, w, "page_loads").values():
        for name in SATISFACTIONS:
            browser_overall[name] += counts[name]
    ranked = []
    for (segment, journey, step), counts in slices.items():
        total = _total(counts)
        score = apdex(counts["satisfied"], counts["tolerating"], total)
        if total < HEADLINE_MIN_REQUESTS or score is None or score >= GOOD_APDEX:
            continue
        ranked.append((score, -counts["frustrated"], segment, journey, step, counts))
    ranked.sort()
    headlines = []
    for score, _, segment, journey, step, counts in ranked[:3]:
        meta = steps.get((journey, step))
        threshold_ms = meta.threshold_ms if meta else 0
        total = _total(counts)
        frustrated_pct = round(100 * counts["frustrated"] / total)
        tolerating_pct = round(100 * counts["tolerating"] / total)
        # Requests, said so: a customer retrying five times is five of them (section 9).
        whose = "requests with no known segment" if segment == "unknown" else f"{segment} requests"
        if frustrated_pct >= 1:
            text = f"{step}: {frustrated_pct}% of {whose} frustrating"
        else:
            text = f"{step}: {tolerating_pct}% of {whose} tolerating"
        text += f" (Apdex {score:.2f}"
        text += f", T = {threshold_text(threshold_ms)})" if threshold_ms else ")"
        headlines.append(
            {
                "text": text,
                "segment": segment,
                "journey": journey,
                "step": step,
                "threshold_ms": threshold_ms,
                "frustrated_pct": frustrated_pct,
                **_counts(**counts),
            }
        )
    return {
        "window": w.label,
        "unit": "requests",
        "requests": _counts(**overall),
        "browser": _counts(**browser_overall),
        "headlines": headlines,
    }


def grid(conn: sqlite3.Connection, w: Window) -> dict[str, Any]:
    """Apdex per segment x journey step, with counts (and the browser's, where RUM is on)."""
    server = _slices(conn, w, "requests")
    browser = _slices(conn, w, "page_loads")
    steps = _steps(conn)
    seg_totals: dict[str, float] = defaultdict(float)
    columns_seen: set[tuple[str, str]] = set()
    for (segment, journey, step), counts in (*server.items(), *browser.items()):
        seg_totals[segment] += _total(counts)
        columns_seen.add((journey, step))
    columns = sorted(columns_seen, key=lambda c: _step_order(steps, *c))
    segments = sorted(seg_totals, key=lambda s: (-seg_totals[s], s))
    rows = []
    for segment in segments:
        cells = []
        for journey, step in columns:
            key = (segment, journey, step)
            cell = _counts(**server[key]) if key in server else _counts()
            cell["browser"] = _counts(**browser[key]) if key in browser else None
            cells.append(cell)
        rows.append({"segment": segment, "cells": cells})
    return {
        "window": w.label,
        "columns": [
            {
                "journey": journey,
                "step": step,
                "index": steps[(journey, step)].position if (journey, step) in steps else 0,
                "threshold_ms": steps[(journey, step)].threshold_ms
                if (journey, step) in steps
                else 0,
            }
            for journey, step in columns
        ],
        "rows": rows,
        "has_browser": bool(browser),
    }


def funnel(conn: sqlite3.Connection, w: Window) -> dict[str, Any]:
    """Per journey and segment: requests reaching each step, drop-off, conversions, value."""
    server = _slices(conn, w, "requests")
    steps = _steps(conn)
    conversions: dict[Key, tuple[float, float, str]] = {}
    source, params = _source("conversions", w)
    for segment, journey, step, count, value, metric_value, metric_values, currency in conn.execute(
        "SELECT segment, journey, step, sum(count), sum(value), sum(metric_value),"  # noqa: S608
        f" sum(metric_values), max(currency) FROM {source} GROUP BY segment, journey, step",
        params,
    ):
        # The cx.conversion.value counter where it reported (exact); else sampled spans'.
        conversions[(segment, journey, step)] = (
            count,
            metric_value if metric_values else value,
            currency,
        )
    journeys: dict[str, set[str]] = defaultdict(set)
    segments: dict[str, set[str]] = defaultdict(set)
    for segment, journey, step in (*server, *conversions):
        if journey:
            journeys[journey].add(step)
            segments[journey].add(segment)
    result = []
    for journey in sorted(journeys):
        ordered = sorted(journeys[journey], key=lambda s: _step_order(steps, journey, s))
        per_segment = []
        for segment in sorted(segments[journey]):
            previous: Optional[float] = None
            rows: list[dict[str, Any]] = []
            for step in ordered:
                key = (segment, journey, step)
                reached = _total(server[key]) if key in server else 0.0
                count, value, currency = conversions.get(key, (0.0, 0.0, ""))
                drop = None
                if previous:
                    drop = round(1 - reached / previous, 4)  # negative: more than before
                rows.append(
                    {
                        "step": step,
                        "requests": round(reached),
                        "drop_off": drop,
                        "conversions": round(count),
                        "value": round(value, 2),
                        "currency": currency,
                    }
                )
                previous = reached
            first = rows[0]["requests"] if rows else 0
            converted = sum(row["conversions"] for row in rows)
            per_segment.append(
                {
                    "segment": segment,
                    "steps": rows,
                    "conversions": converted,
                    "conversion_rate": round(converted / first, 4) if first else None,
                    "value": round(sum(row["value"] for row in rows), 2),
                    "currency": next((r["currency"] for r in rows if r["currency"]), ""),
                }
            )
        result.append({"journey": journey, "steps": ordered, "segments": per_segment})
    return {"window": w.label, "unit": "requests", "journeys": result}


def _span_groups(conn: sqlite3.Connection, w: Window, table: str) -> list[tuple[Any, ...]]:
    source, params = _source(table, w)
    return list(
        conn.execute(
            "SELECT segment, journey, step, satisfaction, reason, sum(spans), sum(errors),"  # noqa: S608
            f" sum(total_ms), max(max_ms) FROM {source}"
            " GROUP BY segment, journey, step, satisfaction, reason",
            params,
        )
    )


def reasons(conn: sqlite3.Connection, w: Window) -> dict[str, Any]:
    """Why customers were not satisfied, per segment and step (from spans): slow or error."""
    per: dict[Key, dict[str, int]] = defaultdict(
        lambda: {"frustrated_slow": 0, "frustrated_error": 0, "tolerating": 0, "spans": 0}
    )
    for segment, journey, step, satisfaction, reason, spans, _, _, _ in _span_groups(
        conn, w, "span_stats"
    ):
        row = per[(segment, journey, step)]
        row["spans"] += spans
        if satisfaction == "frustrated":
            row["frustrated_error" if reason == "error" else "frustrated_slow"] += spans
        elif satisfaction == "tolerating":
            row["tolerating"] += spans
    rows: list[dict[str, Any]] = [
        {"segment": segment, "journey": journey, "step": step, **counts}
        for (segment, journey, step), counts in per.items()
        if counts["frustrated_slow"] or counts["frustrated_error"] or counts["tolerating"]
    ]
    rows.sort(
        key=lambda r: (-(r["frustrated_slow"] + r["frustrated_error"]), -r["tolerating"], r["step"])
    )
    totals = {
        "frustrated_slow": sum(r["frustrated_slow"] for r in rows),
        "frustrated_error": sum(r["frustrated_error"] for r in rows),
        "tolerating": sum(r["tolerating"] for r in rows),
    }
    return {"window": w.label, "totals": totals, "rows": rows}


def _examples(
    conn: sqlite3.Connection, w: Window, key: Key, *, errors_only: bool, source: str = "server"
) -> list[dict[str, Any]]:
    segment, journey, step = key
    condition = "is_error = 1 OR reason = 'error'" if errors_only else "1 = 1"
    scope, scope_params = _service_filter(w)
    rows = conn.execute(
        "SELECT trace_id, span_id, duration_ms, http_status, satisfaction, reason, end_ns"  # noqa: S608
        " FROM examples WHERE source = ? AND segment = ? AND journey = ? AND step = ?"
        f" AND end_ns >= ? AND ({condition}){scope} ORDER BY duration_ms DESC LIMIT ?",
        (source, segment, journey, step, w.first_ns, *scope_params, EXAMPLES_SHOWN),
    )
    return [
        {
            "trace_id": trace_id,
            "span_id": span_id,
            "duration_ms": round(duration, 1),
            "http_status": status or None,
            "satisfaction": satisfaction,
            "reason": reason or None,
            "time_ns": end_ns,
        }
        for trace_id, span_id, duration, status, satisfaction, reason, end_ns in rows
    ]


def slowest(conn: sqlite3.Connection, w: Window, limit: int = 8) -> dict[str, Any]:
    """The slowest steps (mean span duration) and the failing ones, with example traces."""
    per: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for segment, journey, step, _, _, spans, errors, total_ms, max_ms in _span_groups(
        conn, w, "span_stats"
    ):
        row = per[(segment, journey, step)]
        row[0] += spans
        row[1] += errors
        row[2] += total_ms
        row[3] = max(row[3], max_ms)
    by_mean = sorted(per.items(), key=lambda item: -(item[1][2] / item[1][0]))
    failing = sorted(
        ((k, v) for k, v in per.items() if v[1] > 0), key=lambda item: -item[1][1] / item[1][0]
    )

    def describe(key: Key, row: list[float], errors_only: bool) -> dict[str, Any]:
        spans, errors, total_ms, max_ms = row
        return {
            "segment": key[0],
            "journey": key[1],
            "step": key[2],
            "spans": int(spans),
            "errors": int(errors),
            "error_rate": round(errors / spans, 4),
            "mean_ms": round(total_ms / spans, 1),
            "max_ms": round(max_ms, 1),
            "examples": _examples(conn, w, key, errors_only=errors_only),
        }

    return {
        "window": w.label,
        "slowest": [describe(k, v, False) for k, v in by_mean[:limit]],
        "failing": [describe(k, v, True) for k, v in failing[:limit]],
    }


def timeline(conn: sqlite3.Connection, w: Window) -> dict[str, Any]:
    """Apdex per segment over the window, one point per ``bucket_minutes``."""
    bucket = w.bucket_minutes
    first = w.first_minute
    series: dict[str, dict[int, dict[str, float]]] = defaultdict(
        lambda: defaultdict(lambda: dict.fromkeys(SATISFACTIONS, 0.0))
    )
    source, params = _source("requests", w)
    for segment, slot, satisfaction, count in conn.execute(
        f"SELECT segment, (minute - ?) / ?, satisfaction, sum(count) FROM {source}"  # noqa: S608
        " GROUP BY segment, 2, satisfaction",
        (first, bucket, *params),
    ):
        if satisfaction in SATISFACTIONS:
            series[segment][int(slot)][satisfaction] += count
    slots = (w.minutes + bucket - 1) // bucket
    result = []
    for segment in sorted(series):
        points = []
        for slot in range(slots):
            counts = series[segment].get(slot)
            if counts is None:
                continue
            total = _total(counts)
            score = apdex(counts["satisfied"], counts["tolerating"], total)
            points.append(
                {
                    "time": (first + slot * bucket) * 60,
                    "apdex": None if score is None else round(score, 4),
                    "total": round(total),
                }
            )
        result.append({"segment": segment, "points": points})
    return {
        "window": w.label,
        "start": first * 60,
        "end": (w.last_minute + 1) * 60,
        "bucket_s": bucket * 60,
        "series": result,
    }
