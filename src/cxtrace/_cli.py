"""The ``cxtrace`` command line (design.md section 8)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
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
    for name, text in (
        ("run", "run a command with cxtrace applied (coming with issue #5)"),
        ("cockpit", "the local Customer Experience Cockpit (coming with issue #8)"),
        ("demo", "the cockpit with an example shop under load (issue #8)"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        sub.set_defaults(func=_not_yet)
    args = parser.parse_args(argv)
    return int(args.func(args))
