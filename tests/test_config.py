"""Configuration (design.md sections 2 and 3): load_settings() and describe().

Every test passes its own environ mapping: nothing here reads or writes os.environ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cxtrace._core import config
from cxtrace._core.config import VARIABLES, Settings, describe, load_settings
from cxtrace._core.errors import ConfigError
from cxtrace._core.journeys import Journey, Step, StepMatcher
from design_journeys import DESIGN_JOURNEYS, PURCHASE


def load(env: dict[str, str] | None = None, **kwargs: Any) -> Settings:
    return load_settings(env or {}, **kwargs)


def config_error(env: dict[str, str] | None = None, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(env, **kwargs)
    return str(info.value)


def write(tmp_path: Path, text: str, name: str = "journeys.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- defaults


def test_no_environment_gives_the_documented_defaults() -> None:
    settings = load()
    assert settings == Settings()
    assert settings.enabled is True
    assert settings.sdk_disabled is False
    assert settings.service_name is None
    assert settings.integrations is None
    assert settings.apdex_threshold_ms == 500.0
    assert settings.journeys == ()
    assert settings.journeys_file is None
    assert settings.segment_header is None
    assert settings.segment_header_key is None
    assert settings.segments_allowed is None
    assert settings.user_hash_key is None
    assert settings.excluded_urls is None
    assert settings.frustrated_status == frozenset(range(500, 600))
    assert settings.propagation_key is None
    assert settings.trust_inbound_baggage is False
    assert settings.propagate_to == ("*",)
    assert settings.rum is False
    assert settings.rum_apdex_threshold_ms == 2500.0
    assert settings.segment_resolver is None
    assert settings.user_resolver is None
    assert settings.traces_exporters == ("otlp",)
    assert settings.metrics_exporters == ("otlp",)
    assert settings.traces_protocol == "http/protobuf"
    assert settings.metrics_protocol == "http/protobuf"
    assert settings.visits is False
    assert settings.visit_schema is None
    assert settings.visit_key is None
    assert settings.visit_timeout_s == 1800
    assert settings.visit_cookie == "cx_visit"


DESIGN_CXTRACE_VARIABLES = (
    "CXTRACE_ENABLED",
    "CXTRACE_INTEGRATIONS",
    "CXTRACE_APDEX_THRESHOLD_MS",
    "CXTRACE_JOURNEYS_FILE",
    "CXTRACE_SEGMENT_HEADER",
    "CXTRACE_SEGMENTS",
    "CXTRACE_USER_HASH_KEY",
    "CXTRACE_EXCLUDED_URLS",
    "CXTRACE_FRUSTRATED_STATUS",
    "CXTRACE_PROPAGATION_KEY",
    "CXTRACE_TRUST_INBOUND_BAGGAGE",
    "CXTRACE_PROPAGATE_TO",
    "CXTRACE_RUM",
    "CXTRACE_RUM_APDEX_THRESHOLD_MS",
    "CXTRACE_VISITS",
    "CXTRACE_VISIT_KEY",
    "CXTRACE_VISIT_TIMEOUT_S",
    "CXTRACE_VISIT_COOKIE",
)


def test_cxtrace_reads_exactly_the_variables_of_the_design_table() -> None:
    ours = sorted(v.name for v in VARIABLES if v.name.startswith("CXTRACE_"))
    assert ours == sorted(DESIGN_CXTRACE_VARIABLES)


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
@pytest.mark.parametrize("variable", [v.name for v in VARIABLES])
def test_an_empty_variable_is_treated_as_unset(variable: str, blank: str) -> None:
    assert load({variable: blank}) == load()


# --------------------------------------------------------------------------- good values


@pytest.mark.parametrize(
    ("variable", "raw", "attribute", "expected"),
    [
        ("CXTRACE_ENABLED", "false", "enabled", False),
        ("CXTRACE_ENABLED", "FALSE", "enabled", False),
        ("CXTRACE_ENABLED", "0", "enabled", False),
        ("CXTRACE_ENABLED", " off ", "enabled", False),
        ("CXTRACE_ENABLED", "no", "enabled", False),
        ("CXTRACE_ENABLED", "true", "enabled", True),
        ("CXTRACE_ENABLED", "Yes", "enabled", True),
        ("CXTRACE_ENABLED", "1", "enabled", True),
        ("CXTRACE_ENABLED", "on", "enabled", True),
        ("CXTRACE_INTEGRATIONS", "flask", "integrations", ("flask",)),
        ("CXTRACE_INTEGRATIONS", "Flask, requests", "integrations", ("flask", "requests")),
        ("CXTRACE_INTEGRATIONS", "django,django", "integrations", ("django",)),
        (
            "CXTRACE_INTEGRATIONS",
            "requests,flask,django",
            "integrations",
            ("requests", "flask", "django"),
        ),
        ("CXTRACE_APDEX_THRESHOLD_MS", "250", "apdex_threshold_ms", 250.0),
        ("CXTRACE_APDEX_THRESHOLD_MS", " 1000 ", "apdex_threshold_ms", 1000.0),
        ("CXTRACE_APDEX_THRESHOLD_MS", "0.5", "apdex_threshold_ms", 0.5),
        ("CXTRACE_APDEX_THRESHOLD_MS", "1e3", "apdex_threshold_ms", 1000.0),
        ("CXTRACE_APDEX_THRESHOLD_MS", "60000", "apdex_threshold_ms", 60000.0),
        ("CXTRACE_SEGMENT_HEADER", "X-Customer-Tier", "segment_header", "X-Customer-Tier"),
        (
            "CXTRACE_SEGMENT_HEADER",
            " X-Customer-Tier ",
            "segment_header_key",
            "HTTP_X_CUSTOMER_TIER",
        ),
        ("CXTRACE_SEGMENT_HEADER", "tier", "segment_header_key", "HTTP_TIER"),
        (
            "CXTRACE_SEGMENTS",
            "free, pro,enterprise",
            "segments_allowed",
            ("free", "pro", "enterprise"),
        ),
        ("CXTRACE_SEGMENTS", "gold", "segments_allowed", ("gold",)),
        ("CXTRACE_SEGMENTS", "x" * 64, "segments_allowed", ("x" * 64,)),
        ("CXTRACE_USER_HASH_KEY", "s3cret", "user_hash_key", b"s3cret"),
        ("CXTRACE_USER_HASH_KEY", "clé", "user_hash_key", "clé".encode()),
        (
            "CXTRACE_FRUSTRATED_STATUS",
            "429,500-599",
            "frustrated_status",
            frozenset({429, *range(500, 600)}),
        ),
        ("CXTRACE_PROPAGATION_KEY", "p-key", "propagation_key", b"p-key"),
        ("CXTRACE_TRUST_INBOUND_BAGGAGE", "true", "trust_inbound_baggage", True),
        ("CXTRACE_TRUST_INBOUND_BAGGAGE", "false", "trust_inbound_baggage", False),
        ("CXTRACE_PROPAGATE_TO", "*.internal, 10.*", "propagate_to", ("*.internal", "10.*")),
        ("CXTRACE_PROPAGATE_TO", "API.Example.com", "propagate_to", ("api.example.com",)),
        (
            "CXTRACE_PROPAGATE_TO",
            "localhost:8080,[::1]",
            "propagate_to",
            ("localhost:8080", "[::1]"),
        ),
        ("CXTRACE_RUM", "true", "rum", True),
        ("CXTRACE_RUM_APDEX_THRESHOLD_MS", "4000", "rum_apdex_threshold_ms", 4000.0),
        ("OTEL_SDK_DISABLED", "true", "sdk_disabled", True),
        ("OTEL_SDK_DISABLED", "false", "sdk_disabled", False),
        ("OTEL_SERVICE_NAME", "shop", None, None),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.version=1.2,deployment.environment=prod", None, None),
        ("OTEL_TRACES_EXPORTER", "console", "traces_exporters", ("console",)),
        ("OTEL_TRACES_EXPORTER", "otlp, Console", "traces_exporters", ("otlp", "console")),
        ("OTEL_TRACES_EXPORTER", "none", "traces_exporters", ()),
        ("OTEL_METRICS_EXPORTER", "none", "metrics_exporters", ()),
        ("OTEL_METRICS_EXPORTER", "console", "metrics_exporters", ("console",)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "traces_protocol", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "HTTP/Protobuf", "metrics_protocol", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf", "traces_protocol", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", None, None),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example.com", None, None),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces", None, None),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://[::1]:4318/v1/metrics", None, None),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr3t", None, None),
        ("OTEL_EXPORTER_OTLP_HEADERS", "a=1, b=2,", None, None),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer x", None, None),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10", None, None),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "0", None, None),
        ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2.5", None, None),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", None, None),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none", None, None),
        ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "Deflate", None, None),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", None, None),
        ("OTEL_TRACES_SAMPLER", "ALWAYS_OFF", None, None),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25", None, None),
        ("OTEL_TRACES_SAMPLER_ARG", "0", None, None),
        ("OTEL_TRACES_SAMPLER_ARG", "1", None, None),
        ("OTEL_BSP_SCHEDULE_DELAY", "0", None, None),
        ("OTEL_BSP_SCHEDULE_DELAY", "50", None, None),
        ("OTEL_BSP_EXPORT_TIMEOUT", "30000", None, None),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "100000", None, None),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2048", None, None),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000", None, None),
        ("OTEL_METRIC_EXPORT_TIMEOUT", "5000", None, None),
    ],
)
def test_a_good_value_is_parsed(
    variable: str, raw: str, attribute: str | None, expected: object
) -> None:
    settings = load({variable: raw})
    if attribute is not None:
        assert getattr(settings, attribute) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("500-599", frozenset(range(500, 600)), id="default-range"),
        pytest.param("500", frozenset({500}), id="one-code"),
        pytest.param("429,500-599", frozenset({429, *range(500, 600)}), id="code-and-range"),
        pytest.param(" 502 , 503-504 ", frozenset({502, 503, 504}), id="spaces"),
        pytest.param("400-499,500-599", frozenset(range(400, 600)), id="two-ranges"),
        pytest.param("500-500", frozenset({500}), id="one-code-range"),
        pytest.param("100-599", frozenset(range(100, 600)), id="everything"),
        pytest.param("500,500-501", frozenset({500, 501}), id="overlap"),
        pytest.param("none", frozenset(), id="none"),
        pytest.param(" NONE ", frozenset(), id="none-upper"),
    ],
)
def test_frustrated_status_takes_codes_ranges_or_none(raw: str, expected: frozenset[int]) -> None:
    assert load({"CXTRACE_FRUSTRATED_STATUS": raw}).frustrated_status == expected


def test_excluded_urls_compile_to_one_alternation() -> None:
    pattern = load({"CXTRACE_EXCLUDED_URLS": "^/health$, /static/.*"}).excluded_urls
    assert pattern is not None
    assert pattern.pattern == "(?:^/health$)|(?:/static/.*)"
    assert pattern.search("/health")
    assert not pattern.search("/healthz")
    assert pattern.search("/static/app.js")
    assert not pattern.search("/products")


def test_one_excluded_url_pattern_is_kept_as_is() -> None:
    pattern = load({"CXTRACE_EXCLUDED_URLS": r"^/metrics\b"}).excluded_urls
    assert pattern is not None
    assert pattern.search("/metrics")
    assert not pattern.search("/app/metrics")


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("CXTRACE_ENABLED", "maybe"),
        ("CXTRACE_ENABLED", "2"),
        ("CXTRACE_ENABLED", "enabled"),
        ("CXTRACE_INTEGRATIONS", "pyramid"),
        ("CXTRACE_INTEGRATIONS", "flask,tornado"),
        ("CXTRACE_INTEGRATIONS", "flask;django"),
        ("CXTRACE_APDEX_THRESHOLD_MS", "fast"),
        ("CXTRACE_APDEX_THRESHOLD_MS", "0"),
        ("CXTRACE_APDEX_THRESHOLD_MS", "-5"),
        ("CXTRACE_APDEX_THRESHOLD_MS", "nan"),
        ("CXTRACE_APDEX_THRESHOLD_MS", "inf"),
        ("CXTRACE_APDEX_THRESHOLD_MS", "1e400"),
        ("CXTRACE_APDEX_THRESHOLD_MS", "500ms"),
        ("CXTRACE_APDEX_THRESHOLD_MS", "0x1f4"),
        ("CXTRACE_SEGMENT_HEADER", "X Customer Tier"),
        ("CXTRACE_SEGMENT_HEADER", "X-Tier:"),
        ("CXTRACE_SEGMENT_HEADER", "X-Tier,X-Plan"),
        ("CXTRACE_SEGMENT_HEADER", "Tiér"),
        ("CXTRACE_SEGMENTS", ","),
        ("CXTRACE_SEGMENTS", " , , "),
        ("CXTRACE_SEGMENTS", "x" * 65),
        ("CXTRACE_SEGMENTS", "free,pro\x07"),
        ("CXTRACE_EXCLUDED_URLS", "("),
        ("CXTRACE_EXCLUDED_URLS", "^/ok,[a-"),
        ("CXTRACE_EXCLUDED_URLS", ","),
        ("CXTRACE_FRUSTRATED_STATUS", "5xx"),
        ("CXTRACE_FRUSTRATED_STATUS", "600"),
        ("CXTRACE_FRUSTRATED_STATUS", "99"),
        ("CXTRACE_FRUSTRATED_STATUS", "599-500"),
        ("CXTRACE_FRUSTRATED_STATUS", "500-"),
        ("CXTRACE_FRUSTRATED_STATUS", "-500"),
        ("CXTRACE_FRUSTRATED_STATUS", "500-600"),
        ("CXTRACE_FRUSTRATED_STATUS", "500..599"),
        ("CXTRACE_FRUSTRATED_STATUS", "none,500"),
        ("CXTRACE_FRUSTRATED_STATUS", ","),
        ("CXTRACE_TRUST_INBOUND_BAGGAGE", "sometimes"),
        ("CXTRACE_PROPAGATE_TO", ","),
        ("CXTRACE_PROPAGATE_TO", "https://api.internal"),
        ("CXTRACE_PROPAGATE_TO", "*.internal/x"),
        ("CXTRACE_PROPAGATE_TO", "a b"),
        ("CXTRACE_RUM", "yesplease"),
        ("CXTRACE_RUM_APDEX_THRESHOLD_MS", "-1"),
        ("CXTRACE_RUM_APDEX_THRESHOLD_MS", "slow"),
        ("OTEL_SDK_DISABLED", "disabled"),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.version"),
        ("OTEL_RESOURCE_ATTRIBUTES", "=prod"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_TRACES_EXPORTER", "otlp,jaeger"),
        ("OTEL_TRACES_EXPORTER", ","),
        ("OTEL_METRICS_EXPORTER", "prometheus"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:99999"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:port"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "not a url"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "grpc://collector:4317"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "-1"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "inf"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "nan"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
        ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "zstd"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER", "always"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_TRACES_SAMPLER_ARG", "-0.1"),
        ("OTEL_TRACES_SAMPLER_ARG", "half"),
        ("OTEL_TRACES_SAMPLER_ARG", "nan"),
        ("OTEL_BSP_SCHEDULE_DELAY", "-1"),
        ("OTEL_BSP_SCHEDULE_DELAY", "5s"),
        ("OTEL_BSP_SCHEDULE_DELAY", "1.5"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "-1"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "many"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-512"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "-60000"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1m"),
        ("OTEL_METRIC_EXPORT_TIMEOUT", "0"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_variable_value_and_expectation(
    variable: str, raw: str
) -> None:
    message = config_error({variable: raw})
    assert f"{variable}={raw!r}: expected " in message


@pytest.mark.parametrize("raw", [",", " , , "])
def test_an_integrations_list_with_no_names_is_rejected(raw: str) -> None:
    message = config_error({"CXTRACE_INTEGRATIONS": raw})
    assert f"CXTRACE_INTEGRATIONS={raw!r}: expected " in message


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("CXTRACE_APDEX_THRESHOLD_MS", "1e300"),
        ("CXTRACE_RUM_APDEX_THRESHOLD_MS", "1e300"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "99999999999999999999"),
        ("OTEL_BSP_SCHEDULE_DELAY", "99999999999999999999"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "99999999999999999999"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1e300"),
    ],
)
def test_a_huge_number_is_rejected(variable: str, raw: str) -> None:
    message = config_error({variable: raw})
    assert f"{variable}={raw!r}: expected " in message


def test_every_bad_value_fails_even_when_a_keyword_overrides_it() -> None:
    message = config_error({"CXTRACE_APDEX_THRESHOLD_MS": "fast"}, apdex_threshold_ms=300)
    assert "CXTRACE_APDEX_THRESHOLD_MS='fast'" in message
    message = config_error({"CXTRACE_INTEGRATIONS": "pyramid"}, integrations=["flask"])
    assert "CXTRACE_INTEGRATIONS='pyramid'" in message


def test_the_apdex_error_reads_as_the_design_example() -> None:
    assert config_error({"CXTRACE_APDEX_THRESHOLD_MS": "fast"}) == (
        "CXTRACE_APDEX_THRESHOLD_MS='fast': expected a positive number of milliseconds"
    )


def test_http_json_is_rejected_with_the_supported_protocols() -> None:
    message = config_error({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert "'http/protobuf' or 'grpc'" in message
    assert "http/json is not supported" in message


@pytest.mark.parametrize(
    "variable",
    [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    ],
)
@pytest.mark.parametrize(
    "raw", ["authorization=Bearer s3cr3t,broken", "s3cr3t", "api-key=s3cr3t,=s3cr3t"]
)
def test_a_bad_headers_value_is_rejected_without_showing_the_secret(
    variable: str, raw: str
) -> None:
    message = config_error({variable: raw})
    assert f"{variable}='***': expected " in message
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    ("batch", "queue", "limit"),
    [
        pytest.param("100", "50", 50, id="over-configured-queue"),
        pytest.param("4096", None, 2048, id="over-default-queue"),
    ],
)
def test_a_batch_larger_than_the_queue_is_rejected(
    batch: str, queue: str | None, limit: int
) -> None:
    env = {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": batch}
    if queue is not None:
        env["OTEL_BSP_MAX_QUEUE_SIZE"] = queue
    message = config_error(env)
    assert f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch!r}: expected " in message
    assert f"OTEL_BSP_MAX_QUEUE_SIZE ({limit})" in message


@pytest.mark.parametrize(
    ("batch", "queue"), [("50", "50"), ("10", "50"), ("2048", None), ("4096", "8192")]
)
def test_a_batch_up_to_the_queue_size_is_accepted(batch: str, queue: str | None) -> None:
    env = {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": batch}
    if queue is not None:
        env["OTEL_BSP_MAX_QUEUE_SIZE"] = queue
    load(env)


# --------------------------------------------------------------------------- OTLP protocols


@pytest.mark.parametrize(
    ("env", "traces", "metrics"),
    [
        pytest.param({}, "http/protobuf", "http/protobuf", id="default"),
        pytest.param({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc", "grpc", id="general"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
            "grpc",
            "http/protobuf",
            id="traces-only",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
            },
            "grpc",
            "http/protobuf",
            id="signal-overrides-general",
        ),
    ],
)
def test_each_signal_takes_its_own_protocol_then_the_general_one(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], traces: str, metrics: str
) -> None:
    monkeypatch.setattr(config, "_grpc_available", lambda: True)
    settings = load(env)
    assert (settings.traces_protocol, settings.metrics_protocol) == (traces, metrics)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL", id="general"
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "GRPC"},
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            id="metrics",
        ),
    ],
)
def test_grpc_without_the_grpc_exporter_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    monkeypatch.setattr(config, "_grpc_available", lambda: False)
    message = config_error(env)
    assert f"{variable}='grpc'" in message
    assert "expected 'http/protobuf'" in message
    assert "pip install 'cxtrace[grpc]'" in message


def test_a_general_grpc_overridden_for_both_signals_needs_no_grpc_exporter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config, "_grpc_available", lambda: False)
    settings = load(
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
        }
    )
    assert (settings.traces_protocol, settings.metrics_protocol) == ("http/protobuf",) * 2


# --------------------------------------------------------------------------- keyword arguments


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(["flask"], ("flask",), id="list"),
        pytest.param(("Django", "requests"), ("django", "requests"), id="tuple-mixed-case"),
        pytest.param("flask, requests", ("flask", "requests"), id="comma-string"),
        pytest.param(["flask", "FLASK"], ("flask",), id="deduplicated"),
        pytest.param(iter(["requests"]), ("requests",), id="iterator"),
    ],
)
def test_the_integrations_keyword_accepts_a_list_of_known_names(
    value: Any, expected: tuple[str, ...]
) -> None:
    assert load(integrations=value).integrations == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(["pyramid"], id="unknown"),
        pytest.param(["flask", None], id="none-item"),
        pytest.param([1], id="int-item"),
        pytest.param(5, id="int"),
        pytest.param(b"flask", id="bytes"),
        pytest.param("tornado", id="unknown-string"),
    ],
)
def test_a_bad_integrations_keyword_is_a_config_error(value: Any) -> None:
    message = config_error(integrations=value)
    assert f"integrations={value!r}: expected " in message
    assert "flask, django, requests" in message


def test_the_integrations_keyword_beats_the_environment() -> None:
    settings = load({"CXTRACE_INTEGRATIONS": "django"}, integrations=["flask"])
    assert settings.integrations == ("flask",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [pytest.param(300, 300.0, id="int"), pytest.param(0.5, 0.5, id="float")],
)
def test_the_apdex_keyword_is_a_positive_number_of_ms(value: float, expected: float) -> None:
    assert load(apdex_threshold_ms=value).apdex_threshold_ms == expected


@pytest.mark.parametrize(
    "value",
    [0, -1, "300", True, float("nan"), float("inf")],
    ids=["zero", "negative", "string", "bool", "nan", "inf"],
)
def test_a_bad_apdex_keyword_is_a_config_error(value: Any) -> None:
    message = config_error(apdex_threshold_ms=value)
    assert f"apdex_threshold_ms={value!r}: expected a positive number of milliseconds" in message


@pytest.mark.parametrize(("value", "expected"), [("shop", "shop"), ("  shop ", "shop")])
def test_the_service_name_keyword_is_stripped(value: str, expected: str) -> None:
    assert load(service_name=value).service_name == expected


@pytest.mark.parametrize("value", ["", "  ", 5, b"shop"], ids=["empty", "blank", "int", "bytes"])
def test_a_bad_service_name_keyword_is_a_config_error(value: Any) -> None:
    assert f"service_name={value!r}: expected a non-empty string" in config_error(
        service_name=value
    )


def _resolver(request: object) -> str | None:
    return None


class _CallableResolver:
    def __call__(self, request: object) -> str | None:
        return "pro"


@pytest.mark.parametrize("keyword", ["segment", "user"])
@pytest.mark.parametrize(
    "resolver", [_resolver, _CallableResolver(), len], ids=["function", "instance", "builtin"]
)
def test_a_callable_resolver_is_kept(keyword: str, resolver: Any) -> None:
    settings = load(**{keyword: resolver})
    assert getattr(settings, f"{keyword}_resolver") is resolver


@pytest.mark.parametrize("keyword", ["segment", "user"])
@pytest.mark.parametrize(
    "value", ["X-Customer-Tier", 42, ["pro"]], ids=["header-name", "int", "list"]
)
def test_a_resolver_that_is_not_callable_is_a_config_error(keyword: str, value: Any) -> None:
    message = config_error(**{keyword: value})
    assert f"{keyword}={value!r}: expected a callable" in message


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("purchase", id="string"),
        pytest.param(Journey("p", steps=[Step("a")]), id="single-journey"),
        pytest.param([Step("a")], id="list-of-steps"),
        pytest.param(5, id="int"),
        pytest.param([{"name": "p"}], id="list-of-dicts"),
    ],
)
def test_a_journeys_keyword_that_is_not_a_list_of_journeys_is_a_config_error(value: Any) -> None:
    assert "journeys=" in config_error(journeys=value)
    assert "expected a list of cxtrace.Journey" in config_error(journeys=value)


# --------------------------------------------------------------------------- journeys file

DESIGN_EXAMPLE = DESIGN_JOURNEYS  # design.md section 3, verbatim (TOML 1.1)

# The same file in TOML 1.0: one inline table per line.
DESIGN_EXAMPLE_TOML_1_0 = DESIGN_EXAMPLE.replace(
    "conversion = true,\n    apdex_threshold_ms", "conversion = true, apdex_threshold_ms"
)


def _assert_design_example(settings: Settings, path: str) -> None:
    assert settings.journeys == (PURCHASE,)
    assert settings.journeys_file == path
    assert settings.apdex_threshold_ms == 500.0
    assert settings.segment_header == "X-Customer-Tier"
    assert settings.segments_allowed == ("free", "pro", "enterprise")


def test_the_design_example_in_toml_1_0_parses_to_its_journey(tmp_path: Path) -> None:
    path = write(tmp_path, DESIGN_EXAMPLE_TOML_1_0)
    _assert_design_example(load({"CXTRACE_JOURNEYS_FILE": path}), path)


def test_the_design_example_verbatim_parses_on_every_python(tmp_path: Path) -> None:
    path = write(tmp_path, DESIGN_EXAMPLE)
    _assert_design_example(load({"CXTRACE_JOURNEYS_FILE": path}), path)


def test_the_file_journeys_map_django_and_flask_routes_to_the_same_step(tmp_path: Path) -> None:
    path = write(tmp_path, DESIGN_EXAMPLE_TOML_1_0)
    matcher = StepMatcher(load({"CXTRACE_JOURNEYS_FILE": path}).journeys)
    flask = matcher.match("/products/<int:product_id>", "/products/7", "GET")
    django = matcher.match("products/<int:product_id>/", "/products/7", "GET")
    assert flask is not None
    assert flask is django
    assert flask.attributes["cx.step.index"] == 2


def test_an_empty_journeys_file_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    settings = load({"CXTRACE_JOURNEYS_FILE": path})
    assert settings.journeys == ()
    assert settings.apdex_threshold_ms == 500.0
    assert settings.journeys_file == path


def test_a_path_glob_step_in_the_file_is_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[journeys]]
name = "browse"
steps = [{ name = "static", path = "/static/*", method = "get" }]
""",
    )
    (journey,) = load({"CXTRACE_JOURNEYS_FILE": path}).journeys
    assert journey == Journey("browse", steps=[Step("static", path="/static/*", method="GET")])


