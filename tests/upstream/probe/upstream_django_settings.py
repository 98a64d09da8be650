"""Django's own test settings (its tests/test_sqlite.py), with the recording test runner."""

import importlib

globals().update(
    {k: v for k, v in vars(importlib.import_module("test_sqlite")).items() if k.isupper()}
)
TEST_RUNNER = "upstream_django_runner.UpstreamRunner"
