"""The at-scale kit in docs/deploy/: Collector configs, Prometheus rules, Grafana dashboard.

- The Prometheus rules go through ``promtool check rules`` and ``promtool test rules``
  (Debian's ``prometheus`` package; skipped locally without it, a failure under CI).
- The dashboard and the alerts may query only the series cx-rules.yaml records and the raw
  series listed once in ``RAW_SERIES``; every PromQL expression of the dashboard is parsed
  by promtool, and the main panels' queries are run by promtool on known traffic.
- The Collector configs are checked for wiring (no collector binary is packaged for Debian
  or PyPI, so it cannot be run here).
- ``RAW_SERIES`` itself is checked against what a cxtrace-instrumented Flask app really
  exports, translated with the OTLP -> Prometheus naming rule the README documents.

tests/test_prometheus_live.py goes further: a real Prometheus scraping a real app.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from flask_app import make_app
from otlp_receiver import PointRecord, Receiver

DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy"
RULES = DEPLOY / "prometheus" / "cx-rules.yaml"
ALERTS = DEPLOY / "prometheus" / "cx-alerts.yaml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yaml"))
DASHBOARD = DEPLOY / "grafana" / "cx-dashboard.json"
COLLECTOR_CONFIGS = [DEPLOY / "otel-collector.yaml", DEPLOY / "otel-collector-loadbalancer.yaml"]

# The raw series cxtrace's metrics become in Prometheus (default OTLP translation), with every
# label they can carry: the one list the rules, the alerts and the dashboard may query.
_DURATION_LABELS = frozenset(
    {
        "job",
        "instance",
        "http_request_method",
        "url_scheme",
        "cx_segment",
        "http_route",
        "cx_step",
        "http_response_status_code",
        "error_type",
        "network_protocol_version",
    }
)
RAW_SERIES: dict[str, frozenset[str]] = {
    "cx_requests_total": frozenset(
        {
            "job",
            "instance",
            "cx_satisfaction",
            "cx_segment",
            "cx_journey",
            "cx_step",
            "http_route",
            "http_request_method",
        }
    ),
    "cx_conversions_total": frozenset({"job", "instance", "cx_segment", "cx_journey", "cx_step"}),
    "cx_conversion_value_total": frozenset(
        {"job", "instance", "cx_segment", "cx_journey", "cx_step", "cx_conversion_currency"}
    ),
    "cx_visits_total": frozenset({"job", "instance", "cx_segment"}),
    "cx_visit_steps_total": frozenset({"job", "instance", "cx_segment", "cx_journey", "cx_step"}),
    "cx_visit_frustrations_total": frozenset(
        {"job", "instance", "cx_segment", "cx_journey", "cx_step", "cx_frustration_reason"}
    ),
    "cx_visit_conversions_total": frozenset({"job", "instance", "cx_segment", "cx_journey"}),
    "cx_visit_converted_steps_total": frozenset(
        {"job", "instance", "cx_segment", "cx_journey", "cx_step", "cx_visit_frustrated"}
    ),
    "http_server_request_duration_seconds_bucket": _DURATION_LABELS | {"le"},
    "http_server_request_duration_seconds_count": _DURATION_LABELS,
    "http_server_request_duration_seconds_sum": _DURATION_LABELS,
}

# --------------------------------------------------------------------------- promtool


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing on CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return path


def _run_promtool(*args: str | Path) -> str:
    done = subprocess.run(
        [_promtool(), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "SUCCESS" in output, output
    assert "FAILED" not in output, output
    return output


@pytest.mark.parametrize("rules", [RULES, ALERTS], ids=lambda p: p.name)
def test_rule_files_pass_promtool_check(rules: Path) -> None:
    output = _run_promtool("check", "rules", rules)
    found = re.search(r"SUCCESS: (\d+) rules found", output)
    assert found is not None, output
    assert int(found[1]) == len(_rules(rules))


def test_there_are_rule_unit_tests_for_both_files() -> None:
    named = {Path(name).name for test in RULE_TESTS for name in _load(test)["rule_files"]}
    assert named == {RULES.name, ALERTS.name}


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass_promtool(test_file: Path) -> None:
    output = _run_promtool("test", "rules", test_file)
    assert "SUCCESS" in output


def test_alert_rules_are_checked_by_their_unit_tests() -> None:
    tested = {
        case["alertname"]
        for test_file in RULE_TESTS
        for test in _load(test_file)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == {rule["alert"] for rule in _rules(ALERTS)}


# --------------------------------------------------------------------------- PromQL names

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_TOKEN = re.compile(r"\d[\w.]*|[A-Za-z_:][A-Za-z0-9_:]*(?:\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "offset", "bool", "inf", "nan", "by", "without", "on", "ignoring"}
)


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression refers to.

    A small tokenizer, not a parser: strings, range selectors, label matchers and grouping
    lists are taken out first; what is left is numbers, functions (an identifier before
    ``(``), keywords and metric names.
    """
    text = _STRING.sub('""', expr)
    labels: set[str] = set()
    for grouping in _GROUPING.findall(text):
        labels.update(name.strip() for name in grouping.split(",") if name.strip())
    text = _GROUPING.sub(" ", text)
    for selector in _SELECTOR.findall(text):
        labels.update(_MATCHER.findall(selector))
    text = _RANGE.sub(" ", _SELECTOR.sub(" ", text))
    metrics = {
        token
        for token in _TOKEN.findall(text)
        if not token[0].isdigit() and not token.endswith("(") and token not in _KEYWORDS
    }
    return metrics, labels


