"""Outbound HTTP calls: client spans, W3C trace context and trusted CX baggage.

A client integration (``requests``) asks :meth:`ClientRecorder.start` for a
:class:`ClientCall`, sends the headers it returns, then ends it with the status or the
exception. CX entries (``cx.segment``, ``cx.journey``, ``cx.step``, and ``cx.sig`` when
``CXTRACE_PROPAGATION_KEY`` is set) go only to hosts matching ``CXTRACE_PROPAGATE_TO``;
every host gets ``traceparent``. ``user.hash`` is never propagated.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Optional, Union
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import (
    _SUPPRESS_HTTP_INSTRUMENTATION_KEY,
    _SUPPRESS_INSTRUMENTATION_KEY,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from cxtrace._core.baggage import CX_VISIT, outbound_header
from cxtrace._core.config import Settings
from cxtrace._core.journeys import HTTP_METHODS
from cxtrace._core.privacy import UNKNOWN, redact_query, strip_credentials
from cxtrace._telemetry import semconv as sc
from cxtrace._telemetry.recorder import Recorder, current_request, exception_type

__all__ = ["ClientCall", "ClientRecorder"]


_Hosts = tuple[Optional[re.Pattern[str]], Optional[re.Pattern[str]]]


def _host_patterns(globs: tuple[str, ...]) -> Optional[_Hosts]:
    """CXTRACE_PROPAGATE_TO compiled: (globs on the host, globs on ``host:port``).

    None means every host. A glob with a port (``api.internal:8443``, ``[::1]:8080``) is
    matched against the host and the port called, a default port included; one without
    against the host alone. An IPv6 host is written as in a URL, ``[::1]``: those brackets
    are literal, not a character set.
    """
    if "*" in globs:
        return None
    names: list[str] = []
    authorities: list[str] = []
    for glob in globs:
        close = glob.find("]")
        host_end = close + 1 if glob.startswith("[") and ":" in glob[1:close] else 0
        pattern = glob
        if host_end:
            pattern = "[[]" + glob[1 : host_end - 1] + "[]]" + glob[host_end:]
        has_port = ":" in glob[host_end:]
        (authorities if has_port else names).append(fnmatch.translate(pattern))
    return (
        re.compile("|".join(names)) if names else None,
        re.compile("|".join(authorities)) if authorities else None,
    )


class ClientRecorder:
    """Outbound calls for one instrumentation; everything decided at instrument()."""

    def __init__(self, recorder: Recorder, settings: Settings) -> None:
        self.recorder = recorder
        self.key = settings.propagation_key
        self.hosts = _host_patterns(settings.propagate_to)

    def start(self, method: str, url: str, headers: Any) -> Optional[ClientCall]:
        """Begin one call; ``headers`` (a mutable mapping) gets the propagation headers."""
        if not self.recorder.active:
            return None
        ctx = otel_context.get_current()
        if ctx.get(_SUPPRESS_INSTRUMENTATION_KEY):
            return None
        call = ClientCall(self, method)
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        try:
            port = parts.port
        except ValueError:
            port = None
        port = port or (443 if parts.scheme == "https" else 80 if parts.scheme else None)
        if not ctx.get(_SUPPRESS_HTTP_INSTRUMENTATION_KEY):
            # No one traced this call yet (an OpenTelemetry contrib instrumentation around
            # us sets the key while it calls through): ours is the one client span.
            upper = method.upper()
            known = upper if upper in HTTP_METHODS else sc.OTHER_METHOD
            attributes: dict[str, Union[str, int]] = {
                sc.HTTP_REQUEST_METHOD: known,
                sc.URL_FULL: _safe_url(url, parts.query),
            }
            if known is sc.OTHER_METHOD:
                attributes[sc.HTTP_REQUEST_METHOD_ORIGINAL] = method
            if host:
                attributes[sc.SERVER_ADDRESS] = host
            if port:
                attributes[sc.SERVER_PORT] = port
            span = self.recorder.tracer.start_span(
                sc.span_method(known),
                kind=SpanKind.CLIENT,
                attributes=attributes,
            )
            call.span = span
            ctx = trace.set_span_in_context(span, ctx)
            # Nested HTTP instrumentations (urllib3, contrib requests) see the call traced.
            ctx = otel_context.set_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY, True, ctx)
            call.token = otel_context.attach(ctx)
            propagate.inject(headers, context=ctx)
        self._add_cx(headers, host, port, ctx)
        return call

    def _receives_cx(self, host: str, port: Optional[int]) -> bool:
        if self.hosts is None:
            return True
        names, authorities = self.hosts
        name = f"[{host}]" if ":" in host else host  # IPv6, bracketed as in the glob
        if names is not None and names.match(name):
            return True
        return (
            authorities is not None
            and port is not None
            and bool(authorities.match(f"{name}:{port}"))
        )

    def _add_cx(self, headers: Any, host: str, port: Optional[int], ctx: Any) -> None:
        state = current_request()
        cx: dict[str, str] = {}
        if state is not None and self._receives_cx(host, port):
            if state.segment != UNKNOWN:
                cx[sc.CX_SEGMENT] = state.segment
            step = state.step
            if step is not None:
                cx[sc.CX_STEP] = step.step
                if step.journey is not None:
                    cx[sc.CX_JOURNEY] = step.journey
            visit = state.visit
            if visit is not None and self.key:  # an id of a customer's visit: signed only
                cx[CX_VISIT] = visit.id
        existing = headers.get("baggage")
        if not cx and (existing is None or "cx." not in existing):
            return
        span_context = trace.get_current_span(ctx).get_span_context()
        trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
        value = outbound_header(existing, cx, trace_id=trace_id, key=self.key)
        if value:
            headers["baggage"] = value
        elif existing is not None:
            del headers["baggage"]  # only relayed cx.* entries were in it


def _safe_url(url: str, query: str) -> str:
    """url.full without user:password@ and with secret query values redacted."""
    safe = strip_credentials(url)
    if query:
        redacted = redact_query(query)
        if redacted is not query:
            safe = safe.replace("?" + query, "?" + redacted, 1)
    return safe


class ClientCall:
    """One outbound call in flight."""

    __slots__ = ("client", "method", "span", "token")

    def __init__(self, client: ClientRecorder, method: str) -> None:
        self.client = client
        self.method = method
        self.span: Any = None
        self.token: Any = None

    def detach(self) -> None:
        if self.token is not None:
            otel_context.detach(self.token)
            self.token = None

    def end(self, status: int = 0, error: Optional[BaseException] = None) -> None:
        span = self.span
        if span is None:
            return
        self.span = None
        if span.is_recording():
            error_type = None
            if error is not None:
                error_type = exception_type(error)
                span.record_exception(error)
            elif status >= 400:
                error_type = str(status)
            attrs: dict[str, Union[str, int]] = {}
            if status:
                attrs[sc.HTTP_RESPONSE_STATUS_CODE] = status
            if error_type is not None:
                attrs[sc.ERROR_TYPE] = error_type
                span.set_status(Status(StatusCode.ERROR, error_type))
            span.set_attributes(attrs)
        span.end()
