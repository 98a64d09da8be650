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

Closing is bounded. The SDK's ``force_flush`` waits for every queued batch whatever
timeout it is given, and a batch to a collector that accepts but never answers takes the
exporter's whole timeout (10 s) per attempt: ``shutdown(timeout_s=2)`` took 16-31 s against
a refused or black-holed collector. So flushing and shutting down run in a helper thread
that the caller waits for at most ``timeout_s``; past that, cxtrace gives up on what its
own exporters still hold (they drop it) and returns. At interpreter exit, cxtrace closes
the providers it built the same way within :data:`EXIT_TIMEOUT_S` (instead of the SDK's
exit hooks, which waited 21 s against a hung collector).

An exporter that starts failing is reported once on the ``cxtrace`` logger (WARNING, at
most every five minutes), and its recovery once (INFO): one line per outage, not one per
request or batch. The SDK's own exporter loggers say why, once per failed batch.

Imports: the OpenTelemetry API and SDK, ``cxtrace._core``, ``cxtrace._guard``.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
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

from cxtrace._core.config import Settings, mask_url
from cxtrace._core.locks import ForkSafeLock
from cxtrace._guard import Guard

__all__ = ["EXIT_TIMEOUT_S", "Providers", "build_providers"]

_log = logging.getLogger("cxtrace")

# Providers cxtrace built and has not shut down (or replaced after a fork) yet. A provider
# we built and later shut down stays the global one (OpenTelemetry allows setting it
# once), so a later instrument() must recognise it and build a fresh one instead of
# exporting into a corpse.
_alive: set[int] = set()
_built: dict[int, Any] = {}  # id -> provider; holding it keeps the id from being reused
_exporters: dict[int, Any] = {}  # id of a provider we built -> its (wrapped) exporters
_lock = ForkSafeLock()

# How long a forked child waits for the parent's (copied) metric readers to stop: their
# last collection goes to an exporter that drops it, so this is only a bound, not a wait.
_RETIRE_TIMEOUT_MS = 200

ForkListener = Callable[[Any, Any], None]

# The longest interpreter exit waits for cxtrace to flush what it built: the default of
# shutdown(timeout_s=...), well inside the grace periods process managers give.
EXIT_TIMEOUT_S = 5.0
# A failing exporter is reported at WARNING at most this often (and at DEBUG in between).
_WARN_EVERY_S = 300.0


def _in_time(work: Callable[[], None], timeout_s: float, what: str) -> bool:
    """Run ``work`` in a daemon thread; True if it finished within ``timeout_s``.

    Where no thread can be started (some Python 3.12 releases refuse new threads in exit
    hooks: "can't create new thread at interpreter shutdown"), ``work`` goes to the standby
    thread started with the providers; without one it runs here, bounded only by the SDK's
    own export timeouts.
    """
    done = threading.Event()
    gave_up = threading.Event()

    def run() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - the SDK raises when a reader fails to stop
            # After the deadline the caller has said why it gave up: no second warning.
            _log.log(logging.DEBUG if gave_up.is_set() else logging.WARNING, "%s: %s", what, exc)
        finally:
            done.set()

    try:
        threading.Thread(target=run, name="cxtrace-close", daemon=True).start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown"
        if not _standby.submit(run):
            run()
    if done.wait(max(timeout_s, 0.0)):
        return True
    gave_up.set()
    return False