def test_two_journeys_in_one_file_keep_their_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[journeys]]
name = "signup"
steps = [{ name = "form", route = "/signup" }]

[[journeys]]
name = "purchase"
steps = [{ name = "pay", route = "/pay", conversion = true }]
""",
    )
    journeys = load({"CXTRACE_JOURNEYS_FILE": path}).journeys
    assert [j.name for j in journeys] == ["signup", "purchase"]


_JOURNEY_HEAD = '[[journeys]]\nname = "purchase"\n'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("this is = = not toml", "expected a TOML file", id="not-toml"),
        pytest.param("[[journeys]\nname = 'x'", "expected a TOML file", id="broken-table"),
        pytest.param("apdex = 500", "unknown key 'apdex'; expected one of", id="unknown-top-key"),
        pytest.param(
            "[segments]\nheaders = 'X-Tier'",
            "[segments]: unknown key 'headers'",
            id="unknown-segments-key",
        ),
        pytest.param("segments = 5", "[segments]: expected a table", id="segments-not-table"),
        pytest.param(
            "apdex_threshold_ms = 'fast'",
            "apdex_threshold_ms='fast': expected",
            id="threshold-string",
        ),
        pytest.param(
            "apdex_threshold_ms = 0", "apdex_threshold_ms=0: expected", id="threshold-zero"
        ),
        pytest.param(
            "apdex_threshold_ms = -500",
            "apdex_threshold_ms=-500: expected",
            id="threshold-negative",
        ),
        pytest.param(
            "apdex_threshold_ms = nan", "apdex_threshold_ms=nan: expected", id="threshold-nan"
        ),
        pytest.param(
            "apdex_threshold_ms = inf", "apdex_threshold_ms=inf: expected", id="threshold-inf"
        ),
        pytest.param(
            "apdex_threshold_ms = true", "apdex_threshold_ms=True: expected", id="threshold-bool"
        ),
        pytest.param(
            "[segments]\nheader = 'X Tier'", "segments.header='X Tier': expected", id="bad-header"
        ),
        pytest.param("[segments]\nheader = 5", "segments.header=5: expected", id="header-int"),
        pytest.param(
            "[segments]\nallowed = 'free'",
            "segments.allowed='free': expected",
            id="allowed-not-list",
        ),
        pytest.param(
            "[segments]\nallowed = [1, 2]", "segments.allowed=[1, 2]: expected", id="allowed-ints"
        ),
        pytest.param("[segments]\nallowed = []", "segments.allowed=", id="allowed-empty"),
        pytest.param(
            "journeys = 'purchase'", "journeys='purchase': expected an array", id="journeys-string"
        ),
        pytest.param(
            "[journeys]\nname = 'x'",
            "expected an array of [[journeys]] tables",
            id="journeys-table",
        ),
        pytest.param("journeys = [1]", "journeys[1]: expected a table", id="journey-not-table"),
        pytest.param(
            "[[journeys]]\nsteps = [{ name = 'a' }]",
            "journeys[1]: expected both 'name' and 'steps'",
            id="missing-journey-name",
        ),
        pytest.param(
            _JOURNEY_HEAD, "journeys[1]: expected both 'name' and 'steps'", id="missing-steps"
        ),
        pytest.param(_JOURNEY_HEAD + "steps = []", "expected at least one step", id="no-steps"),
        pytest.param(
            _JOURNEY_HEAD + "steps = 'browse'",
            "journeys[1].steps='browse': expected",
            id="steps-string",
        ),
        pytest.param(
            _JOURNEY_HEAD + "steps = ['browse']",
            "journeys[1].steps[1]: expected a table",
            id="step-not-table",
        ),
        pytest.param(
            _JOURNEY_HEAD + "stages = []",
            "journeys[1]: unknown key 'stages'",
            id="unknown-journey-key",
        ),
        pytest.param(
            '[[journeys]]\nname = ""\nsteps = [{ name = "a" }]',
            "journey name=''",
            id="empty-journey-name",
        ),
        pytest.param(
            _JOURNEY_HEAD + "steps = [{ route = '/cart' }]",
            "journeys[1].steps[1]: expected a 'name'",
            id="missing-step-name",
        ),
        pytest.param(
            _JOURNEY_HEAD + "steps = [{ name = 'a', rout = '/cart' }]",
            "journeys[1].steps[1]: unknown key 'rout'; expected one of",
            id="unknown-step-key",
        ),
        pytest.param(
            _JOURNEY_HEAD + "steps = [{ name = 'a' }, { name = 'b' }, { name = 'a' }]",
            "duplicate step 'a'",
            id="duplicate-step",
        ),
        pytest.param(
            _JOURNEY_HEAD + "steps = [{ name = 'a', method = 'FETCH' }]",
            "journeys[1].steps[1]: step 'a' method='FETCH': expected one of",
            id="bad-method",
        ),
        pytest.param(
            _JOURNEY_HEAD + "steps = [{ name = 'a', path = 'cart/*' }]",
            "step 'a' path='cart/*': expected a glob starting with '/'",
            id="bad-glob",
        ),
        pytest.param(
            _JOURNEY_HEAD + "steps = [{ name = 'a', route = 5 }]",
            "step 'a' route=5: expected",
            id="route-int",
        ),
        pytest.param(
            _JOURNEY_HEAD + "steps = [{ name = 'a', conversion = 'yes' }]",
            "step 'a' conversion='yes': expected true or false",
            id="conversion-string",
        ),
        pytest.param(
            _JOURNEY_HEAD + "steps = [{ name = 'a', apdex_threshold_ms = 0 }]",
            "step 'a' apdex_threshold_ms=0: expected",
            id="step-threshold-zero",
        ),
        pytest.param(
            _JOURNEY_HEAD + "steps = [{ name = 3 }]", "step name=3: expected", id="step-name-int"
        ),
    ],
)
def test_a_bad_journeys_file_is_a_config_error_naming_the_file_and_the_problem(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    message = config_error({"CXTRACE_JOURNEYS_FILE": path})
    assert message.startswith(f"CXTRACE_JOURNEYS_FILE={path!r}: ")
    assert fragment in message


def test_the_journeys_file_errors_name_the_position_of_the_bad_step(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[journeys]]
name = "ok"
steps = [{ name = "a" }]

[[journeys]]
name = "broken"
steps = [{ name = "a" }, { name = "b", method = "NOPE" }]
""",
    )
    assert "journeys[2].steps[2]: step 'b' method='NOPE'" in config_error(
        {"CXTRACE_JOURNEYS_FILE": path}
    )


