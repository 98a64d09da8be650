"""Developer tasks: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s demo`.

Each session installs what it needs into its own virtualenv (uv when available).
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

TEST_DEPS = [
    "pytest>=7.4",
    "requests>=2.28",
    "grpcio>=1.60",
    "opentelemetry-proto>=1.27",
]

# (python, flask): the oldest supported pair and the newest; `tests_all` covers the rest.
CI_MATRIX = [("3.9", "2.2"), ("3.13", "3")]
FULL_MATRIX = [("3.10", "3"), ("3.11", "3"), ("3.12", "3"), ("3.9", "3"), ("3.13", "2.2")]


def _flask(version: str) -> list[str]:
    if version == "2.2":
        # Flask 2.2 predates Werkzeug 2.3's removals (url_quote & co).
        return ["flask>=2.2,<2.3", "werkzeug>=2.2,<2.3"]
    return ["flask>=3,<4"]


def _run_tests(session: nox.Session, flask: str) -> None:
    session.install("-e", ".[grpc]", *TEST_DEPS, *_flask(flask))
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
@nox.parametrize("python,flask", CI_MATRIX, ids=[f"py{p}-flask{f}" for p, f in CI_MATRIX])
def tests(session: nox.Session, flask: str) -> None:
    """The test suite on the oldest and newest supported Python/Flask pairs."""
    _run_tests(session, flask)


@nox.session
@nox.parametrize("python,flask", FULL_MATRIX, ids=[f"py{p}-flask{f}" for p, f in FULL_MATRIX])
def tests_all(session: nox.Session, flask: str) -> None:
    """The rest of the matrix: every Python 3.9-3.13 (run locally before a release)."""
    _run_tests(session, flask)


@nox.session(python="3.13")
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and the import-layer contracts."""
    session.install("ruff>=0.6", "import-linter>=2.0", "-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session(python="3.13")
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/cxtrace (py.typed ships with the package)."""
    session.install("mypy>=1.10", "-e", ".[grpc]", "flask>=3", "types-requests")
    session.run("mypy")


@nox.session(python="3.13")
def demo(session: nox.Session) -> None:
    """An example Flask shop under load; prints what cxtrace exported per segment and step."""
    session.install(
        "-e", ".[grpc]", "flask>=3", "requests>=2.28", "opentelemetry-proto>=1.27", "grpcio>=1.60"
    )
    session.run("python", "examples/demo.py", *session.posargs)
