"""The cockpit's page and JSON API over HTTP (stdlib ``http.server``, loopback by default).

    GET /                       the page (``?window=15m``; ``&fragment=1``: only the views)
    GET /static/<file>          the page's CSS and JS, from the package
    GET /api/summary|grid|funnel|costs|reasons|slowest|timeline|services?window=15m&service=
    GET /api/visits?window=&segment=&journey=&step=   visits of frustrated customers
    GET /api/traces/<trace_id>  one trace's spans from every service (404: none received)
    GET /trace/<trace_id>       the same as a waterfall page
    GET /api/health             schema version, rows per table, payloads accepted/refused

The page and the API call the same functions of ``queries`` and ``customers``; ``summary``
and ``funnel`` speak in customers where visit counts are in the window (design.md section 12),
in requests otherwise, and say which in ``unit``.
"""

from __future__ import annotations

import json
import logging
import time
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Final
from urllib.parse import parse_qs, urlsplit

from cxtrace._cockpit import customers, queries, traces
from cxtrace._cockpit.page import render_content, render_page, render_trace
from cxtrace._cockpit.store import SCHEMA_VERSION

if TYPE_CHECKING:
    import sqlite3

    from cxtrace._cockpit.app import Cockpit

__all__ = ["ALL_SERVICES", "page_handler", "scope", "views"]

_log = logging.getLogger(__name__)

_STATIC: Final = {"cockpit.css": "text/css", "cockpit.js": "text/javascript"}


def summary(conn: sqlite3.Connection, w: queries.Window) -> dict[str, Any]:
    """Totals and the headline: in customers and money where visit counts are in the window,
    else in requests (design.md section 9: never "customers" for a count of requests)."""
    data = queries.summary(conn, w)
    if customers.has_visits(conn, w):
        data["unit"] = "customers"
        data["request_headlines"] = data["headlines"]
        data["headlines"] = customers.headlines(conn, w)
    return data


def funnel(conn: sqlite3.Connection, w: queries.Window) -> dict[str, Any]:
    """The customer funnel where visit counts are in the window, else the request funnel."""
    if customers.has_visits(conn, w):
        return customers.customer_funnel(conn, w)
    return queries.funnel(conn, w)


def costs(conn: sqlite3.Connection, w: queries.Window) -> dict[str, Any]:
    if customers.has_visits(conn, w):
        return customers.costs(conn, w)
    return {
        "window": w.label,
        "unit": "requests",
        "rows": [],
        "note": "no visit counts in this window: turn visits on (CXTRACE_VISITS=cookie) to see "
        "what frustration costs in customers and conversions",
    }


_VIEWS: Final[dict[str, Callable[[sqlite3.Connection, queries.Window], dict[str, Any]]]] = {
    "summary": summary,
    "grid": queries.grid,
    "funnel": funnel,
    "costs": costs,
    "reasons": queries.reasons,
    "slowest": queries.slowest,
    "timeline": queries.timeline,
    "services": queries.services,
}
_SECURITY_HEADERS: Final = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    ),
)
_LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "[::1]")


def views(conn: sqlite3.Connection, w: queries.Window) -> dict[str, Any]:
    """Every view for one window (what the page renders)."""
    data: dict[str, Any] = {name: view(conn, w) for name, view in _VIEWS.items()}
    data["window"] = w.label
    # Example visits for the costliest slice the headline names.
    top = data["summary"]["headlines"][0] if data["summary"]["unit"] == "customers" else None
    data["visits"] = (
        traces.visits(
            conn, w, segment=top["segment"], journey=top["journey"], step=top["step"], limit=3
        )
        if top
        else None
    )
    return data


def visits(conn: sqlite3.Connection, w: queries.Window, query: dict[str, str]) -> dict[str, Any]:
    return traces.visits(
        conn, w, segment=query.get("segment"), journey=query.get("journey"), step=query.get("step")
    )


def scope(conn: sqlite3.Connection, w: queries.Window, service: str) -> queries.Window:
    """``?service=``: empty for where customers arrive, ``all``, or one service's name."""
    if service == ALL_SERVICES:
        return w.scoped(None)
    if service:
        return w.scoped(service)
    return w.scoped(None, queries.downstream_services(conn))


ALL_SERVICES: Final = "all"


def _static(name: str) -> bytes:
    return resources.files("cxtrace._cockpit").joinpath("static").joinpath(name).read_bytes()


