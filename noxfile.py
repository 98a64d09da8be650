"""Developer tasks: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s demo`,
`nox -s bench` (docs/performance.md), `nox -s soak` (docs/reliability.md).

Each session installs what it needs into its own virtualenv (uv when available).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

TEST_DEPS = [
    "pytest>=7.4",
    "requests>=2.28",
    "grpcio>=1.60",
    "opentelemetry-proto>=1.40",
    "uvicorn>=0.23",
    "gunicorn>=21",  # tests/test_run.py: pre-fork workers under `cxtrace run`
    "hypothesis>=6.80",
    "playwright>=1.40",  # drives Debian's chromium (tests/browser.py); no browser download
    "pyyaml>=6",  # tests/test_deploy_kit.py reads the docs/deploy/ YAML files
    "nox>=2024.4",  # tests/test_noxfile.py runs the README's test command itself
    "uv>=0.4",
    # tests/test_coexistence.py: next to OpenTelemetry's own instrumentations
    "opentelemetry-instrumentation-requests",
    "opentelemetry-instrumentation-flask",
    "opentelemetry-instrumentation-django",
    # tests/test_prometheus_live.py: a real Prometheus scrapes a real cxtrace app through it
    "opentelemetry-exporter-prometheus>=0.61b0",
]

# The lowest OpenTelemetry pyproject.toml allows, and the contrib release made with it; the
# oldest CI set runs on these. Below 1.30 the API has no histogram bucket advice; below 1.40
# the OTLP exporters retry a refused connection past OTEL_EXPORTER_OTLP_TIMEOUT, so an outage
# is reported late and shutdown overruns its timeout (tests/test_faults.py).
OLDEST_OTEL = [
    "opentelemetry-api~=1.40.0",
    "opentelemetry-sdk~=1.40.0",
    "opentelemetry-exporter-otlp-proto-http~=1.40.0",
    "opentelemetry-exporter-otlp-proto-grpc~=1.40.0",
    "opentelemetry-proto~=1.40.0",
    "opentelemetry-semantic-conventions==0.61b0",
    "opentelemetry-instrumentation-requests==0.61b0",
    "opentelemetry-instrumentation-flask==0.61b0",
    "opentelemetry-instrumentation-django==0.61b0",
    "opentelemetry-exporter-prometheus==0.61b0",
]

# (python, flask, django, opentelemetry): the oldest supported set and the newest;
# `tests_all` the rest.
CI_MATRIX = [("3.9", "2.2", "4.2", "oldest"), ("3.13", "3", "6", "newest")]


def _runs(python: str, version: str) -> bool:
    """Whether ``python`` starts and is ``version`` ("3.9"): a pyenv shim for a version
    pyenv has not selected is on PATH, yet exits 127 ("command not found")."""
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    try:
        out = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def _interpreter(version: str) -> str | None:
    """A Python ``version`` that really runs: nox's own, ``pythonX.Y`` on PATH, else
    pyenv's install."""
    if _version() == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installs = sorted(root.glob(f"{version}.*/bin/python{version}"), key=_release, reverse=True)
    candidates += [str(path) for path in installs]
    return next((c for c in candidates if c and _runs(c, version)), None)


def _release(path: Path) -> tuple[int, ...]:
    """(3, 9, 18) for .../versions/3.9.18/bin/python3.9; pre-releases sort first."""
    return tuple(int(part) if part.isdigit() else -1 for part in path.parts[-3].split("."))


def _here() -> tuple[str, str, str, str]:
    """The interpreter nox itself runs on, with the newest Flask and a Django it supports."""
    django = "6" if sys.version_info >= (3, 12) else "5.2" if sys.version_info >= (3, 10) else "4.2"
    return (sys.executable, "3", django, "newest")


