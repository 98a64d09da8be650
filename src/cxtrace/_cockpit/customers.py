"""Customers and money: the cockpit's views over the visit counters (design.md section 12).

Read from the ``visit_counts`` buckets (the five ``cx.visit*`` counters) and the conversion
values, never from spans, so they are exact whatever the sampler kept. For step S of a
journey and a segment, over the window:

- customers reaching S = ``steps{S}``; frustrated there = ``frustrations{S}`` (both reasons);
- conversion rate of the customers frustrated at S = ``converted_steps{S, true}`` /
  ``frustrations{S}``; of the others = ``converted_steps{S, false}`` / (``steps{S}`` -
  ``frustrations{S}``);
- conversions lost at S = ``frustrations{S}`` x (rate of the others - rate of the
  frustrated), when positive and when both groups hold at least :data:`MIN_COMPARED`
  customers; value lost = that x the mean value per conversion (``cx.conversion.value`` /
  ``cx.conversions``) of the journey and segment.

A window cuts visits at its edges: a customer who reached S before the window and converted
inside it counts a conversion without a reach. Over a window much longer than a visit this
evens out; rates are clamped to [0, 1].
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from typing import Any, Final, Optional

from cxtrace._cockpit.queries import Window, _source, _step_order, _steps

__all__ = [
    "MIN_COMPARED",
    "costs",
    "customer_funnel",
    "has_visits",
    "headlines",
    "period",
    "who",
]

# Each group (frustrated at a step, and the others) needs this many customers before the
# cockpit compares how often they bought, and so before it claims any loss.
MIN_COMPARED: Final = 5
HEADLINES_SHOWN: Final = 3

_PERIODS: Final = {
    "5m": "the last 5 minutes",
    "15m": "the last 15 minutes",
    "1h": "the last hour",
    "6h": "the last 6 hours",
    "24h": "the last 24 hours",
    "7d": "the last 7 days",
}

Slice = tuple[str, str, str]  # (segment, journey, step)


def period(label: str) -> str:
    """The window in words: ``1h`` -> "the last hour"."""
    known = _PERIODS.get(label)
    if known is not None:
        return known
    number, unit = label[:-1], {"m": "minutes", "h": "hours", "d": "days"}.get(label[-1], "")
    return f"the last {number} {unit}".rstrip()


def who(segment: str) -> str:
    """The customers of a segment, in words."""
    return "customers with no known segment" if segment == "unknown" else f"{segment} customers"


def has_visits(conn: sqlite3.Connection, w: Window) -> bool:
    """Whether the window holds visit counts: the cockpit then speaks in customers."""
    source, params = _source("visit_counts", w)
    row = conn.execute(f"SELECT 1 FROM {source} LIMIT 1", params).fetchone()  # noqa: S608
    return row is not None


class _Counts:
    """The visit counters over a window, by slice."""

    def __init__(self, conn: sqlite3.Connection, w: Window) -> None:
        self.reached: dict[Slice, float] = defaultdict(float)
        self.frustrated: dict[Slice, dict[str, float]] = defaultdict(
            lambda: {"slow": 0.0, "error": 0.0}
        )
        self.converted: dict[Slice, dict[str, float]] = defaultdict(
            lambda: {"true": 0.0, "false": 0.0}
        )
        self.conversions: dict[tuple[str, str], float] = defaultdict(float)  # (segment, journey)
        self.visits: dict[str, float] = defaultdict(float)  # by segment
        source, params = _source("visit_counts", w)
        for segment, journey, step, kind, detail, count in conn.execute(
            "SELECT segment, journey, step, kind, detail, sum(count) FROM"  # noqa: S608
            f" {source} GROUP BY segment, journey, step, kind, detail",
            params,
        ):
            key = (segment, journey, step)
            if kind == "steps":
                self.reached[key] += count
            elif kind == "frustrations" and detail in ("slow", "error"):
                self.frustrated[key][detail] += count
            elif kind == "converted_steps" and detail in ("true", "false"):
                self.converted[key][detail] += count
            elif kind == "conversions":
                self.conversions[(segment, journey)] += count
            elif kind == "visits":
                self.visits[segment] += count
        # Value per (segment, journey): the counter's where it reported, else the spans'.
        self.value: dict[tuple[str, str], float] = defaultdict(float)
        self.request_conversions: dict[tuple[str, str], float] = defaultdict(float)
        self.currency: dict[tuple[str, str], str] = {}
        source, params = _source("conversions", w)
        for segment, journey, count, value, metric_value, metric_values, currency in conn.execute(
            "SELECT segment, journey, sum(count), sum(value), sum(metric_value),"  # noqa: S608
            f" sum(metric_values), max(currency) FROM {source} GROUP BY segment, journey",
            params,
        ):
            self.value[(segment, journey)] = metric_value if metric_values else value
            self.request_conversions[(segment, journey)] = count
            if currency:
                self.currency[(segment, journey)] = currency

    def slices(self) -> set[Slice]:
        return {*self.reached, *self.frustrated, *self.converted}

    def frustrated_total(self, key: Slice) -> float:
        reasons = self.frustrated.get(key)
        return sum(reasons.values()) if reasons else 0.0

    def mean_value(self, segment: str, journey: str) -> Optional[float]:
        conversions = self.request_conversions.get((segment, journey), 0.0)
        value = self.value.get((segment, journey), 0.0)
        return value / conversions if conversions > 0 and value > 0 else None


def _rate(part: float, whole: float) -> Optional[float]:
    if whole <= 0:
        return None
    return min(1.0, max(0.0, part / whole))


def _cost(counts: _Counts, key: Slice) -> dict[str, Any]:
    """What frustration at one step cost one segment (the module docstring's formulas)."""
    segment, journey, step = key
    reached = counts.reached.get(key, 0.0)
    frustrated = counts.frustrated_total(key)
    others = max(0.0, reached - frustrated)
    converted = counts.converted.get(key, {"true": 0.0, "false": 0.0})
    rate_frustrated = _rate(converted["true"], frustrated)
    rate_others = _rate(converted["false"], others)
    comparable = frustrated >= MIN_COMPARED and others >= MIN_COMPARED
    lost: Optional[float] = None
    value_lost: Optional[float] = None
    note = None
    if not frustrated:
        note = "no customer was frustrated here"
    elif not comparable:
        note = (
            f"too few customers to compare: {round(frustrated)} frustrated and "
            f"{round(others)} others; at least {MIN_COMPARED} of each are needed"
        )
    elif rate_frustrated is not None and rate_others is not None:
        lost = max(0.0, frustrated * (rate_others - rate_frustrated))
        if lost == 0:
            note = "the frustrated customers converted as often as the others"
        mean = counts.mean_value(segment, journey)
        if mean is not None:
            value_lost = lost * mean
    return {
        "segment": segment,
        "journey": journey,
        "step": step,
        "customers": round(reached),
        "frustrated": round(frustrated),
        "frustrated_slow": round(counts.frustrated.get(key, {}).get("slow", 0.0)),
        "frustrated_error": round(counts.frustrated.get(key, {}).get("error", 0.0)),
        "frustrated_share": round(frustrated / reached, 4) if reached else None,
        "conversion_rate_frustrated": _rounded(rate_frustrated),
        "conversion_rate_others": _rounded(rate_others),
        "comparable": comparable,
        "conversions_lost": None if lost is None else round(lost, 2),
        "value_lost": None if value_lost is None else round(value_lost, 2),
        "currency": counts.currency.get((segment, journey), ""),
        "note": note,
    }


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 4)


