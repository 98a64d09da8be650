"""WSGI plumbing shared by every WSGI framework: the request view and the body watcher.

A span ends when the body is done, not when the app returns: :class:`WatchedBody`
stands in for the response iterable, transparently, and finishes the request on
``close()``, which PEP 3333 servers call after the last byte was sent or when the client
went away.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional

from cxtrace._core.request import split_host
from cxtrace._guard import Guard
from cxtrace._patch import ObjectProxy
from cxtrace._telemetry.recorder import Recorder, RequestState

__all__ = ["WatchedBody", "WsgiView", "traced_wsgi_call", "watched"]

_START = Guard("wsgi.start")
_STATUS = Guard("wsgi.start_response")
_FINISH = Guard("wsgi.finish")
_FAIL = Guard("wsgi.error")
_ENTER = Guard("wsgi.body_context")
_VISIT = Guard("wsgi.visit")


class WsgiView:
    """A :class:`~cxtrace._telemetry.recorder.ServerRequest` over a WSGI environ.

    Plain fields read once here (C-level dict lookups) rather than properties: each
    property read is a Python call on every request.
    """

    __slots__ = (
        "_environ",
        "client_address",
        "method",
        "path",
        "protocol_version",
        "query",
        "scheme",
        "user_agent",
    )

    def __init__(self, environ: dict[str, Any]) -> None:
        self._environ = environ
        get = environ.get
        self.method: str = get("REQUEST_METHOD") or "GET"
        self.path: str = (get("SCRIPT_NAME") or "") + (get("PATH_INFO") or "") or "/"
        self.scheme: str = get("wsgi.url_scheme") or "http"
        self.query: str = get("QUERY_STRING") or ""
        client = get("REMOTE_ADDR")
        self.client_address: Optional[str] = client if isinstance(client, str) and client else None
        agent = get("HTTP_USER_AGENT")
        self.user_agent: Optional[str] = agent if isinstance(agent, str) else None
        proto = get("SERVER_PROTOCOL")
        self.protocol_version: Optional[str] = (
            proto[5:] if isinstance(proto, str) and proto.startswith("HTTP/") else None
        )

    def header(self, environ_key: str) -> Optional[str]:
        value = self._environ.get(environ_key)
        return value if isinstance(value, str) else None

    @property
    def server(self) -> tuple[Optional[str], Optional[int]]:
        """(server.address, server.port): from ``Host``, else SERVER_NAME / SERVER_PORT."""
        environ = self._environ
        host = environ.get("HTTP_HOST")
        address: Optional[str]
        port: Any
        if isinstance(host, str) and host:
            address, port = split_host(host)
        else:
            address, port = environ.get("SERVER_NAME") or None, environ.get("SERVER_PORT")
        if port is None:
            return address, 443 if self.scheme == "https" else 80
        try:
            return address, int(port)
        except ValueError:
            return address, None


if TYPE_CHECKING:
    _BodyProxy = ObjectProxy[Iterable[bytes]]
else:
    _BodyProxy = ObjectProxy  # wrapt 1.x proxies take no type arguments at run time


class WatchedBody(_BodyProxy):
    """The app's WSGI response iterable, watched; the request finishes on ``close()``.

    A transparent proxy: the host, the server and the app's own middleware still see the
    object the app returned (Django's ``HttpResponse`` with its ``status_code``, a
    ``wsgi.file_wrapper`` that servers send with ``sendfile``, a list's ``len``). Only
    iteration and ``close()`` are cxtrace's, and both hand the host's own results and
    exceptions through unchanged.
    """

    __slots__ = ("_self_state",)
    _self_state: RequestState

    def __iter__(self) -> Iterator[bytes]:
        if self._self_state.body_in_memory:
            return self._in_memory()
        return self._streamed()

    def _in_memory(self) -> Iterator[bytes]:
        # The framework said the body is already in memory (state.body_in_memory): its
        # iteration runs the framework's own code only, so no context to re-enter.
        try:
            yield from self.__wrapped__
        except Exception as exc:
            try:
                self._self_state.fail(exc)
            except Exception as own:  # noqa: BLE001 - a guard
                _FAIL.swallow(own)
            raise

    def _streamed(self) -> Iterator[bytes]:
        # Each chunk is produced inside the request's context, so a streamed body (a
        # generator, stream_with_context) still sees its request: spans it starts are
        # children of the server span and set_segment()/mark_conversion() still count.
        # Entered per chunk, not across yields: the server owns the thread between chunks.
        # Guards as ``try`` (see cxtrace._guard): this runs twice per request at least.
        state = self._self_state
        chunks = iter(self.__wrapped__)
        while True:
            tokens = None
            try:
                tokens = state.enter()
            except Exception as exc:  # noqa: BLE001 - a guard
                _ENTER.swallow(exc)
            try:
                chunk = next(chunks)  # the host's code
            except StopIteration:
                return
            except Exception as exc:
                try:
                    state.fail(exc)
                except Exception as own:  # noqa: BLE001 - a guard
                    _FAIL.swallow(own)
                raise
            finally:
                if tokens is not None:
                    try:
                        state.leave(tokens)
                    except Exception as exc:  # noqa: BLE001 - a guard
                        _ENTER.swallow(exc)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.__wrapped__, "close", None)
            if close is not None:
                close()  # the host's code: its exceptions are its own
        finally:
            try:
                self._self_state.finish()
            except Exception as exc:  # noqa: BLE001 - a guard
                _FINISH.swallow(exc)


def watched(body: Iterable[bytes], state: RequestState) -> WatchedBody:
    """``body`` behind a :class:`WatchedBody` that finishes ``state`` on close."""
    proxy = WatchedBody(body)  # wrapt's own (C) __init__: no Python frame per request
    proxy._self_state = state
    return proxy


def traced_wsgi_call(
    recorder: Recorder,
    wrapped: Callable[..., Iterable[bytes]],
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    *,
    defer_span: bool = False,
) -> Iterable[bytes]:
    """Run one WSGI call traced: begin, the app, then watch the body until close()."""
    # Guards as ``try`` where they run on every request (see cxtrace._guard).
    state = None
    try:
        state = recorder.begin(WsgiView(environ), defer_span=defer_span)
    except Exception as exc:  # noqa: BLE001 - a guard
        _START.swallow(exc)
    if state is None:  # excluded, nested, disabled, or our start failed
        return wrapped(environ, start_response)

    def traced_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        try:
            state.status = int(status[:3])
        except Exception as exc:  # noqa: BLE001 - a guard
            _STATUS.swallow(exc)
        if state.visit is not None:
            try:
                added = state.visit_headers()
                if added:  # a new list: the app's own stays as it made it
                    headers = [*headers, *added]
            except Exception as exc:  # noqa: BLE001 - a guard
                _VISIT.swallow(exc)
        if exc_info is None:
            return start_response(status, headers)
        return start_response(status, headers, exc_info)

    try:
        body = wrapped(environ, traced_start_response)  # the host's code: never in a guard
    except Exception as exc:
        with _FINISH:
            state.fail(exc)
            state.detach()
            state.finish()
        raise
    except BaseException:  # KeyboardInterrupt, SystemExit: still leave our context tidy
        with _FINISH:
            state.detach()
            state.finish()
        raise
    try:
        state.detach()
        return watched(body, state)
    except Exception as exc:  # noqa: BLE001 - a guard
        _FINISH.swallow(exc)
    return body  # reached only if wrapping failed: the body is still the app's own