def _tests_matrix() -> tuple[list[tuple[str, str, str, str]], list[str], str]:
    """The CI matrix's sets whose Python runs here, or this interpreter when none does.

    Returns (matrix, the session ids, a line saying what was left out). On CI the
    versions stay as they are, so a missing one fails the run (--error-on-missing-
    interpreters) rather than shrinking the matrix.
    """
    if os.environ.get("CI"):
        return CI_MATRIX, _ids(CI_MATRIX), ""
    found = [(m, _interpreter(m[0])) for m in CI_MATRIX]
    matrix = [(path, *m[1:]) for m, path in found if path is not None]
    ids = [_id(m) for m, path in found if path is not None]
    missing = [f"python{m[0]}" for m, path in found if path is None]
    if not matrix:
        here = _here()
        matrix, ids = [here], [_id((_version(), *here[1:]))]
        note = f"{' and '.join(missing)} not found or not runnable: testing on {sys.executable}"
        return matrix, ids, note + f" (Python {_version()}) instead"
    if missing:
        return matrix, ids, f"{' and '.join(missing)} not found or not runnable: skipped"
    return matrix, ids, ""


def _version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _id(entry: tuple[str, str, str, str]) -> str:
    python, flask, django, otel = entry
    return f"py{python}-flask{flask}-django{django}-otel-{otel}"


def _ids(matrix: list[tuple[str, str, str, str]]) -> list[str]:
    return [_id(m) for m in matrix]


# On a machine with only one Python (the README's promise), or pyenv with some versions,
# run the suite on what really runs rather than skip it; CI gets the whole matrix.
TESTS_MATRIX, TESTS_IDS, TESTS_NOTE = _tests_matrix()
FULL_MATRIX = [
    ("3.10", "3", "5.2", "newest"),
    ("3.11", "3", "5.2", "oldest"),
    ("3.12", "3", "6", "newest"),
    ("3.9", "3", "4.2", "newest"),
    ("3.13", "2.2", "5.2", "newest"),
]
DJANGO = {"4.2": "django>=4.2,<5", "5.2": "django>=5.2,<6", "6": "django>=6,<7"}


def _flask(version: str) -> list[str]:
    if version == "2.2":
        # Flask 2.2 predates Werkzeug 2.3's removals (url_quote & co).
        return ["flask>=2.2,<2.3", "werkzeug>=2.2,<2.3"]
    return ["flask>=3,<4"]


def _run_tests(session: nox.Session, flask: str, django: str, otel: str) -> None:
    pins = OLDEST_OTEL if otel == "oldest" else []
    session.install("-e", ".[grpc]", *TEST_DEPS, *_flask(flask), DJANGO[django], *pins)
    # Not session.create_tmp(): it points TMPDIR into .nox/, and under a long checkout path
    # Chromium's socket path (TMPDIR/org.chromium.../SingletonSocket) passes the 108-byte
    # limit, so every browser test fails to start it.
    report = Path(session.virtualenv.location) / "junit.xml"
    report.unlink(missing_ok=True)
    session.run("pytest", f"--junitxml={report}", *(session.posargs or ["-q"]))
    # A run that selected nothing, or skipped everything, tested nothing: never a success.
    ran = 0
    if report.exists():
        for suite in ET.parse(report).getroot().iter("testsuite"):
            ran += int(suite.get("tests", 0)) - int(suite.get("skipped", 0))
    if ran <= 0:
        session.error("pytest ran no test")
    session.log(f"{ran} tests ran")


@nox.session
@nox.parametrize("python,flask,django,otel", TESTS_MATRIX, ids=TESTS_IDS)
def tests(session: nox.Session, flask: str, django: str, otel: str) -> None:
    """The test suite on the oldest and newest supported Python/Flask/Django/OTel sets."""
    if TESTS_NOTE:
        session.warn(TESTS_NOTE)
    _run_tests(session, flask, django, otel)


@nox.session
@nox.parametrize("python,flask,django,otel", FULL_MATRIX, ids=_ids(FULL_MATRIX))
def tests_all(session: nox.Session, flask: str, django: str, otel: str) -> None:
    """The rest of the matrix: every Python 3.9-3.13 (run locally before a release)."""
    _run_tests(session, flask, django, otel)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and the import-layer contracts."""
    session.install("ruff>=0.6", "import-linter>=2.0", "-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/cxtrace (py.typed ships with the package)."""
    session.install(
        "mypy>=1.10",
        "-e",
        ".[grpc,cockpit]",
        "flask>=3",
        "django>=4.2",
        "types-requests",
        "types-protobuf",
    )
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """`cxtrace demo`: the cockpit, the example shop under load; `-- --help` for its flags."""
    session.install("-e", ".[cockpit,demo]")
    # After Ctrl-C the demo stops its services and the cockpit itself: give it the time
    # (nox would send SIGTERM after 0.3 s, then SIGKILL, stranding the services).
    session.run("cxtrace", "demo", *session.posargs, interrupt_timeout=30)


