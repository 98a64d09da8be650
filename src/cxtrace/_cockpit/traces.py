"""One trace's spans from every service, and one customer's visit, from the ``spans`` table.

``trace(conn, trace_id)`` is the waterfall: every span the cockpit received for the trace,
ordered by start, each with its depth under its parent and its attributes (``cx.*`` first);
spans whose parent never arrived (sampled away by another service, or not yet exported) are
counted and said so. ``visits(conn, w, ...)`` lists the visits of frustrated customers for a
slice, each one customer's requests in order. Both read only what traces brought: a request
the sampler dropped is not there, and the views say so.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, Final, Optional

from cxtrace._cockpit.queries import Window

__all__ = ["TRACE_ID", "VISITS_SHOWN", "trace", "visits"]

TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
VISITS_SHOWN: Final = 5
_REQUESTS_PER_VISIT: Final = 50


def _attributes(raw: str) -> list[list[Any]]:
    """[key, value] pairs, cx.* first, then by key."""
    try:
        attrs = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(attrs, dict):
        return []
    return [[k, attrs[k]] for k in sorted(attrs, key=lambda k: (not k.startswith("cx."), k))]


def trace(conn: sqlite3.Connection, trace_id: str) -> Optional[dict[str, Any]]:
    """The trace's spans as a waterfall; None when no span of it was received."""
    rows = conn.execute(
        "SELECT span_id, parent_span_id, service, name, kind, start_ns, end_ns, status,"
        " status_message, attributes FROM spans WHERE trace_id = ? ORDER BY start_ns, id",
        (trace_id,),
    ).fetchall()
    if not rows:
        return None
    spans: dict[str, dict[str, Any]] = {}
    for span_id, parent, service, name, kind, start, end, status, message, attrs in rows:
        spans.setdefault(  # a span delivered twice (OTLP is at least once) is shown once
            span_id,
            {
                "span_id": span_id,
                "parent_span_id": parent or None,
                "service": service,
                "name": name,
                "kind": kind,
                "start_ns": start,
                "end_ns": end,
                "duration_ms": round((end - start) / 1e6, 3),
                "status": status,
                "status_message": message or None,
                "attributes": _attributes(attrs),
            },
        )
    start_ns = min(s["start_ns"] for s in spans.values())
    end_ns = max(s["end_ns"] for s in spans.values())
    missing = sorted(
        {s["parent_span_id"] for s in spans.values() if s["parent_span_id"]} - set(spans)
    )
    ordered: list[dict[str, Any]] = []

    def place(span: dict[str, Any], depth: int) -> None:
        span["depth"] = depth
        span["offset_ms"] = round((span["start_ns"] - start_ns) / 1e6, 3)
        ordered.append(span)
        for child in children.get(span["span_id"], []):
            place(child, depth + 1)

    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for span in spans.values():
        parent = span["parent_span_id"]
        if parent and parent in spans:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    for root in roots:
        place(root, 0)
    note = None
    if missing:
        orphans = sum(1 for s in spans.values() if s["parent_span_id"] in missing)
        note = (
            f"{orphans} span(s) name a parent the cockpit never received: sampled away by "
            "the service that made it, or not exported yet"
        )
    return {
        "trace_id": trace_id,
        "services": sorted({s["service"] for s in spans.values()}),
        "duration_ms": round((end_ns - start_ns) / 1e6, 3),
        "spans": ordered,
        "missing_parents": missing,
        "note": note,
    }


def visits(
    conn: sqlite3.Connection,
    w: Window,
    *,
    segment: Optional[str] = None,
    journey: Optional[str] = None,
    step: Optional[str] = None,
    limit: int = VISITS_SHOWN,
) -> dict[str, Any]:
    """Recent visits with a frustrated request (in the slice, when given), each visit's
    requests in order. Only the requests whose traces were kept are known here."""
    where = ["visit_id != ''", "satisfaction = 'frustrated'", "end_ns >= ?"]
    params: list[Any] = [w.first_ns]
    for key, value in (("cx.segment", segment), ("cx.journey", journey), ("cx.step", step)):
        if value is not None:
            where.append("json_extract(attributes, ?) = ?")
            params += [f'$."{key}"', value]
    found = conn.execute(
        "SELECT visit_id, max(end_ns) AS last FROM spans WHERE "  # noqa: S608 - fixed clauses
        + " AND ".join(where)
        + " GROUP BY visit_id ORDER BY last DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    result = []
    for visit_id, _ in found:
        rows = conn.execute(
            "SELECT trace_id, span_id, service, name, start_ns, end_ns, satisfaction, attributes"
            " FROM spans WHERE visit_id = ? AND satisfaction != '' ORDER BY start_ns LIMIT ?",
            (visit_id, _REQUESTS_PER_VISIT),
        ).fetchall()
        requests = []
        seen: set[str] = set()
        for trace_id, span_id, service, name, start, end, satisfaction, raw in rows:
            if span_id in seen:
                continue
            seen.add(span_id)
            attrs = dict(_attributes(raw))
            requests.append(
                {
                    "time_ns": start,
                    "service": service,
                    "name": name,
                    "segment": attrs.get("cx.segment"),
                    "journey": attrs.get("cx.journey"),
                    "step": attrs.get("cx.step"),
                    "satisfaction": satisfaction,
                    "reason": attrs.get("cx.frustration.reason"),
                    "duration_ms": round((end - start) / 1e6, 1),
                    "status": attrs.get("http.response.status_code"),
                    "trace_id": trace_id,
                }
            )
        result.append({"visit_id": visit_id, "requests": requests})
    return {
        "window": w.label,
        "segment": segment,
        "journey": journey,
        "step": step,
        "visits": result,
        "note": "requests whose traces the sampler kept; a visit may have had more",
    }
