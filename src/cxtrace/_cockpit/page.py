"""The cockpit's web page: server-rendered HTML and SVG from the query results.

No JavaScript chart library and nothing fetched from elsewhere: numbers are rendered here
into HTML tables and inline SVG; ``static/cockpit.js`` only refreshes the content every few
seconds. Every number a cell summarises is in its ``title`` (hover) and ``data-*``
attributes (tests and scripts read those).
"""

from __future__ import annotations

import time
from html import escape
from typing import Any, Callable, Final, Optional

from cxtrace._cockpit.queries import WINDOWS, threshold_text

__all__ = ["render_content", "render_page", "render_trace"]

# Okabe-Ito colours: told apart by colour-blind readers too.
_LINE_COLOURS: Final = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
_WORDS: Final = {
    "satisfied": "satisfied",
    "tolerating": "tolerating",
    "frustrated": "frustrated",
    "no data": "no data",
}


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _pct(part: float, total: float) -> str:
    return f"{100 * part / total:.0f}%" if total else "-"


def _apdex(score: Optional[float]) -> str:
    return "-" if score is None else f"{score:.2f}"


def _step_title(journey: str, step: str) -> str:
    return f"{journey} · {step}" if journey else step


def _counts_title(prefix: str, c: dict[str, Any], unit: str = "requests") -> str:
    return (
        f"{prefix}: {c['total']} {unit} - {c['satisfied']} satisfied, "
        f"{c['tolerating']} tolerating, {c['frustrated']} frustrated; Apdex {_apdex(c['apdex'])}"
    )


def _bar(c: dict[str, Any]) -> str:
    """A thin stacked bar: satisfied | tolerating | frustrated shares of a total."""
    total = c["total"]
    if not total:
        return ""
    parts = "".join(
        f'<span class="b-{name}" style="width:{100 * c[name] / total:.2f}%"></span>'
        for name in ("satisfied", "tolerating", "frustrated")
        if c[name]
    )
    return f'<span class="bar">{parts}</span>'


# ---------------------------------------------------------------------- sections


def _scope_note(services: dict[str, Any]) -> str:
    if services["only"]:
        return (
            f'<p class="scope">Requests served by <b>{_e(services["only"])}</b> only '
            '(<a href="?">where customers arrive</a>).</p>'
        )
    if services["excluded"]:
        entry = [s for s in services["services"] if s not in services["excluded"]]
        left_out = ", ".join(_e(s) for s in services["excluded"])
        return (
            f'<p class="scope">Counted where customers arrive: {_e(", ".join(entry))}. '
            f"Left out, as they serve the same customers' requests further down: {left_out} "
            '(<a href="?service=all">count every service</a>).</p>'
        )
    return ""


def _cost_title(h: dict[str, Any]) -> str:
    """A costly slice's numbers, for its hover."""
    title = (
        f"{h['segment']} · {h['step']}: {h['customers']} customers reached it, "
        f"{h['frustrated']} frustrated there ({h['frustrated_slow']} slow, "
        f"{h['frustrated_error']} error)"
    )
    if h["conversion_rate_frustrated"] is not None and h["conversion_rate_others"] is not None:
        title += (
            f"; conversion rate {100 * h['conversion_rate_frustrated']:.0f}% frustrated, "
            f"{100 * h['conversion_rate_others']:.0f}% others"
        )
    return title


def _headline_items(summary: dict[str, Any]) -> str:
    lines = summary["headlines"]
    if summary.get("unit") == "customers":
        if not lines:
            return (
                '<p class="headline-ok">No customer was frustrated at any step in this window.</p>'
            )
        items = "".join(
            f'<li class="headline v-{"frustrated" if h["conversions_lost"] else "tolerating"}"'
            f' data-segment="{_e(h["segment"])}" data-step="{_e(h["step"])}"'
            f' data-unit="customers" title="{_e(_cost_title(h))}">{_e(h["text"])}</li>'
            for h in lines
        )
        return f'<ol class="headlines">{items}</ol>'
    if not lines:
        return '<p class="headline-ok">Every step has an Apdex of 0.94 or better.</p>'
    items = "".join(
        f'<li class="headline v-{_e(h["verdict"])}" data-segment="{_e(h["segment"])}"'
        f' data-step="{_e(h["step"])}" data-unit="requests"'
        f' title="{_e(_counts_title(h["segment"], h))}">{_e(h["text"])}</li>'
        for h in lines
    )
    return f'<ol class="headlines">{items}</ol>'


