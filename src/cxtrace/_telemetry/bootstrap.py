"""Providers and exporters: use the app's, or build them from ``OTEL_*`` like the SDK would.

``instrument()`` with no SDK configured builds a TracerProvider and a MeterProvider
(resource, sampler, batch span processor, periodic metric reader and exporters all
read their ``OTEL_*`` variables through the SDK itself) and installs them as the
global providers. With providers already set, cxtrace uses them and builds nothing.

The resource cxtrace builds carries a ``service.instance.id`` of its own (a uuid4 per
process) unless ``OTEL_RESOURCE_ATTRIBUTES`` sets one: cumulative metric streams of
two processes of one service then never collide in the backend.

Pre-fork servers (gunicorn, above all with ``--preload``; ``cxtrace run`` instruments the
master too) fork after cxtrace has started. In the child, what cxtrace built is replaced::

    parent (master)                        forked child (worker), in os.register_at_fork
    ---------------                        ----------------------------------------------
    TracerProvider T                       TracerProvider T2: new resource (own
      pipeline: BSP -> exporter              service.instance.id), new BSP thread, new
      + processors others added              exporter (new connections); the processors
                                             others added to T carried over.
                                           T's pipeline relays to T2's, so a tracer taken
                                             before the fork exports from the child; T's
                                             BSP is shut down (the SDK already dropped the
                                             parent's queue there).
    MeterProvider M                        MeterProvider M2: new resource, reader, exporter;
      reader -> exporter                     M's readers shut down: what M counted in the
                                             parent is the parent's to export.
    global providers = T, M                global providers = T2, M2; Recorder re-bound.

Every exporter cxtrace builds is wrapped so that only the process that built it uses it:
a child's copy of the parent's exporter drops what it is given and never touches the
parent's connections (an HTTP keep-alive socket, a gRPC channel) — whatever the order in
which fork handlers run, and even if rebuilding failed.

Imports: the OpenTelemetry API and SDK, ``cxtrace._core``, ``cxtrace._guard``.
"""

from __future__ import annotations

import atexit
import logging
import os
import uuid
import weakref
from collections.abc import Sequence
from typing import Any, Callable, Optional

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import (
    ReadableSpan,
    Span,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from cxtrace._core.config import Settings
from cxtrace._core.locks import ForkSafeLock
from cxtrace._guard import Guard

__all__ = ["Providers", "build_providers"]

_log = logging.getLogger("cxtrace")

# Providers cxtrace built and has not shut down (or replaced after a fork) yet. A provider
# we built and later shut down stays the global one (OpenTelemetry allows setting it
# once), so a later instrument() must recognise it and build a fresh one instead of
# exporting into a corpse.
_alive: set[int] = set()
_built: dict[int, Any] = {}  # id -> provider; holding it keeps the id from being reused
_lock = ForkSafeLock()

# How long a forked child waits for the parent's (copied) metric readers to stop: their
# last collection goes to an exporter that drops it, so this is only a bound, not a wait.
_RETIRE_TIMEOUT_MS = 200

ForkListener = Callable[[Any, Any], None]


class Providers:
    """The providers cxtrace records into, and which of them it built (owns)."""

    def __init__(
        self,
        tracer_provider: Any,  # trace.TracerProvider; Any because apps may bring their own
        meter_provider: Any,
        *,
        owns_tracer_provider: bool,
        owns_meter_provider: bool,
        destination: str,  # for the one INFO line: where telemetry goes
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.owns_tracer_provider = owns_tracer_provider
        self.owns_meter_provider = owns_meter_provider
        self.destination = destination
        self._fork_listeners: list[ForkListener] = []
        _handles.add(self)

    def on_fork(self, listener: ForkListener) -> None:
        """Call ``listener(tracer_provider, meter_provider)`` in a forked child, once
        cxtrace has replaced the providers it owns there (``Recorder.bind``)."""
        self._fork_listeners.append(listener)

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

    def _replace(self, old: Any, new: Any) -> bool:
        if self.tracer_provider is old:
            self.tracer_provider = new
            return True
        if self.meter_provider is old:
            self.meter_provider = new
            return True
        return False


# Every Providers handed out, so that a forked child can point them at the replacements.
_handles: weakref.WeakSet[Providers] = weakref.WeakSet()


# --------------------------------------------------------------------------- exporters


class _ProcessLocalSpanExporter(SpanExporter):
    """A span exporter only the process that built it uses; elsewhere it drops.

    A forked child inherits the parent's batch processor with this exporter: what is queued
    there is the parent's to send, and the exporter's connections are the parent's too.
    """

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self._pid = os.getpid()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if os.getpid() != self._pid:
            return SpanExportResult.SUCCESS
        return self._exporter.export(spans)

    def shutdown(self) -> None:
        if os.getpid() == self._pid:
            self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if os.getpid() != self._pid:
            return True
        return self._exporter.force_flush(timeout_millis)


class _ProcessLocalMetricExporter(MetricExporter):
    """A metric exporter only the process that built it uses; elsewhere it drops."""

    def __init__(self, exporter: MetricExporter) -> None:
        # PeriodicExportingMetricReader reads its exporter's preferences from these
        # attributes; hand the real exporter's through.
        super().__init__(
            preferred_temporality=exporter._preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
        )
        self._exporter = exporter
        self._pid = os.getpid()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if os.getpid() != self._pid:
            return MetricExportResult.SUCCESS
        return self._exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        if os.getpid() != self._pid:
            return True
        return self._exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if os.getpid() == self._pid:
            self._exporter.shutdown(timeout_millis=timeout_millis, **kwargs)


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


# --------------------------------------------------------------------------- what we build


def _resource(settings: Settings) -> Resource:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, detectors), plus a
    ``service.instance.id`` of this process unless the environment names one."""
    extra = {SERVICE_NAME: settings.service_name} if settings.service_name else {}
    resource = Resource.create(extra)
    if SERVICE_INSTANCE_ID in OTELResourceDetector().detect().attributes:
        return resource  # the operator's choice; they make it unique per process
    return resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))


class _Pipeline(SynchronousMultiSpanProcessor):
    """The span processors of a TracerProvider cxtrace built.

    In a forked child the provider's successor takes over: this pipeline then relays
    every call to the successor's, so tracers taken before the fork (a module-level
    ``trace.get_tracer(__name__)`` in a preloaded app) keep working, from the child.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated
        self.added: list[SpanProcessor] = []  # in order; carried over to a successor
        self._relay: Optional[SynchronousMultiSpanProcessor] = None

    def relay_to(self, successor: SynchronousMultiSpanProcessor) -> None:
        self._relay = successor

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        relay = self._relay
        if relay is not None:
            relay.add_span_processor(span_processor)
            return
        super().add_span_processor(span_processor)
        self.added.append(span_processor)

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        relay = self._relay
        if relay is None:
            super().on_start(span, parent_context=parent_context)
        else:
            relay.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:  # the SDK calls it from 1.3x on
        relay = self._relay
        if relay is None:
            super()._on_ending(span)
        else:
            relay._on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        relay = self._relay
        if relay is None:
            super().on_end(span)
        else:
            relay.on_end(span)

    def shutdown(self) -> None:
        if self._relay is None:  # else the successor's provider shuts the processors down
            super().shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        relay = self._relay
        if relay is None:
            return super().force_flush(timeout_millis)
        return relay.force_flush(timeout_millis)


