"""Attribute keys and metric names: cx.* ones (design.md section 4) and the stable HTTP ones.

Call sites use these constants, never string literals.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)

from cxtrace._core import keys

# cx.* on every span of a request
CX_SEGMENT: Final = keys.CX_SEGMENT
CX_JOURNEY: Final = keys.CX_JOURNEY
CX_STEP: Final = keys.CX_STEP
CX_STEP_INDEX: Final = keys.CX_STEP_INDEX
# cx.* on the server span, when the request finishes
CX_APDEX_THRESHOLD_MS: Final = "cx.apdex.threshold_ms"
CX_SATISFACTION: Final = "cx.satisfaction"
CX_SATISFACTION_SCORE: Final = "cx.satisfaction.score"
CX_FRUSTRATION_REASON: Final = "cx.frustration.reason"
CX_CONVERSION: Final = "cx.conversion"
CX_CONVERSION_VALUE: Final = "cx.conversion.value"
CX_CONVERSION_CURRENCY: Final = "cx.conversion.currency"
# Visits (design.md section 12)
CX_VISIT_ID: Final = "cx.visit.id"
CX_VISIT_NEW: Final = "cx.visit.new"
CX_VISIT_FRUSTRATED: Final = "cx.visit.frustrated"
USER_HASH: Final = "user.hash"
# cx.rum.* on browser.page_load spans (real-user monitoring, docs/rum.md); milliseconds
# since the browser's navigation start
CX_RUM_PERCEIVED_MS: Final = "cx.rum.perceived_ms"
CX_RUM_TTFB_MS: Final = "cx.rum.ttfb_ms"
CX_RUM_DOM_CONTENT_LOADED_MS: Final = "cx.rum.dom_content_loaded_ms"
CX_RUM_LOAD_MS: Final = "cx.rum.load_ms"
CX_RUM_LCP_MS: Final = "cx.rum.lcp_ms"
CX_RUM_INP_MS: Final = "cx.rum.inp_ms"
CX_RUM_CLS: Final = "cx.rum.cls"
CX_RUM_JS_ERRORS: Final = "cx.rum.js_errors"

# metrics
CX_REQUESTS: Final = "cx.requests"
CX_CONVERSIONS: Final = "cx.conversions"
CX_VISITS: Final = "cx.visits"
CX_VISIT_STEPS: Final = "cx.visit.steps"
CX_VISIT_FRUSTRATIONS: Final = "cx.visit.frustrations"
CX_VISIT_CONVERSIONS: Final = "cx.visit.conversions"
CX_VISIT_CONVERTED_STEPS: Final = "cx.visit.converted_steps"
HTTP_SERVER_REQUEST_DURATION: Final = "http.server.request.duration"
CX_PAGE_LOADS: Final = "cx.page_loads"
CX_PAGE_LOAD_DURATION: Final = "cx.page_load.duration"
CX_RUM_BEACONS_REJECTED: Final = "cx.rum.beacons.rejected"
# Perceived page load times (seconds): finer around the default RUM T of 2.5 s.
PAGE_LOAD_BUCKETS_S: Final = (
    0.25,
    0.5,
    1.0,
    1.5,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    15.0,
    30.0,
    60.0,
)
# The stable HTTP semconv's advised buckets for http.server.request.duration (seconds).
DURATION_BUCKETS_S: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

# stable HTTP semantic conventions
HTTP_REQUEST_METHOD: Final = http_attributes.HTTP_REQUEST_METHOD
HTTP_REQUEST_METHOD_ORIGINAL: Final = http_attributes.HTTP_REQUEST_METHOD_ORIGINAL
HTTP_RESPONSE_STATUS_CODE: Final = http_attributes.HTTP_RESPONSE_STATUS_CODE
HTTP_ROUTE: Final = http_attributes.HTTP_ROUTE
URL_PATH: Final = url_attributes.URL_PATH
URL_QUERY: Final = url_attributes.URL_QUERY
URL_SCHEME: Final = url_attributes.URL_SCHEME
URL_FULL: Final = url_attributes.URL_FULL
SERVER_ADDRESS: Final = server_attributes.SERVER_ADDRESS
SERVER_PORT: Final = server_attributes.SERVER_PORT
CLIENT_ADDRESS: Final = client_attributes.CLIENT_ADDRESS
USER_AGENT_ORIGINAL: Final = user_agent_attributes.USER_AGENT_ORIGINAL
ERROR_TYPE: Final = error_attributes.ERROR_TYPE
NETWORK_PROTOCOL_VERSION: Final = network_attributes.NETWORK_PROTOCOL_VERSION
OTHER_METHOD: Final = "_OTHER"


def span_method(method: str) -> str:
    """The method part of a span name: ``HTTP`` for methods outside the known set."""
    return "HTTP" if method is OTHER_METHOD else method
