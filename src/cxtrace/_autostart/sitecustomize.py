"""Instrument this interpreter at start-up: what ``cxtrace run`` injects into a program.

``cxtrace run -- CMD`` puts this file's directory first on ``PYTHONPATH``, so Python's
``site`` module imports this file as ``sitecustomize`` in every interpreter CMD starts
(a gunicorn master and its workers, uvicorn, ``python manage.py runserver``). Here we

1. run the ``sitecustomize`` that was next on the path (the user's or the
   distribution's) as ``site`` would have, so it can still set up the process; then
2. unless ``CXTRACE_ENABLED=false``, call ``cxtrace.instrument()``, configured only by
   the environment;
3. if nobody handles SIGTERM yet, flush telemetry before SIGTERM ends the process.
   Its default action kills the process without running exit hooks, hence without the
   SDK's final flush; uvicorn (>= 0.29) even re-raises SIGTERM after its graceful
   shutdown. The process still dies of SIGTERM, a few seconds later at most.

Nothing here may stop the program from starting: ``cxtrace run`` validated the
configuration before starting CMD, and any failure left (an interpreter without
cxtrace, an internal error) is one line on stderr; the program runs uninstrumented.

Imports: ``cxtrace`` and ``cxtrace._core.config``, only once the chained
``sitecustomize`` has run.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from types import FrameType, ModuleType
from typing import Any, Optional

# The longest SIGTERM waits for the flush: well inside the usual grace periods (Kubernetes
# and systemd give 30 s, docker stop 10 s) before the SIGKILL that would follow.
_FLUSH_ON_SIGTERM_S = 3.0


def _run_next_sitecustomize() -> Optional[ModuleType]:
    """Import the ``sitecustomize`` this one shadows; mirror ``site``'s error handling."""
    here = os.path.dirname(os.path.realpath(__file__))
    ours = sys.modules.pop("sitecustomize", None)
    saved_path = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    found: Optional[ModuleType] = None
    try:
        found = importlib.import_module("sitecustomize")
    except ImportError as exc:
        if exc.name != "sitecustomize":
            _report_site_error(exc)
    except Exception as exc:  # noqa: BLE001 - exactly what site.py catches for it
        _report_site_error(exc)
    finally:
        sys.path[:] = saved_path
        # `import sitecustomize` then finds the user's module, as without cxtrace.
        if found is not None:
            sys.modules["sitecustomize"] = found
        elif ours is not None:
            sys.modules["sitecustomize"] = ours
    return found


def _report_site_error(exc: BaseException) -> None:
    if sys.flags.verbose:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    else:
        sys.stderr.write(
            "Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
            f"{exc.__class__.__name__}: {exc}\n"
        )


def _instrument() -> Any:
    """The Instrumentation handle, or None when not instrumenting."""
    try:
        import cxtrace  # noqa: PLC0415 - after the user's sitecustomize, which may set up paths
        from cxtrace._core.config import is_disabled  # noqa: PLC0415
    except ImportError as exc:
        sys.stderr.write(
            f"cxtrace: cannot import cxtrace in {sys.executable} ({exc}); running uninstrumented\n"
        )
        return None
    if is_disabled(os.environ):
        return None
    try:
        return cxtrace.instrument()
    except cxtrace.ConfigError as exc:
        sys.stderr.write(f"cxtrace: configuration error: {exc}; running uninstrumented\n")
    except Exception as exc:  # noqa: BLE001 - never stop the host program from starting
        sys.stderr.write(
            f"cxtrace: instrument() failed ({exc.__class__.__name__}: {exc}); "
            "running uninstrumented\n"
        )
    return None


def _flush_before_sigterm(handle: Any) -> None:
    """Flush, then die of SIGTERM as before; only where SIGTERM has no handler yet.

    A server that handles SIGTERM itself (gunicorn) exits through the exit hooks anyway,
    and one that restores the previous handler before re-raising it (uvicorn) gets this.
    """
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        if handle.enabled:  # not after cxtrace.shutdown(), which flushed already
            # Flush from another thread: the main thread, interrupted here, may hold a
            # lock the flush needs. The join bounds the wait either way.
            flusher = threading.Thread(
                target=handle.force_flush, args=(_FLUSH_ON_SIGTERM_S,), daemon=True
            )
            flusher.start()
            flusher.join(_FLUSH_ON_SIGTERM_S)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


if __name__ == "sitecustomize":  # imported by site at start-up, not as cxtrace._autostart...
    _run_next_sitecustomize()
    _handle = _instrument()
    if _handle is not None and _handle.enabled:
        _flush_before_sigterm(_handle)