def test_promql_names_finds_metrics_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (cx_step, le) (rate(foo_bucket{job=~"$x", a!=""}[5m])))'
        " / on (job) group_left () bar offset 1d > 0.5 and baz"
    )
    assert promql_names(expr) == ({"foo_bucket", "bar", "baz"}, {"cx_step", "le", "job", "a"})


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in _load(path)["groups"] for rule in group["rules"]]


def _recorded() -> tuple[set[str], set[str]]:
    """(recorded series names, labels they can carry) from cx-rules.yaml."""
    names: set[str] = set()
    labels: set[str] = set()
    for rule in _rules(RULES):
        names.add(rule["record"])
        labels.update(rule.get("labels", {}))
        labels.update(promql_names(rule["expr"])[1])
    return names, labels


def test_recording_rules_read_only_the_raw_series_and_each_other() -> None:
    recorded, _ = _recorded()
    raw_labels = set().union(*RAW_SERIES.values())
    for rule in _rules(RULES):
        metrics, labels = promql_names(rule["expr"])
        assert metrics <= recorded | set(RAW_SERIES), (rule["record"], metrics)
        assert labels <= raw_labels | {"cx_frustration_reason"}, (rule["record"], labels)


def test_hourly_rules_are_the_five_minute_rules_over_an_hour() -> None:
    groups = {group["name"]: group for group in _load(RULES)["groups"]}
    five, hour = groups["cx-5m"]["rules"], groups["cx-1h"]["rules"]
    assert json.dumps(hour) == json.dumps(five).replace("5m", "1h")


def _alert_queries() -> list[str]:
    """Every alert expression, and every query its annotations run (``query`` templates)."""
    queries = []
    for rule in _rules(ALERTS):
        queries.append(rule["expr"])
        for text in rule.get("annotations", {}).values():
            queries.extend(q.replace("%q", '"x"') for q in re.findall(r"`([^`]*)`", text))
    return queries


def test_alerts_query_only_recorded_series() -> None:
    recorded, recorded_labels = _recorded()
    queries = _alert_queries()
    assert len(queries) > len(_rules(ALERTS))  # the annotation queries were found too
    for query in queries:
        metrics, labels = promql_names(query)
        assert metrics, query
        assert metrics <= recorded, query
        assert labels <= recorded_labels, query


# --------------------------------------------------------------------------- dashboard


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return panels


def _prometheus_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    exprs = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("type") == "prometheus":
                exprs.append((panel["title"], target["expr"]))
    return exprs