def page_handler(cockpit: Cockpit) -> type[BaseHTTPRequestHandler]:
    static = {name: (_static(name), kind) for name, kind in _STATIC.items()}
    loopback = cockpit.host in ("127.0.0.1", "localhost", "::1")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        timeout = 30
        server_version = "cxtrace-cockpit"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            # DNS rebinding: a page from another site must not read the cockpit through a
            # name that resolves to 127.0.0.1.
            host = self.headers.get("Host", "").rsplit(":", 1)[0]
            if loopback and host not in _LOOPBACK_NAMES:
                self._send(421, b"unknown host\n", "text/plain")
                return
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                self._route(url.path, query)
            except Exception:  # noqa: BLE001 - the page must keep serving whatever one request did
                _log.exception("cockpit page failed on %s", url.path)
                self._send(500, b"internal error; see the cockpit's log\n", "text/plain")

        def _route(self, path: str, query: dict[str, str]) -> None:
            if path.startswith("/static/") and path[8:] in static:
                body, kind = static[path[8:]]
                self._send(200, body, kind, cache=True)
                return
            if path == "/api/health":
                self._json(200, self._health())
                return
            if path.startswith(("/api/traces/", "/trace/")):
                self._trace(path.rsplit("/", 1)[1], page=path.startswith("/trace/"))
                return
            if path not in ("/", "/index.html", "/api/visits") and not (
                path.startswith("/api/") and path[5:] in _VIEWS
            ):
                self._send(404, b"not found\n", "text/plain")
                return
            try:
                w = queries.window(query.get("window", queries.DEFAULT_WINDOW), time.time_ns())
            except ValueError as exc:
                if path.startswith("/api/"):
                    self._json(400, {"error": str(exc)})
                else:
                    self._send(400, f"{exc}\n".encode(), "text/plain")
                return
            store = cockpit.store
            with store.reader() as conn:
                w = scope(conn, w, query.get("service", ""))
                if path == "/api/visits":
                    self._json(200, visits(conn, w, query))
                    return
                if path.startswith("/api/"):
                    self._json(200, _VIEWS[path[5:]](conn, w))
                    return
                data = views(conn, w)
                has_any = conn.execute("SELECT 1 FROM requests LIMIT 1").fetchone() is not None
            data["service"] = query.get("service", "")
            render = render_content if query.get("fragment") else render_page
            html = render(data, has_any_data=has_any, endpoint=cockpit.otlp_http_endpoint)
            self._send(200, html.encode(), "text/html; charset=utf-8")

        def _trace(self, trace_id: str, *, page: bool) -> None:
            trace_id = trace_id.lower()
            if not traces.TRACE_ID.fullmatch(trace_id):
                error = f"trace id {trace_id[:64]!r}: expected 32 hexadecimal digits"
                if page:
                    self._send(400, f"{error}\n".encode(), "text/plain")
                else:
                    self._json(400, {"error": error})
                return
            with cockpit.store.reader() as conn:
                found = traces.trace(conn, trace_id)
            if found is None:
                error = (
                    f"no span of trace {trace_id} was received (or it is older than the "
                    "retention, or was sampled away)"
                )
                if page:
                    self._send(404, f"{error}\n".encode(), "text/plain")
                else:
                    self._json(404, {"error": error})
                return
            if page:
                self._send(200, render_trace(found).encode(), "text/html; charset=utf-8")
            else:
                self._json(200, found)

        def _health(self) -> dict[str, Any]:
            store = cockpit.store
            ingest = cockpit.ingest
            return {
                "status": "ok",
                "schema_version": SCHEMA_VERSION,
                "db_path": store.path,
                "retention_s": store.retention_s,
                "rows": store.table_rows(),
                "accepted": dict(ingest.accepted),
                "rejected": dict(ingest.rejected),
                "last_ingest": store.last_ingest_ns / 1e9 if store.last_ingest_ns else None,
                "otlp_http_endpoint": cockpit.otlp_http_endpoint,
                "otlp_grpc_endpoint": cockpit.otlp_grpc_endpoint,
            }

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload, separators=(",", ":")).encode()
            self._send(status, body, "application/json")

        def _send(self, status: int, body: bytes, kind: str, *, cache: bool = False) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
                for name, value in _SECURITY_HEADERS:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the browser went away

    return Handler
