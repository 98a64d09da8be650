"""Configuration: keyword arguments > environment > journeys file > defaults.

Every environment variable cxtrace reads is named in :data:`VARIABLES` and only here;
every validation lives in this module and raises :class:`ConfigError` naming the
variable, the value and what is expected. The result is a frozen :class:`Settings`
that the request path reads without parsing anything.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Optional
from urllib.parse import urlsplit

# tomli >= 2.4 on every Python, not the stdlib's tomllib: design.md's own journeys example
# spreads an inline table over two lines, which is TOML 1.1; tomllib (3.11-3.13) reads
# only TOML 1.0 and rejects it ("Invalid initial character for a key part").
import tomli as tomllib

from cxtrace._core.errors import ConfigError
from cxtrace._core.journeys import (
    MAX_THRESHOLD_MS,
    Journey,
    Step,
    StepMatcher,
    parse_threshold,
)
from cxtrace._core.visits import VisitSchema, is_cookie_name

__all__ = [
    "INTEGRATIONS",
    "VARIABLES",
    "Settings",
    "describe",
    "is_disabled",
    "load_settings",
    "mask_url",
]

INTEGRATIONS: Final = ("flask", "django", "requests")
DEFAULT_APDEX_THRESHOLD_MS: Final = 500.0
DEFAULT_RUM_APDEX_THRESHOLD_MS: Final = 2500.0
DEFAULT_VISIT_TIMEOUT_S: Final = 1800
DEFAULT_VISIT_COOKIE: Final = "cx_visit"

Resolver = Callable[[Any], Optional[str]]


@dataclass(frozen=True)
class Settings:
    """The effective configuration, decided once at ``instrument()``."""

    enabled: bool = True
    sdk_disabled: bool = False
    service_name: Optional[str] = None
    integrations: Optional[tuple[str, ...]] = None  # None: every available one
    apdex_threshold_ms: float = DEFAULT_APDEX_THRESHOLD_MS
    journeys: tuple[Journey, ...] = ()
    step_matcher: StepMatcher = field(
        default_factory=lambda: StepMatcher(()), repr=False, compare=False
    )
    journeys_file: Optional[str] = None
    segment_header: Optional[str] = None  # as configured, e.g. "X-Customer-Tier"
    segments_allowed: Optional[tuple[str, ...]] = None
    user_hash_key: Optional[bytes] = field(default=None, repr=False)
    excluded_urls: Optional[re.Pattern[str]] = None
    frustrated_status: frozenset[int] = frozenset(range(500, 600))
    propagation_key: Optional[bytes] = field(default=None, repr=False)
    trust_inbound_baggage: bool = False
    propagate_to: tuple[str, ...] = ("*",)
    rum: bool = False
    rum_apdex_threshold_ms: float = DEFAULT_RUM_APDEX_THRESHOLD_MS
    segment_resolver: Optional[Resolver] = None
    user_resolver: Optional[Resolver] = None
    traces_exporters: tuple[str, ...] = ("otlp",)
    metrics_exporters: tuple[str, ...] = ("otlp",)
    traces_protocol: str = "http/protobuf"
    metrics_protocol: str = "http/protobuf"
    # Visits (design.md section 12): a schema only when CXTRACE_VISITS=cookie.
    visit_schema: Optional[VisitSchema] = field(default=None, repr=False, compare=False)
    visit_key: Optional[bytes] = field(default=None, repr=False)
    visit_timeout_s: int = DEFAULT_VISIT_TIMEOUT_S
    visit_cookie: str = DEFAULT_VISIT_COOKIE

    @property
    def visits(self) -> bool:
        return self.visit_schema is not None

    @property
    def segment_header_key(self) -> Optional[str]:
        """The WSGI environ key of the segment header (``HTTP_X_CUSTOMER_TIER``)."""
        if self.segment_header is None:
            return None
        return "HTTP_" + self.segment_header.upper().replace("-", "_")


# --------------------------------------------------------------------------- parsers
# Each parser takes (variable name, raw string) and returns the value or raises.

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _fail(name: str, raw: object, expected: str) -> ConfigError:
    return ConfigError(f"{name}={raw!r}: expected {expected}")


def _bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _fail(name, raw, "true or false")


def _ms(name: str, raw: str) -> float:
    expected = "a positive number of milliseconds"
    try:
        value = float(raw.strip())
    except ValueError:
        raise _fail(name, raw, expected) from None
    if value > 0 and value > MAX_THRESHOLD_MS and value != float("inf"):
        raise _fail(name, raw, f"{expected} up to {MAX_THRESHOLD_MS} (an hour)")
    try:
        return parse_threshold(name, value)
    except ConfigError:
        raise _fail(name, raw, expected) from None


_MAX_INT = 2**31 - 1  # what the SDK's queues, timers and sockets accept


def _int(name: str, raw: str, *, minimum: int = 0) -> int:
    expected = f"an integer between {minimum} and {_MAX_INT}"
    try:
        value = int(raw.strip())
    except ValueError:
        raise _fail(name, raw, expected) from None
    if not minimum <= value <= _MAX_INT:
        raise _fail(name, raw, expected)
    return value


def _csv(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token


def _header_name(name: str, raw: str) -> str:
    value = raw.strip()
    if not _TOKEN.match(value):
        raise _fail(name, raw, "an HTTP header name such as X-Customer-Tier")
    return value


def _segments(name: str, raw: str) -> tuple[str, ...]:
    items = _csv(raw)
    if not items:
        raise _fail(name, raw, "a comma-separated list of segment names")
    for item in items:
        if len(item) > 64 or not item.isprintable():
            raise _fail(name, raw, "segment names of at most 64 printable characters")
    return tuple(items)


def _secret(name: str, raw: str) -> bytes:
    if not raw.strip():
        raise ConfigError(f"{name}='***': expected a non-empty secret")
    return raw.encode("utf-8")


def _excluded(name: str, raw: str) -> re.Pattern[str]:
    parts = _csv(raw)
    if not parts:
        raise _fail(name, raw, "a comma-separated list of regular expressions")
    for part in parts:
        try:
            re.compile(part)
        except re.error as exc:
            raise _fail(name, raw, f"regular expressions; {part!r} is invalid: {exc}") from None
    return re.compile("|".join(f"(?:{part})" for part in parts))


def _statuses(name: str, raw: str) -> frozenset[int]:
    expected = "status codes 100-599 as a list of codes and ranges, e.g. '500-599' or '429,500-599'"
    if raw.strip().lower() == "none":
        return frozenset()
    codes: set[int] = set()
    items = _csv(raw)
    if not items:
        raise _fail(name, raw, expected)
    for item in items:
        lo_s, dash, hi_s = item.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if dash else lo
        except ValueError:
            raise _fail(name, raw, expected) from None
        if not (100 <= lo <= hi <= 599):
            raise _fail(name, raw, expected)
        codes.update(range(lo, hi + 1))
    return frozenset(codes)


_HOST_GLOB = re.compile(r"^[A-Za-z0-9*?.\-\[\]:]+$")


def _host_globs(name: str, raw: str) -> tuple[str, ...]:
    items = _csv(raw)
    if not items or not all(_HOST_GLOB.match(item) for item in items):
        raise _fail(name, raw, "a comma-separated list of host globs, e.g. '*.internal,10.*'")
    return tuple(item.lower() for item in items)


def _integrations(name: str, raw: object) -> tuple[str, ...]:
    items = _csv(raw) if isinstance(raw, str) else raw
    expected = f"a comma-separated list of {', '.join(INTEGRATIONS)}"
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise _fail(name, raw, expected)
    if isinstance(raw, str) and not items:  # "," in the environment; integrations=[] is "none"
        raise _fail(name, raw, expected)
    result = []
    for item in items:
        if not isinstance(item, str) or item.strip().lower() not in INTEGRATIONS:
            raise _fail(name, raw, expected)
        if item.strip().lower() not in result:
            result.append(item.strip().lower())
    return tuple(result)


# --------------------------------------------------------------------------- OTEL_*
# cxtrace does not re-implement the SDK's handling of these: it validates them up front
# so that a typo fails loudly at instrument() instead of being ignored by an exporter.

_EXPORTERS = ("otlp", "console", "none")
_PROTOCOLS = ("http/protobuf", "grpc")
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_COMPRESSIONS = ("gzip", "deflate", "none")


def _one_of(choices: tuple[str, ...], expected: str) -> Callable[[str, str], str]:
    """A parser accepting one of ``choices``, case-insensitively."""

    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise _fail(name, raw, expected)
        return value

    return parse


_protocol = _one_of(_PROTOCOLS, "'http/protobuf' or 'grpc' (http/json is not supported)")
_compression = _one_of(_COMPRESSIONS, "gzip, deflate or none")
_sampler = _one_of(_SAMPLERS, f"one of {', '.join(_SAMPLERS)}")


def _exporters(name: str, raw: str) -> tuple[str, ...]:
    items = tuple(item.lower() for item in _csv(raw))
    if not items or any(item not in _EXPORTERS for item in items):
        raise _fail(name, raw, f"a comma-separated list of {', '.join(_EXPORTERS)}")
    if "none" in items:
        return ()
    return items


def mask_url(url: str) -> str:
    """``https://user:pw@host/`` -> ``https://***@host/``: credentials never reach a log."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _endpoint(name: str, raw: str) -> str:
    value = raw.strip()
    shown = mask_url(raw)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _fail(name, shown, "a URL such as http://collector:4318") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(name, shown, "a URL such as http://collector:4318")
    return value


