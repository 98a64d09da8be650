"""Apdex classification (design.md section 4), with explicit durations and no clocks."""

from __future__ import annotations

import pytest

from cxtrace._core.apdex import (
    FRUSTRATED_ERROR,
    FRUSTRATED_SLOW,
    SATISFIED,
    TOLERATING,
    Outcome,
    classify,
)

T = 0.5  # seconds; 4T = 2.0 s, both exact in binary floating point


@pytest.mark.parametrize(
    ("duration_s", "expected"),
    [
        pytest.param(0.0, SATISFIED, id="instant"),
        pytest.param(0.2, SATISFIED, id="well-under-T"),
        pytest.param(T, SATISFIED, id="exactly-T"),
        pytest.param(T + 1e-9, TOLERATING, id="just-above-T"),
        pytest.param(1.0, TOLERATING, id="2T"),
        pytest.param(4 * T, TOLERATING, id="exactly-4T"),
        pytest.param(4 * T + 1e-9, FRUSTRATED_SLOW, id="just-above-4T"),
        pytest.param(60.0, FRUSTRATED_SLOW, id="a-minute"),
    ],
)
def test_duration_against_t_and_4t_decides_satisfaction(
    duration_s: float, expected: Outcome
) -> None:
    assert classify(duration_s, T, is_error=False) == expected


@pytest.mark.parametrize(
    ("duration_s", "threshold_s", "expected"),
    [
        pytest.param(0.001, 0.001, SATISFIED, id="1ms-at-1ms"),
        pytest.param(0.004, 0.001, TOLERATING, id="4ms-at-1ms"),
        pytest.param(0.005, 0.001, FRUSTRATED_SLOW, id="5ms-at-1ms"),
        pytest.param(2.0, 2.0, SATISFIED, id="2s-at-2s"),
        pytest.param(8.0, 2.0, TOLERATING, id="8s-at-2s"),
        pytest.param(8.5, 2.0, FRUSTRATED_SLOW, id="8.5s-at-2s"),
    ],
)
def test_the_threshold_scales_both_boundaries(
    duration_s: float, threshold_s: float, expected: Outcome
) -> None:
    assert classify(duration_s, threshold_s, is_error=False) == expected


@pytest.mark.parametrize("duration_s", [0.0, T, 4 * T, 60.0])
def test_an_error_is_frustrated_with_reason_error_whatever_the_duration(duration_s: float) -> None:
    assert classify(duration_s, T, is_error=True) == FRUSTRATED_ERROR


@pytest.mark.parametrize(
    ("outcome", "satisfaction", "score", "reason"),
    [
        pytest.param(SATISFIED, "satisfied", 1.0, None, id="satisfied"),
        pytest.param(TOLERATING, "tolerating", 0.5, "slow", id="tolerating"),
        pytest.param(FRUSTRATED_SLOW, "frustrated", 0.0, "slow", id="frustrated-slow"),
        pytest.param(FRUSTRATED_ERROR, "frustrated", 0.0, "error", id="frustrated-error"),
    ],
)
def test_outcome_fields_are_the_attribute_values_of_the_contract(
    outcome: Outcome, satisfaction: str, score: float, reason: str | None
) -> None:
    assert (outcome.satisfaction, outcome.score, outcome.reason) == (satisfaction, score, reason)
    assert isinstance(outcome.score, float)


def test_outcomes_are_immutable_shared_constants() -> None:
    assert classify(0.1, T, is_error=False) is SATISFIED
    with pytest.raises(AttributeError):
        SATISFIED.score = 0.0  # type: ignore[misc]
