"""The ``server`` fixture: one test app per framework, served on loopback.

Parametrized over ``flask`` (tests/flask_app.py under werkzeug), ``django-wsgi``
(tests/django_project under werkzeug) and ``django-asgi`` (the same project under uvicorn),
so one test body runs on all three; each test names its own URLs per framework.

``server.finished(n)`` blocks until the server has finished ``n`` requests: the WSGI body
closed or the ASGI call returned, which is after cxtrace recorded them. A test whose
spans a sampler drops waits on that, not on spans, before it flushes the metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from werkzeug.wsgi import ClosingIterator

from flask_app import make_app

FRAMEWORKS = ("flask", "django-wsgi", "django-asgi")


class _Finished:
    """Counts requests the server finished; ``wait(n)`` blocks on a Condition."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.count = 0

    def add(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait(self, n: int, timeout: float) -> None:
        with self._changed:
            done = self._changed.wait_for(lambda: self.count >= n, timeout)
        assert done, f"the server finished {self.count} of {n} requests within {timeout} s"


def _counting_wsgi(app: Any, finished: _Finished) -> Callable[..., Iterable[bytes]]:
    def call(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        # werkzeug closes the body it wraps (cxtrace's) first, then reports
        return ClosingIterator(app(environ, start_response), finished.add)

    return call


def _counting_asgi(app: Any, finished: _Finished) -> Callable[..., Any]:
    async def call(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                finished.add()

    return call


@dataclass
class Served:
    framework: str  # one of FRAMEWORKS
    url: str  # base URL, no trailing slash
    _finished: _Finished = field(repr=False)

    def finished(self, n: int, timeout: float = 10.0) -> None:
        """Block until the server has finished (and cxtrace recorded) ``n`` requests."""
        self._finished.wait(n, timeout)


@pytest.fixture(params=FRAMEWORKS)
def server(request: pytest.FixtureRequest, serve: Callable[[Any], str]) -> Iterator[Served]:
    finished = _Finished()
    if request.param == "flask":
        yield Served("flask", serve(_counting_wsgi(make_app(), finished)), finished)
        return
    pytest.importorskip("django")
    import django_server  # noqa: PLC0415 - sets Django up (tests/django_project)

    if request.param == "django-wsgi":
        url = serve(_counting_wsgi(django_server.WSGI_APP, finished))
        yield Served("django-wsgi", url, finished)
        return
    runner = django_server.Uvicorn(_counting_asgi(django_server.ASGI_APP, finished))
    port = runner.start_and_wait()
    yield Served("django-asgi", f"http://127.0.0.1:{port}", finished)
    runner.stop()
