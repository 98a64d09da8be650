"""What the host gets back from every patched call: the same as without cxtrace (#14).

Each test makes the same call bare and instrumented and compares what the caller sees:
the returned object's type and attributes, what ``start_response`` was handed, the body,
exceptions (the very object, its traceback still ending in the app's frame), and that a
body the server closes early closes the app's own generator. The calls are the funnels
cxtrace patches, made the way servers and test clients make them: ``WSGIHandler()(environ,
start_response)``, ``Flask.__call__``, ``requests.Session.send``; and one real gunicorn
under ``cxtrace run`` shows its sendfile fast path still taken.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.test.utils import override_settings
from django.urls import path
from flask import Flask, Response, send_file
from gunicorn.http.wsgi import FileWrapper
from werkzeug.test import EnvironBuilder

import cxtrace
import django_server  # noqa: F401  (sets Django up: settings, database)
from cxtrace._integrations.flask import exception_arg
from otlp_receiver import Receiver
from test_run import APPS, SCRIPT, Start, environment, free_port, start  # noqa: F401

PAYLOAD = b"0123456789" * 10_000
RAISED: list[BaseException] = []  # what the views raised, to compare with what the caller got
CLOSED: list[str] = []  # streamed bodies whose generator ran its ``finally``


@pytest.fixture
def payload_file(tmp_path: Path) -> Path:
    file = tmp_path / "payload.bin"
    file.write_bytes(PAYLOAD)
    return file


def streamed(name: str) -> Iterator[bytes]:
    try:
        yield b"first\n"
        yield b"second\n"
    finally:
        CLOSED.append(name)


class BoomError(Exception):
    pass


def raise_recorded() -> None:
    error = BoomError("the app's own error")
    RAISED.append(error)
    raise error


# --------------------------------------------------------------------------- apps

FILE: list[Path] = []  # the payload file of the running test, for the views


def django_page(request: Any) -> HttpResponse:
    response = HttpResponse("page", content_type="text/plain", headers={"X-App": "1"})
    response.set_cookie("app_session", "s3cr3t", httponly=True)
    return response


def django_download(request: Any) -> FileResponse:
    return FileResponse(FILE[0].open("rb"), filename="payload.bin")


def django_stream(request: Any) -> StreamingHttpResponse:
    return StreamingHttpResponse(streamed("django"), content_type="text/plain")


def django_boom(request: Any) -> HttpResponse:
    raise_recorded()
    return HttpResponse()  # never reached


urlpatterns = [
    path("page/", django_page),
    path("download/", django_download),
    path("stream/", django_stream),
    path("boom/", django_boom),
]


def make_flask() -> Flask:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = True  # as under a test client or a debugger

    @app.get("/page/")
    def page() -> Response:
        response = Response("page", content_type="text/plain", headers={"X-App": "1"})
        response.set_cookie("app_session", "s3cr3t", httponly=True)
        return response

    @app.get("/download/")
    def download() -> Response:
        return send_file(FILE[0], mimetype="application/octet-stream")

    @app.get("/stream/")
    def stream() -> Response:
        return Response(streamed("flask"), content_type="text/plain")

    @app.get("/boom/")
    def boom() -> str:
        raise_recorded()
        return ""  # never reached

    return app


# --------------------------------------------------------------------------- calls


class Call:
    """One WSGI call as a server makes it: the environ, what start_response got, the result."""

    def __init__(self, app: Callable[..., Any], url: str, *, file_wrapper: bool = False) -> None:
        self.environ = EnvironBuilder(url).get_environ()
        if file_wrapper:
            self.environ["wsgi.file_wrapper"] = FileWrapper  # gunicorn's own class
        self.started: list[tuple[str, list[tuple[str, str]]]] = []
        self.result = app(self.environ, self.start_response)

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        self.started.append((status, list(headers)))
        return lambda data: None

    def body(self) -> bytes:
        try:
            return b"".join(self.result)
        finally:
            self.result.close()


class AsgiCall:
    """One ASGI HTTP request as uvicorn makes it; ``sent``: every message the app sent."""

    def __init__(self, app: Callable[..., Any], url: str) -> None:
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": url,
            "raw_path": url.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.sent: list[dict[str, Any]] = []
        asyncio.run(self._run(app))

    async def _run(self, app: Callable[..., Any]) -> None:
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the client stays connected
            return {}  # never reached

        async def send(message: dict[str, Any]) -> None:
            self.sent.append(message)

        await app(self.scope, receive, send)


@pytest.fixture
def apps(
    otlp: Receiver, instrument: Callable[..., cxtrace.Instrumentation], payload_file: Path
) -> Iterator[Callable[[str], tuple[Callable[..., Any], Callable[..., Any]]]]:
    """``apps(framework)`` -> (bare call, instrumented call), each making one ``Call``.

    Bare runs before ``instrument()`` patches the classes; instrumented after. Each
    instrumented call's server span is awaited, so the calls were really traced.
    """
    FILE[:] = [payload_file]
    RAISED.clear()
    CLOSED.clear()
    override = override_settings(ROOT_URLCONF=__name__, DEBUG_PROPAGATE_EXCEPTIONS=True)
    override.enable()
    wsgi = {"django": WSGIHandler(), "flask": make_flask(), "django-asgi": ASGIHandler()}
    made: list[str] = []

    def for_framework(framework: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        app = wsgi[framework]
        kind = AsgiCall if framework == "django-asgi" else Call

        def bare(url: str, **kw: Any) -> Any:
            assert not made, "bare calls come first"
            return kind(app, url, **kw)

        def traced(url: str, **kw: Any) -> Any:
            if not made:
                instrument(otlp)
            made.append(url)
            return kind(app, url, **kw)

        return bare, traced

    yield for_framework
    override.disable()
    if made:  # every instrumented call became a server span
        otlp.wait_for(lambda r: len([s for s in r.spans if s.kind == "SERVER"]) >= len(made))


FRAMEWORKS = ["flask", "django"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_response_is_the_apps_own_object_with_its_headers(framework: str, apps: Any) -> None:
    bare_call, traced_call = apps(framework)
    bare, traced = bare_call("/page/"), traced_call("/page/")
    assert traced.result.__class__ is bare.result.__class__
    assert isinstance(traced.result, bare.result.__class__)
    assert traced.started == bare.started  # status and every header, cookies included
    if framework == "django":  # Django's handler tests read the response object itself
        assert traced.result.status_code == 200
        assert traced.result["X-App"] == "1"
        assert traced.result.cookies["app_session"].value == "s3cr3t"
        assert traced.result.content == b"page"
    assert traced.body() == bare.body() == b"page"


def test_an_asgi_app_sends_its_own_messages_unchanged(apps: Any) -> None:
    bare_call, traced_call = apps("django-asgi")
    bare, traced = bare_call("/page/"), traced_call("/page/")
    assert traced.sent == bare.sent  # status, every header and cookie, the body
    assert [m["type"] for m in traced.sent] == ["http.response.start", "http.response.body"]
    assert traced.sent[1]["body"] == b"page"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_file_stays_the_servers_file_wrapper(framework: str, apps: Any) -> None:
    bare_call, traced_call = apps(framework)
    bare = bare_call("/download/", file_wrapper=True)
    traced = traced_call("/download/", file_wrapper=True)
    assert isinstance(bare.result, FileWrapper)
    # What gunicorn checks before it sends the file with sendfile(2), and what it reads.
    assert isinstance(traced.result, traced.environ["wsgi.file_wrapper"])
    assert type(traced.result.filelike) is type(bare.result.filelike)
    assert traced.result.filelike.fileno() >= 0
    assert traced.result.blksize == bare.result.blksize
    assert traced.started == bare.started
    file = traced.result.filelike
    assert traced.body() == bare.body() == PAYLOAD
    assert file.closed  # the server's close() reached the app's file


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_body_closed_early_closes_the_apps_generator(framework: str, apps: Any) -> None:
    bare_call, traced_call = apps(framework)
    for call in (bare_call, traced_call):
        made = call("/stream/")
        chunks = iter(made.result)
        assert next(chunks) == b"first\n"
        made.result.close()  # the client went away after the first chunk
    assert [framework, framework] == CLOSED


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_exception_reaches_the_caller_as_the_very_object_the_app_raised(
    framework: str, apps: Any
) -> None:
    bare_call, traced_call = apps(framework)
    caught = []
    for call in (bare_call, traced_call):
        with pytest.raises(BoomError) as info:
            call("/boom/")
        caught.append(info.value)
    assert caught == RAISED  # the same objects, not copies or wrappers
    bare_frames, traced_frames = (frames(error) for error in caught)
    assert traced_frames[-1] is raise_recorded.__code__  # still ends where the app raised
    # every frame the host saw bare is still there, in order; cxtrace's own only add
    remaining = iter(traced_frames)
    assert all(code in remaining for code in bare_frames)


def frames(error: BaseException) -> list[types.CodeType]:
    """The code of each traceback frame from the call into the host on (this module's
    own frames before it, which differ between the bare and the traced call, dropped)."""
    tb, codes = error.__traceback__, []
    while tb is not None:
        codes.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    entry = [i for i, code in enumerate(codes) if code is Call.__init__.__code__]
    return codes[entry[0] + 1 :] if entry else codes


def test_flasks_error_hooks_take_the_exception_by_type_or_name_not_position() -> None:
    # Flask <= 3.1 calls handle_exception(e); Flask's main branch (3.2) handle_exception(ctx, e).
    error, ctx = KeyError("k"), object()
    assert exception_arg((error,), {}) is error
    assert exception_arg((ctx, error), {}) is error
    assert exception_arg((ctx,), {"e": error}) is error
    assert exception_arg((ctx,), {}) is None


# --------------------------------------------------------------------------- requests


@pytest.fixture
def echo(serve: Callable[[Any], str]) -> str:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Echo", "yes")])
        return [b"echo"]

    return serve(app)


def test_requests_returns_its_own_response_and_raises_its_own_errors(
    otlp: Receiver, instrument: Callable[..., cxtrace.Instrumentation], echo: str
) -> None:
    def send() -> requests.Response:
        with requests.Session() as session:
            return session.get(f"{echo}/x", timeout=5)

    def refused() -> requests.ConnectionError:
        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(requests.ConnectionError) as info:
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        return info.value

    bare, bare_error = send(), refused()
    instrument(otlp, env={"CXTRACE_INTEGRATIONS": "requests"})
    traced, traced_error = send(), refused()
    assert type(traced) is requests.Response
    for name in ("status_code", "reason", "url", "encoding", "content", "history", "cookies"):
        assert getattr(traced, name) == getattr(bare, name), name
    assert {k: v for k, v in traced.headers.items() if k != "Date"} == {
        k: v for k, v in bare.headers.items() if k != "Date"
    }
    assert type(traced.elapsed) is type(bare.elapsed)
    assert type(traced_error) is type(bare_error)
    assert type(traced_error.request) is type(bare_error.request)
    assert frames(traced_error)[-1] is frames(bare_error)[-1]  # raised where it was
    otlp.wait_for(lambda r: len([s for s in r.spans if s.kind == "CLIENT"]) >= 2)


# --------------------------------------------------------------------------- gunicorn


SENDFILE_COUNTER = """
import os
import asyncio
import socket

