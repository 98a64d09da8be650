"""The exception users see when their configuration is wrong.

Exception
 └── ValueError
      └── cxtrace.ConfigError   raised by instrument(), cxtrace config, Journey(), Step()
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """Invalid configuration; the message names the setting, its value and what is expected.

    For example::

        cxtrace.ConfigError: CXTRACE_APDEX_THRESHOLD_MS='fast': expected a positive number
        of milliseconds
    """


ConfigError.__module__ = "cxtrace"