def _headline(summary: dict[str, Any], services: dict[str, Any], funnel: dict[str, Any]) -> str:
    req = summary["requests"]
    browser = summary["browser"]
    story = _headline_items(summary)
    total = req["total"]
    stats = []
    if summary.get("unit") == "customers":
        visits = sum(funnel.get("visits", {}).values())
        stats.append(
            f'<div class="stat" title="visits that started in this window">'
            f'<b data-customers="{visits}">{visits:,}</b><span>customers</span></div>'
        )
    stats += [
        f'<div class="stat"><b data-total="{total}">{total:,}</b><span>requests</span></div>',
        f'<div class="stat v-{_e(req["verdict"])}"><b>{_apdex(req["apdex"])}</b>'
        "<span>Apdex (server)</span></div>",
    ]
    for name in ("satisfied", "tolerating", "frustrated"):
        stats.append(
            f'<div class="stat s-{name}"><b>{_pct(req[name], total)}</b><span>{name}</span></div>'
        )
    if browser["total"]:
        stats.append(
            f'<div class="stat v-{_e(browser["verdict"])}" '
            f'title="{_e(_counts_title("browser", browser, "page loads"))}">'
            f"<b>{_apdex(browser['apdex'])}</b><span>Apdex (browser)</span></div>"
        )
    return (
        '<section class="card summary" id="summary"><h2>What customers feel</h2>'
        f"{_scope_note(services)}"
        f'{story}<div class="stats">{"".join(stats)}</div>{_bar(req)}</section>'
    )


def _grid(grid: dict[str, Any]) -> str:
    columns = grid["columns"]
    if not columns:
        return ""
    journeys: list[tuple[str, int]] = []
    for col in columns:
        if journeys and journeys[-1][0] == col["journey"]:
            journeys[-1] = (col["journey"], journeys[-1][1] + 1)
        else:
            journeys.append((col["journey"], 1))
    head1 = "".join(
        f'<th colspan="{span}" class="journey">{_e(j or "requests with no step")}</th>'
        for j, span in journeys
    )
    head2 = "".join(
        f'<th title="{_e("Apdex T = " + threshold_text(c["threshold_ms"]))}">{_e(c["step"])}</th>'
        for c in columns
    )
    body = []
    for row in grid["rows"]:
        segment = row["segment"]
        cells = []
        for col, cell in zip(columns, row["cells"]):
            where = f"{segment} · {_step_title(col['journey'], col['step'])}"
            browser = cell["browser"]
            title = _counts_title(where, cell)
            if col["threshold_ms"]:
                title += f" (T = {threshold_text(col['threshold_ms'])})"
            extra = ""
            if browser:
                title += "\n" + _counts_title("browser page loads", browser, "page loads")
                extra = (
                    f'<span class="browser v-{_e(browser["verdict"])}">browser '
                    f"{_apdex(browser['apdex'])}</span>"
                )
            attrs = (
                f'data-segment="{_e(segment)}" data-journey="{_e(col["journey"])}" '
                f'data-step="{_e(col["step"])}" data-total="{cell["total"]}" '
                f'data-satisfied="{cell["satisfied"]}" data-tolerating="{cell["tolerating"]}" '
                f'data-frustrated="{cell["frustrated"]}" '
                f'data-apdex="{"" if cell["apdex"] is None else cell["apdex"]}"'
            )
            if not cell["total"]:
                cells.append(
                    f'<td class="cell v-none" {attrs} title="{_e(where)}: no requests">'
                    f"{extra or '·'}</td>"
                )
                continue
            cells.append(
                f'<td class="cell v-{_e(cell["verdict"])}" {attrs} title="{_e(title)}">'
                f'<span class="word">{_e(_WORDS[cell["verdict"]])}</span>'
                f'<span class="score">{_apdex(cell["apdex"])}</span>'
                f'<span class="count">{cell["total"]:,} req</span>{_bar(cell)}{extra}</td>'
            )
        body.append(f'<tr><th class="segment">{_e(segment)}</th>{"".join(cells)}</tr>')
    legend = (
        '<p class="legend"><span class="v-satisfied">satisfied</span> Apdex ≥ 0.94 '
        '<span class="v-tolerating">tolerating</span> 0.85-0.94 '
        '<span class="v-frustrated">frustrated</span> below 0.85 · hover a cell for its numbers'
        "</p>"
    )
    return (
        '<section class="card" id="grid"><h2>Apdex by segment and step</h2>'
        f'<div class="scroll"><table class="grid"><thead><tr><th rowspan="2">segment</th>'
        f"{head1}</tr><tr>{head2}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        f"{legend}</section>"
    )