def _label_values_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, selector, label) of each ``label_values(selector, label)`` variable."""
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        parsed = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)", query)
        assert parsed is not None, query
        found.append((variable["name"], parsed[1], parsed[2]))
    return found


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "cxtrace-cx"
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"] if i["pluginId"] == "prometheus"] == [
        "DS_PROMETHEUS"
    ]
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        if panel.get("targets") and panel["datasource"]["type"] == "prometheus":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_dashboard_queries_only_recorded_and_raw_cx_series() -> None:
    dashboard = _dashboard()
    recorded, recorded_labels = _recorded()
    allowed_labels = recorded_labels | set().union(*RAW_SERIES.values())
    exprs = _prometheus_exprs(dashboard)
    assert len(exprs) >= 10
    for title, expr in exprs:
        metrics, labels = promql_names(expr)
        assert metrics, (title, expr)
        assert metrics <= recorded | set(RAW_SERIES), (title, metrics - recorded)
        assert labels <= allowed_labels, (title, labels - allowed_labels)
    for name, selector, label in _label_values_queries(dashboard):
        metrics, labels = promql_names(selector)
        assert metrics <= set(RAW_SERIES), name
        assert labels | {label} <= allowed_labels, name


def test_every_template_variable_is_used() -> None:
    dashboard = _dashboard()
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert {"service", "segment", "journey"} <= set(variables)
    others = json.dumps(
        {
            "panels": dashboard["panels"],
            "variables": [v.get("query") for v in dashboard["templating"]["list"]],
        }
    )
    for name in variables:
        assert re.search(r"\$\{?" + name + r"\b", others), f"${name} is never used"


@pytest.mark.parametrize(
    "view",
    [
        "Headline",
        "Apdex by segment and step",
        "Funnel",
        "Frustration reasons",
        "Slowest steps",
        "Apdex over time",
        "Customers: funnel",
        "Customers frustrated",
        "Conversion rate: customers frustrated at a step vs the others",
        "Value lost to frustration per hour",
    ],
)
def test_dashboard_has_a_panel_for_each_cockpit_view(view: str) -> None:
    titles = [panel["title"] for panel in _panels(_dashboard())]
    assert any(title.startswith(view) for title in titles), titles


def _grafana_to_promql(expr: str) -> str:
    """A dashboard expression as Grafana sends it: variables and intervals substituted."""
    expr = re.sub(r"\$__(range|rate_interval|interval)\b", "1h", expr)
    return re.sub(r"\$\{?[A-Za-z_]\w*(?::\w+)?\}?", ".*", expr)


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    dashboard = _dashboard()
    exprs = [expr for _, expr in _prometheus_exprs(dashboard)]
    exprs += [selector for _, selector, _ in _label_values_queries(dashboard)]
    rules = [
        {"record": f"dashboard:query_{n}:check", "expr": _grafana_to_promql(expr)}
        for n, expr in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = _run_promtool("check", "rules", path)
    assert f"SUCCESS: {len(rules)} rules found" in output


def _series(labels: str, **kv: str) -> str:
    return labels + "{" + ",".join(f'{k}="{v}"' for k, v in kv.items()) + "}"


_ENT, _FREE, _PRO = "enterprise", "free", "pro"
_PURCHASE = {"cx_journey": "purchase"}
_CONVERSION_1H = "cx_journey:cx_conversion:ratio_rate1h"
_FRUSTRATED_1H = "cx_step:cx_frustrated:ratio_rate1h"
_SEGMENT_APDEX_1H = "cx_segment:cx_apdex:ratio_rate1h"
# What the dashboard's panels show for the traffic of the first test in cx-rules.test.yaml
# (worked out by hand from its per-second rates): (panel title, refId) -> (eval time,
# $__range, [(series, value)]). Panels over $__range are read over 5 minutes at 30m, those
# on the 1h recorded series at 65m.
DASHBOARD_NUMBERS: dict[tuple[str, str], tuple[str, str, list[tuple[str, float]]]] = {
    ("Apdex by segment and step", "A"): (
        "30m",
        "5m",
        [
            (_series("", cx_segment=_ENT, cx_journey="purchase", cx_step="checkout"), 0.625),
            (_series("", cx_segment=_ENT, cx_journey="purchase", cx_step="browse"), 1),
            (_series("", cx_segment=_ENT, cx_journey="purchase", cx_step="purchase"), 1),
            (_series("", cx_segment=_ENT, cx_journey="signup", cx_step="form"), 1),
            (_series("", cx_segment=_ENT, cx_journey="signup", cx_step="confirm"), 1),
            (_series("", cx_segment=_FREE, cx_journey="purchase", cx_step="checkout"), 0),
            (_series("", cx_segment=_FREE, cx_journey="purchase", cx_step="browse"), 1),
            (_series("", cx_segment=_PRO, cx_journey="purchase", cx_step="checkout"), 0.75),
        ],
    ),
    # 300 s x requests per second, all segments: checkout 16 + 1 + 8, browse 16 + 4, ...
    ("Funnel: requests reaching each step ($segment)", "A"): (
        "30m",
        "5m",
        [
            (_series("", cx_journey="purchase", cx_step="checkout"), 7500),
            (_series("", cx_journey="purchase", cx_step="browse"), 6000),
            (_series("", cx_journey="purchase", cx_step="purchase"), 600),
            (_series("", cx_journey="signup", cx_step="form"), 1200),
            (_series("", cx_journey="signup", cx_step="confirm"), 600),
        ],
    ),
    ("Funnel: conversions and conversion rate per journey", "A"): (
        "30m",
        "5m",
        [
            (_series("", cx_segment=_ENT, cx_journey="purchase"), 300),
            (_series("", cx_segment=_ENT, cx_journey="signup"), 300),
        ],
    ),
    ("Funnel: conversions and conversion rate per journey", "B"): (
        "65m",
        "5m",
        [
            (_series(_CONVERSION_1H, job="shop", cx_segment=_ENT, **_PURCHASE), 0.0625),
            (_series(_CONVERSION_1H, job="shop", cx_segment=_FREE, **_PURCHASE), 0),
            (_series(_CONVERSION_1H, job="shop", cx_segment=_PRO, **_PURCHASE), 0),
            (_series(_CONVERSION_1H, job="shop", cx_segment=_ENT, cx_journey="signup"), 0.25),
        ],
    ),
    ("Headline: where customers are frustrated (last hour)", "A"): (
        "65m",
        "5m",
        [
            (
                _series(
                    _FRUSTRATED_1H, job="shop", cx_segment=_FREE, **_PURCHASE, cx_step="checkout"
                ),
                1,
            ),
            (
                _series(
                    _FRUSTRATED_1H, job="shop", cx_segment=_ENT, **_PURCHASE, cx_step="checkout"
                ),
                0.25,
            ),
            (
                _series(
                    _FRUSTRATED_1H, job="shop", cx_segment=_PRO, **_PURCHASE, cx_step="checkout"
                ),
                0.25,
            ),
        ],
    ),
    ("Apdex by segment (last hour)", "A"): (
        "65m",
        "5m",
        [
            (_series(_SEGMENT_APDEX_1H, job="shop", cx_segment=_ENT), 0.85),
            (_series(_SEGMENT_APDEX_1H, job="shop", cx_segment=_FREE), 0.8),
            (_series(_SEGMENT_APDEX_1H, job="shop", cx_segment=_PRO), 0.75),
        ],
    ),
    # per hour: enterprise checkout 1 error + 3 slow per second, free 1 error, pro 2 slow
    ("Frustration reasons by step (per hour, last hour)", "A"): (
        "65m",
        "5m",
        [
            (_series("", cx_segment=_ENT, cx_step="checkout", cx_frustration_reason="error"), 3600),
            (_series("", cx_segment=_ENT, cx_step="checkout", cx_frustration_reason="slow"), 10800),
            (
                _series("", cx_segment=_FREE, cx_step="checkout", cx_frustration_reason="error"),
                3600,
            ),
            (_series("", cx_segment=_PRO, cx_step="checkout", cx_frustration_reason="slow"), 7200),
        ],
    ),
    ("Slowest steps (p95 duration)", "A"): (
        "30m",
        "5m",
        [(_series("", cx_step="checkout"), 0.9375)],
    ),
    # checkout: 2 errors (enterprise ValueError, free 500) out of 15 + 1 + 1 per second
    ("Failing steps (share of errors)", "A"): (
        "30m",
        "5m",
        [(_series("", cx_step="checkout"), 2 / 17)],
    ),
}


def _step(name: str = "", **kv: str) -> str:
    """A series of one step: job "shop" and the purchase journey unless given."""
    return _series(name, **{"job": "shop", "cx_journey": "purchase", **kv})


_VISIT_SHARE = "cx_step:cx_visit_frustrated:ratio_increase1h"
_VALUE_LOST = "cx_step_currency:cx_visit_value_lost:increase1h"
# The same for the customer panels, on the traffic of the "customers" test of
# cx-rules.test.yaml (per-minute rates there; the panels read the last hour at 65m).
CUSTOMER_PANEL_NUMBERS: dict[tuple[str, str], tuple[str, str, list[tuple[str, float]]]] = {
    # visits started: (20 + 8 + 2) x 60; customers per step, all segments added up
    ("Customers: funnel per journey ($segment, last hour)", "A"): ("65m", "5m", [("{}", 1800)]),
    ("Customers: funnel per journey ($segment, last hour)", "B"): (
        "65m",
        "5m",
        [
            (_series("", cx_journey="purchase", cx_step="browse"), 1680),
            (_series("", cx_journey="purchase", cx_step="checkout"), 960),
            (_series("", cx_journey="purchase", cx_step="purchase"), 480),
            (_series("", cx_journey="signup", cx_step="form"), 60),
        ],
    ),
    ("Customers: funnel per journey ($segment, last hour)", "C"): (
        "65m",
        "5m",
        [(_series("", cx_journey="purchase"), 420)],
    ),
    ("Customers frustrated at each step (share, last hour)", "A"): (
        "65m",
        "5m",
        [
            (_step(_VISIT_SHARE, cx_segment=_ENT, cx_step="checkout"), 0.4),
            (_step(_VISIT_SHARE, cx_segment=_ENT, cx_step="purchase"), 0.2),
            (_step(_VISIT_SHARE, cx_segment=_ENT, cx_journey="signup", cx_step="form"), 1),
            (_step(_VISIT_SHARE, cx_segment=_FREE, cx_step="checkout"), 0.5),
            (_step(_VISIT_SHARE, cx_segment=_PRO, cx_step="checkout"), 0.5),
        ],
    ),
    # the frustrated: 60 / 240 at enterprise checkout; nobody frustrated, no rate
    ("Conversion rate: customers frustrated at a step vs the others (last hour)", "C"): (
        "65m",
        "5m",
        [
            (_step(cx_segment=_ENT, cx_step="checkout"), 0.25),
            (_step(cx_segment=_ENT, cx_step="purchase"), 1),
            (_step(cx_segment=_ENT, cx_journey="signup", cx_step="form"), 0),
            (_step(cx_segment=_FREE, cx_step="checkout"), 0.5),
            (_step(cx_segment=_PRO, cx_step="checkout"), 0),
        ],
    ),
    # the others: 180 / 360 at enterprise checkout; nobody got through signup/form unfrustrated
    ("Conversion rate: customers frustrated at a step vs the others (last hour)", "D"): (
        "65m",
        "5m",
        [
            (_step(cx_segment=_ENT, cx_step="browse"), 0.2),
            (_step(cx_segment=_ENT, cx_step="checkout"), 0.5),
            (_step(cx_segment=_ENT, cx_step="purchase"), 0.75),
            (_step(cx_segment=_FREE, cx_step="browse"), 0.25),
            (_step(cx_segment=_FREE, cx_step="checkout"), 0.5),
            (_step(cx_segment=_FREE, cx_step="purchase"), 1),
            (_step(cx_segment=_PRO, cx_step="checkout"), 1),
            (_step(cx_segment=_PRO, cx_step="purchase"), 1),
        ],
    ),
    ("Conversion rate: customers frustrated at a step vs the others (last hour)", "E"): (
        "65m",
        "5m",
        [
            (_step(cx_segment=segment, cx_step=step), lost)
            for segment, step, lost in [
                (_ENT, "browse", 0),
                (_ENT, "checkout", 60),
                (_ENT, "purchase", 0),
                (_FREE, "browse", 0),
                (_FREE, "checkout", 0),
                (_FREE, "purchase", 0),
                (_PRO, "checkout", 60),
                (_PRO, "purchase", 0),
            ]
        ],
    ),
    # 60 conversions lost x EUR 20; the zeros are left out; pro pays in USD
    ("Value lost to frustration per hour, by step and segment", "A"): (
        "65m",
        "5m",
        [
            (
                _step(
                    _VALUE_LOST, cx_segment=_ENT, cx_step="checkout", cx_conversion_currency="EUR"
                ),
                1200,
            )
        ],
    ),
}


@pytest.mark.parametrize(
    ("traffic", "numbers"),
    [(0, DASHBOARD_NUMBERS), (1, CUSTOMER_PANEL_NUMBERS)],
    ids=["requests", "customers"],
)
def test_dashboard_panels_show_the_right_numbers(
    tmp_path: Path,
    traffic: int,
    numbers: dict[tuple[str, str], tuple[str, str, list[tuple[str, float]]]],
) -> None:
    """The panels' queries, run by promtool on known traffic, give hand-computed numbers."""
    targets = {
        (panel["title"], target["refId"]): target["expr"]
        for panel in _panels(_dashboard())
        for target in panel.get("targets", [])
        if "expr" in target
    }
    cases = []
    for key, (eval_time, window, samples) in numbers.items():
        expr = targets[key].replace("$__range", window)
        cases.append(
            {
                "expr": _grafana_to_promql(expr),
                "eval_time": eval_time,
                "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
            }
        )
    rule_tests = _load(RULES.parent / "tests" / "cx-rules.test.yaml")
    test = rule_tests["tests"][traffic]
    path = tmp_path / "dashboard.test.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES)],
                "evaluation_interval": "1m",
                "group_eval_order": rule_tests["group_eval_order"],
                "tests": [
                    {
                        "interval": test["interval"],
                        "input_series": test["input_series"],
                        "promql_expr_test": cases,
                    }
                ],
            }
        )
    )
    _run_promtool("test", "rules", path)


