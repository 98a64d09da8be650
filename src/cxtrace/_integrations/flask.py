"""Flask: every app, created before or after ``instrument()``.

Patches on the ``Flask`` class, so apps built before setup and apps whose ``wsgi_app``
was replaced by middleware are covered alike:

- ``Flask.__call__``: the WSGI funnel; the span lives from here until the body closes.
- ``Flask.full_dispatch_request``: runs after URL matching, inside the request context,
  before ``before_request`` handlers; gives the route template, the step and the
  ``segment=`` / ``user=`` resolvers their ``flask.request``.
- ``Flask.handle_exception``: an exception no error handler took: the request is an error.
  (These two take ``(e)`` up to Flask 3.1 and ``(ctx, e)`` on Flask's main branch.)
- ``Flask.handle_user_exception``: an exception the app's own handler may turn into a
  response; it is recorded on the span and the response status decides the outcome.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from cxtrace._guard import Guard
from cxtrace._integrations.versions import require
from cxtrace._integrations.wsgi import traced_wsgi_call
from cxtrace._patch import Patcher
from cxtrace._telemetry.recorder import Recorder, current_request

__all__ = ["MIN_VERSION", "exception_arg", "instrument_flask"]

_log = logging.getLogger("cxtrace")

MIN_VERSION = (2, 2)
_RESOLVE = Guard("flask.resolve")
_ERROR = Guard("flask.error")
_DISPATCHED = Guard("flask.dispatched")


def instrument_flask(recorder: Recorder, patcher: Patcher) -> str:
    """Patch Flask; returns a description or raises ImportError / RuntimeError."""
    import flask  # noqa: PLC0415 - the framework is optional

    found, _ = require("flask", MIN_VERSION, "Flask")
    request_proxy: Any = flask.request  # a LocalProxy; typed as the Request it stands for
    in_memory = _in_memory_check(flask.Flask)

    def call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs or len(args) != 2:
            return wrapped(*args, **kwargs)
        # An app OpenTelemetry's contrib FlaskInstrumentor instrumented gets its server span
        # from contrib's before_request hook: adopt that one rather than nest two.
        contrib = getattr(instance, "_is_instrumented_by_opentelemetry", False) is True
        return traced_wsgi_call(recorder, wrapped, args[0], args[1], defer_span=contrib)

    def full_dispatch_request(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        state = current_request()
        if state is None:
            return wrapped(*args, **kwargs)
        # Guards as ``try`` on this per-request path (see cxtrace._guard).
        request = None
        try:
            request = request_proxy._get_current_object()
            rule = request.url_rule
            state.resolve(rule.rule if rule is not None else None, request)
        except Exception as exc:  # noqa: BLE001 - a guard
            _RESOLVE.swallow(exc)
        response = None
        try:
            response = wrapped(*args, **kwargs)
            return response
        finally:
            try:
                if request is not None:
                    state.dispatched(request)
                if response is not None:
                    state.body_in_memory = in_memory(instance, response)
                if response is not None and state.deferred:
                    # contrib ends its span at teardown, before the body is sent
                    state.adopt_current_span()
                    state.hand_over(int(getattr(response, "status_code", 0) or 0))
            except Exception as exc:  # noqa: BLE001 - a guard
                _DISPATCHED.swallow(exc)

    def handle_exception(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        state = current_request()
        error = exception_arg(args, kwargs)
        if state is not None and error is not None:
            with _ERROR:
                state.fail(error)
        response = wrapped(*args, **kwargs)  # re-raises when PROPAGATE_EXCEPTIONS is on
        if state is not None and state.deferred:
            with _ERROR:
                state.adopt_current_span()
                state.hand_over(int(getattr(response, "status_code", 0) or 0))
        return response

    http_exception = _http_exception_type()

    def handle_user_exception(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        state = current_request()
        error = exception_arg(args, kwargs)
        if state is not None and error is not None and not isinstance(error, http_exception):
            with _ERROR:
                state.record_handled(error)
        return wrapped(*args, **kwargs)

    patcher.wrap(flask.Flask, "__call__", call)
    patcher.wrap(flask.Flask, "full_dispatch_request", full_dispatch_request)
    patcher.wrap(flask.Flask, "handle_exception", handle_exception)
    patcher.wrap(flask.Flask, "handle_user_exception", handle_user_exception)
    return f"flask {'.'.join(map(str, found))}"


def exception_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Optional[BaseException]:
    """The exception ``handle_exception`` / ``handle_user_exception`` were handed.

    Taken by type and by name, never by position: up to Flask 3.1 the call is ``(e)``; on
    Flask's main branch (3.2) every such method takes ``(ctx, e)``, the app context first.

    >>> error = KeyError("k")
    >>> exception_arg((object(), error), {}) is error and exception_arg((), {"e": error}) is error
    True
    """
    error = kwargs.get("e")
    if isinstance(error, BaseException):
        return error
    for arg in args:
        if isinstance(arg, BaseException):
            return arg
    return None


def _in_memory_check(flask_class: Any) -> Callable[[Any, Any], bool]:
    """``in_memory(app, response)``: is this app's WSGI body already in memory?

    True only when nothing but werkzeug's own code runs while the server iterates the
    body: the app's ``wsgi_app`` is Flask's (no WSGI middleware in between that could
    wrap the body), the response class does not override how werkzeug turns it into a
    WSGI iterable, and its data is a list or tuple (not a generator, a file or a
    ``stream_with_context``). Then cxtrace need not re-enter the request's context per
    chunk. Response classes are judged once; per request: identity checks and a lookup.
    """
    from werkzeug.wrappers import Response  # noqa: PLC0415

    wsgi_app = flask_class.wsgi_app
    names = ("__call__", "get_wsgi_response", "get_app_iter", "iter_encoded")
    methods = [(name, getattr(Response, name)) for name in names]
    plain_responses: dict[type, bool] = {}

    def in_memory(app: Any, response: Any) -> bool:
        if type(app).wsgi_app is not wsgi_app or "wsgi_app" in vars(app):
            return False
        cls = type(response)
        plain = plain_responses.get(cls)
        if plain is None:
            plain = all(getattr(cls, name, None) is method for name, method in methods)
            if len(plain_responses) < 64:  # response classes: bounded anyway
                plain_responses[cls] = plain
        return plain and type(getattr(response, "response", None)) in (list, tuple)

    return in_memory


def _http_exception_type() -> type[BaseException]:
    from werkzeug.exceptions import HTTPException  # noqa: PLC0415

    return HTTPException