def _money(value: float, currency: str) -> str:
    return f"{value:,.2f} {currency}".strip()


def _converted(seg: dict[str, Any]) -> str:
    rate = seg["conversion_rate"]
    rate_text = "-" if rate is None else f"{100 * rate:.1f}%"
    value = "<br>" + _e(_money(seg["value"], seg["currency"])) if seg["value"] else ""
    return (
        f'<td data-segment="{_e(seg["segment"])}" data-conversions="{seg["conversions"]}" '
        f'data-value="{seg["value"]}">{seg["conversions"]:,} ({rate_text}){value}</td>'
    )


def _funnel_tables(funnel: dict[str, Any], cell: Callable[[dict[str, Any], int, str], str]) -> str:
    """One table per journey: a row per step, a column per segment, ``cell`` for each."""
    parts = []
    for journey in funnel["journeys"]:
        segments = journey["segments"]
        head = "".join(f"<th>{_e(s['segment'])}</th>" for s in segments)
        rows = [
            f"<tr><th>{_e(step)}</th>{''.join(cell(seg, i, step) for seg in segments)}</tr>"
            for i, step in enumerate(journey["steps"])
        ]
        totals = "".join(_converted(s) for s in segments)
        parts.append(
            f'<h3>{_e(journey["journey"])}</h3><div class="scroll"><table class="funnel" '
            f'data-unit="{_e(funnel["unit"])}" data-journey="{_e(journey["journey"])}">'
            f"<thead><tr><th>step</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            f"<tfoot><tr><th>converted</th>{totals}</tr></tfoot></table></div>"
        )
    return "".join(parts)


def _customer_cell(seg: dict[str, Any], i: int, step: str) -> str:
    row = seg["steps"][i]
    most = max((r["customers"] for r in seg["steps"]), default=0) or 1
    width = min(100.0, 100 * row["customers"] / most)
    drop = row["drop_off"]
    drop_text = ""
    if drop is not None and drop > 0:
        drop_text = f'<span class="drop">-{100 * drop:.0f}%</span>'
    frustrated = (
        f'<span class="frus" title="frustrated here">✗ {row["frustrated"]:,}</span>'
        if row["frustrated"]
        else ""
    )
    title = (
        f"{seg['segment']} · {step}: {row['customers']} customers reached it; "
        f"{row['frustrated']} frustrated here; {row['converted']} of them converted"
    )
    if drop is not None and drop > 0:
        title += f"; {100 * drop:.1f}% fewer than the step before"
    return (
        f'<td class="funnel-cell" data-segment="{_e(seg["segment"])}" '
        f'data-step="{_e(step)}" data-customers="{row["customers"]}" '
        f'data-frustrated="{row["frustrated"]}" data-converted="{row["converted"]}" '
        f'title="{_e(title)}">'
        f'<span class="fbar"><span style="width:{width:.1f}%"></span></span>'
        f'<span class="n">{row["customers"]:,}</span>{drop_text}{frustrated}</td>'
    )


def _customer_funnel(funnel: dict[str, Any]) -> str:
    return (
        '<section class="card" id="funnel"><h2>Customer funnel</h2>'
        '<p class="hint">customers (visits) reaching each step, drop-off from the step '
        "before, frustrated there (✗), and the visits that converted</p>"
        f"{_funnel_tables(funnel, _customer_cell)}</section>"
    )


