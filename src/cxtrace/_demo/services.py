"""The example apps as child processes, each under ``cxtrace run``, each in its own group.

A service is started as ``python -m cxtrace run -- python APP --port 0``, configured only
by its environment, the way a deployment runs it. It prints ``... listening on URL`` once
it accepts connections, which is when :meth:`Service.start` returns the URL.

Each child leads a new session (so a new process group): Ctrl-C in the terminal reaches
the demo alone, and the demo stops the services in its own order (the shop before the
backend it calls, both before the cockpit that receives their last export), each with
SIGTERM to the whole group, then SIGKILL if it has not exited in time.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Optional

__all__ = ["Service", "ServiceError", "examples_dir"]

_READY = "listening on "


class ServiceError(RuntimeError):
    """A service did not start, or stopped on its own; the message says which and where."""


def examples_dir() -> Path:
    """The example apps: the copy inside the installed package, or a checkout's examples/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "examples", here.parents[2] / "examples"):
        if (candidate / "shop" / "app.py").is_file():
            return candidate
    raise ServiceError(
        f"the example apps are missing: neither {here / 'examples'} nor "
        f"{here.parents[2] / 'examples'} has shop/app.py; reinstall cxtrace"
    )


class Service:
    """One example app in a child process; its stdout and stderr go to ``log``."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "cxtrace", "run", "--", sys.executable, *argv]
        self.env = dict(env)
        self.log = log
        self.url = ""
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def start(self, timeout_s: float = 60.0) -> str:
        """Start the app; return its URL once it listens. ServiceError if it does not."""
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and files
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self._proc.stdout is not None
        lines: queue.Queue[Optional[str]] = queue.Queue()
        threading.Thread(
            target=_relay,
            args=(self._proc.stdout, self.log, lines),
            daemon=True,
            name=f"cxtrace-demo-{self.name}-stdout",
        ).start()
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            line = None
            why = f"it did not say it was listening within {timeout_s:g} s"
        else:
            why = "it exited"
        if line is None or _READY not in line:
            self.stop()
            raise ServiceError(f"the {self.name} did not start: {why}; {self.tail()}")
        self.url = line.rsplit(_READY, 1)[1].strip()
        return self.url

    def check(self) -> None:
        """ServiceError if the app has exited (it should run until stopped)."""
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise ServiceError(f"the {self.name} stopped ({how}); {self.tail()}")

    def stop(self, timeout_s: float = 8.0) -> None:
        """SIGTERM to the app's process group (it flushes its telemetry), SIGKILL if need be."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        # Anything the app started and left behind in its group goes too.
        _signal_group(proc.pid, signal.SIGKILL)

    def tail(self, lines: int = 15) -> str:
        """The end of the log, for error messages."""
        try:
            text = self.log.read_text(errors="replace").rstrip().splitlines()[-lines:]
        except OSError:
            text = []
        if not text:
            return f"its log ({self.log}) is empty"
        return f"the end of its log ({self.log}):\n    " + "\n    ".join(text)


def _relay(stream: IO[bytes], log: Path, lines: queue.Queue[Optional[str]]) -> None:
    """Hand the first line to start(), then copy the rest to the log until the pipe closes.

    Reading on keeps a chatty app from blocking on a full pipe.
    """
    first = True
    with stream, log.open("ab") as sink:
        for raw in stream:
            if first:
                lines.put(raw.decode(errors="replace"))
                first = False
            sink.write(raw)
            sink.flush()
    if first:
        lines.put(None)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
        os.killpg(pgid, signum)
