"""The public API is exactly design.md section 2; growing it is a deliberate diff."""

from __future__ import annotations

import inspect

import cxtrace

# design.md section 2, plus rum_snippet, which section 10 names (issue #9).
DESIGN_SECTION_2 = {
    "instrument",
    "uninstrument",
    "shutdown",
    "set_segment",
    "set_user",
    "mark_conversion",
    "step",
    "Journey",
    "Step",
    "ConfigError",
    "Instrumentation",
    "rum_snippet",
}


def test_all_is_exactly_the_documented_api() -> None:
    assert set(cxtrace.__all__) == DESIGN_SECTION_2


def test_exported_classes_say_cxtrace_in_their_repr() -> None:
    for name in ("Journey", "Step", "ConfigError", "Instrumentation"):
        assert getattr(cxtrace, name).__module__ == "cxtrace"


def test_instrument_takes_only_the_documented_keywords() -> None:
    params = inspect.signature(cxtrace.instrument).parameters
    assert list(params) == [
        "service_name",
        "apdex_threshold_ms",
        "journeys",
        "segment",
        "user",
        "integrations",
        "tracer_provider",
        "meter_provider",
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    assert inspect.signature(cxtrace.shutdown).parameters["timeout_s"].default == 5.0


def test_config_error_is_a_value_error() -> None:
    assert issubclass(cxtrace.ConfigError, ValueError)


def test_request_functions_do_nothing_outside_a_request() -> None:
    cxtrace.set_segment("pro")
    cxtrace.set_user(42)
    cxtrace.mark_conversion(value=1.0, currency="EUR")
    with cxtrace.step("checkout"):
        pass

    @cxtrace.step("checkout", journey="purchase")
    def view() -> str:
        return "ok"

    assert view() == "ok"
    assert cxtrace.rum_snippet() == ""
    assert cxtrace.rum_snippet().__html__() == ""
    assert view.__name__ == "view"
