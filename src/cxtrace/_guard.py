"""The never-break-the-host guard.

Every hook cxtrace runs inside a request (start, finish, user resolvers, span
processors) runs inside a :class:`Guard`. An ``Exception`` raised there is logged
once per cause at WARNING (later occurrences at DEBUG), reported to
:func:`on_internal_error` (a no-op in production; the test suite turns it into a
failure) and swallowed, so the host's request proceeds unchanged. ``BaseException``
subclasses such as ``KeyboardInterrupt`` are never ours to swallow.

Imports: stdlib only.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

__all__ = ["Guard", "set_internal_error_hook"]

_log = logging.getLogger("cxtrace")

_Hook = Callable[[str, BaseException], None]
_hook: Optional[_Hook] = None


def set_internal_error_hook(hook: Optional[_Hook]) -> None:
    """Install a callable told about every error a guard swallowed (tests use it)."""
    global _hook  # noqa: PLW0603 - one process-wide hook, set by the test suite
    _hook = hook


def on_internal_error(site: str, exc: BaseException) -> None:
    hook = _hook
    if hook is not None:
        hook(site, exc)


class Guard:
    """A reusable context manager that keeps cxtrace's own errors out of the host.

    One instance per hook site, built at import, so entering it allocates nothing::

        _FINISH = Guard("flask.finish")
        with _FINISH:
            state.finish()

    Sites that run on every request use the same guard as a ``try`` instead: a ``with``
    block costs two Python calls (``__enter__``, ``__exit__``) even when nothing fails,
    about 2,300 instructions; a ``try`` costs nothing until something does::

        try:
            state.finish()
        except Exception as exc:  # not BaseException: KeyboardInterrupt is not ours
            _FINISH.swallow(exc)
    """

    __slots__ = ("_seen", "site")

    def __init__(self, site: str) -> None:
        self.site = site
        self._seen: set[type[BaseException]] = set()  # causes already logged at WARNING

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: object, exc: BaseException | None, tb: object) -> bool:
        if not isinstance(exc, Exception):  # no error, or KeyboardInterrupt & co: not ours
            return False
        self.swallow(exc)
        return True

    def swallow(self, exc: Exception) -> None:
        """Log (once per cause at WARNING) and report one of cxtrace's own errors."""
        cause = type(exc)
        level = logging.DEBUG if cause in self._seen else logging.WARNING
        self._seen.add(cause)
        _log.log(level, "%s failed; request unaffected", self.site, exc_info=exc)
        on_internal_error(self.site, exc)
