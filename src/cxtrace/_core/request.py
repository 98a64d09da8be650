"""What the core needs to know about an incoming request, whatever the framework.

Integrations implement :class:`RequestView` over their own request object; the core
and telemetry layers never see a framework object (resolvers get it as ``Any``).
"""

from __future__ import annotations

from typing import Optional, Protocol

__all__ = ["RequestView", "split_host"]


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


def split_host(host: str) -> tuple[str, Optional[str]]:
    """A ``Host`` header as (address, port text or None); IPv6 brackets removed.

    >>> split_host("[::1]:8000"), split_host("shop.example:443"), split_host("shop.example")
    (('::1', '8000'), ('shop.example', '443'), ('shop.example', None))
    """
    head, colon, tail = host.rpartition(":")
    port = tail if colon and not host.endswith("]") else None
    if host.startswith("["):  # [::1]:8000
        end = host.find("]")
        return (host[1:end] if end >= 0 else host), port
    if colon and ":" not in head:  # shop.example:443 (one colon; more: a bare IPv6)
        return head, port
    return host, port
