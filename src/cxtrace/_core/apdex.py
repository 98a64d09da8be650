"""Apdex classification: one request's duration and error state -> an Outcome.

    duration <= T          satisfied   1.0
    duration <= 4T         tolerating  0.5   reason "slow"
    duration >  4T         frustrated  0.0   reason "slow"
    error (any duration)   frustrated  0.0   reason "error"

The four possible outcomes are module constants, so classifying allocates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Optional

__all__ = ["FRUSTRATED_ERROR", "FRUSTRATED_SLOW", "SATISFIED", "TOLERATING", "Outcome", "classify"]


@dataclass(frozen=True)
class Outcome:
    satisfaction: str
    score: float
    reason: Optional[str]  # "slow" | "error" | None when satisfied


SATISFIED: Final = Outcome("satisfied", 1.0, None)
TOLERATING: Final = Outcome("tolerating", 0.5, "slow")
FRUSTRATED_SLOW: Final = Outcome("frustrated", 0.0, "slow")
FRUSTRATED_ERROR: Final = Outcome("frustrated", 0.0, "error")


def classify(duration_s: float, threshold_s: float, *, is_error: bool) -> Outcome:
    """Classify one request.

    >>> classify(0.2, 0.5, is_error=False).satisfaction
    'satisfied'
    >>> classify(0.9, 0.5, is_error=False).reason
    'slow'
    """
    if is_error:
        return FRUSTRATED_ERROR
    if duration_s <= threshold_s:
        return SATISFIED
    if duration_s <= 4 * threshold_s:
        return TOLERATING
    return FRUSTRATED_SLOW
