"""Django: WSGI and ASGI, sync and async views, without touching ``MIDDLEWARE``.

Patches on Django's handler classes (every project, whatever its settings):

- ``WSGIHandler.__call__`` / ``ASGIHandler.__call__``: the outermost funnel, outside
  every middleware; the span lives from here until the body has been sent (WSGI:
  ``close()`` of the response; ASGI: the last ``http.response.body`` message), so
  ``StreamingHttpResponse`` and ``FileResponse`` are timed to their last byte.
- ``BaseHandler.resolve_request``: after URL resolution, before the view: the route
  template (``ResolverMatch.route``), the step, the ``segment=`` resolver.
- ``BaseHandler.get_response`` / ``get_response_async``: after the view: the user. Each
  keeps its own colour, so async views get no thread hop and sync views no event loop.
- ``django.core.handlers.exception.response_for_exception``: Django turning an exception
  into a response; when that response is a 5xx the request is an error (a 404 from the
  resolver is not).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Optional

from cxtrace._guard import Guard
from cxtrace._integrations.asgi import traced_asgi_call
from cxtrace._integrations.versions import require
from cxtrace._integrations.wsgi import traced_wsgi_call
from cxtrace._patch import Patcher
from cxtrace._telemetry.recorder import Recorder, current_request

__all__ = ["MIN_VERSION", "cached_user_pk", "instrument_django", "route_of"]

MIN_VERSION = (4, 2)
_RESOLVE = Guard("django.resolve")
_DISPATCHED = Guard("django.dispatched")
_ERROR = Guard("django.error")


def route_of(match: Any) -> Optional[str]:
    """``ResolverMatch.route`` as an http.route: leading ``/``, regex anchors dropped.

    >>> class M: route = "products/<int:product_id>/"
    >>> route_of(M())
    '/products/<int:product_id>/'
    """
    route = getattr(match, "route", None)
    if not isinstance(route, str):
        return None
    if route.startswith("^"):  # re_path: "^legacy/(?P<id>[0-9]+)/$"
        route = route[1:]
    if route.endswith("$") and not route.endswith("\\$"):
        route = route[:-1]
    return "/" + route.lstrip("/")


def cached_user_pk(request: Any) -> object:
    """The authenticated user's pk, only if the app already loaded the user.

    ``AuthenticationMiddleware`` makes ``request.user`` lazy; reading it would hit the
    session and the database. Django caches the loaded user on the request
    (``_cached_user``, or ``_acached_user`` for ``request.auser()``), so we read only that.
    """
    attrs = getattr(request, "__dict__", {})
    for name in ("_cached_user", "_acached_user"):
        user = attrs.get(name)
        if user is not None and getattr(user, "is_authenticated", False) is True:
            return getattr(user, "pk", None)
    return None


_CONTRIB_MIDDLEWARE_MODULE = "opentelemetry.instrumentation.django.middleware.otel_middleware"
_contrib_handlers: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _has_contrib_middleware(handler: Any) -> bool:
    """Whether OpenTelemetry contrib's Django middleware is in this handler's chain.

    Then contrib starts the server span (in ``process_request``) and cxtrace adopts it
    instead of starting a second. Decided once per handler, from the middleware it loaded.
    """
    try:
        return _contrib_handlers[handler]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: decide every time
        pass
    found = any(
        type(getattr(method, "__self__", None)).__module__ == _CONTRIB_MIDDLEWARE_MODULE
        for method in getattr(handler, "_view_middleware", None) or ()
    )
    with contextlib.suppress(TypeError):
        _contrib_handlers[handler] = found
    return found


def _hand_over(response: Any) -> None:
    state = current_request()
    if state is not None and state.deferred:
        with _ERROR:
            state.adopt_current_span()
            state.hand_over(int(getattr(response, "status_code", 0) or 0))


def instrument_django(recorder: Recorder, patcher: Patcher) -> str:
    """Patch Django's handlers; returns a description or raises ImportError / RuntimeError."""
    import django  # noqa: PLC0415, F401 - the framework is optional: ImportError if absent

    found, _ = require("django", MIN_VERSION, "Django")
    from django.core.handlers import exception  # noqa: PLC0415
    from django.core.handlers.asgi import ASGIHandler  # noqa: PLC0415
    from django.core.handlers.base import BaseHandler  # noqa: PLC0415
    from django.core.handlers.wsgi import WSGIHandler  # noqa: PLC0415
    from django.http import HttpResponse  # noqa: PLC0415

    plain_iter = HttpResponse.__iter__

    def wsgi_call(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if kwargs or len(args) != 2:
            return wrapped(*args, **kwargs)
        return traced_wsgi_call(
            recorder, wrapped, args[0], args[1], defer_span=_has_contrib_middleware(instance)
        )

    def asgi_call(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if kwargs or len(args) != 3:
            return wrapped(*args, **kwargs)
        # Not deferred to contrib under ASGI: its middleware is sync-only, so Django runs it
        # in a worker thread whose context (and span) never flows back to the request's
        # task; cxtrace keeps its own server span and contrib nests an INTERNAL one.
        return traced_asgi_call(recorder, wrapped, args[0], args[1], args[2])

    def resolve_request(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        state = current_request()
        if state is not None and state.deferred:
            with _RESOLVE:
                state.adopt_current_span()  # contrib's middleware started it by now
        match = wrapped(*args, **kwargs)  # raises Resolver404: then there is no route
        if state is not None and args:
            try:  # a guard as ``try`` on this per-request path (see cxtrace._guard)
                state.resolve(route_of(match), args[0])
            except Exception as exc:  # noqa: BLE001 - a guard
                _RESOLVE.swallow(exc)
        return match

    def inner_response(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        response = wrapped(*args, **kwargs)  # the view, inside every middleware
        _hand_over(response)
        return response

    def inner_response_async(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        async def run() -> Any:
            response = await wrapped(*args, **kwargs)
            _hand_over(response)
            return response

        return run()

    def get_response(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        response = wrapped(*args, **kwargs)
        state = current_request()
        if state is not None and args:
            try:  # a guard as ``try`` on this per-request path (see cxtrace._guard)
                state.dispatched(args[0], cached_user_pk)
                # WSGIHandler returns this response as the WSGI body. HttpResponse keeps
                # its content in a list: iterating it runs no app code, so the body needs
                # no re-entered context. Streaming (and any overriding) classes do.
                state.body_in_memory = type(response).__iter__ is plain_iter
            except Exception as exc:  # noqa: BLE001 - a guard
                _DISPATCHED.swallow(exc)
        return response

    def get_response_async(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        async def run() -> Any:
            response = await wrapped(*args, **kwargs)
            state = current_request()
            if state is not None and args:
                with _DISPATCHED:
                    state.dispatched(args[0], cached_user_pk)
            return response

        return run()

    def response_for_exception(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        response = wrapped(*args, **kwargs)
        state = current_request()
        if state is not None and len(args) == 2:
            with _ERROR:
                if getattr(response, "status_code", 500) >= 500:
                    state.fail(args[1])
        _hand_over(response)
        return response

    patcher.wrap(WSGIHandler, "__call__", wsgi_call)
    patcher.wrap(ASGIHandler, "__call__", asgi_call)
    patcher.wrap(BaseHandler, "resolve_request", resolve_request)
    patcher.wrap(BaseHandler, "get_response", get_response)
    patcher.wrap(BaseHandler, "get_response_async", get_response_async)
    patcher.wrap(exception, "response_for_exception", response_for_exception)
    # Only needed beside contrib, whose middleware ends its span in process_response,
    # before cxtrace's outer hooks run: the view's own response is the last moment.
    patcher.wrap(BaseHandler, "_get_response", inner_response)
    patcher.wrap(BaseHandler, "_get_response_async", inner_response_async)
    return f"django {'.'.join(map(str, found))}"
