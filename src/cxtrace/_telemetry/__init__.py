"""The only code that touches the OpenTelemetry API and SDK.

Imports ``cxtrace._core`` and OpenTelemetry; never Flask, Django or requests.
"""