class _Tracing:
    """A TracerProvider cxtrace built, with the batch processors that export for it."""

    def __init__(self, settings: Settings, resource: Resource) -> None:
        self.settings = settings
        self.pipeline = _Pipeline()
        self.provider = TracerProvider(resource=resource, active_span_processor=self.pipeline)
        self.exporting: list[SpanProcessor] = []
        for kind in settings.traces_exporters:
            exporter = _ProcessLocalSpanExporter(_span_exporter(kind, settings.traces_protocol))
            processor = BatchSpanProcessor(exporter)
            self.provider.add_span_processor(processor)
            self.exporting.append(processor)

    def successor(self, resource: Resource) -> _Tracing:
        """In a forked child: a fresh provider that takes this one's place."""
        new = _Tracing(self.settings, resource)
        for processor in self.pipeline.added:  # cxtrace's own and the app's, in order
            if processor not in self.exporting:
                new.provider.add_span_processor(processor)
        self.pipeline.relay_to(new.pipeline)
        atexit.unregister(self.provider.shutdown)  # the successor flushes at exit
        for processor in self.exporting:
            # The SDK has already emptied its queue in this child and restarted its
            # thread; stop that thread. Its exporter is the parent's: it drops.
            processor.shutdown()
        return new


class _Metrics:
    """A MeterProvider cxtrace built, with the readers that export for it."""

    def __init__(self, settings: Settings, resource: Resource) -> None:
        self.settings = settings
        self.readers: list[MetricReader] = [
            PeriodicExportingMetricReader(
                _ProcessLocalMetricExporter(_metric_exporter(kind, settings.metrics_protocol))
            )
            for kind in settings.metrics_exporters
        ]
        self.provider = MeterProvider(metric_readers=self.readers, resource=resource)

    def successor(self, resource: Resource) -> _Metrics:
        """In a forked child: a fresh provider that takes this one's place.

        The copy of the parent's provider holds the parent's counts, under the parent's
        resource: exported from here they would be counted twice (or fight the parent's
        cumulative streams), so its readers stop and it exports nothing from now on.
        Instruments taken from it before the fork record into it unseen; cxtrace's own
        are re-taken from the successor (``Recorder.bind``).
        """
        new = _Metrics(self.settings, resource)
        atexit.unregister(self.provider.shutdown)
        for reader in self.readers:
            reader.shutdown(timeout_millis=_RETIRE_TIMEOUT_MS)
        return new


_AFTER_FORK = Guard("renewing telemetry providers after fork")


