"""``python -m cxtrace`` / the ``cxtrace`` command."""

from __future__ import annotations

from cxtrace._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
