"""The local Customer Experience Cockpit (design.md section 9): ``cxtrace cockpit``.

An OTLP receiver (HTTP/protobuf and gRPC) that aggregates what any OpenTelemetry SDK sends
into an embedded SQLite database, and a page plus JSON API on loopback that show customer
satisfaction by segment and journey step.

    from cxtrace._cockpit import Cockpit
    cockpit = Cockpit("cockpit.sqlite3")
    cockpit.start()
    print(cockpit.page_url, cockpit.otlp_http_endpoint, cockpit.otlp_grpc_endpoint)
    cockpit.stop()

Modules: ``decode`` (protobuf -> records), ``store`` (SQLite, aggregation on ingest),
``receiver`` (OTLP HTTP + gRPC), ``queries`` (the views), ``page`` (HTML/SVG), ``web``
(page + ``/api/``), ``app`` (``Cockpit``). Needs ``opentelemetry-proto`` and, for gRPC,
``grpcio`` (``pip install 'cxtrace[cockpit]'``). Must not import the instrumentation
(``_api``, ``_integrations``, ``_telemetry``), and nothing there imports it.
"""

from __future__ import annotations

from cxtrace._cockpit.app import Cockpit

__all__ = ["Cockpit"]