def _costs(costs: dict[str, Any]) -> str:
    if costs.get("unit") != "customers":
        return ""
    rows = costs["rows"][:10]
    if not rows:
        body = '<p class="hint">No customer was frustrated at any step in this window.</p>'
    else:
        items = []
        for r in rows:
            rate_f = r["conversion_rate_frustrated"]
            rate_o = r["conversion_rate_others"]
            lost = r["conversions_lost"]
            value = r["value_lost"]
            lost_text = "-" if lost is None else f"{lost:,.1f}"
            value_text = "-" if not value else _money(value, r["currency"])
            items.append(
                f'<tr data-segment="{_e(r["segment"])}" data-step="{_e(r["step"])}" '
                f'data-frustrated="{r["frustrated"]}" data-customers="{r["customers"]}" '
                f'data-lost="{"" if lost is None else lost}" '
                f'data-value-lost="{"" if value is None else value}" '
                f'title="{_e(r["note"] or _cost_title(r))}">'
                f"<th>{_e(r['step'])}<small>{_e(r['segment'])}</small></th>"
                f'<td class="num">{r["frustrated"]:,} of {r["customers"]:,}</td>'
                f'<td class="num">{"-" if rate_f is None else f"{100 * rate_f:.0f}%"}</td>'
                f'<td class="num">{"-" if rate_o is None else f"{100 * rate_o:.0f}%"}</td>'
                f'<td class="num">{lost_text}</td><td class="num">{_e(value_text)}</td></tr>'
            )
        body = (
            '<div class="scroll"><table class="costs"><thead><tr><th>step</th>'
            "<th>frustrated customers</th><th>converted, frustrated</th>"
            "<th>converted, others</th><th>conversions lost</th><th>value lost</th></tr>"
            f"</thead><tbody>{''.join(items)}</tbody></table></div>"
        )
    return (
        '<section class="card" id="costs"><h2>What frustration costs</h2>'
        '<p class="hint">customers frustrated at a step, how often they converted against '
        "the others who reached it, and the conversions and value that difference lost; "
        f"compared only with at least {costs['min_compared']} customers in each group</p>"
        f"{body}</section>"
    )


def _funnel(funnel: dict[str, Any]) -> str:
    if not funnel["journeys"]:
        return ""
    if funnel.get("unit") == "customers":
        return _customer_funnel(funnel)
    return (
        '<section class="card" id="funnel"><h2>Request funnel</h2>'
        '<p class="hint">requests reaching each step (hits, not people: visits are off), '
        "drop-off from the step before, conversions and their value</p>"
        f"{_funnel_tables(funnel, _request_cell)}</section>"
    )


def _request_cell(seg: dict[str, Any], i: int, step: str) -> str:
    row = seg["steps"][i]
    first = seg["steps"][0]["requests"] or 1
    width = min(100.0, 100 * row["requests"] / first)
    drop = row["drop_off"]
    drop_text = ""
    if drop is not None and drop >= 0:
        drop_text = f'<span class="drop">-{100 * drop:.0f}%</span>'
    elif drop is not None:
        drop_text = f'<span class="gain">+{-100 * drop:.0f}%</span>'
    conv = (
        f'<span class="conv" title="conversions">✓ {row["conversions"]:,}</span>'
        if row["conversions"]
        else ""
    )
    title = f"{seg['segment']} · {step}: {row['requests']} requests"
    if drop is not None and drop >= 0:
        title += f", {100 * drop:.1f}% fewer than the step before"
    elif drop is not None:
        title += f", {-100 * drop:.1f}% more than the step before (repeat visits)"
    if row["conversions"]:
        title += f"; {row['conversions']} conversions"
        if row["value"]:
            title += f" worth {_money(row['value'], row['currency'])}"
    return (
        f'<td class="funnel-cell" data-segment="{_e(seg["segment"])}" '
        f'data-step="{_e(step)}" data-requests="{row["requests"]}" '
        f'data-conversions="{row["conversions"]}" title="{_e(title)}">'
        f'<span class="fbar"><span style="width:{width:.1f}%"></span></span>'
        f'<span class="n">{row["requests"]:,}</span>{drop_text}{conv}</td>'
    )


