"""Locks that a forked child gets back unlocked.

``os.fork()`` copies a lock in whatever state it was: one held by another thread of the
parent (a request being served, an ``instrument()`` in progress) stays held forever in the
child, where that thread does not exist. Pre-fork servers (gunicorn) fork after cxtrace has
started, so every lock cxtrace keeps is a :class:`ForkSafeLock`, re-created in the child.

Imports: stdlib only.
"""

from __future__ import annotations

import os
import threading
import weakref
from types import TracebackType
from typing import Optional

__all__ = ["ForkSafeLock"]


class ForkSafeLock:
    """A ``threading.Lock`` (``with`` only) that is new and unlocked in a forked child.

    >>> lock = ForkSafeLock()
    >>> with lock:
    ...     pass

    Per-request code locks ``lock.raw`` instead, the current ``threading.Lock`` itself:
    its C ``__enter__``/``__exit__`` skip the two Python calls of ``with lock:``. Read
    it at each use (never keep it): a forked child replaces it.

    >>> with lock.raw:
    ...     pass
    """

    __slots__ = ("__weakref__", "raw")

    def __init__(self) -> None:
        self.raw = threading.Lock()
        _locks.add(self)

    def __enter__(self) -> None:
        self.raw.acquire()

    def __exit__(
        self,
        typ: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.raw.release()

    def _after_fork_in_child(self) -> None:
        self.raw = threading.Lock()


# One fork handler for all of them (handlers cannot be unregistered, so not one per lock).
_locks: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lock in list(_locks):
        lock._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)