# --------------------------------------------------------------------------- collector

_PIPELINE_KINDS = ("receivers", "processors", "exporters")


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_collector_pipelines_use_only_defined_components(path: Path) -> None:
    config = _load(path)
    service = config["service"]
    assert set(service["extensions"]) <= set(config["extensions"])
    used: dict[str, set[str]] = {kind: set() for kind in _PIPELINE_KINDS}
    for name, pipeline in service["pipelines"].items():
        assert name.split("/")[0] in ("traces", "metrics", "logs"), name
        assert pipeline["receivers"], name
        assert pipeline["exporters"], name
        for kind in _PIPELINE_KINDS:
            undefined = set(pipeline.get(kind, [])) - set(config[kind])
            assert not undefined, f"{name} uses undefined {kind}: {undefined}"
            used[kind].update(pipeline.get(kind, []))
        # memory_limiter first, so data is refused before anything else holds it
        assert pipeline["processors"][0] == "memory_limiter", name
    for kind in _PIPELINE_KINDS:
        assert used[kind] == set(config[kind]), f"{kind} defined but unused"
    assert set(service["pipelines"]) == {"traces", "metrics"}
    receiver = config["receivers"]["otlp"]["protocols"]
    assert receiver["grpc"]["endpoint"].endswith(":4317")
    assert receiver["http"]["endpoint"].endswith(":4318")


