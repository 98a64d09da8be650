"""The test Django project (``tests/django_project``), set up once per test process.

Import it before any Django model; a module importing it is skipped without Django or
uvicorn. It migrates the project's database and gives ``WSGI_APP`` and ``ASGI_APP`` (built
at import, before any ``instrument()``: the handlers are patched per class), ``Uvicorn`` to
run an ASGI app, and the ``django_server`` fixture that serves the project on loopback (its
function is ``serve_django``: import that).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

pytest.importorskip("django")
uvicorn = pytest.importorskip("uvicorn")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
os.environ.setdefault("TESTS_DJANGO_DB", os.path.join(tempfile.mkdtemp(), "db.sqlite3"))

import django  # noqa: E402

django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

call_command("migrate", verbosity=0)
WSGI_APP = get_wsgi_application()
ASGI_APP = get_asgi_application()


class Uvicorn(threading.Thread):
    """An ASGI app under uvicorn on 127.0.0.1:0, in a thread."""

    def __init__(self, app: Any) -> None:
        super().__init__(daemon=True)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        self.server.run()

    def start_and_wait(self) -> int:
        self.start()
        deadline = time.monotonic() + 10
        while not self.server.started:  # uvicorn's own readiness flag
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.005)
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(timeout=10)


@pytest.fixture(name="django_server", params=["django-wsgi", "django-asgi"])
def serve_django(request: pytest.FixtureRequest, serve: Callable[[Any], str]) -> Iterator[str]:
    """Base URL of the Django project served over WSGI (werkzeug) or ASGI (uvicorn)."""
    if request.param == "django-wsgi":
        yield serve(WSGI_APP)
    else:
        runner = Uvicorn(ASGI_APP)
        port = runner.start_and_wait()
        yield f"http://127.0.0.1:{port}"
        runner.stop()
