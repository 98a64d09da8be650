"""The cx.* context keys the core itself reads and writes (spans, metrics, baggage).

Defined here, in the stdlib-only core, so that journeys and baggage can use them;
``cxtrace._telemetry.semconv`` re-exports them beside the keys only telemetry uses.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CX_JOURNEY", "CX_SEGMENT", "CX_STEP", "CX_STEP_INDEX"]

CX_SEGMENT: Final = "cx.segment"
CX_JOURNEY: Final = "cx.journey"
CX_STEP: Final = "cx.step"
CX_STEP_INDEX: Final = "cx.step.index"
