"""cxtrace: OpenTelemetry for Flask and Django that speaks customer experience.

>>> import cxtrace
>>> cxtrace.instrument()  # doctest: +SKIP

See design.md section 2 for the contract; everything not re-exported here is private.
"""

from __future__ import annotations

from cxtrace._api import (
    Instrumentation,
    instrument,
    mark_conversion,
    rum_snippet,
    set_segment,
    set_user,
    shutdown,
    step,
    uninstrument,
)
from cxtrace._api import (
    __version__ as __version__,
)
from cxtrace._core.errors import ConfigError
from cxtrace._core.journeys import Journey, Step

__all__ = [
    "ConfigError",
    "Instrumentation",
    "Journey",
    "Step",
    "instrument",
    "mark_conversion",
    "rum_snippet",
    "set_segment",
    "set_user",
    "shutdown",
    "step",
    "uninstrument",
]
