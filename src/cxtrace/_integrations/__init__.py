"""Framework integrations: translate a framework's request and response, nothing more.

Apdex, matching and recording live in ``cxtrace._core`` / ``cxtrace._telemetry``.
"""