def _reasons(reasons: dict[str, Any]) -> str:
    rows = reasons["rows"][:10]
    if not rows:
        body = '<p class="hint">No slow or failing requests among the traces received.</p>'
    else:
        top = max(r["frustrated_slow"] + r["frustrated_error"] + r["tolerating"] for r in rows)
        items = []
        for r in rows:
            segs = "".join(
                f'<span class="r-{cls}" style="width:{100 * r[key] / top:.2f}%" '
                f'title="{r[key]} {label}"></span>'
                for key, cls, label in (
                    ("frustrated_error", "error", "frustrated by an error"),
                    ("frustrated_slow", "slow", "frustrated by slowness"),
                    ("tolerating", "tolerating", "tolerating (slow)"),
                )
                if r[key]
            )
            items.append(
                f'<tr data-segment="{_e(r["segment"])}" data-step="{_e(r["step"])}" '
                f'data-error="{r["frustrated_error"]}" data-slow="{r["frustrated_slow"]}">'
                f"<th>{_e(r['segment'])} · {_e(r['step'])}</th>"
                f'<td class="rbar">{segs}</td><td class="num">{r["frustrated_error"]:,}</td>'
                f'<td class="num">{r["frustrated_slow"]:,}</td>'
                f'<td class="num">{r["tolerating"]:,}</td></tr>'
            )
        body = (
            '<div class="scroll"><table class="reasons"><thead><tr><th></th><th></th>'
            "<th>error</th><th>slow</th><th>tolerating</th></tr></thead>"
            f"<tbody>{''.join(items)}</tbody></table></div>"
        )
    return (
        '<section class="card" id="reasons"><h2>Why requests frustrate</h2>'
        '<p class="legend"><span class="r-error">error</span> '
        '<span class="r-slow">too slow (over 4 T)</span> '
        '<span class="r-tolerating">tolerating (T to 4 T)</span> · from traces</p>'
        f"{body}</section>"
    )


def _trace_link(trace_id: str, title: str) -> str:
    return (
        f'<a href="/trace/{_e(trace_id)}"><code class="trace" data-trace-id="{_e(trace_id)}" '
        f'title="{_e(title)}">{_e(trace_id[:12])}…</code></a>'
    )


def _trace_ids(examples: list[dict[str, Any]]) -> str:
    return " ".join(
        _trace_link(
            x["trace_id"],
            f"trace {x['trace_id']} · {x['duration_ms']:,.0f} ms"
            + (f" · HTTP {x['http_status']}" if x["http_status"] else "")
            + " (open its spans)",
        )
        for x in examples
    )


def _visits(visits: Optional[dict[str, Any]]) -> str:
    """Example visits of frustrated customers: each one customer's requests in order."""
    if not visits or not visits["visits"]:
        return ""
    where = " · ".join(v for v in (visits["segment"], visits["step"]) if v)
    blocks = []
    for visit in visits["visits"]:
        rows = "".join(
            f'<tr class="v-{_e(r["satisfaction"])}"><td class="num">'
            f"{time.strftime('%H:%M:%S', time.localtime(r['time_ns'] / 1e9))}</td>"
            f"<td>{_e(r['step'] or r['name'])}<small>{_e(r['service'])}</small></td>"
            f"<td>{_e(r['satisfaction'])}{' (' + _e(r['reason']) + ')' if r['reason'] else ''}"
            f'</td><td class="num">{r["duration_ms"]:,.0f} ms</td>'
            f"<td>{_trace_link(r['trace_id'], 'trace ' + r['trace_id'] + ' (open its spans)')}"
            "</td></tr>"
            for r in visit["requests"]
        )
        blocks.append(
            f'<div class="scroll"><table class="visit steps" '
            f'data-visit-id="{_e(visit["visit_id"])}"><caption>visit '
            f"{_e(visit['visit_id'][:12])}…</caption><tbody>{rows}</tbody></table></div>"
        )
    return (
        f'<section class="card" id="visits"><h2>Frustrated customers: {_e(where)}</h2>'
        f'<p class="hint">one customer\'s requests in order, per visit; {_e(visits["note"])}</p>'
        f"{''.join(blocks)}</section>"
    )


