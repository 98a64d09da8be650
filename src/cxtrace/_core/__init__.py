"""Framework-free core: configuration, journeys, Apdex, privacy, request state.

Stdlib only: nothing under ``cxtrace._core`` imports OpenTelemetry, Flask, Django,
requests or wrapt (an import-linter contract in ``nox -s lint`` enforces it).
"""
