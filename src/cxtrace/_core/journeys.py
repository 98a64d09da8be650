"""Journeys, steps and the matcher that maps a request to its step.

A step matches by ``route`` (the framework's route template, compared with a leading
``/`` and no trailing ``/``) or by ``path`` (a glob on the URL path), plus ``method``
when given. Precedence: ``cxtrace.step()`` in code > route rule > path rule.

Everything is decided when :class:`StepMatcher` is built; per request it does one or
two dict lookups for the route and walks a short list of compiled globs for the path.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Optional, Union

from cxtrace._core.errors import ConfigError
from cxtrace._core.keys import CX_JOURNEY, CX_STEP, CX_STEP_INDEX

__all__ = [
    "HTTP_METHODS",
    "MAX_NAMED_STEPS",
    "OTHER_STEP",
    "Journey",
    "Step",
    "StepMatcher",
    "StepRef",
    "normalize_route",
]

HTTP_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def normalize_route(route: str) -> str:
    """``products/<int:id>/`` and ``/products/<int:id>`` both become ``/products/<int:id>``."""
    route = route.strip()
    if not route.startswith("/"):
        route = "/" + route
    if len(route) > 1:
        route = route.rstrip("/") or "/"
    return route


def _require_text(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what}={value!r}: expected a non-empty string")
    return value.strip()


class Step:
    """One conversion step of a :class:`Journey`.

    >>> Step("checkout", route="/checkout", apdex_threshold_ms=1000)
    cxtrace.Step('checkout', route='/checkout', apdex_threshold_ms=1000)
    """

    __slots__ = ("apdex_threshold_ms", "conversion", "method", "name", "path", "route")

    def __init__(
        self,
        name: str,
        *,
        route: Optional[str] = None,
        path: Optional[str] = None,
        method: Optional[str] = None,
        conversion: bool = False,
        apdex_threshold_ms: Optional[float] = None,
    ) -> None:
        self.name = _require_text("step name", name)
        where = f"step {self.name!r}"
        self.route = (
            normalize_route(_require_text(f"{where} route", route)) if route is not None else None
        )
        self.path = _require_text(f"{where} path", path) if path is not None else None
        if self.path is not None and not self.path.startswith("/"):
            raise ConfigError(
                f"{where} path={path!r}: expected a glob starting with '/', e.g. '/cart/*'"
            )
        if method is not None:
            upper = method.strip().upper() if isinstance(method, str) else None
            if upper not in HTTP_METHODS:
                raise ConfigError(
                    f"{where} method={method!r}: expected one of {', '.join(sorted(HTTP_METHODS))}"
                )
            method = upper
        self.method: Optional[str] = method
        if not isinstance(conversion, bool):
            raise ConfigError(f"{where} conversion={conversion!r}: expected true or false")
        self.conversion = conversion
        self.apdex_threshold_ms = (
            parse_threshold(f"{where} apdex_threshold_ms", apdex_threshold_ms)
            if apdex_threshold_ms is not None
            else None
        )

    def __repr__(self) -> str:
        fields = [repr(self.name)]
        for key in ("route", "path", "method", "conversion", "apdex_threshold_ms"):
            value = getattr(self, key)
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # as written: apdex_threshold_ms=1000, not 1000.0
            if value not in (None, False):
                fields.append(f"{key}={value!r}")
        return f"cxtrace.Step({', '.join(fields)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Step):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in Step.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value object


class Journey:
    """A named sequence of steps, e.g. browse -> cart -> checkout -> purchase.

    >>> Journey("buy", steps=[Step("browse"), Step("pay", conversion=True)])
    cxtrace.Journey('buy', steps=[cxtrace.Step('browse'), cxtrace.Step('pay', conversion=True)])
    """

    __slots__ = ("name", "steps")

    def __init__(self, name: str, *, steps: Sequence[Step]) -> None:
        self.name = _require_text("journey name", name)
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
            raise ConfigError(
                f"journey {self.name!r} steps={steps!r}: expected a list of cxtrace.Step"
            )
        self.steps = tuple(steps)
        if not self.steps:
            raise ConfigError(f"journey {self.name!r} steps=[]: expected at least one step")
        seen: set[str] = set()
        for step in self.steps:
            if not isinstance(step, Step):
                raise ConfigError(f"journey {self.name!r} step {step!r}: expected a cxtrace.Step")
            if step.name in seen:
                raise ConfigError(f"journey {self.name!r}: duplicate step {step.name!r}")
            seen.add(step.name)

    def __repr__(self) -> str:
        return f"cxtrace.Journey({self.name!r}, steps=[{', '.join(map(repr, self.steps))}])"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Journey):
            return NotImplemented
        return self.name == other.name and self.steps == other.steps

    __hash__ = None  # type: ignore[assignment]


Step.__module__ = "cxtrace"
Journey.__module__ = "cxtrace"


MAX_THRESHOLD_MS: Final = 3_600_000  # an hour; beyond that Apdex means nothing


def parse_threshold(what: str, value: object) -> float:
    """A positive number of milliseconds up to an hour (bool is not a number here)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ConfigError(f"{what}={value!r}: expected a positive number of milliseconds")
    if value > MAX_THRESHOLD_MS:
        raise ConfigError(
            f"{what}={value!r}: expected a positive number of milliseconds "
            f"up to {MAX_THRESHOLD_MS} (an hour)"
        )
    return float(value)