def render_trace(trace: dict[str, Any]) -> str:
    """One trace as a waterfall: a bar per span on a shared time axis, its attributes below."""
    total = trace["duration_ms"] or 1.0
    rows = []
    for span in trace["spans"]:
        left = 100 * span["offset_ms"] / total
        width = max(0.3, 100 * span["duration_ms"] / total)
        attrs = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in span["attributes"])
        status = "" if span["status"] == "UNSET" else f" · {_e(span['status'])}"
        rows.append(
            f'<details class="span k-{_e(span["kind"].lower())}" '
            f'data-span-id="{_e(span["span_id"])}" style="--depth:{span["depth"]}"><summary>'
            f'<span class="sname">{_e(span["name"])}<small>{_e(span["service"])} · '
            f"{_e(span['kind'].lower())}{status}</small></span>"
            f'<span class="lane"><span class="sbar{" err" if span["status"] == "ERROR" else ""}"'
            f' style="left:{left:.2f}%;width:{min(width, 100 - left):.2f}%"></span></span>'
            f'<span class="num">{span["duration_ms"]:,.1f} ms</span></summary>'
            f'<table class="attrs">{attrs}</table></details>'
        )
    note = f'<p class="note">{_e(trace["note"])}</p>' if trace["note"] else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>trace {_e(trace['trace_id'][:12])} · cxtrace</title>"
        '<link rel="stylesheet" href="/static/cockpit.css"><link rel="icon" href="data:,">'
        f'</head><body><header><h1><a href="/">Customer Experience Cockpit</a></h1></header>'
        f'<main><section class="card trace-view" data-trace-id="{_e(trace["trace_id"])}">'
        f"<h2>Trace {_e(trace['trace_id'])}</h2>"
        f'<p class="hint">{len(trace["spans"])} spans from {_e(", ".join(trace["services"]))}'
        f" over {trace['duration_ms']:,.1f} ms; click a span for its attributes</p>"
        f"{note}{''.join(rows)}</section></main></body></html>"
    )


def _slowest(slowest: dict[str, Any]) -> str:
    def table(rows: list[dict[str, Any]], kind: str) -> str:
        if not rows:
            return f'<p class="hint">No {kind} steps among the traces received.</p>'
        body = "".join(
            f'<tr data-segment="{_e(r["segment"])}" data-step="{_e(r["step"])}">'
            f"<th>{_e(r['step'])}<small>{_e(r['segment'])}</small></th>"
            f'<td class="num">{r["mean_ms"]:,.0f} ms</td><td class="num">{r["max_ms"]:,.0f} ms</td>'
            f'<td class="num">{100 * r["error_rate"]:.0f}%</td>'
            f"<td>{_trace_ids(r['examples'])}</td></tr>"
            for r in rows
        )
        return (
            f'<div class="scroll"><table class="steps {kind}"><thead><tr><th>step</th>'
            "<th>mean</th><th>max</th><th>errors</th><th>example traces</th></tr></thead>"
            f"<tbody>{body}</tbody></table></div>"
        )

    return (
        '<section class="card" id="slowest"><h2>Slowest steps</h2>'
        f"{table(slowest['slowest'][:6], 'slowest')}<h2>Failing steps</h2>"
        f"{table(slowest['failing'][:6], 'failing')}</section>"
    )


def _timeline(timeline: dict[str, Any]) -> str:
    series = timeline["series"]
    if not series:
        return ""
    width, height = 600, 230
    left, right, top, bottom = 40, 10, 10, 28
    start, end = timeline["start"], timeline["end"]
    span = max(1, end - start)
    bucket = timeline["bucket_s"]

    def x(t: float) -> float:
        return float(left + (width - left - right) * (t + bucket / 2 - start) / span)

    scores = [p["apdex"] for s in series for p in s["points"] if p["apdex"] is not None]
    # Zoom in on the range the lines use, in steps of 0.1, from 0.8 down.
    floor = min(0.8, int(10 * min(scores, default=0.0)) / 10)

    def y(score: float) -> float:
        return top + (height - top - bottom) * (1 - score) / (1 - floor)

    grid = []
    for level in sorted({floor, 0.5, 0.85, 0.94, 1.0}):
        if level < floor:
            continue
        grid.append(
            f'<line class="gl" x1="{left}" x2="{width - right}" y1="{y(level):.1f}" '
            f'y2="{y(level):.1f}"/><text class="ax" x="{left - 6}" y="{y(level) + 4:.1f}" '
            f'text-anchor="end">{level:g}</text>'
        )
    for i in range(5):
        t = start + span * i / 4
        label = time.strftime("%H:%M" if span <= 2 * 86400 else "%a %H:%M", time.localtime(t))
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        grid.append(
            f'<text class="ax" x="{left + (width - left - right) * i / 4:.1f}" '
            f'y="{height - 8}" text-anchor="{anchor}">{label}</text>'
        )
    lines = []
    legend = []
    for n, s in enumerate(series):
        colour = _LINE_COLOURS[n % len(_LINE_COLOURS)]
        pts = [(x(p["time"]), y(p["apdex"]), p) for p in s["points"] if p["apdex"] is not None]
        if not pts:
            continue
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py, _) in enumerate(pts)
        )
        dots = "".join(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3"><title>{_e(s["segment"])} '
            f"{time.strftime('%H:%M', time.localtime(p['time']))}: Apdex {p['apdex']:.2f} "
            f"over {p['total']:,} requests</title></circle>"
            for px, py, p in pts
        )
        lines.append(
            f'<g class="series" data-segment="{_e(s["segment"])}" stroke="{colour}" '
            f'fill="{colour}"><path d="{path}" fill="none"/>{dots}</g>'
        )
        legend.append(f'<span><i style="background:{colour}"></i>{_e(s["segment"])}</span>')
    return (
        '<section class="card" id="timeline"><h2>Apdex over time, per segment</h2>'
        f'<svg viewBox="0 0 {width} {height}" class="chart" role="img" '
        f'aria-label="Apdex over time per segment">{"".join(grid)}{"".join(lines)}</svg>'
        f'<p class="legend lines">{"".join(legend)}</p></section>'
    )


