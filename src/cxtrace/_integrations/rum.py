"""Real-user monitoring in the frameworks: the ``/_cxtrace/`` endpoints and the injection.

Installed by ``instrument()`` only when ``CXTRACE_RUM=true`` (nothing of it runs per request
otherwise), after the framework's own integration, so its wrappers are the outermost:

- the WSGI / ASGI funnel (``Flask.__call__``, Django's ``WSGIHandler.__call__`` and
  ``ASGIHandler.__call__``) answers ``POST /_cxtrace/rum`` (beacons) and
  ``GET /_cxtrace/rum.js`` (the script) itself: the app, its middleware and the request
  tracing never see them;
- the framework's finished response object (``Flask.finalize_request``; Django's
  ``BaseHandler.get_response`` / ``get_response_async``, outside every middleware) gets the
  tags before ``</head>`` when it is ``text/html``, complete (not streamed), not encoded
  (no ``Content-Encoding``); the framework's own setter fixes ``Content-Length``.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from importlib import resources
from typing import Any, Callable, Final, Optional

from cxtrace._core.rum import (
    BEACON_PATH,
    MAX_BEACON_BYTES,
    SCRIPT_PATH,
    Rejected,
    check_request,
    csp_nonce,
    injection_point,
    is_injectable_type,
)
from cxtrace._guard import Guard
from cxtrace._integrations.asgi import scope_header
from cxtrace._patch import Patcher
from cxtrace._telemetry.recorder import current_request
from cxtrace._telemetry.rum import RumRecorder

__all__ = ["Script", "enable_rum", "load_script"]

_BEACON = Guard("rum.beacon")
_INJECT = Guard("rum.inject")

_PATHS: Final = frozenset({BEACON_PATH, SCRIPT_PATH})
_CSP: Final = "Content-Security-Policy"
_CSP_REPORT_ONLY: Final = "Content-Security-Policy-Report-Only"


class Script:
    """The browser script, read once from the package: plain and gzip bytes, ETag."""

    __slots__ = ("etag", "gzipped", "plain")

    def __init__(self, plain: bytes) -> None:
        self.plain = plain
        self.gzipped = gzip.compress(plain, compresslevel=9, mtime=0)
        self.etag = '"' + hashlib.sha256(plain).hexdigest()[:16] + '"'

    def answer(
        self, method: str, accept_encoding: Optional[str], if_none_match: Optional[str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for a request of the script."""
        if method not in ("GET", "HEAD"):
            return 405, [("Allow", "GET, HEAD"), ("Content-Length", "0")], b""
        headers = [
            ("Content-Type", "text/javascript; charset=utf-8"),
            ("Cache-Control", "public, max-age=3600"),
            ("ETag", self.etag),
            ("Vary", "Accept-Encoding"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if if_none_match is not None and self.etag in if_none_match:
            return 304, headers, b""
        body = self.plain
        if accept_encoding is not None and "gzip" in accept_encoding.lower():
            body = self.gzipped
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        return 200, headers, b"" if method == "HEAD" else body


def load_script() -> Script:
    source = resources.files("cxtrace").joinpath("_rum/cxtrace-rum.js")
    return Script(source.read_bytes())


_REASONS: Final = {
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
}


def _beacon_status(  # noqa: PLR0917 - one request's parts, from WSGI or ASGI alike
    rum: RumRecorder,
    method: str,
    content_type: Optional[str],
    content_length: Optional[str],
    read: Callable[[int], bytes],
    user_agent: Optional[str],
) -> int:
    """Check, read and record one beacon request; every rejection counted. Never raises."""
    status = 400
    with _BEACON:
        try:
            if method != "POST":
                raise Rejected("method", 405)
            length = check_request(content_type, content_length)
            body = read(length)
            if len(body) != length:
                raise Rejected("malformed")
            rum.receive(body, user_agent=user_agent, now_s=time.time())
            status = 204
        except Rejected as rejected:
            rum.reject(rejected.cause)
            status = rejected.status
    return status


def _beacon_headers(status: int) -> list[tuple[str, str]]:
    """Headers of the (empty) answer to a beacon request, over WSGI or ASGI alike."""
    headers = [("Cache-Control", "no-store")]
    if status == 405:
        headers.append(("Allow", "POST"))
    if status != 204:
        headers.append(("Content-Length", "0"))
    return headers


# --------------------------------------------------------------------------- WSGI


def _read_wsgi(environ: dict[str, Any]) -> Callable[[int], bytes]:
    def read(length: int) -> bytes:
        stream = environ.get("wsgi.input")
        if stream is None:
            return b""
        try:
            data: bytes = stream.read(length)
        except (OSError, ValueError):  # the client went away mid-body: a short body
            return b""
        return data

    return read


def _wsgi_endpoint(
    rum: RumRecorder, script: Script
) -> Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]:
    def call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs or len(args) != 2:
            return wrapped(*args, **kwargs)
        environ, start_response = args
        path = environ.get("PATH_INFO")
        if path not in _PATHS:
            return wrapped(environ, start_response)
        if environ.get("SCRIPT_NAME"):  # a mounted app: /_cxtrace/ lives at the root only
            return wrapped(environ, start_response)
        method = environ.get("REQUEST_METHOD") or "GET"
        if path == SCRIPT_PATH:
            status, headers, body = script.answer(
                method, environ.get("HTTP_ACCEPT_ENCODING"), environ.get("HTTP_IF_NONE_MATCH")
            )
        else:
            status = _beacon_status(
                rum,
                method,
                environ.get("CONTENT_TYPE"),
                environ.get("CONTENT_LENGTH"),
                _read_wsgi(environ),
                environ.get("HTTP_USER_AGENT"),
            )
            headers = _beacon_headers(status)
            body = b""
        start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
        return [body] if body else []

    return call


# --------------------------------------------------------------------------- ASGI


async def _read_asgi(receive: Any, limit: int) -> bytes:
    """The request body, at most ``limit`` + 1 bytes (more means a lying Content-Length)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            break  # http.disconnect
        chunk = message.get("body") or b""
        size += len(chunk)
        chunks.append(chunk)
        if size > limit or not message.get("more_body", False):
            break
    return b"".join(chunks)[: limit + 1]


def _asgi_endpoint(
    rum: RumRecorder, script: Script
) -> Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]:
    def call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs or len(args) != 3:
            return wrapped(*args, **kwargs)
        scope = args[0]
        path = scope.get("path") if scope.get("type") == "http" else None
        if path not in _PATHS or scope.get("root_path"):
            return wrapped(*args)
        return _answer_asgi(rum, script, *args)

    return call


async def _answer_asgi(
    rum: RumRecorder, script: Script, scope: dict[str, Any], receive: Any, send: Any
) -> None:
    method = scope.get("method") or "GET"
    if scope.get("path") == SCRIPT_PATH:
        status, headers, body = script.answer(
            method, scope_header(scope, b"accept-encoding"), scope_header(scope, b"if-none-match")
        )
    else:
        received = b""
        content_type = scope_header(scope, b"content-type")
        content_length = scope_header(scope, b"content-length")
        if method == "POST":
            try:
                declared = check_request(content_type, content_length)
            except Rejected:
                declared = 0  # _beacon_status rejects it again, and counts it
            if declared:
                received = await _read_asgi(receive, min(declared, MAX_BEACON_BYTES))
        status = _beacon_status(
            rum,
            method,
            content_type,
            content_length,
            lambda length: received,
            scope_header(scope, b"user-agent"),
        )
        headers = _beacon_headers(status)
        body = b""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --------------------------------------------------------------------------- injection


def _injected(rum: RumRecorder, body: bytes, policy: Optional[str]) -> Optional[bytes]:
    """``body`` with the page's tags, or None to leave it as it is."""
    at = injection_point(body)
    if at is None:
        return None
    state = current_request()
    if state is None:  # not a traced request (excluded, or another app's)
        return None
    tag = rum.page_tag(state, csp_nonce(policy))
    if tag is None:
        return None
    return body[:at] + tag.encode("ascii") + body[at:]


def inject_flask(rum: RumRecorder, response: Any) -> None:
    if response.is_streamed or response.direct_passthrough:
        return
    headers = response.headers
    if not is_injectable_type(headers.get("Content-Type")) or "Content-Encoding" in headers:
        return
    new = _injected(rum, response.get_data(), headers.get(_CSP) or headers.get(_CSP_REPORT_ONLY))
    if new is not None:
        response.set_data(new)  # werkzeug sets Content-Length


def inject_django(rum: RumRecorder, response: Any) -> None:
    if getattr(response, "streaming", True):
        return
    if not is_injectable_type(response.get("Content-Type")) or response.has_header(
        "Content-Encoding"
    ):
        return
    new = _injected(rum, response.content, response.get(_CSP) or response.get(_CSP_REPORT_ONLY))
    if new is not None:
        response.content = new
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(new))


