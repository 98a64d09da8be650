"""requests: one client span per call, trace context and trusted CX baggage injected.

Patched on ``requests.Session.send``: every call passes there, ``requests.get()`` and
friends included (they build a Session), and it sees the final ``PreparedRequest`` after
auth and redirects are prepared. OpenTelemetry's contrib instrumentation patches the same
funnel for the same reason (see its ``_instrument`` comment on requests' own
``Session.request`` delegating to ``send``). Redirects re-enter ``send``: one span per hop.
"""

from __future__ import annotations

from typing import Any

from cxtrace._core.config import Settings
from cxtrace._guard import Guard
from cxtrace._integrations.versions import require
from cxtrace._patch import Patcher
from cxtrace._telemetry.client import ClientRecorder
from cxtrace._telemetry.recorder import Recorder

__all__ = ["MIN_VERSION", "instrument_requests"]

MIN_VERSION = (2, 0)
_START = Guard("requests.start")
_END = Guard("requests.end")


def instrument_requests(recorder: Recorder, patcher: Patcher) -> str:
    """Patch requests; returns a description or raises ImportError / RuntimeError."""
    import requests  # noqa: PLC0415 - optional

    _, text = require("requests", MIN_VERSION, "requests")
    settings: Settings = recorder.settings
    client = ClientRecorder(recorder, settings)

    def send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        request = args[0] if args else kwargs.get("request")
        call = None
        with _START:
            if request is not None:
                call = client.start(str(request.method or "GET"), str(request.url), request.headers)
        if call is None:
            return wrapped(*args, **kwargs)
        try:
            response = wrapped(*args, **kwargs)  # the host's call: never inside a guard
        except Exception as exc:
            with _END:
                call.detach()
                call.end(error=exc)
            raise
        with _END:
            call.detach()
            call.end(status=int(getattr(response, "status_code", 0) or 0))
        return response

    patcher.wrap(requests.Session, "send", send)
    return f"requests {text}"