def test_a_missing_journeys_file_is_a_config_error(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    assert config_error({"CXTRACE_JOURNEYS_FILE": path}) == (
        f"CXTRACE_JOURNEYS_FILE={path!r}: no such file; expected the path of a TOML file"
    )


def test_a_directory_as_journeys_file_is_a_config_error(tmp_path: Path) -> None:
    message = config_error({"CXTRACE_JOURNEYS_FILE": str(tmp_path)})
    assert message.startswith(f"CXTRACE_JOURNEYS_FILE={str(tmp_path)!r}: cannot read it")


def test_a_journeys_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[[journeys]]\nname = "café"\n'.encode("latin-1"))
    message = config_error({"CXTRACE_JOURNEYS_FILE": str(path)})
    assert message.startswith(f"CXTRACE_JOURNEYS_FILE={str(path)!r}: expected a TOML file")


_DUPLICATE_JOURNEYS = """
[[journeys]]
name = "purchase"
steps = [{ name = "browse", route = "/products" }]

[[journeys]]
name = "purchase"
steps = [{ name = "pay", route = "/pay" }]
"""

_DUPLICATE_ROUTES = """
[[journeys]]
name = "purchase"
steps = [{ name = "cart", route = "/cart" }]

[[journeys]]
name = "wishlist"
steps = [{ name = "cart", route = "/cart/" }]
"""


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(_DUPLICATE_JOURNEYS, "duplicate journey 'purchase'", id="journey-name"),
        pytest.param(_DUPLICATE_ROUTES, "duplicate step for route '/cart'", id="route"),
    ],
)
def test_a_journeys_file_with_ambiguous_journeys_is_rejected_by_load_settings(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    message = config_error({"CXTRACE_JOURNEYS_FILE": path})
    assert message.startswith(f"CXTRACE_JOURNEYS_FILE={path!r}: ")
    assert fragment in message


# --------------------------------------------------------------------------- precedence

_FILE = """
apdex_threshold_ms = 700
[segments]
header = "X-File-Tier"
allowed = ["bronze", "silver"]

[[journeys]]
name = "from_file"
steps = [{ name = "browse", route = "/products" }]
"""

KW_JOURNEY = Journey("from_kwargs", steps=[Step("pay", route="/pay")])


@pytest.mark.parametrize(
    ("use_kwargs", "use_env", "use_file", "expected"),
    [
        pytest.param(True, True, True, 300.0, id="kwargs-beat-env"),
        pytest.param(False, True, True, 600.0, id="env-beats-file"),
        pytest.param(False, False, True, 700.0, id="file-beats-default"),
        pytest.param(False, False, False, 500.0, id="default"),
        pytest.param(True, False, True, 300.0, id="kwargs-beat-file"),
    ],
)
def test_the_apdex_threshold_comes_from_kwargs_then_env_then_file_then_default(
    tmp_path: Path, use_kwargs: bool, use_env: bool, use_file: bool, expected: float
) -> None:
    env = {}
    if use_env:
        env["CXTRACE_APDEX_THRESHOLD_MS"] = "600"
    if use_file:
        env["CXTRACE_JOURNEYS_FILE"] = write(tmp_path, _FILE)
    kwargs = {"apdex_threshold_ms": 300} if use_kwargs else {}
    assert load(env, **kwargs).apdex_threshold_ms == expected


@pytest.mark.parametrize(
    ("env_value", "use_file", "expected"),
    [
        pytest.param("X-Env-Tier", True, "X-Env-Tier", id="env-beats-file"),
        pytest.param(None, True, "X-File-Tier", id="file-beats-default"),
        pytest.param(None, False, None, id="default"),
    ],
)
def test_the_segment_header_comes_from_env_then_file(
    tmp_path: Path, env_value: str | None, use_file: bool, expected: str | None
) -> None:
    env = {}
    if env_value is not None:
        env["CXTRACE_SEGMENT_HEADER"] = env_value
    if use_file:
        env["CXTRACE_JOURNEYS_FILE"] = write(tmp_path, _FILE)
    assert load(env).segment_header == expected


@pytest.mark.parametrize(
    ("env_value", "use_file", "expected"),
    [
        pytest.param("gold", True, ("gold",), id="env-beats-file"),
        pytest.param(None, True, ("bronze", "silver"), id="file-beats-default"),
        pytest.param(None, False, None, id="default"),
    ],
)
def test_the_segment_allowlist_comes_from_env_then_file(
    tmp_path: Path, env_value: str | None, use_file: bool, expected: tuple[str, ...] | None
) -> None:
    env = {}
    if env_value is not None:
        env["CXTRACE_SEGMENTS"] = env_value
    if use_file:
        env["CXTRACE_JOURNEYS_FILE"] = write(tmp_path, _FILE)
    assert load(env).segments_allowed == expected


@pytest.mark.parametrize(
    ("kwarg", "use_file", "expected"),
    [
        pytest.param([KW_JOURNEY], True, ("from_kwargs",), id="kwargs-beat-file"),
        pytest.param((KW_JOURNEY,), False, ("from_kwargs",), id="kwargs-tuple"),
        pytest.param([], True, (), id="empty-kwargs-beat-file"),
        pytest.param(None, True, ("from_file",), id="file-beats-default"),
        pytest.param(None, False, (), id="default"),
    ],
)
def test_journeys_come_from_kwargs_then_file(
    tmp_path: Path, kwarg: Any, use_file: bool, expected: tuple[str, ...]
) -> None:
    env = {"CXTRACE_JOURNEYS_FILE": write(tmp_path, _FILE)} if use_file else {}
    journeys = load(env, journeys=kwarg).journeys
    assert tuple(j.name for j in journeys) == expected


def test_the_file_is_still_validated_when_kwargs_override_its_journeys(tmp_path: Path) -> None:
    path = write(tmp_path, "unknown = 1")
    assert "unknown key 'unknown'" in config_error(
        {"CXTRACE_JOURNEYS_FILE": path}, journeys=[KW_JOURNEY]
    )


# --------------------------------------------------------------------------- describe()

_SECRETS = {
    "CXTRACE_USER_HASH_KEY": "hash-key-s3cret",
    "CXTRACE_PROPAGATION_KEY": "prop-key-s3cret",
    "OTEL_EXPORTER_OTLP_HEADERS": "api-key=hdr-s3cret",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-token=trc-s3cret",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-token=met-s3cret",
}


def test_describe_masks_every_secret() -> None:
    rows = {name: (value, source) for name, value, source in describe(_SECRETS)}
    for name in _SECRETS:
        assert rows[name] == ("***", "environment")
    assert "s3cret" not in repr(describe(_SECRETS))


def test_describe_lists_every_variable_once_with_its_value_and_source() -> None:
    env = {"CXTRACE_APDEX_THRESHOLD_MS": "300", "OTEL_SERVICE_NAME": "shop", "CXTRACE_SEGMENTS": ""}
    rows = describe(env)
    assert [name for name, _, _ in rows] == [v.name for v in VARIABLES]
    by_name = {name: (value, source) for name, value, source in rows}
    assert by_name["CXTRACE_APDEX_THRESHOLD_MS"] == ("300", "environment")
    assert by_name["OTEL_SERVICE_NAME"] == ("shop", "environment")
    assert by_name["CXTRACE_SEGMENTS"] == ("(unset)", "default")
    assert by_name["CXTRACE_FRUSTRATED_STATUS"] == ("500-599", "default")
    assert by_name["CXTRACE_RUM_APDEX_THRESHOLD_MS"] == ("2500", "default")
    assert by_name["OTEL_EXPORTER_OTLP_PROTOCOL"] == ("http/protobuf", "default")
    assert by_name["CXTRACE_USER_HASH_KEY"] == ("(unset)", "default")


def test_describe_hides_credentials_in_an_endpoint_url() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel:pw-s3cret@collector.example.com:4318"}
    load(env)  # a valid endpoint
    assert "pw-s3cret" not in repr(describe(env))


def test_settings_repr_never_shows_the_keys() -> None:
    settings = load(
        {"CXTRACE_USER_HASH_KEY": "hash-key-s3cret", "CXTRACE_PROPAGATION_KEY": "prop-key-s3cret"}
    )
    assert "s3cret" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = load()
    with pytest.raises(AttributeError):
        settings.apdex_threshold_ms = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- visits


def test_visits_on_take_the_key_the_timeout_and_the_cookie_name() -> None:
    settings = load(
        {
            "CXTRACE_VISITS": " Cookie ",
            "CXTRACE_VISIT_KEY": "s3cret",
            "CXTRACE_VISIT_TIMEOUT_S": "600",
            "CXTRACE_VISIT_COOKIE": "__Host-cx",
        }
    )
    assert settings.visits is True
    assert settings.visit_key == b"s3cret"
    assert settings.visit_timeout_s == 600
    assert settings.visit_cookie == "__Host-cx"
    assert "s3cret" not in repr(settings)


def test_visits_off_ignore_the_other_visit_variables() -> None:
    settings = load({"CXTRACE_VISITS": "off", "CXTRACE_VISIT_TIMEOUT_S": "60"})
    assert settings.visits is False
    assert settings.visit_schema is None


def test_visits_without_a_key_are_refused_naming_both_variables() -> None:
    message = config_error({"CXTRACE_VISITS": "cookie"})
    assert message.startswith("CXTRACE_VISITS='cookie': expected CXTRACE_VISIT_KEY")


def test_the_visit_schema_follows_the_configured_journeys(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[[journeys]]\nname = "buy"\nsteps = [{ name = "pay", route = "/pay" }]\n'
    )
    settings = load(
        {"CXTRACE_VISITS": "cookie", "CXTRACE_VISIT_KEY": "k", "CXTRACE_JOURNEYS_FILE": path}
    )
    assert settings.visit_schema is not None
    assert settings.visit_schema.step_names == (("pay",),)


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("1800", 1800), ("604800", 604800)])
def test_the_visit_timeout_is_whole_seconds_up_to_a_week(raw: str, expected: int) -> None:
    assert load({"CXTRACE_VISIT_TIMEOUT_S": raw}).visit_timeout_s == expected


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("CXTRACE_VISITS", "on", "'cookie' (follow visits with a signed cookie) or 'off'"),
        ("CXTRACE_VISITS", "true", "'cookie' (follow visits with a signed cookie) or 'off'"),
        ("CXTRACE_VISIT_TIMEOUT_S", "0", "a whole number of seconds between 1 and 604800"),
        ("CXTRACE_VISIT_TIMEOUT_S", "604801", "a whole number of seconds between 1 and 604800"),
        ("CXTRACE_VISIT_TIMEOUT_S", "1.5", "a whole number of seconds between 1 and 604800"),
        ("CXTRACE_VISIT_TIMEOUT_S", "30m", "a whole number of seconds between 1 and 604800"),
        ("CXTRACE_VISIT_COOKIE", "cx visit", "a cookie name"),
        ("CXTRACE_VISIT_COOKIE", "cx;visit", "a cookie name"),
        ("CXTRACE_VISIT_COOKIE", "cx=visit", "a cookie name"),
    ],
)
def test_a_bad_visit_variable_names_itself_and_what_it_expects(
    variable: str, raw: str, expected: str
) -> None:
    message = config_error({variable: raw})
    assert message.startswith(f"{variable}={raw!r}: expected {expected}")
