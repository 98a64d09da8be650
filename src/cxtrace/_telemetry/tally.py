"""Counters cxtrace keeps itself and reports through observable counters at collection.

An SDK ``Counter.add()`` cleans and hashes its attribute dict on every call, which was most
of the cost of a request (tests/bench, ``--profile``); a :class:`Tally` is a locked dict
increment keyed on a tuple the request path builds anyway. A fresh one per provider build
also means that a forked child never re-reports its parent's counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

from opentelemetry.metrics import CallbackOptions, Observation

from cxtrace._core.locks import ForkSafeLock

__all__ = ["Tally"]

Key = tuple[Union[str, bool, None], ...]


class Tally:
    """Cumulative sums per attribute set, read by an observable counter's callback.

    Keys are tuples of attribute values in ``names`` order (None: attribute absent). They
    are bounded: segments by the SegmentGate, steps and routes by configuration and route
    templates, methods by the known set; each key's attribute dict is built once.
    """

    __slots__ = ("_attributes", "_counts", "_lock", "_names")

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        self._counts: dict[Key, Union[int, float]] = {}
        self._attributes: dict[Key, dict[str, Union[str, bool]]] = {}
        self._lock = ForkSafeLock()

    def add(self, key: Key, amount: Union[int, float] = 1) -> None:
        with self._lock.raw:  # once per request: the lock itself (cxtrace._core.locks)
            count = self._counts.get(key)
            if count is None:
                self._attributes[key] = {
                    name: value for name, value in zip(self._names, key) if value is not None
                }
                self._counts[key] = amount
            else:
                self._counts[key] = count + amount

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        attributes = self._attributes
        return [Observation(count, attributes[key]) for key, count in counts]

    def snapshot(self) -> dict[Key, Union[int, float]]:
        """The sums so far, by key (for tests and the self-report)."""
        with self._lock:
            return dict(self._counts)
