"""``cxtrace demo``: the cockpit, the example shop and its backend, and shoppers (design.md §9).

    runner.py     the command: starts everything, prints progress, stops everything
    services.py   the example apps as child processes under ``cxtrace run``
    shoppers.py   the load generator: customers of three segments, one cookie-keeping
                  session per visit, and their own record of what they did and met

The example apps themselves are ``examples/shop`` and ``examples/backend`` in a checkout;
a wheel carries the same files as ``cxtrace/_demo/examples`` (pyproject.toml,
``force-include``), so there is one copy of them.

This module imports only the standard library: ``cxtrace demo`` checks here, before
importing anything else, that the demo's packages are installed.
"""

from __future__ import annotations

import importlib
import importlib.util

__all__ = ["INSTALL_HINT", "missing_packages"]

# The modules the demo imports (in this process or in the apps), by distribution name.
_NEEDED = {"flask": "flask", "django": "django", "uvicorn": "uvicorn", "requests": "requests"}

INSTALL_HINT = "python -m pip install 'cxtrace[cockpit,demo]'"


def missing_packages() -> list[str]:
    """Names of the packages ``cxtrace demo`` needs that this interpreter cannot import."""
    missing = [dist for module, dist in _NEEDED.items() if importlib.util.find_spec(module) is None]
    try:
        importlib.import_module("cxtrace._cockpit")
    except ImportError as exc:  # the cockpit's own dependencies (the `cockpit` extra)
        missing.append(exc.name or "cxtrace._cockpit")
    return missing
