"""Instructions per request, counted by valgrind's callgrind: before/after on a busy machine.

Wall-clock medians move with whatever else the machine runs; the number of instructions
a request executes does not. For each configuration this runs ``target.py untimed``
(the benchmark's app and pipeline, a SimpleSpanProcessor so no export thread runs) under
``valgrind --tool=callgrind`` twice, with a few and with more requests, and prints the
difference per request (start-up, warm-up and shutdown cancel out). With
PYTHONHASHSEED=0 and address randomisation off (``setarch -R``) repeat runs agree to a
few dozen instructions. Needs valgrind; slow (about 50x): keep the counts small.

    python tests/bench/instructions.py --framework flask bare floor contrib+metrics cxtrace
    python tests/bench/instructions.py --framework django cxtrace cxtrace+visits cxtrace+visits-new

The configurations are ``target.py``'s server ones (``--help`` lists them). Not part of
``nox -s bench``; what a change buys is reported in its commit message.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from target import BREAKDOWN_CONFIGS, SERVER_CONFIGS  # this directory: sys.path[0]

HERE = Path(__file__).resolve().parent
TARGET = HERE / "target.py"
CONFIGS = SERVER_CONFIGS + BREAKDOWN_CONFIGS


def instructions(framework: str, config: str, requests: int, warmup: int) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CXTRACE_"))}
    env["PYTHONHASHSEED"] = "0"
    cmd = [
        "setarch",
        platform.machine(),
        "-R",
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(TARGET),
        "untimed",
        "--framework",
        framework,
        "--config",
        config,
        "--requests",
        str(requests),
        "--warmup",
        str(warmup),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.stderr.write(done.stderr[-2000:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "configs", nargs="+", choices=CONFIGS, metavar="CONFIG", help=", ".join(CONFIGS)
    )
    parser.add_argument("--framework", choices=("flask", "django"), default="flask")
    parser.add_argument("--few", type=int, default=200, help="requests of the first run")
    parser.add_argument("--more", type=int, default=1200, help="requests of the second run")
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()
    for config in args.configs:
        few = instructions(args.framework, config, args.few, args.warmup)
        more = instructions(args.framework, config, args.more, args.warmup)
        per_request = (more - few) / (args.more - args.few)
        sys.stdout.write(
            f"{args.framework:<7} {config:<18} {per_request:12,.0f} instructions/request\n"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
