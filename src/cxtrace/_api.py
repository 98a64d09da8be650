"""The public entry points: instrument(), uninstrument(), shutdown() and the request API.

``instrument()`` decides everything once (configuration, providers, matcher, patches)
and returns the :class:`Instrumentation` handle; the request-time functions
(``set_segment``, ``set_user``, ``mark_conversion``, ``step``) act on the request
being served in the current context and do nothing outside one.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union, cast

from cxtrace._core.config import INTEGRATIONS, Settings, is_disabled, load_settings
from cxtrace._core.errors import ConfigError
from cxtrace._core.journeys import Journey
from cxtrace._core.rum import SafeHtml, checked_nonce
from cxtrace._guard import Guard
from cxtrace._patch import Patcher
from cxtrace._telemetry.bootstrap import Providers, build_providers
from cxtrace._telemetry.recorder import (
    CxSpanProcessor,
    Recorder,
    check_conversion_value,
    current_request,
)
from cxtrace._telemetry.rum import RumRecorder

if TYPE_CHECKING:
    from cxtrace._integrations.rum import Script

__all__ = [
    "Instrumentation",
    "instrument",
    "mark_conversion",
    "rum_snippet",
    "set_segment",
    "set_user",
    "shutdown",
    "step",
    "uninstrument",
]

_log = logging.getLogger("cxtrace")

try:
    from importlib.metadata import version as _dist_version

    __version__ = _dist_version("cxtrace")
except Exception:  # noqa: BLE001 - running from a source tree without metadata
    __version__ = "0.0.0"

F = TypeVar("F", bound=Callable[..., Any])


class Instrumentation:
    """The handle ``instrument()`` returns: what got instrumented and where it exports.

    >>> handle = cxtrace.instrument()          # doctest: +SKIP
    >>> handle.integrations                    # doctest: +SKIP
    ('flask',)
    """

    def __init__(
        self,
        settings: Settings,
        providers: Optional[Providers],
        recorder: Optional[Recorder],
        integrations: tuple[str, ...],
    ) -> None:
        self.settings = settings
        self.integrations = integrations
        self._providers = providers
        self._recorder = recorder
        self._patcher = Patcher()
        self._rum: Optional[RumRecorder] = None  # CXTRACE_RUM=true (docs/rum.md)

    @property
    def enabled(self) -> bool:
        return self._recorder is not None and self._recorder.active

    @property
    def tracer_provider(self) -> Any:
        return self._providers.tracer_provider if self._providers else None

    @property
    def meter_provider(self) -> Any:
        return self._providers.meter_provider if self._providers else None

    def force_flush(self, timeout_s: float = 5.0) -> None:
        """Export what is buffered now (spans and metrics)."""
        if self._providers is not None:
            self._providers.force_flush(timeout_s)

    def __repr__(self) -> str:
        return (
            f"<cxtrace.Instrumentation integrations={self.integrations!r} enabled={self.enabled}>"
        )


Instrumentation.__module__ = "cxtrace"

_lock = threading.Lock()
_handle: Optional[Instrumentation] = None
_retired: Optional[Providers] = None  # providers of an uninstrumented handle, not shut down
_processor_active = False  # read by the span processor we added to a provider


def _reinit_lock_after_fork() -> None:
    global _lock  # noqa: PLW0603 - a lock held by another thread at fork() is dead in the child
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_lock_after_fork)


def _is_processor_active() -> bool:
    return _processor_active


def _installer(name: str) -> Optional[Callable[[Recorder, Patcher], str]]:
    """The function that patches one integration, imported only when asked for."""
    if name == "flask":
        from cxtrace._integrations.flask import instrument_flask  # noqa: PLC0415

        return instrument_flask
    if name == "django":
        from cxtrace._integrations.django import instrument_django  # noqa: PLC0415

        return instrument_django
    if name == "requests":
        from cxtrace._integrations.requests import instrument_requests  # noqa: PLC0415

        return instrument_requests
    return None


def instrument(
    *,
    service_name: Optional[str] = None,
    apdex_threshold_ms: Optional[float] = None,
    journeys: Optional[Iterable[Journey]] = None,
    segment: Optional[Callable[[Any], Optional[str]]] = None,
    user: Optional[Callable[[Any], Union[str, int, None]]] = None,
    integrations: Optional[Iterable[str]] = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Instrumentation:
    """Trace Flask (and, as they land, Django and requests) with customer-experience context.

    >>> import cxtrace
    >>> cxtrace.instrument(service_name="shop", apdex_threshold_ms=300)  # doctest: +SKIP

    Keyword arguments override ``CXTRACE_*`` / ``OTEL_*`` environment variables, which
    override the journeys file, which overrides defaults. Raises :class:`cxtrace.ConfigError`
    for invalid configuration. Idempotent: a second call returns the same handle.
    """
    global _handle, _processor_active, _retired  # noqa: PLW0603 - the one process-wide handle
    handle = _handle
    if handle is not None:  # lock-free fast path
        _log_again(handle)
        return handle
    with _lock:
        if _handle is not None:
            _log_again(_handle)
            return _handle
        environ = os.environ
        if is_disabled(environ):
            # A no-op by design: nothing else is read, so a broken config can be switched off.
            _log.info("cxtrace disabled by CXTRACE_ENABLED; nothing instrumented")
            _handle = Instrumentation(Settings(enabled=False), None, None, ())
            return _handle
        settings = load_settings(
            environ,
            service_name=service_name,
            apdex_threshold_ms=apdex_threshold_ms,
            journeys=journeys,
            segment=segment,
            user=user,
            integrations=integrations,
        )
        if settings.sdk_disabled:
            _log.info("OTEL_SDK_DISABLED=true: cxtrace instruments nothing")
            _handle = Instrumentation(settings, None, None, ())
            return _handle
        providers = build_providers(
            settings, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        recorder = Recorder(
            settings, providers.tracer_provider, providers.meter_provider, __version__
        )
        providers.on_fork(recorder.bind)  # a forked child gets fresh providers (bootstrap)
        add_processor = getattr(providers.tracer_provider, "add_span_processor", None)
        if add_processor is not None:
            processor = _added_processor(providers.tracer_provider)
            if processor is None:
                processor = CxSpanProcessor(_is_processor_active)
                add_processor(processor)
                _remember_processor(providers.tracer_provider, processor)
        else:
            _log.warning(
                "the tracer provider %r cannot take span processors: spans started inside a "
                "request will not carry cx.* attributes",
                providers.tracer_provider,
            )
        handle = Instrumentation(settings, providers, recorder, ())
        if settings.rum:
            handle._rum = _build_rum(settings, providers, recorder)
        requested = settings.integrations
        enabled = []
        for name in requested if requested is not None else INTEGRATIONS:
            detail = _enable(name, recorder, handle._patcher, explicit=requested is not None)
            if detail is not None:
                if handle._rum is not None and _enable_rum(name, handle._rum, handle._patcher):
                    detail += " with real-user monitoring"
                enabled.append(detail)
        handle.integrations = tuple(d.split(" ", 1)[0] for d in enabled)
        _processor_active = True
        _handle = handle
        _retired = None  # bootstrap reused them if they were alive: the new handle owns them
        journeys_desc = (
            ", ".join(f"{j.name} ({len(j.steps)} steps)" for j in settings.journeys) or "none"
        )
        visits_desc = ""
        if settings.visits:
            visits_desc = f"; visits: cookie {settings.visit_cookie}, {settings.visit_timeout_s} s"
        _log.info(
            "cxtrace %s instrumented %s; exporting %s; journeys: %s%s",
            __version__,
            ", ".join(enabled) or "nothing",
            providers.destination,
            journeys_desc,
            visits_desc,
        )
        return handle


# Span processors we added, per provider: a provider cannot drop a processor, so a later
# instrument() on the same provider reuses ours instead of stacking a second one. Held by
# weak reference to the provider, never by id(): a provider collected and a new one made
# at the same address would otherwise get no processor at all (its spans then lacked the
# cx.* attributes; seen on CI, tests/test_coexistence.py).
_processors: weakref.WeakKeyDictionary[Any, CxSpanProcessor] = weakref.WeakKeyDictionary()
_unweakable: list[tuple[Any, CxSpanProcessor]] = []  # providers that take no weak reference


def _added_processor(provider: Any) -> Optional[CxSpanProcessor]:
    try:
        return _processors.get(provider)
    except TypeError:  # not weak-referenceable (or unhashable): kept alive, compared by identity
        return next((p for owner, p in _unweakable if owner is provider), None)


def _remember_processor(provider: Any, processor: CxSpanProcessor) -> None:
    try:
        _processors[provider] = processor
    except TypeError:
        _unweakable.append((provider, processor))


def _enable(name: str, recorder: Recorder, patcher: Patcher, *, explicit: bool) -> Optional[str]:
    installer = _installer(name)
    if installer is None:
        log = _log.warning if explicit else _log.debug
        log("the %s integration is not available in this version; not enabled", name)
        return None
    try:
        return installer(recorder, patcher)
    except ImportError as exc:
        log = _log.warning if explicit else _log.debug
        log("%s is not installed (%s); the %s integration is not enabled", name, exc, name)
    except RuntimeError as exc:  # an unsupported version
        _log.warning("the %s integration is not enabled: %s", name, exc)
    return None


def _build_rum(settings: Settings, providers: Providers, recorder: Recorder) -> RumRecorder:
    rum = RumRecorder(
        settings,
        providers.tracer_provider,
        providers.meter_provider,
        __version__,
        recorder.segments,
    )
    providers.on_fork(rum.bind)
    return rum


def _enable_rum(name: str, rum: RumRecorder, patcher: Patcher) -> bool:
    """RUM's endpoint and injection, outermost on top of the integration ``name``."""
    from cxtrace._integrations.rum import enable_rum, load_script  # noqa: PLC0415

    global _script  # noqa: PLW0603 - read once per process, shared by every integration
    try:
        if _script is None:
            _script = load_script()
        return enable_rum(name, rum, patcher, _script)
    except Exception as exc:  # noqa: BLE001 - the app starts anyway, without RUM there
        _log.warning("real-user monitoring is not enabled for %s: %r", name, exc)
        return False


