"""``pytest -p upstream_pytest_results``: every test's outcome, by node id, as JSON.

The upstream runner loads it in both modes, bare and under cxtrace, and compares the two
files it writes to ``$CXUPSTREAM_RESULTS``. Outcomes: passed, failed, error (setup,
teardown or collection), skipped, xfailed, xpassed; the worst a test had wins.
"""

from __future__ import annotations

import json
import os
from typing import Any

RANK = {"passed": 0, "xfailed": 1, "skipped": 1, "xpassed": 2, "failed": 3, "error": 4}
_results: dict[str, dict[str, str]] = {}


def _put(nodeid: str, outcome: str, detail: str = "") -> None:
    seen = _results.get(nodeid)
    if seen is None or RANK[outcome] > RANK[seen["outcome"]]:
        _results[nodeid] = {"outcome": outcome, "detail": detail[-6000:]}


def pytest_runtest_logreport(report: Any) -> None:
    xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if xfail and report.skipped:
            outcome = "xfailed"
        elif xfail and report.passed:
            outcome = "xpassed"
        else:
            outcome = report.outcome
    elif report.failed:
        outcome = "error"
    elif report.skipped and report.when == "setup":
        outcome = "xfailed" if xfail else "skipped"
    else:
        return
    _put(report.nodeid, outcome, report.longreprtext if report.failed else "")


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        _put(report.nodeid or "<collection>", "error", report.longreprtext)


def pytest_sessionfinish(session: Any, exitstatus: Any) -> None:
    path = os.environ.get("CXUPSTREAM_RESULTS")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump({"exitstatus": int(exitstatus), "results": _results}, out, indent=1)
