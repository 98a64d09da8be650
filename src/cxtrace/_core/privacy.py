"""Privacy: keyed user hashes, query-string redaction and bounded segments.

Nothing here sees a raw value it keeps: :func:`hash_user` returns only the HMAC,
:func:`redact_query` only the redacted string, and :class:`SegmentGate` remembers
at most ``max_distinct`` admitted segment names.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final, Optional
from urllib.parse import unquote_plus

from cxtrace._core.locks import ForkSafeLock

__all__ = [
    "MAX_SEGMENT_LENGTH",
    "OTHER",
    "REDACTED",
    "UNKNOWN",
    "SegmentGate",
    "hash_user",
    "redact_query",
    "strip_credentials",
]

UNKNOWN: Final = "unknown"
OTHER: Final = "other"
REDACTED: Final = "REDACTED"
MAX_SEGMENT_LENGTH: Final = 64
MAX_DISTINCT_SEGMENTS: Final = 50
_CACHE_LIMIT: Final = 1024

# A query key containing any of these (case-insensitive) has its value redacted.
_SECRET_KEY_PARTS: Final = (
    "password",
    "passwd",
    "pwd",
    "token",
    "secret",
    "key",
    "session",
    "auth",
    "signature",
    "credential",
)


def hash_user(key: bytes, user_id: object) -> str:
    """``user.hash``: lowercase hex HMAC-SHA256 of ``str(user_id)`` under ``key``.

    >>> hash_user(b"k", 42)[:12]
    '7955074f5116'
    """
    return hmac.new(key, str(user_id).encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _is_secret_key(raw_key: str) -> bool:
    key = unquote_plus(raw_key).lower() if ("%" in raw_key or "+" in raw_key) else raw_key.lower()
    return any(part in key for part in _SECRET_KEY_PARTS)


def redact_query(query: str) -> str:
    """Replace the values of secret-looking keys with ``REDACTED``.

    >>> redact_query("q=shoes&access_token=abc&Password=x")
    'q=shoes&access_token=REDACTED&Password=REDACTED'

    A value that is a URL carrying credentials is redacted too, whatever its key.
    """
    if not query:
        return query
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if sep and value and (_is_secret_key(key) or _has_url_credentials(value)):
            parts[i] = key + "=" + REDACTED
            changed = True
    return "&".join(parts) if changed else query


def _has_url_credentials(value: str) -> bool:
    """A query value that is itself a URL with ``user:password@`` (plain or %-encoded)."""
    if "@" not in value and "%40" not in value.upper():
        return False
    decoded = unquote_plus(value) if "%" in value else value
    scheme_end = decoded.find("://")
    if scheme_end < 0:
        return False
    at = decoded.find("@", scheme_end)
    slash = decoded.find("/", scheme_end + 3)
    return at >= 0 and (slash < 0 or at < slash)


def strip_credentials(url: str) -> str:
    """Remove ``user:password@`` from a URL's authority.

    >>> strip_credentials("https://bob:hunter2@api.example.com/x")
    'https://api.example.com/x'
    """
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    start = scheme_end + 3
    end = len(url)
    for stop in "/?#":
        pos = url.find(stop, start)
        if 0 <= pos < end:
            end = pos
    at = url.rfind("@", start, end)
    if at < 0:
        return url
    return url[:start] + url[at + 1 :]


class SegmentGate:
    """Bounds segment values so a hostile client cannot explode metric cardinality.

    With an allowlist, values match it case-insensitively (and come back spelled as
    configured); anything else is ``other``. Without one, the first ``max_distinct``
    distinct values are admitted and later new ones become ``other``. Values are
    stripped, cut to 64 characters; empty values are ``unknown``; values with
    non-printable characters are ``other``.
    """

    __slots__ = ("_allowed", "_cache", "_lock", "_max_distinct", "_names")

    def __init__(
        self,
        allowed: Optional[tuple[str, ...]] = None,
        *,
        max_distinct: int = MAX_DISTINCT_SEGMENTS,
    ) -> None:
        self._allowed: Optional[dict[str, str]] = (
            {name.lower(): name for name in allowed} if allowed is not None else None
        )
        self._names: set[str] = set()  # admitted names when there is no allowlist
        self._cache: dict[str, str] = {}  # raw value -> admitted name, bounded
        self._max_distinct = max_distinct
        self._lock = ForkSafeLock()  # a request thread may hold it when a server forks

    def admit(self, value: object) -> str:
        if not isinstance(value, str):
            return UNKNOWN if value is None else OTHER
        hit = self._cache.get(value)
        if hit is not None:
            return hit
        name = value.strip()[:MAX_SEGMENT_LENGTH]
        if not name:
            return UNKNOWN
        if not name.isprintable():
            return OTHER
        if self._allowed is not None:
            canonical = self._allowed.get(name.lower())
            if canonical is None:
                return OTHER
            name = canonical
        else:
            with self._lock:
                if name not in self._names:
                    if len(self._names) >= self._max_distinct:
                        return OTHER
                    self._names.add(name)
        if len(self._cache) < _CACHE_LIMIT:  # raw spellings of admitted names only
            self._cache[value] = name
        return name
