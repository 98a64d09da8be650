"""The cockpit's embedded SQLite database: schema, migrations, ingest, retention.

Aggregated on ingest, not on read: a counter point becomes a delta (cumulative streams are
differenced against the last value of their series, kept in ``series`` so a restart does
not double count) and is added to a per-minute bucket. A million requests are then a few
thousand rows, and every page reads only buckets.

    requests     (minute, service, segment, journey, step, satisfaction) -> count
    page_loads   same, for the browser's cx.page_loads (section 10)
    conversions  (minute, service, segment, journey, step) -> count, value (from spans),
                 metric_value (from the cx.conversion.value counter), currency
    visit_counts (minute, service, segment, journey, step, kind, detail) -> count: the
                 cx.visit* counters (section 12); kind visits | steps | frustrations |
                 conversions | converted_steps, detail the reason or "true" / "false"
    span_stats   (minute, service, segment, journey, step, satisfaction, reason)
                 -> spans, total and max duration; page_load_stats for the browser
    examples     a bounded number of recent spans per (source, segment, journey, step,
                 satisfaction, reason): trace id, duration, status
    spans        the newest spans of every kind and service (at most MAX_TRACE_SPANS):
                 the trace view and the example visits (by cx.visit.id)
    steps        (journey, step) -> position in the journey, Apdex T (server and browser)
    series       cumulative series -> start time, last value, last seen
    *_hourly     each bucket table again, per hour, for windows of a day and more
    services     server spans per service with and without a parent (who is downstream)

Every ingest runs in one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): a process killed
mid-write loses at most the request in flight. WAL mode lets the page read while the
receiver writes. ``PRAGMA user_version`` is the schema version; ``_MIGRATIONS`` only ever
moves forward, one transaction per step, so an upgrade keeps every row.

Standard library only (``sqlite3``); imports nothing from the instrumentation.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Union

from cxtrace._cockpit.decode import (
    BROWSER,
    CX_CONVERSION_VALUE_SUM,
    CX_CONVERSIONS,
    CX_PAGE_LOADS,
    VISIT_METRICS,
    CounterPoint,
    SpanSample,
    TraceSpan,
)

__all__ = ["HOURLY", "SCHEMA_VERSION", "SchemaError", "Store", "StoreClosedError"]

_log = logging.getLogger(__name__)

MINUTE_NS: Final = 60 * 10**9
# Recent examples kept per (source, segment, journey, step, satisfaction, reason).
EXAMPLES_PER_GROUP: Final = 10
# Spans kept for the trace view, the newest; older ones go first (and all past retention).
MAX_TRACE_SPANS: Final = 200_000

# Each entry moves the schema from version i to i + 1. Never edit a released entry: add one.
_MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: server requests, conversions, span statistics and examples
    """
    CREATE TABLE series (
        key TEXT PRIMARY KEY, start_ns INTEGER NOT NULL, value REAL NOT NULL,
        seen_ns INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX series_seen ON series (seen_ns);
    CREATE TABLE requests (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL, satisfaction TEXT NOT NULL,
        count REAL NOT NULL,
        PRIMARY KEY (minute, service, segment, journey, step, satisfaction)
    ) WITHOUT ROWID;
    CREATE TABLE conversions (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL,
        count REAL NOT NULL DEFAULT 0, value REAL NOT NULL DEFAULT 0,
        currency TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (minute, service, segment, journey, step)
    ) WITHOUT ROWID;
    CREATE TABLE span_stats (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL, satisfaction TEXT NOT NULL,
        reason TEXT NOT NULL, spans INTEGER NOT NULL, errors INTEGER NOT NULL,
        total_ms REAL NOT NULL, max_ms REAL NOT NULL,
        PRIMARY KEY (minute, service, segment, journey, step, satisfaction, reason)
    ) WITHOUT ROWID;
    CREATE TABLE examples (
        id INTEGER PRIMARY KEY, end_ns INTEGER NOT NULL, service TEXT NOT NULL,
        segment TEXT NOT NULL, journey TEXT NOT NULL, step TEXT NOT NULL,
        satisfaction TEXT NOT NULL, reason TEXT NOT NULL, trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL, duration_ms REAL NOT NULL, is_error INTEGER NOT NULL,
        http_status INTEGER NOT NULL
    );
    CREATE INDEX examples_group
        ON examples (segment, journey, step, satisfaction, reason, end_ns);
    CREATE INDEX examples_end ON examples (end_ns);
    CREATE TABLE steps (
        journey TEXT NOT NULL, step TEXT NOT NULL, step_index INTEGER NOT NULL,
        threshold_ms INTEGER NOT NULL, seen_ns INTEGER NOT NULL,
        PRIMARY KEY (journey, step)
    ) WITHOUT ROWID;
    """,
    # 2: the browser's view (real-user monitoring, design.md section 10) beside the server's
    """
    CREATE TABLE page_loads (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL, satisfaction TEXT NOT NULL,
        count REAL NOT NULL,
        PRIMARY KEY (minute, service, segment, journey, step, satisfaction)
    ) WITHOUT ROWID;
    CREATE TABLE page_load_stats (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL, satisfaction TEXT NOT NULL,
        reason TEXT NOT NULL, spans INTEGER NOT NULL, errors INTEGER NOT NULL,
        total_ms REAL NOT NULL, max_ms REAL NOT NULL,
        PRIMARY KEY (minute, service, segment, journey, step, satisfaction, reason)
    ) WITHOUT ROWID;
    ALTER TABLE examples ADD COLUMN source TEXT NOT NULL DEFAULT 'server';
    DROP INDEX examples_group;
    CREATE INDEX examples_group
        ON examples (source, segment, journey, step, satisfaction, reason, end_ns);
    ALTER TABLE steps ADD COLUMN page_threshold_ms INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: hourly rollups beside the minute buckets, so a 7-day window reads 60x fewer rows;
    # filled from the minute rows already stored.
    """
    CREATE TABLE requests_hourly (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL, satisfaction TEXT NOT NULL,
        count REAL NOT NULL,
        PRIMARY KEY (minute, service, segment, journey, step, satisfaction)
    ) WITHOUT ROWID;
    INSERT INTO requests_hourly
        SELECT minute - minute % 60, service, segment, journey, step, satisfaction, sum(count)
        FROM requests GROUP BY 1, 2, 3, 4, 5, 6;
    CREATE TABLE page_loads_hourly (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL, satisfaction TEXT NOT NULL,
        count REAL NOT NULL,
        PRIMARY KEY (minute, service, segment, journey, step, satisfaction)
    ) WITHOUT ROWID;
    INSERT INTO page_loads_hourly
        SELECT minute - minute % 60, service, segment, journey, step, satisfaction, sum(count)
        FROM page_loads GROUP BY 1, 2, 3, 4, 5, 6;
    CREATE TABLE conversions_hourly (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL,
        count REAL NOT NULL DEFAULT 0, value REAL NOT NULL DEFAULT 0,
        currency TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (minute, service, segment, journey, step)
    ) WITHOUT ROWID;
    INSERT INTO conversions_hourly
        SELECT minute - minute % 60, service, segment, journey, step, sum(count), sum(value),
            max(currency)
        FROM conversions GROUP BY 1, 2, 3, 4, 5;
    CREATE TABLE span_stats_hourly (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL, satisfaction TEXT NOT NULL,
        reason TEXT NOT NULL, spans INTEGER NOT NULL, errors INTEGER NOT NULL,
        total_ms REAL NOT NULL, max_ms REAL NOT NULL,
        PRIMARY KEY (minute, service, segment, journey, step, satisfaction, reason)
    ) WITHOUT ROWID;
    INSERT INTO span_stats_hourly
        SELECT minute - minute % 60, service, segment, journey, step, satisfaction, reason,
            sum(spans), sum(errors), sum(total_ms), max(max_ms)
        FROM span_stats GROUP BY 1, 2, 3, 4, 5, 6, 7;
    CREATE TABLE page_load_stats_hourly (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL, satisfaction TEXT NOT NULL,
        reason TEXT NOT NULL, spans INTEGER NOT NULL, errors INTEGER NOT NULL,
        total_ms REAL NOT NULL, max_ms REAL NOT NULL,
        PRIMARY KEY (minute, service, segment, journey, step, satisfaction, reason)
    ) WITHOUT ROWID;
    INSERT INTO page_load_stats_hourly
        SELECT minute - minute % 60, service, segment, journey, step, satisfaction, reason,
            sum(spans), sum(errors), sum(total_ms), max(max_ms)
        FROM page_load_stats GROUP BY 1, 2, 3, 4, 5, 6, 7;
    """,
    # 4: where customers arrive: server spans per service with and without a parent span
    """
    CREATE TABLE services (
        service TEXT PRIMARY KEY, root_spans INTEGER NOT NULL, child_spans INTEGER NOT NULL,
        seen_ns INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 5: customers, not requests (design.md section 12): the visit counters, and conversion
    # values from the cx.conversion.value counter (exact whatever the sampler kept)
    """
    CREATE TABLE visit_counts (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
        count REAL NOT NULL,
        PRIMARY KEY (minute, service, segment, journey, step, kind, detail)
    ) WITHOUT ROWID;
    CREATE TABLE visit_counts_hourly (
        minute INTEGER NOT NULL, service TEXT NOT NULL, segment TEXT NOT NULL,
        journey TEXT NOT NULL, step TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
        count REAL NOT NULL,
        PRIMARY KEY (minute, service, segment, journey, step, kind, detail)
    ) WITHOUT ROWID;
    ALTER TABLE conversions ADD COLUMN metric_value REAL NOT NULL DEFAULT 0;
    ALTER TABLE conversions ADD COLUMN metric_values INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversions_hourly ADD COLUMN metric_value REAL NOT NULL DEFAULT 0;
    ALTER TABLE conversions_hourly ADD COLUMN metric_values INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE spans (
        id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, span_id TEXT NOT NULL,
        parent_span_id TEXT NOT NULL, service TEXT NOT NULL, name TEXT NOT NULL,
        kind TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
        status TEXT NOT NULL, status_message TEXT NOT NULL, visit_id TEXT NOT NULL,
        satisfaction TEXT NOT NULL, attributes TEXT NOT NULL
    );
    CREATE INDEX spans_trace ON spans (trace_id);
    CREATE INDEX spans_visit ON spans (visit_id, start_ns) WHERE visit_id != '';
    CREATE INDEX spans_end ON spans (end_ns);
    """,
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_BUCKET_TABLES: Final = (
    "requests",
    "page_loads",
    "conversions",
    "span_stats",
    "page_load_stats",
    "visit_counts",
)
# Every bucket table has an ``_hourly`` twin: same columns, ``minute`` the hour's first.
HOURLY: Final = "_hourly"
_ALL_BUCKET_TABLES: Final = tuple(t + suffix for t in _BUCKET_TABLES for suffix in ("", HOURLY))


_COUNT_KEY: Final = "minute, service, segment, journey, step, satisfaction"
_ADD_COUNT: Final = {
    table: f"INSERT INTO {table} ({_COUNT_KEY}, count) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
    f" ON CONFLICT ({_COUNT_KEY}) DO UPDATE SET count = count + excluded.count"
    for table in ("requests", "page_loads", "requests_hourly", "page_loads_hourly")
}
_SPAN_KEY: Final = "minute, service, segment, journey, step, satisfaction, reason"
_ADD_SPAN: Final = {
    table: f"INSERT INTO {table} ({_SPAN_KEY}, spans, errors, total_ms, max_ms)"  # noqa: S608
    f" VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT ({_SPAN_KEY}) DO UPDATE"
    " SET spans = spans + 1, errors = errors + excluded.errors,"
    " total_ms = total_ms + excluded.total_ms, max_ms = max(max_ms, excluded.max_ms)"
    for table in ("span_stats", "page_load_stats", "span_stats_hourly", "page_load_stats_hourly")
}
_CONVERSION_KEY: Final = "minute, service, segment, journey, step"
_ADD_CONVERSIONS: Final = {
    table: f"INSERT INTO {table} ({_CONVERSION_KEY}, count) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608
    f" ON CONFLICT ({_CONVERSION_KEY}) DO UPDATE SET count = count + excluded.count"
    for table in ("conversions", "conversions_hourly")
}
_ADD_CONVERSION_VALUE: Final = {
    table: f"INSERT INTO {table} ({_CONVERSION_KEY}, value, currency)"  # noqa: S608
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    f" ON CONFLICT ({_CONVERSION_KEY}) DO UPDATE SET value = value + excluded.value,"
    " currency = CASE WHEN excluded.currency = '' THEN currency ELSE excluded.currency END"
    for table in ("conversions", "conversions_hourly")
}


# cx.conversion.value: metric_values counts the points that added, so a reader can tell a
# value the counter reported (exact) from one taken from sampled spans.
_ADD_METRIC_VALUE: Final = {
    table: f"INSERT INTO {table} ({_CONVERSION_KEY}, metric_value, metric_values, currency)"  # noqa: S608
    " VALUES (?, ?, ?, ?, ?, ?, 1, ?)"
    f" ON CONFLICT ({_CONVERSION_KEY}) DO UPDATE"
    " SET metric_value = metric_value + excluded.metric_value,"
    " metric_values = metric_values + 1,"
    " currency = CASE WHEN excluded.currency = '' THEN currency ELSE excluded.currency END"
    for table in ("conversions", "conversions_hourly")
}
_VISIT_KEY: Final = "minute, service, segment, journey, step, kind, detail"
_ADD_VISITS: Final = {
    table: f"INSERT INTO {table} ({_VISIT_KEY}, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
    f" ON CONFLICT ({_VISIT_KEY}) DO UPDATE SET count = count + excluded.count"
    for table in ("visit_counts", "visit_counts_hourly")
}


class SchemaError(Exception):
    """The database was written by a newer cockpit (or is not a cockpit database)."""


class StoreClosedError(Exception):
    """The store was closed (the cockpit is stopping)."""


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; returns the version found before."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {found} is newer than this cockpit's "
            f"({SCHEMA_VERSION}); upgrade cxtrace to open it"
        )
    for version in range(found, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(_MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if found:
            _log.info("cockpit database upgraded to schema version %d", version + 1)
    return found


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT first; run the statements one by one inside our own
    # transaction instead, so a failed migration leaves the previous version intact.
    return [part.strip() for part in script.split(";") if part.strip()]


class Store:
    """One cockpit database. Writes are serialised; reads use their own connections."""

    def __init__(self, path: Union[str, os.PathLike[str]], *, retention_s: float) -> None:
        self.path = str(path)
        self.retention_s = retention_s
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._closed = False
        conn = _connect(self.path)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                _log.warning("cockpit database %s is not in WAL mode (%s)", self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable across process kills
            migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise SchemaError(f"{self.path}: not a cockpit database ({exc})") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self.last_ingest_ns = 0

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Wait for the write in progress, then close. Later writes raise StoreClosedError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreClosedError("the cockpit store is closed")
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self.last_ingest_ns = time.time_ns()

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A connection for reading (its own, so reads never wait for the writer)."""
        conn = _connect(self.path)
        try:
            yield conn
        finally:
            conn.close()

    # ------------------------------------------------------------------ ingest

    def add_points(self, points: Sequence[CounterPoint]) -> int:
        """Add counter points in one transaction; returns how many changed a bucket."""
        if not points:
            return 0
        changed = 0
        with self._transaction() as conn:
            for point in points:
                amount = self._delta(conn, point)
                if amount <= 0:
                    continue
                changed += 1
                minute = point.time_ns // MINUTE_NS
                key = (point.service, point.segment, point.journey, point.step)
                for at, suffix in ((minute, ""), (minute - minute % 60, HOURLY)):
                    if point.metric == CX_CONVERSIONS:
                        conn.execute(_ADD_CONVERSIONS["conversions" + suffix], (at, *key, amount))
                        continue
                    if point.metric == CX_CONVERSION_VALUE_SUM:
                        conn.execute(
                            _ADD_METRIC_VALUE["conversions" + suffix],
                            (at, *key, amount, point.detail),
                        )
                        continue
                    kind = VISIT_METRICS.get(point.metric)
                    if kind is not None:
                        conn.execute(
                            _ADD_VISITS["visit_counts" + suffix],
                            (at, *key, kind, point.detail, amount),
                        )
                        continue
                    table = "page_loads" if point.metric == CX_PAGE_LOADS else "requests"
                    conn.execute(_ADD_COUNT[table + suffix], (at, *key, point.satisfaction, amount))
        return changed

    @staticmethod
    def _delta(conn: sqlite3.Connection, point: CounterPoint) -> float:
        """What this point adds: itself (delta), or its growth since the series' last point.

        A cumulative series restarts (its process restarted, or the SDK reset it) when its
        start time changes or its value goes down; the new value then counts in full.
        A point older than the last one seen (a retry arriving late) adds nothing.
        """
        if not point.is_cumulative:
            return point.value
        row = conn.execute(
            "SELECT start_ns, value, seen_ns FROM series WHERE key = ?", (point.series,)
        ).fetchone()
        if row is None:
            amount = point.value
        else:
            start_ns, last, seen_ns = row
            if point.start_ns == start_ns and point.time_ns < seen_ns:
                return 0.0  # out of order: the newer point already counted this
            reset = point.start_ns != start_ns or point.value < last
            amount = point.value if reset else point.value - last
        conn.execute(
            "INSERT OR REPLACE INTO series (key, start_ns, value, seen_ns) VALUES (?, ?, ?, ?)",
            (point.series, point.start_ns, point.value, point.time_ns),
        )
        return amount

    def add_spans(self, samples: Sequence[SpanSample]) -> int:
        """Add span samples (statistics, examples, step metadata) in one transaction."""
        if not samples:
            return 0
        groups: set[tuple[str, str, str, str, str, str]] = set()
        services: dict[str, tuple[int, int, int]] = {}  # roots, children, last seen
        with self._transaction() as conn:
            for s in samples:
                minute = s.end_ns // MINUTE_NS
                table = "page_load_stats" if s.source == BROWSER else "span_stats"
                key = (s.service, s.segment, s.journey, s.step)
                error = int(s.is_error)
                for at, suffix in ((minute, ""), (minute - minute % 60, HOURLY)):
                    conn.execute(
                        _ADD_SPAN[table + suffix],
                        (at, *key, s.satisfaction, s.reason, error, s.duration_ms, s.duration_ms),
                    )
                    if s.conversion_value is not None and s.source != BROWSER:
                        conn.execute(
                            _ADD_CONVERSION_VALUE["conversions" + suffix],
                            (at, *key, s.conversion_value, s.currency),
                        )
                conn.execute(
                    "INSERT INTO examples (end_ns, service, segment, journey, step, satisfaction,"
                    " reason, trace_id, span_id, duration_ms, is_error, http_status, source)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        s.end_ns,
                        s.service,
                        s.segment,
                        s.journey,
                        s.step,
                        s.satisfaction,
                        s.reason,
                        s.trace_id,
                        s.span_id,
                        s.duration_ms,
                        int(s.is_error),
                        s.http_status,
                        s.source,
                    ),
                )
                groups.add((s.source, s.segment, s.journey, s.step, s.satisfaction, s.reason))
                if s.threshold_ms or s.step_index:
                    self._note_step(conn, s)
                if s.source != BROWSER:
                    roots, children, seen_ns = services.get(s.service, (0, 0, 0))
                    services[s.service] = (
                        roots + s.is_root,
                        children + (not s.is_root),
                        max(seen_ns, s.end_ns),
                    )
            for service, (roots, children, seen_ns) in services.items():
                conn.execute(
                    "INSERT INTO services VALUES (?, ?, ?, ?) ON CONFLICT (service) DO UPDATE"
                    " SET root_spans = root_spans + excluded.root_spans,"
                    " child_spans = child_spans + excluded.child_spans,"
                    " seen_ns = max(seen_ns, excluded.seen_ns)",
                    (service, roots, children, seen_ns),
                )
            for group in groups:
                conn.execute(
                    "DELETE FROM examples WHERE source = ? AND segment = ? AND journey = ?"
                    " AND step = ? AND satisfaction = ? AND reason = ? AND id NOT IN ("
                    " SELECT id FROM examples WHERE source = ? AND segment = ? AND journey = ?"
                    " AND step = ? AND satisfaction = ? AND reason = ?"
                    " ORDER BY end_ns DESC LIMIT ?)",
                    (*group, *group, EXAMPLES_PER_GROUP),
                )
        return len(samples)

    def add_trace_spans(self, spans: Sequence[TraceSpan], *, keep: int = MAX_TRACE_SPANS) -> int:
        """Keep spans for the trace view, at most ``keep`` of them (the newest)."""
        if not spans:
            return 0
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO spans (trace_id, span_id, parent_span_id, service, name, kind,"
                " start_ns, end_ns, status, status_message, visit_id, satisfaction, attributes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                spans,
            )
            conn.execute("DELETE FROM spans WHERE id <= (SELECT max(id) FROM spans) - ?", (keep,))
        return len(spans)

    @staticmethod
    def _note_step(conn: sqlite3.Connection, s: SpanSample) -> None:
        server_t = 0 if s.source == BROWSER else s.threshold_ms
        page_t = s.threshold_ms if s.source == BROWSER else 0
        conn.execute(
            "INSERT INTO steps (journey, step, step_index, threshold_ms, page_threshold_ms,"
            " seen_ns) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (journey, step) DO UPDATE SET"
            " step_index = CASE WHEN excluded.step_index > 0 THEN excluded.step_index"
            " ELSE step_index END,"
            " threshold_ms = CASE WHEN excluded.threshold_ms > 0 THEN excluded.threshold_ms"
            " ELSE threshold_ms END,"
            " page_threshold_ms = CASE WHEN excluded.page_threshold_ms > 0"
            " THEN excluded.page_threshold_ms ELSE page_threshold_ms END,"
            " seen_ns = max(seen_ns, excluded.seen_ns)",
            (s.journey, s.step, s.step_index, server_t, page_t, s.end_ns),
        )

    # ------------------------------------------------------------------ retention

    def prune(self, now_ns: int) -> int:
        """Delete what is older than the retention; returns the rows deleted."""
        cutoff_ns = now_ns - int(self.retention_s * 1e9)
        cutoff_minute = cutoff_ns // MINUTE_NS
        deleted = 0
        with self._transaction() as conn:
            for table in _BUCKET_TABLES:
                deleted += conn.execute(
                    f"DELETE FROM {table} WHERE minute < ?",  # noqa: S608 - fixed names
                    (cutoff_minute,),
                ).rowcount
                # An hour partly inside the retention stays until all of it is out.
                deleted += conn.execute(
                    f"DELETE FROM {table}{HOURLY} WHERE minute < ?",  # noqa: S608
                    (cutoff_minute - cutoff_minute % 60,),
                ).rowcount
            deleted += conn.execute("DELETE FROM examples WHERE end_ns < ?", (cutoff_ns,)).rowcount
            deleted += conn.execute("DELETE FROM spans WHERE end_ns < ?", (cutoff_ns,)).rowcount
            deleted += conn.execute("DELETE FROM series WHERE seen_ns < ?", (cutoff_ns,)).rowcount
            deleted += conn.execute("DELETE FROM steps WHERE seen_ns < ?", (cutoff_ns,)).rowcount
            deleted += conn.execute("DELETE FROM services WHERE seen_ns < ?", (cutoff_ns,)).rowcount
        return deleted

    def table_rows(self) -> dict[str, int]:
        """Row count per table (for /api/health)."""
        with self.reader() as conn:
            return {
                table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
                for table in (
                    *_ALL_BUCKET_TABLES,
                    "examples",
                    "series",
                    "steps",
                    "services",
                    "spans",
                )
            }
