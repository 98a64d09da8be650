"""The ``cxtrace`` command line (design.md section 8).

``cxtrace run -- CMD ARGS...`` validates the configuration, puts the directory of
``cxtrace/_autostart/sitecustomize.py`` first on ``PYTHONPATH`` and replaces itself with
CMD (``exec``): every Python interpreter CMD starts then instruments itself at start-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from cxtrace._core.config import describe, is_disabled, load_settings
from cxtrace._core.errors import ConfigError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, exit 2: scripts and pipelines read the reason, not a usage dump.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _config(_: argparse.Namespace) -> int:
    if is_disabled(os.environ):
        # Exactly as instrument(): the kill switch skips every other check.
        print("CXTRACE_ENABLED=false: instrument() is a no-op; nothing else is read")
        return 0
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"cxtrace: configuration error: {exc}", file=sys.stderr)
        return 2
    rows = describe(os.environ, settings)
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value}  ({source})")
    journeys = settings.journeys
    print(f"\njourneys: {len(journeys)}")
    for journey in journeys:
        steps = ", ".join(step.name for step in journey.steps)
        print(f"  {journey.name}: {steps}")
    return 0


AUTOSTART_DIR = str(Path(__file__).resolve().parent / "_autostart")

# Exit codes of a command that cannot be started, as env(1), nohup(1) and timeout(1) use.
_NOT_FOUND = 127
_NOT_EXECUTABLE = 126

_RUN_HELP = """\
Run CMD with cxtrace.instrument() applied when each of its Python interpreters starts,
configured only by the environment (CXTRACE_* and OTEL_* variables), like
opentelemetry-instrument or ddtrace-run. The configuration is validated first: a bad
value exits 2 with the error, before CMD starts.

examples:
  cxtrace run -- python app.py
  cxtrace run -- gunicorn --workers 4 app:app
  cxtrace run -- uvicorn project.asgi:application
  cxtrace run -- python manage.py runserver

Pre-fork servers: every worker exports with its own providers (service.instance.id).
Exit status: CMD's own; 2 for a bad configuration or no CMD; 127 when CMD is not found,
126 when it cannot be executed.
"""


def _with_autostart(pythonpath: Optional[str]) -> str:
    if not pythonpath:
        return AUTOSTART_DIR
    if pythonpath.split(os.pathsep)[0] == AUTOSTART_DIR:  # `cxtrace run` inside itself
        return pythonpath
    return AUTOSTART_DIR + os.pathsep + pythonpath


def _run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print(
            "cxtrace run: error: no command given; usage: cxtrace run -- CMD [ARG ...]",
            file=sys.stderr,
        )
        return 2
    environ = os.environ
    if not is_disabled(environ):
        try:
            load_settings(environ)  # as instrument() will, so a mistake stops here, not later
        except ConfigError as exc:
            print(f"cxtrace: configuration error: {exc}", file=sys.stderr)
            return 2
    path = environ.get("PATH", os.defpath)
    executable = shutil.which(command[0], path=path)
    if executable is None:
        if os.sep in command[0] and os.path.exists(command[0]):
            print(f"cxtrace run: error: {command[0]}: not executable", file=sys.stderr)
            return _NOT_EXECUTABLE
        why = "no such file" if os.sep in command[0] else "not found on PATH"
        print(f"cxtrace run: error: {command[0]}: {why}", file=sys.stderr)
        return _NOT_FOUND
    env = dict(environ)
    env["PYTHONPATH"] = _with_autostart(environ.get("PYTHONPATH"))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # No return: CMD takes over this process (its pid, signals, exit status).
        os.execve(executable, command, env)  # noqa: S606 - running CMD is what `run` is for
    except OSError as exc:
        print(f"cxtrace run: error: cannot execute {executable}: {exc.strerror}", file=sys.stderr)
        return _NOT_EXECUTABLE


def _not_yet(args: argparse.Namespace) -> int:
    print(f"cxtrace {args.command}: not available in this version yet", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _Parser(prog="cxtrace", description="Customer-experience tracing for Python web apps.")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    config = commands.add_parser(
        "config",
        help="validate the environment and journeys file; print the effective configuration",
        description="Validate CXTRACE_* / OTEL_* and the journeys file exactly as instrument() "
        "would; print the effective configuration with secrets as ***. Exit 0 "
        "when valid, 2 with the error otherwise.",
    )
    config.set_defaults(func=_config)
    run = commands.add_parser(
        "run",
        help="run a command with cxtrace applied at interpreter start",
        description=_RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="cxtrace run [-h] -- CMD [ARG ...]",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    run.set_defaults(func=_run)
    for name, text in (
        ("cockpit", "the local Customer Experience Cockpit (coming with issue #8)"),
        ("demo", "the cockpit with an example shop under load (issue #8)"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        sub.set_defaults(func=_not_yet)
    args = parser.parse_args(argv)
    return int(args.func(args))