class _Build:
    """What one build_providers() call created; renewed in every forked child."""

    def __init__(
        self, settings: Settings, tracing: Optional[_Tracing], metering: Optional[_Metrics]
    ) -> None:
        self.settings = settings
        self.tracing = tracing
        self.metering = metering
        for part in (tracing, metering):
            if part is not None:
                _built[id(part.provider)] = part.provider
                _alive.add(id(part.provider))
        _builds.add(self)
        # Registered after the SDK objects above registered theirs, so in the child the
        # SDK has already re-created their locks and threads when ours runs.
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def after_in_child() -> None:
                build = ref()
                if build is not None:
                    with _AFTER_FORK:
                        build.renew()

            os.register_at_fork(after_in_child=after_in_child)

    def is_alive(self) -> bool:
        return any(
            part is not None and id(part.provider) in _alive
            for part in (self.tracing, self.metering)
        )

    def renew(self) -> None:
        """In a forked child: successors for what this build made that is still in use."""
        with _lock:
            tracing = self.tracing
            metering = self.metering
            if tracing is not None and id(tracing.provider) not in _alive:
                tracing = None  # shut down before the fork: nothing to renew
            if metering is not None and id(metering.provider) not in _alive:
                metering = None
            if tracing is None and metering is None:
                return
            resource = _resource(self.settings)
            replaced: list[tuple[Any, Any]] = []
            new_tracing = new_metering = None
            if tracing is not None:
                new_tracing = tracing.successor(resource)
                replaced.append((tracing.provider, new_tracing.provider))
                _replace_global_tracer_provider(tracing.provider, new_tracing.provider)
            if metering is not None:
                new_metering = metering.successor(resource)
                replaced.append((metering.provider, new_metering.provider))
                _replace_global_meter_provider(metering.provider, new_metering.provider)
            for old, _ in replaced:
                _alive.discard(id(old))
            _builds.discard(self)  # the successors' build renews from now on
            _Build(self.settings, new_tracing, new_metering)
            listeners: list[tuple[Providers, ForkListener]] = []
            for handle in list(_handles):
                changed = [handle._replace(old, new) for old, new in replaced]
                if any(changed):
                    listeners.extend((handle, listener) for listener in handle._fork_listeners)
        _log.debug("process %d: renewed cxtrace's telemetry providers after fork", os.getpid())
        for handle, listener in listeners:
            listener(handle.tracer_provider, handle.meter_provider)


# Builds whose providers may still be in use; a fork handler only holds a weak reference.
_builds: set[_Build] = set()


def _replace_global_tracer_provider(old: Any, new: Any) -> None:
    # The API sets its global provider once per process; a forked child inherits the
    # parent's. cxtrace installed `old`, so it swaps in the child's successor (only while
    # `old` is still the global), the same attribute OpenTelemetry's own test helpers reset.
    if trace._TRACER_PROVIDER is old:
        trace._TRACER_PROVIDER = new


def _replace_global_meter_provider(old: Any, new: Any) -> None:
    if metrics_internal._METER_PROVIDER is old:
        metrics_internal._METER_PROVIDER = new


# --------------------------------------------------------------------------- selection

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


def _describe(signal: str, kind: str, protocol: str) -> str:
    return f"{signal}:{kind}" + (f"/{protocol}" if kind == "otlp" else "")


def build_providers(
    settings: Settings, *, tracer_provider: Any = None, meter_provider: Any = None
) -> Providers:
    with _lock:
        resource: Optional[Resource] = None

        def get_resource() -> Resource:
            nonlocal resource
            if resource is None:
                resource = _resource(settings)
            return resource

        destinations: list[str] = []
        tracing: Optional[_Tracing] = None
        tp = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        owns_tp = False
        if not _is_usable(tp):
            tracing = _Tracing(settings, get_resource())
            tp = tracing.provider
            destinations.extend(
                _describe("traces", kind, settings.traces_protocol)
                for kind in settings.traces_exporters
            )
            owns_tp = True
            if _is_placeholder(trace.get_tracer_provider()):
                trace.set_tracer_provider(tp)
        elif id(tp) in _alive:  # ours from an earlier instrument(): still ours to shut down
            owns_tp = True
            destinations.append("traces:cxtrace's provider (reused)")
        else:
            destinations.append("traces:app's provider")

        metering: Optional[_Metrics] = None
        mp = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        owns_mp = False
        if not _is_usable(mp):
            metering = _Metrics(settings, get_resource())
            mp = metering.provider
            destinations.extend(
                _describe("metrics", kind, settings.metrics_protocol)
                for kind in settings.metrics_exporters
            )
            owns_mp = True
            if _is_placeholder(metrics.get_meter_provider()):
                metrics.set_meter_provider(mp)
        elif id(mp) in _alive:
            owns_mp = True
            destinations.append("metrics:cxtrace's provider (reused)")
        else:
            destinations.append("metrics:app's provider")

        providers = Providers(
            tp,
            mp,
            owns_tracer_provider=owns_tp,
            owns_meter_provider=owns_mp,
            destination=", ".join(destinations) or "nowhere",
        )
        for build in [b for b in _builds if not b.is_alive()]:
            _builds.discard(build)  # everything it made was shut down
        if tracing is not None or metering is not None:
            _Build(settings, tracing, metering)
        return providers