_script: Optional[Script] = None  # the browser script, read once


def _log_again(handle: Instrumentation) -> None:
    _log.debug("cxtrace.instrument() called again; returning the existing %r", handle)


def uninstrument() -> None:
    """Restore every function cxtrace patched; spans already started still finish."""
    global _handle, _processor_active, _retired  # noqa: PLW0603
    with _lock:
        handle, _handle = _handle, None
        _processor_active = False
        if handle is None:
            return
        if handle._recorder is not None:
            handle._recorder.active = False
        handle._patcher.undo()
        _retired = handle._providers  # still exporting until shutdown() or a new instrument()


def shutdown(timeout_s: float = 5.0) -> None:
    """Flush spans and metrics, then close the providers cxtrace itself created.

    Other providers (the app's own) are flushed, never shut down. Also uninstruments.
    """
    global _retired
    uninstrument()
    with _lock:
        providers, _retired = _retired, None
    if providers is not None:
        providers.shutdown(timeout_s)


# --------------------------------------------------------------------------- request API

_SET_SEGMENT = Guard("set_segment")
_SET_USER = Guard("set_user")
_CONVERSION = Guard("mark_conversion")
_STEP = Guard("step")
_SNIPPET = Guard("rum_snippet")


def set_segment(name: str) -> None:
    """Set the customer segment of the current request (bounded as ``CXTRACE_SEGMENTS`` says).

    >>> cxtrace.set_segment("enterprise")  # doctest: +SKIP
    """
    state = current_request()
    if state is not None:
        with _SET_SEGMENT:
            state.set_segment(state.recorder.segments.admit(name))


