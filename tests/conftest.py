"""Shared fixtures: a real OTLP receiver, a real werkzeug server, a clean environment.

- ``otlp``: an HTTP/protobuf receiver; ``otlp_any``: each protocol in turn.
- ``instrument``: calls ``cxtrace.instrument()`` configured only by the environment,
  pointed at the receiver (the same path a deployment takes).
- ``serve``: runs a WSGI app under werkzeug's threaded server on 127.0.0.1:0.
- ``chromium`` / ``page``: headless Debian Chromium through Playwright (tests/browser.py).
- Every test starts with no ``CXTRACE_*`` / ``OTEL_*`` variables and ends uninstrumented;
  an error cxtrace swallowed fails the test unless it is marked ``expect_internal_error``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from werkzeug.serving import make_server

import cxtrace
from browser import chromium, page  # noqa: F401  (fixtures for browser tests)
from cxtrace._guard import set_internal_error_hook
from otlp_receiver import GRPC_AVAILABLE, PROTOCOLS, Receiver


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("CXTRACE_", "OTEL_")):
            monkeypatch.delenv(name)
    yield
    cxtrace.shutdown(timeout_s=2.0)


@pytest.fixture(autouse=True)
def internal_errors(request: pytest.FixtureRequest) -> Iterator[list[tuple[str, BaseException]]]:
    """Errors cxtrace's guards swallowed during the test."""
    seen: list[tuple[str, BaseException]] = []
    set_internal_error_hook(lambda site, exc: seen.append((site, exc)))
    yield seen
    set_internal_error_hook(None)
    if seen and request.node.get_closest_marker("expect_internal_error") is None:
        site, exc = seen[0]
        pytest.fail(f"cxtrace swallowed an internal error at {site}: {exc!r}", pytrace=False)


@pytest.fixture
def otlp() -> Iterator[Receiver]:
    with Receiver("http/protobuf") as receiver:
        yield receiver


@pytest.fixture(params=PROTOCOLS)
def otlp_any(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    if request.param == "grpc" and not GRPC_AVAILABLE:
        pytest.skip("grpcio is not installed")
    with Receiver(request.param) as receiver:
        yield receiver


def receiver_env(receiver: Receiver) -> dict[str, str]:
    """Environment that points cxtrace's own providers at ``receiver``, exporting promptly."""
    env = dict(receiver.env())
    env.update(
        # The tests' own HTTP client is requests: leave it uninstrumented unless a test
        # asks for the requests integration (it then sets CXTRACE_INTEGRATIONS itself).
        CXTRACE_INTEGRATIONS="flask,django",
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_METRIC_EXPORT_INTERVAL="60000",  # metrics are flushed explicitly by flush()
        OTEL_SERVICE_NAME="cxtrace-tests",
    )
    return env


@pytest.fixture
def journeys_file(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Path of a journeys file holding the TOML in the test module's ``JOURNEYS``."""
    path = tmp_path / "journeys.toml"
    path.write_text(request.module.JOURNEYS)
    return str(path)


Instrument = Callable[..., cxtrace.Instrumentation]


@pytest.fixture
def instrument(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Instrument]]:
    """``instrument(receiver, env={...}, **kwargs)``: env-configured cxtrace exporting to it.

    Request it after the receiver fixture: it shuts cxtrace down while the receiver still
    listens, so the final flush does not retry against a closed port.
    """

    def start(
        receiver: Receiver, env: dict[str, str] | None = None, **kwargs: Any
    ) -> cxtrace.Instrumentation:
        for name, value in {**receiver_env(receiver), **(env or {})}.items():
            monkeypatch.setenv(name, value)
        return cxtrace.instrument(**kwargs)

    yield start  # type: ignore[misc]
    cxtrace.shutdown(timeout_s=2.0)


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    """``serve(app)`` -> base URL of a threaded werkzeug server running it on loopback."""
    servers: list[Any] = []

    def start(app: Any) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=5)
