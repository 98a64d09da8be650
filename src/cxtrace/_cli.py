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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

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


_COCKPIT_HELP = """\
Start the local Customer Experience Cockpit: an OTLP receiver (HTTP/protobuf and gRPC)
that stores what it receives in an embedded SQLite database, and a page showing customer
satisfaction by segment and journey step. Point an application at it with
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 cxtrace run -- python app.py
Ctrl-C (or SIGTERM) stops it; the data stays in the database for the next start.
"""
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COCKPIT_FLAGS = {
    "page": "--port",
    "otlp_http": "--otlp-http-port",
    "otlp_grpc": "--otlp-grpc-port",
}


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number 0-65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number 0-65535")
    return port


def _duration(text: str) -> float:
    number, unit = text[:-1], text[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit() or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration like 7d, 24h or 90m")
    return float(int(number) * _DURATION_UNITS[unit])


def default_cockpit_db(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the cockpit keeps its database unless --db says otherwise."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "cxtrace" / "cockpit.sqlite3"


def _add_cockpit(commands: Any) -> None:
    cockpit = commands.add_parser(
        "cockpit",
        help="the local Customer Experience Cockpit (OTLP receiver + page)",
        description=_COCKPIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cockpit.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    cockpit.add_argument(
        "--port", type=_port, default=8765, help="port of the page (default: %(default)s)"
    )
    cockpit.add_argument(
        "--otlp-http-port",
        type=_port,
        default=4318,
        help="port of the OTLP/HTTP receiver (default: %(default)s)",
    )
    cockpit.add_argument(
        "--otlp-grpc-port",
        type=_port,
        default=4317,
        help="port of the OTLP/gRPC receiver (default: %(default)s)",
    )
    cockpit.add_argument(
        "--db",
        type=Path,
        default=None,
        help=f"SQLite database file (default: {default_cockpit_db()})",
    )
    cockpit.add_argument(
        "--retention",
        type=_duration,
        default=7 * 86400.0,
        metavar="DURATION",
        help="how long data is kept, e.g. 7d, 24h, 90m (default: 7d)",
    )
    cockpit.set_defaults(func=_cockpit)


def _cockpit(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415 - `cxtrace run` never pays for the cockpit
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    try:
        from cxtrace._cockpit.app import Cockpit, ListenError  # noqa: PLC0415
        from cxtrace._cockpit.store import SchemaError  # noqa: PLC0415
    except ImportError as exc:
        print(
            f"cxtrace cockpit: error: {exc}; install it with: pip install 'cxtrace[cockpit]'",
            file=sys.stderr,
        )
        return 2
    # The command is the application here: its warnings (refused payloads) go to stderr.
    logging.basicConfig(level=logging.WARNING, format="cxtrace cockpit: %(message)s")
    db = args.db if args.db is not None else default_cockpit_db()
    cockpit = Cockpit(
        db,
        host=args.host,
        port=args.port,
        otlp_http_port=args.otlp_http_port,
        otlp_grpc_port=args.otlp_grpc_port,
        retention_s=args.retention,
    )
    try:
        cockpit.start()
    except ListenError as exc:
        flag = _COCKPIT_FLAGS[exc.role]
        print(f"cxtrace cockpit: error: {flag}: {exc}", file=sys.stderr)
        return 2
    except (OSError, SchemaError) as exc:
        print(f"cxtrace cockpit: error: --db {db}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"cxtrace cockpit: {cockpit.page_url}")
        print(f"cxtrace cockpit: OTLP/HTTP {cockpit.otlp_http_endpoint}")
        if cockpit.otlp_grpc_endpoint is not None:
            print(f"cxtrace cockpit: OTLP/gRPC {cockpit.otlp_grpc_endpoint}")
        print(f"cxtrace cockpit: database {db}; Ctrl-C stops", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        cockpit.stop()
    print("cxtrace cockpit: stopped", flush=True)
    return 0


_DEMO_HELP = """\
Start the Customer Experience Cockpit, the example shop (a Flask storefront calling a
Django service, both under `cxtrace run`) and shoppers of three segments (free, pro,
enterprise). Checkout is slow for enterprise customers: the cockpit shows it within a
minute. Ctrl-C stops everything it started.

The services report to the cockpit every two seconds. The database is a fresh temporary
file, removed at exit, so each run tells the story from the start and nothing mixes with
your own cockpit's data; --db keeps it (then `cxtrace cockpit --db FILE` shows it again).
"""


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number")
    return value


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="the cockpit with an example shop under load",
        description=_DEMO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--port", type=_port, default=8765, help="the cockpit's web page (8765; 0: any free port)"
    )
    demo.add_argument(
        "--otlp-http-port",
        type=_port,
        default=0,
        metavar="PORT",
        help="the cockpit's OTLP/HTTP receiver (default 0: a free port, told to the services)",
    )
    demo.add_argument(
        "--otlp-grpc-port",
        type=_port,
        default=0,
        metavar="PORT",
        help="the cockpit's OTLP/gRPC receiver (default 0: a free port)",
    )
    demo.add_argument(
        "--db",
        type=Path,
        metavar="FILE",
        help="keep the cockpit's data in this SQLite file (default: temporary)",
    )
    demo.add_argument(
        "--duration",
        type=_positive,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--rate",
        type=_positive,
        default=20.0,
        metavar="N",
        help="requests per second, all segments (20)",
    )
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from cxtrace._demo import INSTALL_HINT, missing_packages  # noqa: PLC0415 - stdlib only

    missing = missing_packages()
    if missing:
        print(
            f"cxtrace demo: error: missing {', '.join(missing)}; install with: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    from cxtrace._demo.runner import Options, run  # noqa: PLC0415 - needs the packages above

    return run(
        Options(
            port=args.port,
            otlp_http_port=args.otlp_http_port,
            otlp_grpc_port=args.otlp_grpc_port,
            db=args.db,
            duration_s=args.duration,
            rate=args.rate,
        )
    )


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
    _add_cockpit(commands)
    _add_demo(commands)
    args = parser.parse_args(argv)
    return int(args.func(args))