class _Standby:
    """A thread started before it is needed, for the exit hook to close providers with.

    Python 3.12.1 (for one) refuses to start threads in exit hooks; a thread already
    running still runs there. One per process that has providers cxtrace built; a forked
    child starts its own when cxtrace renews its providers there.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._pid = 0

    def ensure(self) -> None:
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread.is_alive():
            return
        self._queue = queue.SimpleQueue()  # a forked child's copy may hold the parent's
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._serve, name="cxtrace-standby", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        jobs = self._queue
        while True:
            jobs.get()()

    def submit(self, work: Callable[[], None]) -> bool:
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            return False
        self._queue.put(work)
        return True


_standby = _Standby()


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

    def force_flush(self, timeout_s: float) -> bool:
        """Export what is buffered; waits at most ``timeout_s``. True if all went out."""
        return _in_time(lambda: _flush(self._flushable(), timeout_s), timeout_s, "flushing")

    def shutdown(self, timeout_s: float) -> None:
        """Flush everything; shut down only what cxtrace created; within ``timeout_s``."""
        owned = [
            provider
            for provider, is_ours in (
                (self.tracer_provider, self.owns_tracer_provider),
                (self.meter_provider, self.owns_meter_provider),
            )
            if is_ours
        ]
        for provider in owned:  # at once: a later instrument() must not reuse them
            _alive.discard(id(provider))
        _close(self._flushable(), owned, timeout_s, "cxtrace.shutdown()")

    def _flushable(self) -> list[Any]:
        return [self.tracer_provider, self.meter_provider]

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


def _flush(providers: Sequence[Any], timeout_s: float) -> None:
    millis = int(timeout_s * 1000)
    for provider in providers:
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush(millis)


def _close(flushed: Sequence[Any], owned: Sequence[Any], timeout_s: float, what: str) -> None:
    """Flush ``flushed`` and shut down ``owned`` (providers cxtrace built) within ``timeout_s``.

    Past the deadline, cxtrace's exporters of ``owned`` drop what they still hold and stop
    retrying; the helper thread then ends once an export in flight times out.
    """
    deadline = time.monotonic() + timeout_s

    def work() -> None:
        _flush(flushed, timeout_s)
        for provider in owned:
            if time.monotonic() >= deadline:
                return  # given up on: the exporters were abandoned
            if isinstance(provider, MeterProvider):
                left = max(deadline - time.monotonic(), 0.0)
                provider.shutdown(timeout_millis=left * 1000)
            else:
                provider.shutdown()

    if _in_time(work, timeout_s, what):
        return
    for provider in owned:
        for exporter in _exporters.get(id(provider), ()):
            exporter.abandon()
    _log.warning(
        "%s: telemetry was not exported within %.1f s (is the collector reachable?); "
        "dropped what was left",
        what,
        timeout_s,
    )


def _close_at_exit() -> None:
    """The exit hook: close what cxtrace built and nobody shut down, within EXIT_TIMEOUT_S."""
    with _lock:
        owned = [
            part.provider
            for build in _builds
            for part in (build.tracing, build.metering)
            if part is not None and id(part.provider) in _alive
        ]
        for provider in owned:
            _alive.discard(id(provider))
    if owned:
        _close(owned, owned, EXIT_TIMEOUT_S, "exiting")


atexit.register(_close_at_exit)  # the providers we build do not register the SDK's own


# --------------------------------------------------------------------------- exporters


class _Health:
    """Reports an exporter's outages on the ``cxtrace`` logger: one line each way."""

    __slots__ = ("_failing", "_warned_at", "what")

    def __init__(self, signal: str, exporter: Any) -> None:
        endpoint = getattr(exporter, "_endpoint", None)  # the SDK's OTLP exporters have one
        where = mask_url(endpoint) if isinstance(endpoint, str) else type(exporter).__name__
        self.what = f"exporting {signal} to {where}"
        self._failing = False
        self._warned_at: Optional[float] = None

    def saw(self, ok: bool) -> None:
        if ok:
            if self._failing:
                self._failing = False
                _log.info("%s works again", self.what)
            return
        if self._failing:
            return
        self._failing = True
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            _log.warning(
                "%s failed; telemetry is dropped until it works again (the "
                "opentelemetry.exporter loggers say why); requests are unaffected",
                self.what,
            )
        else:
            _log.debug("%s failed again", self.what)