def _ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """By what frustration cost: value lost, else conversions lost, else customers."""
    return sorted(
        rows,
        key=lambda r: (
            -(r["value_lost"] or 0.0),
            -(r["conversions_lost"] or 0.0),
            -r["frustrated"],
            r["journey"],
            r["step"],
            r["segment"],
        ),
    )


def costs(conn: sqlite3.Connection, w: Window) -> dict[str, Any]:
    """What frustration costs, per step and segment, most costly first."""
    counts = _Counts(conn, w)
    rows = [_cost(counts, key) for key in counts.slices() if counts.frustrated_total(key) > 0]
    return {
        "window": w.label,
        "unit": "customers",
        "min_compared": MIN_COMPARED,
        "rows": _ranked(rows),
    }


def customer_funnel(conn: sqlite3.Connection, w: Window) -> dict[str, Any]:
    """Per journey and segment: customers reaching each step, drop-off, conversions, value."""
    counts = _Counts(conn, w)
    steps = _steps(conn)
    journeys: dict[str, set[str]] = defaultdict(set)
    segments: dict[str, set[str]] = defaultdict(set)
    for segment, journey, step in counts.slices():
        journeys[journey].add(step)
        segments[journey].add(segment)
    for segment, journey in counts.conversions:
        segments[journey].add(segment)
    result = []
    for journey in sorted(j for j in journeys if j):
        ordered = sorted(journeys[journey], key=lambda s: _step_order(steps, journey, s))
        per_segment = []
        for segment in sorted(segments[journey]):
            previous: Optional[float] = None
            rows: list[dict[str, Any]] = []
            for step in ordered:
                key = (segment, journey, step)
                reached = counts.reached.get(key, 0.0)
                converted = counts.converted.get(key, {"true": 0.0, "false": 0.0})
                rows.append(
                    {
                        "step": step,
                        "customers": round(reached),
                        "drop_off": round(1 - reached / previous, 4) if previous else None,
                        "frustrated": round(counts.frustrated_total(key)),
                        "converted": round(converted["true"] + converted["false"]),
                    }
                )
                previous = reached
            entered: float = next((r["customers"] for r in rows if r["customers"]), 0)
            converted_visits = counts.conversions.get((segment, journey), 0.0)
            per_segment.append(
                {
                    "segment": segment,
                    "steps": rows,
                    "conversions": round(converted_visits),
                    "conversion_rate": _rounded(_rate(converted_visits, entered)),
                    "value": round(counts.value.get((segment, journey), 0.0), 2),
                    "currency": counts.currency.get((segment, journey), ""),
                }
            )
        result.append({"journey": journey, "steps": ordered, "segments": per_segment})
    return {
        "window": w.label,
        "unit": "customers",
        "visits": {segment: round(n) for segment, n in sorted(counts.visits.items())},
        "journeys": result,
    }