@dataclass(frozen=True)
class StepRef:
    """A resolved step: what a request carries once it is matched."""

    journey: Optional[str]
    step: str
    index: Optional[int]  # 1-based, None for a step named in code that no journey lists
    conversion: bool
    threshold_ms: Optional[float]  # the step's own T, if it sets one
    attributes: Mapping[str, Union[str, int]]  # cx.journey / cx.step / cx.step.index, ready to set


def _ref(
    journey: Optional[str],
    step: str,
    index: Optional[int],
    conversion: bool,
    threshold_ms: Optional[float],
) -> StepRef:
    attrs: dict[str, Union[str, int]] = {}
    if journey is not None:
        attrs[CX_JOURNEY] = journey
    attrs[CX_STEP] = step
    if index is not None:
        attrs[CX_STEP_INDEX] = index
    return StepRef(
        journey=journey,
        step=step,
        index=index,
        conversion=conversion,
        threshold_ms=threshold_ms,
        attributes=MappingProxyType(attrs),
    )


MAX_NAMED_STEPS: Final = 1024
OTHER_STEP: Final = "other"


class StepMatcher:
    """Maps (route, path, method) to a :class:`StepRef`; built once at ``instrument()``."""

    __slots__ = ("_by_name", "_by_route", "_named", "_overflow", "_paths", "_route_cache")

    def __init__(self, journeys: Sequence[Journey]) -> None:
        self._by_route: dict[tuple[str, Optional[str]], StepRef] = {}
        self._paths: list[tuple[re.Pattern[str], Optional[str], StepRef]] = []
        self._by_name: dict[tuple[Optional[str], str], StepRef] = {}
        names: set[str] = set()
        for journey in journeys:
            if journey.name in names:
                raise ConfigError(f"journeys: duplicate journey {journey.name!r}")
            names.add(journey.name)
            for index, step in enumerate(journey.steps, start=1):
                ref = _ref(journey.name, step.name, index, step.conversion, step.apdex_threshold_ms)
                self._by_name[(journey.name, step.name)] = ref
                # A step name unique across journeys can be named in code without its journey.
                self._by_name[(None, step.name)] = (
                    ref
                    if (None, step.name) not in self._by_name
                    else _ref(None, step.name, None, False, None)
                )
                if step.route is not None:
                    key = (step.route, step.method)
                    other = self._by_route.get(key)
                    if other is not None:
                        raise ConfigError(
                            f"journeys: duplicate step for route {step.route!r}"
                            f"{' ' + step.method if step.method else ''}: "
                            f"{other.journey}.{other.step} and {journey.name}.{step.name}"
                        )
                    self._by_route[key] = ref
                if step.path is not None:
                    pattern = re.compile(fnmatch.translate(step.path))
                    self._paths.append((pattern, step.method, ref))
        # As with routes, a rule naming the method beats one that does not; otherwise
        # the order of the file decides (sort is stable).
        self._paths.sort(key=lambda rule: rule[1] is None)
        # (raw route, method) -> ref; keyed by route *templates* and methods, so bounded.
        self._route_cache: dict[tuple[str, str], Optional[StepRef]] = {}
        self._named: dict[tuple[Optional[str], str], StepRef] = {}
        self._overflow = _ref(None, OTHER_STEP, None, False, None)

    def match(self, route: Optional[str], path: str, method: str) -> Optional[StepRef]:
        if route is not None:
            key = (route, method)
            try:
                hit = self._route_cache[key]
            except KeyError:
                norm = normalize_route(route)
                hit = self._by_route.get((norm, method)) or self._by_route.get((norm, None))
                if len(self._route_cache) < 4096:
                    self._route_cache[key] = hit
            if hit is not None:
                return hit
        for pattern, want_method, ref in self._paths:
            if (want_method is None or want_method == method) and pattern.match(path):
                return ref
        return None

    def named(self, step: str, journey: Optional[str]) -> StepRef:
        """The ref for ``cxtrace.step(step, journey=journey)`` (a step no journey lists is fine)."""
        key = (journey, step)
        ref = self._by_name.get(key) or self._named.get(key)
        if ref is None:
            # Names come from code, or from a caller's (signed or trusted) baggage: past
            # MAX_NAMED_STEPS distinct ones they are all `other`, so cx.step / cx.journey
            # stay bounded in the metrics and in cxtrace's own counters.
            if len(self._named) >= MAX_NAMED_STEPS:
                return self._overflow
            ref = _ref(journey, step, None, False, None)
            self._named[key] = ref
        return ref

    @property
    def is_empty(self) -> bool:
        return not self._by_route and not self._paths
