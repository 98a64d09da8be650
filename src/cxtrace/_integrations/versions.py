"""The installed version of a library an integration patches, checked against its minimum."""

from __future__ import annotations

from importlib.metadata import version

__all__ = ["require"]


def require(distribution: str, minimum: tuple[int, int], label: str) -> tuple[tuple[int, ...], str]:
    """(major, minor) and the full version text of ``distribution``.

    Raises ImportError when it is not installed (``PackageNotFoundError`` is one) and
    RuntimeError, naming ``label`` and the minimum, when it is older.
    """
    text = version(distribution)
    found = tuple(
        int("".join(ch for ch in part if ch.isdigit()) or 0) for part in text.split(".")[:2]
    )
    if found < minimum:
        supported = ".".join(map(str, minimum))
        raise RuntimeError(f"{label} {text} is older than the supported {supported}")
    return found, text