def set_user(user_id: Union[str, int]) -> None:
    """Identify the current request's user; exported only as ``user.hash`` (keyed HMAC)."""
    state = current_request()
    if state is not None:
        with _SET_USER:
            state.set_user(user_id)


def mark_conversion(*, value: Optional[float] = None, currency: Optional[str] = None) -> None:
    """Count the current request as a conversion (if it succeeds), with an optional value.

    >>> cxtrace.mark_conversion(value=49.90, currency="EUR")  # doctest: +SKIP

    Raises TypeError / ValueError for a value that is not a finite number or a currency
    that is not a three-letter code: a programming error, caught where it is made.
    """
    checked = check_conversion_value(value)
    if currency is not None and (
        not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha()
    ):
        raise ValueError(
            f"mark_conversion(currency={currency!r}): expected an ISO 4217 code like 'EUR'"
        )
    state = current_request()
    if state is not None:
        with _CONVERSION:
            state.mark_conversion(checked, currency.upper() if currency else None)


class _StepMarker:
    """``cxtrace.step(name)``: a decorator and a context manager naming the request's step."""

    __slots__ = ("journey", "name")

    def __init__(self, name: str, journey: Optional[str]) -> None:
        self.name = name
        self.journey = journey

    def _mark(self) -> None:
        state = current_request()
        if state is not None:
            with _STEP:
                state.set_step(state.recorder.matcher.named(self.name, self.journey))

    def __enter__(self) -> _StepMarker:
        self._mark()
        return self

    def __exit__(
        self,
        typ: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        return None

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_marked(*args: Any, **kwargs: Any) -> Any:
                self._mark()
                return await fn(*args, **kwargs)

            return cast("F", async_marked)

        @functools.wraps(fn)
        def marked(*args: Any, **kwargs: Any) -> Any:
            self._mark()
            return fn(*args, **kwargs)

        return cast("F", marked)


def step(name: str, *, journey: Optional[str] = None) -> _StepMarker:
    """Name the journey step of the current request, in code (beats route and path rules).

    As a decorator::

        @app.post("/orders")
        @cxtrace.step("purchase", journey="purchase")
        def create_order(): ...

    or a context manager::

        with cxtrace.step("checkout"):
            ...

    Outside a traced request it does nothing.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"step(name={name!r}): expected a non-empty string")
    if journey is not None and (not isinstance(journey, str) or not journey.strip()):
        raise ConfigError(f"step(journey={journey!r}): expected a non-empty string")
    return _StepMarker(name.strip(), journey.strip() if journey else None)


def rum_snippet(nonce: Optional[str] = None) -> str:
    """The real-user-monitoring tags for the page being rendered, for a template's ``<head>``.

    Jinja::

        <head>{{ rum_snippet(nonce=csp_nonce()) }}</head>   {# e.g. app.jinja_env.globals #}

    Django (a callable in the context is called by the template)::

        render(request, "page.html", {"rum_snippet": cxtrace.rum_snippet})
        <head>{{ rum_snippet }}</head>

    Returns markup (``__html__``) that templates insert without escaping: a
    ``<meta name="traceparent">`` and ``<script src="/_cxtrace/rum.js" async data-cx=...>``
    carrying ``nonce`` when given (a CSP nonce). A page that has it is not injected again.
    Empty outside a traced request or unless ``CXTRACE_RUM=true``. See docs/rum.md.
    """
    handle = _handle
    rum = handle._rum if handle is not None else None
    state = current_request()
    tag = None
    if rum is not None and state is not None:
        with _SNIPPET:
            tag = rum.page_tag(state, checked_nonce(nonce))
    return SafeHtml(tag or "")
