"""ASGI plumbing shared by ASGI frameworks: the request view and the traced call.

The request finishes when the last body message (``more_body`` false) has been sent,
or when the app returns or fails without sending one (client gone, cancelled).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Callable, Optional

from cxtrace._core.request import split_host
from cxtrace._guard import Guard
from cxtrace._telemetry.recorder import Recorder

__all__ = ["AsgiView", "scope_header", "traced_asgi_call"]

_START = Guard("asgi.start")
_SEND = Guard("asgi.send")
_FINISH = Guard("asgi.finish")
_VISIT = Guard("asgi.visit")


def scope_header(scope: dict[str, Any], name: bytes) -> Optional[str]:
    """The first value of header ``name`` (lowercase bytes) in an ASGI scope, or None."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1") if isinstance(value, bytes) else None
    return None


def scope_cookies(scope: dict[str, Any]) -> Optional[str]:
    """Every ``cookie`` header of an ASGI scope joined with ``; `` (HTTP/2 sends one per
    cookie; RFC 9113 section 8.2.3), or None."""
    values = [
        value.decode("latin-1")
        for key, value in scope.get("headers") or ()
        if key == b"cookie" and isinstance(value, bytes)
    ]
    return "; ".join(values) if values else None


class AsgiView:
    """A :class:`~cxtrace._telemetry.recorder.ServerRequest` over an ASGI HTTP scope."""

    __slots__ = ("_scope", "method", "path", "query", "scheme")

    def __init__(self, scope: dict[str, Any]) -> None:
        self._scope = scope
        self.method: str = scope.get("method") or "GET"
        self.path: str = (scope.get("root_path") or "") + (scope.get("path") or "") or "/"
        self.scheme: str = scope.get("scheme") or "http"
        raw = scope.get("query_string") or b""
        self.query: str = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)

    def header(self, environ_key: str) -> Optional[str]:
        # HTTP_X_CUSTOMER_TIER -> b"x-customer-tier"; a handful of lookups per request.
        if not environ_key.startswith("HTTP_"):
            return None
        if environ_key == "HTTP_COOKIE":
            return scope_cookies(self._scope)
        return scope_header(
            self._scope, environ_key[5:].lower().replace("_", "-").encode("latin-1")
        )

    @property
    def server(self) -> tuple[Optional[str], Optional[int]]:
        """(server.address, server.port): from ``Host``, else the scope's ``server``."""
        host = self.header("HTTP_HOST")
        server = self._scope.get("server")
        address: Optional[str]
        port: Optional[str] = None
        if host:
            address, port = split_host(host)
        else:
            address = str(server[0]) if server else None
        if port is not None:
            try:
                return address, int(port)
            except ValueError:
                return address, None
        if server and len(server) > 1 and server[1] is not None:
            return address, int(server[1])
        return address, 443 if self.scheme == "https" else 80

    @property
    def client_address(self) -> Optional[str]:
        client = self._scope.get("client")
        return str(client[0]) if client else None

    @property
    def user_agent(self) -> Optional[str]:
        return self.header("HTTP_USER_AGENT")

    @property
    def protocol_version(self) -> Optional[str]:
        version = self._scope.get("http_version")
        return str(version) if version else None


Send = Callable[[dict[str, Any]], Awaitable[None]]


async def traced_asgi_call(
    recorder: Recorder,
    wrapped: Callable[..., Awaitable[None]],
    scope: dict[str, Any],
    receive: Any,
    send: Send,
    *,
    defer_span: bool = False,
) -> None:
    """Run one ASGI HTTP call traced; other scope types pass straight through."""
    if scope.get("type") != "http":
        return await wrapped(scope, receive, send)
    state = None
    with _START:
        state = recorder.begin(AsgiView(scope), defer_span=defer_span)
    if state is None:
        return await wrapped(scope, receive, send)

    async def traced_send(message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            with _SEND:
                state.status = int(message.get("status", 0))
            if state.visit is not None:
                with _VISIT:
                    added = state.visit_headers()
                    if added:  # a new message: the app's own stays as it made it
                        message = {
                            **message,
                            "headers": [
                                *message.get("headers", ()),
                                *(
                                    (n.lower().encode("latin-1"), v.encode("latin-1"))
                                    for n, v in added
                                ),
                            ],
                        }
        await send(message)  # the host's server: its errors are its own
        if kind == "http.response.body" and not message.get("more_body", False):
            with _FINISH:
                state.finish()

    try:
        await wrapped(scope, receive, traced_send)
    except Exception as exc:
        with _FINISH:
            state.fail(exc)
        raise
    finally:
        with _FINISH:
            state.detach()
            state.finish()  # no-op if the last body message already finished it
    return None