def _number_between(
    low: float, high: float, expected: str, out_of_range: Optional[str] = None
) -> Callable[[str, str], float]:
    """A parser accepting a number in [low, high] (NaN and infinities refused)."""

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise _fail(name, raw, expected) from None
        if not low <= value <= high:
            raise _fail(name, raw, out_of_range or expected)
        return value

    return parse


_timeout = _number_between(
    0, _MAX_INT, "a non-negative number", f"a non-negative number up to {_MAX_INT}"
)


def _key_values(name: str, raw: str, *, secret: bool) -> str:
    shown = "'***'" if secret else repr(raw)
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{name}={shown}: expected comma-separated key=value pairs")
    return raw


_ratio = _number_between(0.0, 1.0, "a number between 0 and 1")


@dataclass(frozen=True)
class Variable:
    name: str
    parse: Callable[[str, str], object]
    default: str  # shown by `cxtrace config`; "" means unset
    secret: bool = False


def _headers(name: str, raw: str) -> str:
    return _key_values(name, raw, secret=True)


def _resource(name: str, raw: str) -> str:
    return _key_values(name, raw, secret=False)


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise _fail(name, raw, "a non-empty string")
    return raw.strip()


def _positive_int(name: str, raw: str) -> int:
    return _int(name, raw, minimum=1)