class _ProcessLocalExporter:
    """What the span and metric exporter wrappers share: pid check, health, abandon."""

    def __init__(self, exporter: Any, signal: str) -> None:
        self._exporter = exporter
        self._pid = os.getpid()
        self._health = _Health(signal, exporter)
        self._abandoned = False
        self._closed = False
        self._close_lock = threading.Lock()

    def _is_ours(self) -> bool:
        return os.getpid() == self._pid and not self._abandoned

    def abandon(self) -> None:
        """Drop whatever comes from now on and stop the exporter's retries (closing ran
        out of time: the collector does not answer)."""
        self._abandoned = True
        if os.getpid() == self._pid:
            self._close_exporter()

    def _close_exporter(self, **kwargs: Any) -> None:
        with self._close_lock:  # once: the SDK warns about a second shutdown
            if self._closed:
                return
            self._closed = True
        try:
            self._exporter.shutdown(**kwargs)
        except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail
            _log.debug("closing %r failed: %s", self._exporter, exc)


class _ProcessLocalSpanExporter(_ProcessLocalExporter, SpanExporter):
    """A span exporter only the process that built it uses; elsewhere it drops.

    A forked child inherits the parent's batch processor with this exporter: what is queued
    there is the parent's to send, and the exporter's connections are the parent's too.
    """

    def __init__(self, exporter: SpanExporter) -> None:
        _ProcessLocalExporter.__init__(self, exporter, "spans")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if os.getpid() != self._pid:
            return SpanExportResult.SUCCESS
        if self._abandoned:
            return SpanExportResult.FAILURE
        result: SpanExportResult = self._exporter.export(spans)
        if not self._abandoned:  # else cxtrace said already why it gave up
            self._health.saw(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        if os.getpid() == self._pid:
            self._close_exporter()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if not self._is_ours():
            return True
        return bool(self._exporter.force_flush(timeout_millis))


class _ProcessLocalMetricExporter(_ProcessLocalExporter, MetricExporter):
    """A metric exporter only the process that built it uses; elsewhere it drops."""

    def __init__(self, exporter: MetricExporter) -> None:
        # PeriodicExportingMetricReader reads its exporter's preferences from these
        # attributes; hand the real exporter's through.
        MetricExporter.__init__(
            self,
            preferred_temporality=exporter._preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
        )
        _ProcessLocalExporter.__init__(self, exporter, "metrics")

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if os.getpid() != self._pid:
            return MetricExportResult.SUCCESS
        if self._abandoned:
            return MetricExportResult.FAILURE
        result: MetricExportResult = self._exporter.export(
            metrics_data, timeout_millis=timeout_millis, **kwargs
        )
        if not self._abandoned:
            self._health.saw(result is MetricExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        if not self._is_ours():
            return True
        return bool(self._exporter.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if os.getpid() == self._pid:
            self._close_exporter(timeout_millis=timeout_millis, **kwargs)


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
        # No SDK exit hook: cxtrace's own (_close_at_exit) closes it within a deadline.
        self.provider = TracerProvider(
            resource=resource, active_span_processor=self.pipeline, shutdown_on_exit=False
        )
        self.exporting: list[SpanProcessor] = []
        self.exporters: list[_ProcessLocalExporter] = []
        for kind in settings.traces_exporters:
            exporter = _ProcessLocalSpanExporter(_span_exporter(kind, settings.traces_protocol))
            self.exporters.append(exporter)
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
        exporters = [
            _ProcessLocalMetricExporter(_metric_exporter(kind, settings.metrics_protocol))
            for kind in settings.metrics_exporters
        ]
        self.exporters: list[_ProcessLocalExporter] = list(exporters)
        self.readers: list[MetricReader] = [
            PeriodicExportingMetricReader(exporter) for exporter in exporters
        ]
        self.provider = MeterProvider(
            metric_readers=self.readers, resource=resource, shutdown_on_exit=False
        )

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
                _exporters[id(part.provider)] = part.exporters
                _alive.add(id(part.provider))
        _builds.add(self)
        _standby.ensure()
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
