"""Monkey patches, recorded so they can be undone.

The sole importer of wrapt. :class:`Patcher` wraps ``owner.name`` with a wrapt
``FunctionWrapper`` (so descriptors, ``self`` and signatures behave) and remembers
(owner, name, original, wrapper). :meth:`Patcher.undo` restores in reverse order, but
only where the attribute is still ours; where someone wrapped on top of us, our wrapper
stays in place and turns pass-through instead of tearing their wrapper off too.
"""

from __future__ import annotations

from typing import Any, Callable

import wrapt

from cxtrace._core.locks import ForkSafeLock

__all__ = ["ObjectProxy", "Patcher", "WrapperFn"]

# A proxy that looks like what it wraps: ``isinstance``, ``__class__``, attributes, ``len``
# and the rest pass through, so a patched call can hand back its result watched without
# the host seeing a different object (tests/test_host_view.py).
ObjectProxy = wrapt.ObjectProxy

WrapperFn = Callable[[Any, Any, "tuple[Any, ...]", "dict[str, Any]"], Any]


class _Patch:
    __slots__ = ("is_own", "name", "original", "owner", "switch", "wrapper")

    def __init__(self, owner: Any, name: str, original: Any, *, is_own: bool) -> None:
        self.owner = owner
        self.name = name
        self.original = original
        self.is_own = is_own  # defined on owner itself, not inherited
        # On: one item; undo() empties it. wrapt evaluates its truth on every call of the
        # patched function: no Python frame per call, where a closure checking a flag
        # cost ~1,600 instructions per call.
        self.switch = [True]
        self.wrapper: Any = None


class Patcher:
    """Applies and undoes one instrumentation's patches."""

    def __init__(self) -> None:
        self._patches: list[_Patch] = []
        self._lock = ForkSafeLock()

    def wrap(self, owner: Any, name: str, fn: WrapperFn) -> None:
        """Wrap ``owner.name`` with ``fn(wrapped, instance, args, kwargs)``."""
        is_own = name in vars(owner)
        original = vars(owner)[name] if is_own else getattr(owner, name)
        patch = _Patch(owner, name, original, is_own=is_own)
        # wrapt tests ``enabled`` for truth on every call: the list, no call at all.
        enabled: Any = patch.switch  # a list: truthy while on (wrapt's stubs want __bool__)
        patch.wrapper = wrapt.FunctionWrapper(original, fn, enabled=enabled)
        with self._lock:
            setattr(owner, name, patch.wrapper)
            self._patches.append(patch)

    def undo(self) -> None:
        with self._lock:
            patches, self._patches = self._patches, []
        for patch in reversed(patches):
            patch.switch.clear()  # pass-through from now on, wherever the wrapper stays
            if vars(patch.owner).get(patch.name) is patch.wrapper:
                if patch.is_own:
                    setattr(patch.owner, patch.name, patch.original)
                else:
                    delattr(patch.owner, patch.name)
