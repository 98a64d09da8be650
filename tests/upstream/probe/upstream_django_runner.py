"""Django's own test runner that also writes every test's outcome, by id, as JSON.

The upstream runner starts Django's ``tests/runtests.py`` with
``--settings=upstream_django_settings``, which names ``UpstreamRunner`` as
``TEST_RUNNER``; run with ``--parallel=1``, every test reports to the result class here,
in this process. Written to ``$CXUPSTREAM_RESULTS`` when the run stops, in both modes.
"""

from __future__ import annotations

import json
import os
import unittest
from typing import Any

from django.test.runner import DiscoverRunner

RANK = {"passed": 0, "xfailed": 1, "skipped": 1, "xpassed": 2, "failed": 3, "error": 4}
_results: dict[str, dict[str, str]] = {}


def _put(test: Any, outcome: str, detail: str = "") -> None:
    key = test.id()
    seen = _results.get(key)
    if seen is None or RANK[outcome] > RANK[seen["outcome"]]:
        _results[key] = {"outcome": outcome, "detail": detail[-6000:]}


class _Recording:
    """Mixed in before Django's or unittest's result class: records, then defers to it."""

    def addSuccess(self, test: Any) -> None:  # noqa: N802 - unittest's names
        super().addSuccess(test)  # type: ignore[misc]
        _put(test, "passed")

    def addFailure(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addFailure(test, err)  # type: ignore[misc]
        _put(test, "failed", self._exc_info_to_string(err, test))  # type: ignore[attr-defined]

    def addError(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addError(test, err)  # type: ignore[misc]
        _put(test, "error", self._exc_info_to_string(err, test))  # type: ignore[attr-defined]

    def addSkip(self, test: Any, reason: str) -> None:  # noqa: N802
        super().addSkip(test, reason)  # type: ignore[misc]
        _put(test, "skipped", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addExpectedFailure(test, err)  # type: ignore[misc]
        _put(test, "xfailed")

    def addUnexpectedSuccess(self, test: Any) -> None:  # noqa: N802
        super().addUnexpectedSuccess(test)  # type: ignore[misc]
        _put(test, "xpassed")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:  # noqa: N802
        super().addSubTest(test, subtest, err)  # type: ignore[misc]
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            text = f"subtest {subtest}\n" + self._exc_info_to_string(err, test)  # type: ignore[attr-defined]
            _put(test, "failed" if failed else "error", text)

    def stopTestRun(self) -> None:  # noqa: N802
        super().stopTestRun()  # type: ignore[misc]
        path = os.environ.get("CXUPSTREAM_RESULTS")
        if path:
            with open(path, "w", encoding="utf-8") as out:
                json.dump({"results": _results}, out, indent=1)


class UpstreamRunner(DiscoverRunner):
    def get_resultclass(self) -> Any:
        base = super().get_resultclass() or unittest.TextTestResult
        return type(f"Upstream{base.__name__}", (_Recording, base), {})