_visits = _one_of(("off", "cookie"), "'cookie' (follow visits with a signed cookie) or 'off'")
_MAX_VISIT_TIMEOUT_S: Final = 7 * 24 * 3600


def _seconds(name: str, raw: str) -> int:
    expected = f"a whole number of seconds between 1 and {_MAX_VISIT_TIMEOUT_S} (a week)"
    try:
        value = int(raw.strip())
    except ValueError:
        raise _fail(name, raw, expected) from None
    if not 1 <= value <= _MAX_VISIT_TIMEOUT_S:
        raise _fail(name, raw, expected)
    return value


def _cookie_name(name: str, raw: str) -> str:
    value = raw.strip()
    if not is_cookie_name(value):
        raise _fail(name, raw, "a cookie name: letters, digits and !#$%&'*+-.^_`|~")
    return value


_SIGNALS = ("", "TRACES_", "METRICS_")

VARIABLES: Final[tuple[Variable, ...]] = (
    Variable("CXTRACE_ENABLED", _bool, "true"),
    Variable("CXTRACE_INTEGRATIONS", _integrations, ""),
    Variable("CXTRACE_APDEX_THRESHOLD_MS", _ms, "500"),
    Variable("CXTRACE_JOURNEYS_FILE", _text, ""),
    Variable("CXTRACE_SEGMENT_HEADER", _header_name, ""),
    Variable("CXTRACE_SEGMENTS", _segments, ""),
    Variable("CXTRACE_USER_HASH_KEY", _secret, "", secret=True),
    Variable("CXTRACE_EXCLUDED_URLS", _excluded, ""),
    Variable("CXTRACE_FRUSTRATED_STATUS", _statuses, "500-599"),
    Variable("CXTRACE_PROPAGATION_KEY", _secret, "", secret=True),
    Variable("CXTRACE_TRUST_INBOUND_BAGGAGE", _bool, "false"),
    Variable("CXTRACE_PROPAGATE_TO", _host_globs, "*"),
    Variable("CXTRACE_RUM", _bool, "false"),
    Variable("CXTRACE_RUM_APDEX_THRESHOLD_MS", _ms, "2500"),
    Variable("CXTRACE_VISITS", _visits, "off"),
    Variable("CXTRACE_VISIT_KEY", _secret, "", secret=True),
    Variable("CXTRACE_VISIT_TIMEOUT_S", _seconds, str(DEFAULT_VISIT_TIMEOUT_S)),
    Variable("CXTRACE_VISIT_COOKIE", _cookie_name, DEFAULT_VISIT_COOKIE),
    Variable("OTEL_SDK_DISABLED", _bool, "false"),
    Variable("OTEL_SERVICE_NAME", _text, ""),
    Variable("OTEL_RESOURCE_ATTRIBUTES", _resource, ""),
    Variable("OTEL_TRACES_EXPORTER", _exporters, "otlp"),
    Variable("OTEL_METRICS_EXPORTER", _exporters, "otlp"),
    *(
        Variable(f"OTEL_EXPORTER_OTLP_{s}PROTOCOL", _protocol, "http/protobuf" if not s else "")
        for s in _SIGNALS
    ),
    *(Variable(f"OTEL_EXPORTER_OTLP_{s}ENDPOINT", _endpoint, "") for s in _SIGNALS),
    *(Variable(f"OTEL_EXPORTER_OTLP_{s}HEADERS", _headers, "", secret=True) for s in _SIGNALS),
    *(Variable(f"OTEL_EXPORTER_OTLP_{s}TIMEOUT", _timeout, "") for s in _SIGNALS),
    *(Variable(f"OTEL_EXPORTER_OTLP_{s}COMPRESSION", _compression, "") for s in _SIGNALS),
    Variable("OTEL_TRACES_SAMPLER", _sampler, "parentbased_always_on"),
    Variable("OTEL_TRACES_SAMPLER_ARG", _ratio, ""),
    Variable("OTEL_BSP_SCHEDULE_DELAY", _int, "5000"),
    Variable("OTEL_BSP_EXPORT_TIMEOUT", _int, "30000"),
    Variable("OTEL_BSP_MAX_QUEUE_SIZE", _positive_int, "2048"),
    Variable("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _positive_int, "512"),
    Variable("OTEL_METRIC_EXPORT_INTERVAL", _positive_int, "60000"),
    Variable("OTEL_METRIC_EXPORT_TIMEOUT", _positive_int, "30000"),
)
_BY_NAME: Final = {v.name: v for v in VARIABLES}


def _read(environ: Mapping[str, str], name: str) -> Any:
    """The parsed value of one variable, or None when unset or empty (as the OTel spec says)."""
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return None
    return _BY_NAME[name].parse(name, raw)


# --------------------------------------------------------------------------- journeys file

_TOP_KEYS = ("apdex_threshold_ms", "segments", "journeys")
_SEGMENT_KEYS = ("header", "allowed")
_JOURNEY_KEYS = ("name", "steps")
_STEP_KEYS = ("name", "route", "path", "method", "conversion", "apdex_threshold_ms")


@dataclass(frozen=True)
class _FileConfig:
    apdex_threshold_ms: Optional[float] = None
    segment_header: Optional[str] = None
    segments_allowed: Optional[tuple[str, ...]] = None
    journeys: tuple[Journey, ...] = ()


def _check_keys(where: str, table: object, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}; expected one of {', '.join(allowed)}")
    return table


def _load_file(path: str) -> _FileConfig:
    var = f"CXTRACE_JOURNEYS_FILE={path!r}"
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{var}: no such file; expected the path of a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{var}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{var}: expected a TOML file: {exc}") from None
    top = _check_keys(var, data, _TOP_KEYS)
    threshold = None
    if "apdex_threshold_ms" in top:
        threshold = parse_threshold(f"{var}: apdex_threshold_ms", top["apdex_threshold_ms"])
    header = allowed = None
    if "segments" in top:
        seg = _check_keys(f"{var}: [segments]", top["segments"], _SEGMENT_KEYS)
        if "header" in seg:
            if not isinstance(seg["header"], str):
                raise _fail(f"{var}: segments.header", seg["header"], "an HTTP header name")
            header = _header_name(f"{var}: segments.header", seg["header"])
        if "allowed" in seg:
            names = seg["allowed"]
            if (
                not isinstance(names, list)
                or not names
                or not all(
                    isinstance(n, str)
                    and n.strip()
                    and "," not in n
                    and len(n) <= 64
                    and n.isprintable()
                    for n in names
                )
            ):
                raise _fail(
                    f"{var}: segments.allowed",
                    names,
                    "a non-empty list of segment names (at most 64 printable characters, "
                    "no commas)",
                )
            allowed = tuple(n.strip() for n in names)
    journeys: list[Journey] = []
    raw_journeys = top.get("journeys", [])
    if not isinstance(raw_journeys, list):
        raise _fail(f"{var}: journeys", raw_journeys, "an array of [[journeys]] tables")
    for j, raw_journey in enumerate(raw_journeys, start=1):
        where = f"{var}: journeys[{j}]"
        table = _check_keys(where, raw_journey, _JOURNEY_KEYS)
        if "name" not in table or "steps" not in table:
            raise ConfigError(f"{where}: expected both 'name' and 'steps'")
        raw_steps = table["steps"]
        if not isinstance(raw_steps, list):
            raise _fail(f"{where}.steps", raw_steps, "an array of step tables")
        steps = []
        for s, raw_step in enumerate(raw_steps, start=1):
            step_where = f"{where}.steps[{s}]"
            step_table = _check_keys(step_where, raw_step, _STEP_KEYS)
            if "name" not in step_table:
                raise ConfigError(f"{step_where}: expected a 'name'")
            try:
                steps.append(Step(**step_table))
            except ConfigError as exc:
                raise ConfigError(f"{step_where}: {exc}") from None
            except TypeError as exc:  # e.g. a number where a string was expected
                raise ConfigError(f"{step_where}: {exc}") from None
        try:
            journeys.append(Journey(table["name"], steps=steps))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return _FileConfig(threshold, header, allowed, tuple(journeys))


# --------------------------------------------------------------------------- assembly


def _resolver(name: str, value: object) -> Optional[Resolver]:
    if value is None:
        return None
    if not callable(value):
        raise _fail(name, value, "a callable (request) -> str | None")
    return value


def _grpc_available() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None
    except (ImportError, ValueError):
        return False


def _signal_protocol(environ: Mapping[str, str], signal: str) -> str:
    specific = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    value = _read(environ, specific)
    name = specific
    if value is None:
        name = "OTEL_EXPORTER_OTLP_PROTOCOL"
        value = _read(environ, name) or "http/protobuf"
    if value == "grpc" and not _grpc_available():
        raise ConfigError(
            f"{name}='grpc': the gRPC exporter is not installed; "
            "expected 'http/protobuf', or install it with: pip install 'cxtrace[grpc]'"
        )
    return str(value)


def is_disabled(environ: Mapping[str, str]) -> bool:
    """``CXTRACE_ENABLED=false``: the kill switch, read before (and instead of) anything else."""
    return environ.get("CXTRACE_ENABLED", "").strip().lower() in _FALSE


def load_settings(environ: Mapping[str, str], **kwargs: Any) -> Settings:
    """Validate everything and decide the effective configuration.

    ``kwargs`` are ``instrument()``'s keyword arguments (None means "not given").
    """
    # Parse every variable we know first, so any bad value fails even if unused.
    env = {name: _read(environ, name) for name in _BY_NAME}
    enabled = env["CXTRACE_ENABLED"]
    sdk_disabled = bool(env["OTEL_SDK_DISABLED"])

    file_path = env["CXTRACE_JOURNEYS_FILE"]
    file_cfg = _load_file(file_path) if file_path else _FileConfig()

    threshold = kwargs.get("apdex_threshold_ms")
    if threshold is not None:
        threshold = parse_threshold("apdex_threshold_ms", threshold)
    else:
        threshold = (
            env["CXTRACE_APDEX_THRESHOLD_MS"]
            or file_cfg.apdex_threshold_ms
            or DEFAULT_APDEX_THRESHOLD_MS
        )

    journeys_kw = kwargs.get("journeys")
    if journeys_kw is not None:
        if isinstance(journeys_kw, (str, bytes, Journey)) or not isinstance(journeys_kw, Iterable):
            raise _fail("journeys", journeys_kw, "a list of cxtrace.Journey")
        journeys = tuple(journeys_kw)
        if not all(isinstance(j, Journey) for j in journeys):
            raise _fail("journeys", journeys_kw, "a list of cxtrace.Journey")
    else:
        journeys = file_cfg.journeys

    try:
        matcher = StepMatcher(journeys)  # duplicate journeys / routes are config errors too
    except ConfigError as exc:
        if journeys_kw is None and file_path:
            raise ConfigError(f"CXTRACE_JOURNEYS_FILE={file_path!r}: {exc}") from None
        raise

    service_name = kwargs.get("service_name")
    if service_name is not None and (not isinstance(service_name, str) or not service_name.strip()):
        raise _fail("service_name", service_name, "a non-empty string")

    integrations_kw = kwargs.get("integrations")
    integrations = (
        _integrations("integrations", integrations_kw)
        if integrations_kw is not None
        else env["CXTRACE_INTEGRATIONS"]
    )

    batch, queue = env["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"], env["OTEL_BSP_MAX_QUEUE_SIZE"]
    if batch is not None and batch > (queue or 2048):
        raise _fail(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            environ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
            f"an integer <= OTEL_BSP_MAX_QUEUE_SIZE ({queue or 2048})",
        )

    visit_schema = None
    if env["CXTRACE_VISITS"] == "cookie":
        if env["CXTRACE_VISIT_KEY"] is None:
            raise ConfigError(
                "CXTRACE_VISITS='cookie': expected CXTRACE_VISIT_KEY too, the secret that "
                "signs the visit cookie (the same in every process that serves the site)"
            )
        visit_schema = VisitSchema(journeys)

    traces = env["OTEL_TRACES_EXPORTER"]
    metrics = env["OTEL_METRICS_EXPORTER"]
    return Settings(
        enabled=True if enabled is None else enabled,
        sdk_disabled=sdk_disabled,
        service_name=service_name.strip() if service_name else None,
        integrations=integrations,
        apdex_threshold_ms=threshold,
        journeys=journeys,
        step_matcher=matcher,
        journeys_file=file_path,
        segment_header=env["CXTRACE_SEGMENT_HEADER"] or file_cfg.segment_header,
        segments_allowed=env["CXTRACE_SEGMENTS"] or file_cfg.segments_allowed,
        user_hash_key=env["CXTRACE_USER_HASH_KEY"],
        excluded_urls=env["CXTRACE_EXCLUDED_URLS"],
        frustrated_status=(
            env["CXTRACE_FRUSTRATED_STATUS"]
            if env["CXTRACE_FRUSTRATED_STATUS"] is not None
            else frozenset(range(500, 600))
        ),
        propagation_key=env["CXTRACE_PROPAGATION_KEY"],
        trust_inbound_baggage=bool(env["CXTRACE_TRUST_INBOUND_BAGGAGE"]),
        propagate_to=env["CXTRACE_PROPAGATE_TO"] or ("*",),
        rum=bool(env["CXTRACE_RUM"]),
        rum_apdex_threshold_ms=(
            env["CXTRACE_RUM_APDEX_THRESHOLD_MS"] or DEFAULT_RUM_APDEX_THRESHOLD_MS
        ),
        segment_resolver=_resolver("segment", kwargs.get("segment")),
        user_resolver=_resolver("user", kwargs.get("user")),
        traces_exporters=("otlp",) if traces is None else traces,
        metrics_exporters=("otlp",) if metrics is None else metrics,
        traces_protocol=_signal_protocol(environ, "TRACES"),
        metrics_protocol=_signal_protocol(environ, "METRICS"),
        visit_schema=visit_schema,
        visit_key=env["CXTRACE_VISIT_KEY"],
        visit_timeout_s=env["CXTRACE_VISIT_TIMEOUT_S"] or DEFAULT_VISIT_TIMEOUT_S,
        visit_cookie=env["CXTRACE_VISIT_COOKIE"] or DEFAULT_VISIT_COOKIE,
    )


def describe(
    environ: Mapping[str, str], settings: Optional[Settings] = None
) -> list[tuple[str, str, str]]:
    """(variable, effective value, source) for every variable; secrets shown as ``***``.

    With ``settings``, values the journeys file supplied are shown with that source.
    """
    from_file: dict[str, str] = {}
    if settings is not None and settings.journeys_file:
        from_file = {
            "CXTRACE_APDEX_THRESHOLD_MS": f"{settings.apdex_threshold_ms:g}",
            "CXTRACE_SEGMENT_HEADER": settings.segment_header or "",
            "CXTRACE_SEGMENTS": ",".join(settings.segments_allowed or ()),
        }
    rows = []
    for var in VARIABLES:
        raw = environ.get(var.name)
        if raw is not None and raw.strip():
            shown = "***" if var.secret else raw
            if var.name.endswith("ENDPOINT"):
                shown = mask_url(raw)
            rows.append((var.name, shown, "environment"))
        elif from_file.get(var.name) and from_file[var.name] != var.default:
            rows.append((var.name, from_file[var.name], "journeys file"))
        else:
            rows.append((var.name, var.default or "(unset)", "default"))
    return rows
