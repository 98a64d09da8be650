"""What the core needs to know about an incoming request, whatever the framework.

Integrations implement :class:`RequestView` over their own request object; the core
and telemetry layers never see a framework object (resolvers get it as ``Any``).
"""

from __future__ import annotations

from typing import Optional, Protocol

__all__ = ["RequestView"]


class RequestView(Protocol):
    @property
    def method(self) -> str:
        """As sent, e.g. ``GET``."""

    @property
    def path(self) -> str: ...

    @property
    def scheme(self) -> str: ...

    @property
    def query(self) -> str:
        """The raw query string without ``?``; empty when none."""

    def header(self, environ_key: str) -> Optional[str]:
        """One header by its CGI/WSGI key, e.g. ``HTTP_X_CUSTOMER_TIER``; None when absent."""
        ...
