"""The upstream runner's probe: proof of what cxtrace did in a suite's process.

tests/upstream/run.py puts this folder on ``PYTHONPATH`` for every run of an upstream
suite, bare and under ``cxtrace run``. Python imports this file as ``sitecustomize`` at
start-up; under ``cxtrace run`` it is the ``sitecustomize`` cxtrace's own one chains to,
just before that one calls ``cxtrace.instrument()``. It changes nothing the suite sees.
At exit it writes ``$CXUPSTREAM_PROBE_DIR/probe-<pid>.json``:

- ``cxtrace_imported``: a bare run must say false;
- under cxtrace (``CXUPSTREAM_MODE=cxtrace``): what ``instrument()`` returned, whether each
  function named in ``CXUPSTREAM_PATCHED`` really was cxtrace's wrapper right after it
  (exit hooks undo the patches later), how many spans of each kind started and ended (a
  counting span processor on cxtrace's provider: requests really went through cxtrace), each
  error cxtrace's guards swallowed (kept from the host, so otherwise unseen).

A ``sitecustomize`` this one shadows (a distribution's) still runs, first.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import sys
import threading
import traceback
from typing import Any

_lock = threading.Lock()
_record: dict[str, Any] = {"mode": os.environ.get("CXUPSTREAM_MODE", "bare")}
_spans: dict[str, int] = {}
_errors: dict[str, dict[str, Any]] = {}


def _chain() -> None:
    """Import the ``sitecustomize`` next on the path, as ``site`` would have."""
    here = os.path.dirname(os.path.realpath(__file__))
    mine = sys.modules.pop("sitecustomize", None)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    found = None
    try:
        found = importlib.import_module("sitecustomize")
    except ImportError as exc:
        if exc.name != "sitecustomize":
            raise
    finally:
        sys.path[:] = saved
        if found is not None:
            sys.modules["sitecustomize"] = found
        elif mine is not None:
            sys.modules["sitecustomize"] = mine


def _resolve(spec: str) -> Any:
    """``package.module:Class.attr`` -> the attribute as its owner holds it, or None."""
    module_name, _, attrs = spec.partition(":")
    owner: Any = sys.modules.get(module_name)
    *path, last = attrs.split(".")
    for name in path:
        owner = getattr(owner, name, None)
    if owner is None:
        return None
    return vars(owner).get(last) if isinstance(owner, type) else getattr(owner, last, None)


def _is_cxtraces(value: Any) -> bool:
    """Whether ``value`` is a wrapt wrapper around a function of cxtrace's."""
    wrapper = getattr(value, "_self_wrapper", None)  # wrapt's FunctionWrapper keeps it there
    return str(getattr(wrapper, "__module__", None)).startswith("cxtrace.")


def _count(key: str) -> None:
    with _lock:
        _spans[key] = _spans.get(key, 0) + 1


def _counting_processor() -> Any:
    from opentelemetry.sdk.trace import SpanProcessor  # noqa: PLC0415

    class Counting(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            _count(f"started {span.kind.name}")

        def on_end(self, span: Any) -> None:
            _count(f"ended {span.kind.name}")

    return Counting()


def _on_internal_error(site: str, exc: BaseException) -> None:
    ours = [
        f"{frame.filename.rpartition('/cxtrace/')[2]}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
        if "/cxtrace/" in frame.filename
    ]
    # Where cxtrace was entered (the patched function) and where it failed.
    where = f" (cxtrace/{' -> cxtrace/'.join(dict.fromkeys([ours[0], ours[-1]]))})" if ours else ""
    key = f"{site}: {type(exc).__name__}: {str(exc)[:200]}{where}"
    with _lock:
        seen = _errors.get(key)
        if seen is None:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            _errors[key] = {"count": 1, "traceback": tb[-4000:]}
        else:
            seen["count"] += 1


def _after_instrument(handle: Any) -> None:
    from cxtrace._guard import set_internal_error_hook  # noqa: PLC0415

    _record["instrument_called"] = True
    _record["enabled"] = bool(getattr(handle, "enabled", False))
    _record["integrations"] = list(getattr(handle, "integrations", ()))
    specs = [s for s in os.environ.get("CXUPSTREAM_PATCHED", "").split(",") if s]
    _record["patched"] = {s: _is_cxtraces(_resolve(s)) for s in specs}
    add = getattr(getattr(handle, "tracer_provider", None), "add_span_processor", None)
    if add is not None:
        add(_counting_processor())
        _record["counting_spans"] = True
    set_internal_error_hook(_on_internal_error)


def _watch_instrument() -> None:
    """Wrap ``cxtrace.instrument`` for its one call by cxtrace's sitecustomize."""
    try:
        import cxtrace  # noqa: PLC0415
    except ImportError as exc:
        _record["probe_error"] = f"cannot import cxtrace: {exc}"
        return
    original = cxtrace.instrument

    @functools.wraps(original)
    def instrument(*args: Any, **kwargs: Any) -> Any:
        cxtrace.instrument = original  # any later caller gets cxtrace's own
        handle = original(*args, **kwargs)
        try:
            _after_instrument(handle)
        except Exception as exc:  # the probe must not break the suite
            _record["probe_error"] = f"{type(exc).__name__}: {exc}"
        return handle

    cxtrace.instrument = instrument


def _write() -> None:
    folder = os.environ.get("CXUPSTREAM_PROBE_DIR")
    if not folder:
        return
    with _lock:
        record = dict(
            _record,
            pid=os.getpid(),
            argv=list(getattr(sys, "argv", [])),
            cxtrace_imported="cxtrace" in sys.modules,
            spans=dict(_spans),
            internal_errors=dict(_errors),
        )
    path = os.path.join(folder, f"probe-{os.getpid()}.json")
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            json.dump(record, out, indent=1)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


_chain()
atexit.register(_write)  # first registered, so it runs last: after cxtrace's exit flush
if _record["mode"] == "cxtrace":
    _watch_instrument()
