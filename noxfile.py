"""Developer tasks: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s demo`,
`nox -s bench` (docs/performance.md), `nox -s soak` (docs/reliability.md).

Each session installs what it needs into its own virtualenv (uv when available).
"""

from __future__ import annotations

import shutil
import sys

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
    # tests/test_coexistence.py: next to OpenTelemetry's own instrumentations
    "opentelemetry-instrumentation-requests",
    "opentelemetry-instrumentation-flask",
    "opentelemetry-instrumentation-django",
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
]

# (python, flask, django, opentelemetry): the oldest supported set and the newest;
# `tests_all` the rest.
CI_MATRIX = [("3.9", "2.2", "4.2", "oldest"), ("3.13", "3", "6", "newest")]


def _here() -> tuple[str, str, str, str]:
    """The interpreter nox itself runs on, with the newest Flask and a Django it supports."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    django = "6" if sys.version_info >= (3, 12) else "5.2" if sys.version_info >= (3, 10) else "4.2"
    return (version, "3", django, "newest")


# On a fresh machine with only one Python (the README's promise), run the suite there
# rather than skip it; CI puts 3.9 and 3.13 on PATH (.ci/run) and gets the matrix.
TESTS_MATRIX = [m for m in CI_MATRIX if shutil.which(f"python{m[0]}")] or [_here()]
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
    session.run("pytest", *(session.posargs or ["-q"]))


def _ids(matrix: list[tuple[str, str, str, str]]) -> list[str]:
    return [f"py{p}-flask{f}-django{d}-otel-{o}" for p, f, d, o in matrix]


@nox.session
@nox.parametrize("python,flask,django,otel", TESTS_MATRIX, ids=_ids(TESTS_MATRIX))
def tests(session: nox.Session, flask: str, django: str, otel: str) -> None:
    """The test suite on the oldest and newest supported Python/Flask/Django/OTel sets."""
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