BENCH_DEPS = [
    "flask>=3",
    "django>=4.2",
    "requests>=2.28",
    "opentelemetry-instrumentation-flask",
    "opentelemetry-instrumentation-django",
    "opentelemetry-instrumentation-requests",
    "opentelemetry-instrumentation-wsgi",
    "opentelemetry-proto>=1.40",
    "grpcio>=1.60",
]


@nox.session
def bench(session: nox.Session) -> None:
    """Per-request cost next to bare, OpenTelemetry contrib and a minimal span middleware.

    Writes docs/performance.md. `nox -s bench -- --quick` for a ~1 minute sanity run;
    `-- --help` for the knobs (rounds, requests, frameworks, output).
    """
    session.install("-e", ".[grpc]", *BENCH_DEPS)
    session.run("python", "tests/bench/run.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """The long reliability runs behind docs/reliability.md (under 5 minutes): 200,000
    requests per protocol with the collector down, and sustained concurrent load.

    The suite runs short variants of the same tests; these are marked `soak`.
    """
    session.install("-e", ".[grpc]", *TEST_DEPS, *_flask("3"), DJANGO[_here()[2]])
    session.run(
        "pytest",
        "-m",
        "soak",
        "-s",
        *(session.posargs or ["-q"]),
        "tests/test_memory.py",
        "tests/test_faults.py",
        "tests/test_load.py",
        env={"RUN_SOAK": "1"},
    )


# Flask's, Django's and requests' own tests need these besides the frameworks themselves
# (Flask: its pyproject's `tests` group; requests: its requirements-dev.txt, offline
# through pytest-httpbin's local server). Django's handler tests need nothing more.
UPSTREAM_DEPS = [
    "pip",  # tests/upstream/run.py fetches the sdists with `pip download` (uv has none)
    "pytest>=7.4,<9",  # Flask's tests import _pytest.monkeypatch.notset, gone in pytest 9
    "asgiref",
    "greenlet",
    "python-dotenv",
    "pytest-httpbin==2.1.0",
    "httpbin~=0.10.2",  # 0.10.0 imports what Werkzeug 3 removed
    "pytest-mock",
    "trustme",
    "PySocks",
]
FLASK_SRC_DEPS = ["pytest>=7.4,<9", "asgiref", "greenlet", "python-dotenv"]


def _posarg(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``args``, if given."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _flask_src_venv(session: nox.Session, source: Path) -> Path:
    """A virtualenv of its own beside the session's, with ``source`` installed editable."""
    venv = Path(session.virtualenv.location).parent / "upstream-flask-src"
    python = venv / "bin" / "python"
    shutil.rmtree(venv, ignore_errors=True)
    uv = shutil.which("uv")
    packages = ["-e", ".", "-e", str(source), *FLASK_SRC_DEPS]
    if uv:
        session.run(
            uv, "venv", "--quiet", "--python", session.bin + "/python", str(venv), external=True
        )
        session.run(
            uv, "pip", "install", "--quiet", "--python", str(python), *packages, external=True
        )
    else:
        session.run("python", "-m", "venv", str(venv))
        session.run(str(python), "-m", "pip", "install", "--quiet", *packages, external=True)
    return python


@nox.session
def upstream(session: nox.Session) -> None:
    """Django's, Flask's and requests' own test suites, bare and under `cxtrace run`.

    The installed releases' tests, from their PyPI sdists: any test that passes bare but
    not under cxtrace fails the session (tests/upstream/run.py; not a default session).
    `-- --flask-src PATH` also runs a Flask checkout's tests, installed editable in a
    virtualenv of its own; `-- --help` for the rest.
    """
    session.install("-e", ".", *UPSTREAM_DEPS, *_flask("3"), DJANGO[_here()[2]], "requests>=2.28")
    args = list(session.posargs)
    source = _posarg(args, "--flask-src")
    if source and _posarg(args, "--flask-src-python") is None:
        if not (Path(source) / "tests").is_dir():
            session.error(f"--flask-src {source}: no tests/ folder there")
        args += ["--flask-src-python", str(_flask_src_venv(session, Path(source).resolve()))]
    session.run("python", "tests/upstream/run.py", *args)
