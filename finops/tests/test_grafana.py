"""deploy/grafana: the dashboard is valid JSON on the provisioned data source, covers what the issue asks for, and
every query names only metrics finops exports (or the recording rules of deploy/prometheus/rules)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "finops.json"
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))

_CONSTRUCTOR = re.compile(
    r"\b(Counter|Histogram|Gauge|Summary|GaugeMetricFamily|CounterMetricFamily|HistogramMetricFamily)\(\s*\"(finops_[a-z0-9_]+)\""
)
# PromQL words that are not metric names.
PROMQL = {
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "rate", "irate", "increase", "delta", "histogram_quantile", "time", "vector", "absent", "clamp_min",
    "topk", "bottomk", "offset", "bool", "abs", "round", "sort_desc",
}  # fmt: skip


def exported_metrics() -> set[str]:
    """Series names the code exports, as Prometheus sees them (counters end in _total, histograms have three)."""
    names: set[str] = set()
    for folder in ("apps", "finops"):
        for path in (ROOT / folder).rglob("*.py"):
            if "tests" in path.parts:
                continue
            for kind, name in _CONSTRUCTOR.findall(path.read_text()):
                if kind in ("Counter", "CounterMetricFamily"):
                    names.add(name if name.endswith("_total") else name + "_total")
                elif kind in ("Histogram", "HistogramMetricFamily", "Summary"):
                    names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
                else:
                    names.add(name)
    return names


def recorded_series() -> set[str]:
    return {rule["record"] for path in RULES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "record" in rule}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", "", expr)
    return {token for token in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr) if token not in PROMQL}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(dashboard: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_exporters_scan_finds_what_the_apps_register():
    names = exported_metrics()
    assert {
        "finops_gateway_cost_usd_total", "finops_gateway_overhead_seconds_bucket", "finops_budget_utilisation_ratio",
        "finops_anomalies_open", "finops_cache_lookups_total", "finops_job_last_success_timestamp_seconds",
    } <= names  # fmt: skip
    assert metric_names('sum by (le, tier) (rate(finops_cache_lookup_seconds_bucket{tier="exact"}[5m]))') == {
        "finops_cache_lookup_seconds_bucket"
    }


def test_the_dashboard_is_provisioned_on_the_prometheus_data_source(dashboard):
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    uid = datasources[0]["uid"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "finops.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((ROOT / "compose.yml").read_text())
    mounts = dict(v.split(":", 2)[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert {"./deploy/grafana/provisioning/datasources", "./deploy/grafana/provisioning/dashboards"} <= set(mounts)
    assert dashboard["uid"] and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]


def test_every_query_names_a_metric_finops_exports(dashboard):
    known = exported_metrics() | recorded_series()
    for title, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{title}: {expr} names no metric"
        assert names <= known, f"{title}: {sorted(names - known)} is not exported by finops (nor recorded by a rule)"


def test_the_dashboard_covers_cost_tokens_cache_routing_budgets_overhead_and_slo_burn(dashboard):
    used = {name for _, expr in queries(dashboard) for name in metric_names(expr)}
    assert {
        "finops_gateway_cost_usd_total", "finops_gateway_tokens_total", "finops_cache_lookups_total",
        "finops_route_decisions_total", "finops_budget_utilisation_ratio", "finops_gateway_overhead_seconds_bucket",
        "finops:gateway_errors:ratio_rate1h", "finops_anomalies_open",
    } <= used  # fmt: skip
    rows = {panel["title"].split(" (")[0] for panel in dashboard["panels"] if panel["type"] == "row"}
    assert {"Cost", "Tokens", "Cache", "Routing", "Budgets", "Overhead and latency", "SLO burn"} <= rows