def test_collector_keeps_frustrated_error_and_converting_traces() -> None:
    config = _load(COLLECTOR_CONFIGS[0])
    traces = config["service"]["pipelines"]["traces"]["processors"]
    assert traces.index("tail_sampling") < traces.index("batch")
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["string_attribute"]["string_attribute"] == {
        "key": "cx.satisfaction",
        "values": ["frustrated"],
    }
    assert policies["status_code"]["status_code"] == {"status_codes": ["ERROR"]}
    assert policies["boolean_attribute"]["boolean_attribute"] == {
        "key": "cx.conversion",
        "value": True,
    }
    assert policies["probabilistic"]["probabilistic"] == {"sampling_percentage": 10}
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp_grpc/traces"]


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_collector_writes_the_metric_names_the_rules_query(path: Path) -> None:
    config = _load(path)
    assert config["service"]["pipelines"]["metrics"]["exporters"] == ["prometheus_remote_write"]
    settings = config["exporters"]["prometheus_remote_write"]
    assert settings["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    assert "add_metric_suffixes" not in settings
    assert "namespace" not in settings


def test_loadbalancer_tier_routes_traces_by_trace_id() -> None:
    config = _load(COLLECTOR_CONFIGS[1])
    assert config["exporters"]["load_balancing"]["routing_key"] == "traceID"
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["load_balancing"]


# --------------------------------------------------------------------------- real names

JOURNEYS = """
[segments]
header = "X-Customer-Tier"
allowed = ["free", "enterprise"]

[[journeys]]
name = "purchase"
steps = [
  { name = "browse",   route = "/products" },
  { name = "checkout", route = "/checkout" },
  { name = "purchase", route = "/orders", method = "POST", conversion = true },
  { name = "boom",     route = "/boom" },
]
"""

_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}


