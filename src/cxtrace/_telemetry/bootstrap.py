"""Providers and exporters: use the app's, or build them from ``OTEL_*`` like the SDK would.

``instrument()`` with no SDK configured builds a TracerProvider and a MeterProvider
(resource, sampler, batch span processor, periodic metric reader and exporters all
read their ``OTEL_*`` variables through the SDK itself) and installs them as the
global providers. With providers already set, cxtrace uses them and builds nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Optional

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from cxtrace._core.config import Settings

__all__ = ["Providers", "build_providers"]

_log = logging.getLogger("cxtrace")

# Providers cxtrace built and has not shut down yet. A provider we built and later shut
# down stays the global one (OpenTelemetry allows setting it once), so a later
# instrument() must recognise it and build a fresh one instead of exporting into a corpse.
_alive: set[int] = set()
_built: dict[int, Any] = {}  # id -> provider; holding it keeps the id from being reused
_lock = threading.Lock()


@dataclass
class Providers:
    tracer_provider: Any  # trace.TracerProvider; Any because apps may bring their own class
    meter_provider: Any
    owns_tracer_provider: bool
    owns_meter_provider: bool
    destination: str  # for the one INFO line: where telemetry goes

    def force_flush(self, timeout_s: float) -> None:
        millis = int(timeout_s * 1000)
        for provider in (self.tracer_provider, self.meter_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                flush(millis)

    def shutdown(self, timeout_s: float) -> None:
        """Flush everything; shut down only what cxtrace created."""
        self.force_flush(timeout_s)
        if self.owns_tracer_provider:
            _alive.discard(id(self.tracer_provider))
            self.tracer_provider.shutdown()
        if self.owns_meter_provider:
            _alive.discard(id(self.meter_provider))
            self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)


def _span_exporter(kind: str, protocol: str) -> SpanExporter:
    if kind == "console":
        return ConsoleSpanExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def _metric_exporter(kind: str, protocol: str) -> MetricExporter:
    if kind == "console":
        return ConsoleMetricExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter()


# The API's placeholders: nothing configured yet (proxy) or the SDK disabled (no-op).
_PLACEHOLDERS = frozenset(
    {"ProxyTracerProvider", "_ProxyMeterProvider", "NoOpTracerProvider", "NoOpMeterProvider"}
)


def _is_usable(provider: Any) -> bool:
    """An app-provided provider, or one we built that is still alive."""
    if provider is None or type(provider).__name__ in _PLACEHOLDERS:
        return False
    if id(provider) in _built:
        return id(provider) in _alive
    return True


def _is_placeholder(provider: Any) -> bool:
    return type(provider).__name__ in _PLACEHOLDERS


def build_providers(
    settings: Settings, *, tracer_provider: Any = None, meter_provider: Any = None
) -> Providers:
    with _lock:
        resource: Optional[Resource] = None

        def get_resource() -> Resource:
            nonlocal resource
            if resource is None:
                extra = {SERVICE_NAME: settings.service_name} if settings.service_name else {}
                resource = Resource.create(extra)
            return resource

        destinations = []
        tp = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        owns_tp = False
        if not _is_usable(tp):
            tp = TracerProvider(resource=get_resource())
            for kind in settings.traces_exporters:
                tp.add_span_processor(
                    BatchSpanProcessor(_span_exporter(kind, settings.traces_protocol))
                )
                destinations.append(
                    f"traces:{kind}" + (f"/{settings.traces_protocol}" if kind == "otlp" else "")
                )
            owns_tp = True
            _built[id(tp)] = tp
            _alive.add(id(tp))
            if _is_placeholder(trace.get_tracer_provider()):
                trace.set_tracer_provider(tp)
        elif id(tp) in _alive:  # ours from an earlier instrument(): still ours to shut down
            owns_tp = True
            destinations.append("traces:cxtrace's provider (reused)")
        else:
            destinations.append("traces:app's provider")

        mp = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        owns_mp = False
        if not _is_usable(mp):
            readers: list[MetricReader] = [
                PeriodicExportingMetricReader(_metric_exporter(kind, settings.metrics_protocol))
                for kind in settings.metrics_exporters
            ]
            destinations.extend(
                f"metrics:{kind}" + (f"/{settings.metrics_protocol}" if kind == "otlp" else "")
                for kind in settings.metrics_exporters
            )
            mp = MeterProvider(metric_readers=readers, resource=get_resource())
            owns_mp = True
            _built[id(mp)] = mp
            _alive.add(id(mp))
            if _is_placeholder(metrics.get_meter_provider()):
                metrics.set_meter_provider(mp)
        elif id(mp) in _alive:
            owns_mp = True
            destinations.append("metrics:cxtrace's provider (reused)")
        else:
            destinations.append("metrics:app's provider")
        return Providers(tp, mp, owns_tp, owns_mp, ", ".join(destinations) or "nowhere")