def _money(value: float, currency: str) -> str:
    return f"{currency} {value:,.0f}" if currency else f"{value:,.0f}"


def _pct(rate: Optional[float]) -> str:
    return "no data" if rate is None else f"{round(100 * rate)}%"


def headline_text(row: dict[str, Any], window_label: str) -> str:
    """One costly slice in business words, in customers (and money, where known)."""
    text = (
        f"{row['step']} frustrated {row['frustrated']} of the {row['customers']} "
        f"{who(row['segment'])} who reached it"
    )
    if not row["comparable"]:
        return (
            f"{text} (too few to compare how often they bought: at least {MIN_COMPARED} "
            "frustrated and as many others are needed)"
        )
    bought = (
        f"they bought {_pct(row['conversion_rate_frustrated'])} of the time against "
        f"{_pct(row['conversion_rate_others'])}"
    )
    lost = row["conversions_lost"]
    if not lost:
        return f"{text}; {bought}: no conversions lost"
    amount = f"about {round(lost)}" if lost >= 0.5 else "under one"
    noun = "conversion" if round(lost) == 1 or lost < 0.5 else "conversions"
    money = ""
    if row["value_lost"]:
        money = f" ({_money(row['value_lost'], row['currency'])})"
    return f"{text}; {bought}: {amount} {noun}{money} lost in {period(window_label)}"


def headlines(conn: sqlite3.Connection, w: Window) -> list[dict[str, Any]]:
    """The costliest slices, each with its sentence (empty without visit counts)."""
    rows = costs(conn, w)["rows"]
    return [{**row, "text": headline_text(row, w.label)} for row in rows[:HEADLINES_SHOWN]]