def prometheus_name(point: PointRecord) -> list[str]:
    """The Prometheus series names of an OTLP metric, by the README's translation rule.

    Characters other than letters, digits and ``:`` become ``_`` (runs collapse); a unit
    in braces is dropped, other units are spelled out and appended; monotonic sums end in
    ``_total``; an explicit-bucket histogram becomes ``_bucket``, ``_count`` and ``_sum``.
    """
    tokens = [t for t in re.split(r"[^A-Za-z0-9:]+", point.metric) if t]
    unit = re.sub(r"\{[^}]*\}", "", point.unit)
    unit = _UNITS.get(unit, unit)
    if unit and unit not in tokens:
        tokens.append(unit)
    if point.kind == "sum" and point.is_monotonic:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    name = "_".join(tokens)
    if point.kind == "histogram":
        return [f"{name}_bucket", f"{name}_count", f"{name}_sum"]
    return [name]


def prometheus_label(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


def test_exported_metrics_become_the_series_the_rules_query(
    otlp: Receiver, instrument: Any, serve: Any, tmp_path: Path
) -> None:
    journeys = tmp_path / "journeys.toml"
    journeys.write_text(JOURNEYS)
    env = {
        "CXTRACE_JOURNEYS_FILE": str(journeys),
        "CXTRACE_VISITS": "cookie",  # the cx.visit* counters too
        "CXTRACE_VISIT_KEY": "deploy-kit-test-key",
    }
    handle = instrument(otlp, env=env)
    base = serve(make_app())
    shopper = requests.Session()  # one customer: the visit's cookie goes back each time
    shopper.headers["X-Customer-Tier"] = "enterprise"
    assert shopper.get(f"{base}/products").status_code == 200
    assert shopper.get(f"{base}/checkout").status_code == 200
    assert shopper.post(f"{base}/orders", params={"value": "10"}).status_code == 201
    assert requests.get(f"{base}/boom", headers={"X-Customer-Tier": "free"}).status_code == 500
    otlp.wait_for(lambda r: sum(s.kind == "SERVER" for s in r.spans) >= 4)
    handle.force_flush()
    exported = {"cx.requests", "cx.conversions", "cx.conversion.value", "cx.visit.converted_steps"}
    otlp.wait_for(lambda r: exported <= {p.metric for p in r.points})

    series: dict[str, set[str]] = {}
    for point in otlp.points:
        # service.name -> job, service.instance.id -> instance (the translation's rule)
        assert point.resource["service.name"] == "cxtrace-tests"
        assert point.resource["service.instance.id"]
        labels = {prometheus_label(key) for key in point.attributes} | {"job", "instance"}
        for name in prometheus_name(point):
            extra = {"le"} if name.endswith("_bucket") else set()
            series.setdefault(name, set()).update(labels | extra)

    assert set(RAW_SERIES) <= set(series)
    for name, labels in RAW_SERIES.items():
        assert series[name] == labels, name
    # and the requests really carry the CX labels the rules group by
    assert otlp.metric_total("cx.requests", **{"cx.satisfaction": "frustrated"}) == 1
    assert otlp.metric_total("cx.conversions", **{"cx.step": "purchase"}) == 1
    assert otlp.metric_total("cx.conversion.value", **{"cx.conversion.currency": "EUR"}) == 10
    assert otlp.metric_total("cx.visit.frustrations", **{"cx.frustration.reason": "error"}) == 1
    frustrated = {"cx.step": "checkout", "cx.visit.frustrated": False}
    assert otlp.metric_total("cx.visit.converted_steps", **frustrated) == 1