def _empty(has_any_data: bool, window_label: str, endpoint: str) -> str:
    if has_any_data:
        return (
            '<section class="card empty"><h2>Nothing in this window</h2>'
            f"<p>No requests arrived in the last {_e(window_label)}. "
            "Pick a longer window above, or send some traffic.</p></section>"
        )
    return (
        '<section class="card empty"><h2>Waiting for data</h2>'
        "<p>Point an application at this cockpit, then use it: the page fills within "
        "seconds.</p>"
        f"<pre>export OTEL_EXPORTER_OTLP_ENDPOINT={_e(endpoint)}\n"
        "export OTEL_METRIC_EXPORT_INTERVAL=5000\n"
        "cxtrace run -- python app.py</pre>"
        "<p>Any OpenTelemetry SDK works (OTLP over HTTP/protobuf or gRPC); the cockpit "
        "reads the <code>cx.requests</code> and <code>cx.conversions</code> metrics that "
        "cxtrace records and the <code>cx.*</code> attributes of its server spans. Or try "
        "<code>cxtrace demo</code>.</p></section>"
    )


def render_content(data: dict[str, Any], *, has_any_data: bool, endpoint: str) -> str:
    """The part of the page that refreshes: every view for one window."""
    summary = data["summary"]
    if not summary["requests"]["total"] and not summary["browser"]["total"]:
        return _empty(has_any_data, data["window"], endpoint)
    return (
        _headline(summary, data["services"], data["funnel"])
        + _costs(data["costs"])
        + _visits(data.get("visits"))
        + _grid(data["grid"])
        + '<div class="cols">'
        + _funnel(data["funnel"])
        + _timeline(data["timeline"])
        + '</div><div class="cols">'
        + _reasons(data["reasons"])
        + _slowest(data["slowest"])
        + "</div>"
    )


_ON: Final = ' class="on" aria-current="true"'


def render_page(data: dict[str, Any], *, has_any_data: bool, endpoint: str) -> str:
    current = data["window"]
    service = data.get("service", "")
    suffix = f"&amp;service={_e(service)}" if service else ""
    choices = "".join(
        f'<a href="?window={label}{suffix}"{_ON if label == current else ""}>{label}</a>'
        for label in WINDOWS
    )
    content = render_content(data, has_any_data=has_any_data, endpoint=endpoint)
    names = data["services"]["services"]
    picks = [("", "where customers arrive"), ("all", "all services"), *((n, n) for n in names)]
    service_links = "".join(
        f'<a href="?window={_e(current)}{"&amp;service=" + _e(value) if value else ""}"'
        f"{_ON if value == service else ''}>{_e(label)}</a>"
        for value, label in picks
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Customer Experience Cockpit · cxtrace</title>"
        '<link rel="stylesheet" href="/static/cockpit.css">'
        '<link rel="icon" href="data:,">'
        '<script src="/static/cockpit.js" defer></script></head>'
        f'<body data-window="{_e(current)}"><header><h1>Customer Experience Cockpit</h1>'
        f'<nav class="windows" aria-label="time window">{choices}</nav>'
        f'<nav class="windows services" aria-label="services">{service_links}</nav>'
        '<span id="updated" class="updated"></span></header>'
        f'<main id="content">{content}</main>'
        "<footer>cxtrace · counts from the <code>cx.*</code> metrics, examples from traces · "
        '<a href="/api/summary">JSON API</a></footer></body></html>'
    )