def _injecting(
    rum: RumRecorder, inject: Callable[[RumRecorder, Any], None]
) -> Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]:
    def call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        response = wrapped(*args, **kwargs)  # the host's code: never inside a guard
        try:  # a guard as ``try`` on this per-response path (see cxtrace._guard)
            inject(rum, response)
        except Exception as exc:  # noqa: BLE001 - a guard
            _INJECT.swallow(exc)
        return response

    return call


def _injecting_async(
    rum: RumRecorder, inject: Callable[[RumRecorder, Any], None]
) -> Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]:
    def call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        async def run() -> Any:
            response = await wrapped(*args, **kwargs)
            try:  # a guard as ``try`` (see cxtrace._guard)
                inject(rum, response)
            except Exception as exc:  # noqa: BLE001 - a guard
                _INJECT.swallow(exc)
            return response

        return run()

    return call


# --------------------------------------------------------------------------- install


def enable_rum(name: str, rum: RumRecorder, patcher: Patcher, script: Script) -> bool:
    """Install RUM on top of the integration ``name`` (enabled already); False: none there."""
    if name == "flask":
        import flask  # noqa: PLC0415 - the framework is optional

        patcher.wrap(flask.Flask, "finalize_request", _injecting(rum, inject_flask))
        patcher.wrap(flask.Flask, "__call__", _wsgi_endpoint(rum, script))
    elif name == "django":
        from django.core.handlers.asgi import ASGIHandler  # noqa: PLC0415
        from django.core.handlers.base import BaseHandler  # noqa: PLC0415
        from django.core.handlers.wsgi import WSGIHandler  # noqa: PLC0415

        patcher.wrap(BaseHandler, "get_response", _injecting(rum, inject_django))
        patcher.wrap(BaseHandler, "get_response_async", _injecting_async(rum, inject_django))
        patcher.wrap(WSGIHandler, "__call__", _wsgi_endpoint(rum, script))
        patcher.wrap(ASGIHandler, "__call__", _asgi_endpoint(rum, script))
    else:  # requests: a client, no pages
        return False
    return True