_real = socket.socket.sendfile


def _counting(self, file, offset=0, count=None):
    with open(os.environ["SENDFILE_LOG"], "a") as log:
        log.write("sendfile\\n")
    return _real(self, file, offset, count)


def post_fork(server, worker):
    socket.socket.sendfile = _counting
"""


@pytest.mark.skipif(sys.platform != "linux", reason="gunicorn's sendfile path, on Linux")
def test_gunicorn_still_sends_files_with_sendfile_under_cxtrace_run(
    otlp: Receiver,
    start: Start,  # noqa: F811 - the fixture of tests/test_run.py, imported above
    tmp_path: Path,
    payload_file: Path,
) -> None:
    config = tmp_path / "gunicorn_conf.py"
    config.write_text(SENDFILE_COUNTER)
    log = tmp_path / "sendfile.log"
    port = free_port()
    argv = [*SCRIPT, "run", "--", "gunicorn", "--chdir", str(APPS), "-c", str(config)]
    argv += ["--workers", "1", "--bind", f"127.0.0.1:{port}", "sendfile_app:app"]
    env = environment(
        otlp,
        CXTRACE_INTEGRATIONS="flask",
        SENDFILE_LOG=str(log),
        PAYLOAD_FILE=str(payload_file),
    )
    server = start(argv, env, port=port)
    answer = requests.get(f"{server.url}/download", timeout=10)
    assert answer.status_code == 200
    assert answer.content == PAYLOAD
    otlp.wait_for(lambda r: any(s.kind == "SERVER" for s in r.spans), timeout=10)
    (span,) = [s for s in otlp.spans if s.kind == "SERVER"]
    assert span.attributes["http.route"] == "/download"
    assert log.read_text().splitlines() == ["sendfile"]  # the fast path, once
    server.stop(0)


# --------------------------------------------------------------------------- every patch


def test_every_patched_function_keeps_its_name_signature_and_doc(
    otlp: Receiver, instrument: Callable[..., cxtrace.Instrumentation]
) -> None:
    # Flask's main branch reads the signatures of these methods (Flask.__init_subclass__
    # looks for the new ``ctx`` parameter); frameworks and tools read names and docs.
    handle = instrument(
        otlp, env={"CXTRACE_INTEGRATIONS": "flask,django,requests", "CXTRACE_RUM": "true"}
    )
    patches = handle._patcher._patches
    assert len(patches) >= 12  # flask, django, requests, and RUM on the first two
    for patch in patches:
        now = getattr(patch.owner, patch.name)
        where = f"{getattr(patch.owner, '__qualname__', patch.owner.__name__)}.{patch.name}"
        assert now is not patch.original, where
        assert inspect.signature(now) == inspect.signature(patch.original), where
        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            assert getattr(now, attr) == getattr(patch.original, attr), (where, attr)
