"""docs/sla.yaml and the burn-rate rules derived from it agree, and the rules' promtool unit tests pass."""

import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SLA = ROOT / "docs" / "sla.yaml"
PROMETHEUS = ROOT / "deploy" / "prometheus"
SLO_RULES = PROMETHEUS / "rules" / "slo.yml"
SLO_TESTS = PROMETHEUS / "tests" / "slo_test.yml"


def documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(SLA.read_text()) if d]


def slos() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == "SLO"}


def rules() -> dict[str, dict]:
    out = {}
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out[rule.get("alert") or rule["record"]] = rule
    return out


def budget(slo: str, objective: int = -1) -> str:
    """The error budget of an objective as the rules write it (1 - target, e.g. 0.001)."""
    target = Decimal(str(slos()[slo]["spec"]["objectives"][objective]["target"]))
    return format((1 - target).normalize(), "f")


def test_sla_yaml_is_openslo_shaped():
    docs = documents()
    assert {d["apiVersion"] for d in docs} == {"openslo/v1"}
    assert {d["kind"] for d in docs} == {"Service", "SLO", "AlertPolicy"}
    service = next(d["metadata"]["name"] for d in docs if d["kind"] == "Service")
    policies = {d["metadata"]["name"] for d in docs if d["kind"] == "AlertPolicy"}
    assert set(slos()) == {
        "gateway-availability",
        "gateway-overhead",
        "budget-check-latency",
        "ledger-completeness",
        "alert-latency",
    }
    for name, slo in slos().items():
        spec = slo["spec"]
        assert spec["service"] == service, name
        assert spec["timeWindow"][0]["duration"] == "28d", name
        assert spec["budgetingMethod"] in {"Occurrences", "Timeslices"}, name
        assert spec["objectives"] and all(0 < o["target"] <= 1 for o in spec["objectives"]), name
        assert set(spec["alertPolicies"]) <= policies, name
        assert "docs/" in slo["metadata"]["annotations"]["x-finops-measured"], name


def test_every_alert_policy_names_rules_that_exist():
    existing = rules()
    for doc in documents():
        if doc["kind"] == "AlertPolicy":
            names = [n.strip() for n in doc["metadata"]["annotations"]["x-finops-prometheus-alerts"].split(",")]
            assert names and all(n in existing for n in names), doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("slo", "objective", "alert_prefix"),
    [
        ("gateway-availability", 0, "FinopsSLOAvailability"),
        ("gateway-overhead", 1, "FinopsSLOOverhead"),  # 99 % ≤ 10 ms
        ("budget-check-latency", 1, "FinopsSLOBudgetCheck"),  # 99 % ≤ 8 ms
    ],
)
def test_burn_rate_rules_use_the_slo_targets(slo, objective, alert_prefix):
    existing = rules()
    error_budget = budget(slo, objective)
    policy = next(
        d for d in documents() if d["kind"] == "AlertPolicy" and d["metadata"]["name"] in slos()[slo]["spec"]["alertPolicies"]
    )
    thresholds = {c["spec"]["severity"]: c["spec"]["condition"]["threshold"] for c in policy["spec"]["conditions"]}
    fast, slow = existing[f"{alert_prefix}FastBurn"], existing[f"{alert_prefix}SlowBurn"]
    assert fast["labels"]["severity"] == "critical" and slow["labels"]["severity"] == "warning"
    assert fast["expr"].count(f"({thresholds['critical']} * {error_budget})") == 2, fast["expr"]
    assert slow["expr"].count(f"({thresholds['warning']} * {error_budget})") == 2, slow["expr"]
    assert "ratio_rate1h" in fast["expr"] and "ratio_rate5m" in fast["expr"]
    assert "ratio_rate6h" in slow["expr"] and "ratio_rate30m" in slow["expr"]
    assert fast["labels"]["slo"] == slow["labels"]["slo"] == slo


@pytest.mark.parametrize(
    ("slo", "objective", "record"),
    [("gateway-overhead", 1, "finops:gateway_overhead_slow"), ("budget-check-latency", 1, "finops:budget_check_slow")],
)
def test_latency_thresholds_match_the_objective(slo, objective, record):
    objective = slos()[slo]["spec"]["objectives"][objective]
    bucket = format(Decimal(str(objective["value"])).normalize(), "f")
    for window in ("5m", "30m", "1h", "6h"):
        assert f'le="{bucket}"' in rules()[f"{record}:ratio_rate{window}"]["expr"]


def test_ledger_completeness_has_no_error_budget():
    assert slos()["ledger-completeness"]["spec"]["objectives"][0]["target"] == 1.0
    assert rules()["FinopsLedgerRowsLost"]["expr"].strip() == "finops:ledger_rows_missing:increase1h >= 1"


def test_alert_latency_matches_the_scan_staleness_rule():
    assert "7200" in slos()["alert-latency"]["spec"]["indicator"]["spec"]["ratioMetric"]["good"]["metricSource"]["spec"]["query"]
    assert re.search(r"> 2 \* 3600$", rules()["FinopsAnomalyScanStale"]["expr"].strip())


def test_every_slo_alert_has_a_unit_test():
    alerts = {r["alert"] for g in yaml.safe_load(SLO_RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert alerts <= set(re.findall(r"alertname: (\w+)", SLO_TESTS.read_text()))


def test_promtool_runs_the_slo_unit_tests():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: `apt-get install prometheus` (or `make tools`) to run the rule unit tests")
    for args in (["check", "rules", str(SLO_RULES)], ["test", "rules", str(SLO_TESTS)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=PROMETHEUS)
        assert result.returncode == 0, result.stdout + result.stderr


# ---- every objective rests on bench rows, the loaded runs included, and says whether it is met there ----------

LOADED_ROWS = ("200 clients", "saturated", "64 concurrent", "overhead p50 / p99", "Refused or failed", "(cumulative)", "fail_open path")


def objectives():
    for name, slo in slos().items():
        for index, objective in enumerate(slo["spec"]["objectives"]):
            yield pytest.param(name, objective, id=f"{name}[{index}]")


@pytest.mark.parametrize(("slo", "objective"), list(objectives()))
def test_each_objective_names_the_bench_rows_it_rests_on_and_they_say_what_it_quotes(slo, objective):
    from bench.doc_numbers import NUMBER, Figure, check_figure

    evidence = objective.get("x-finops-evidence")
    assert evidence, f"{slo}: {objective['displayName']!r} names no bench row (x-finops-evidence)"
    for item in evidence:
        measured = str(item["measured"])
        figure = Figure(0, measured, re.findall(NUMBER, measured), False, "", item["rests-on"])
        assert check_figure(figure) is None, f"{slo}: {item['rests-on']} → {check_figure(figure)}"
    assert isinstance(objective.get("x-finops-status"), str) and objective["x-finops-status"].strip()


@pytest.mark.parametrize(("slo", "objective"), list(objectives()))
def test_each_latency_objective_rests_on_a_loaded_run_and_its_status_agrees_with_the_figures(slo, objective):
    evidence, status = objective["x-finops-evidence"], objective["x-finops-status"]
    if slo in {"gateway-availability", "gateway-overhead", "budget-check-latency", "ledger-completeness"}:
        assert any(any(row in item["rests-on"] for row in LOADED_ROWS) for item in evidence), (
            f"{slo}: {objective['displayName']!r} rests only on single-client figures"
        )
    if objective.get("op") != "lte":
        return
    quantile = f"p{Decimal(str(objective['target'])) * 100:.0f}"
    at_quantile = [item for item in evidence if item.get("at") == quantile]
    assert at_quantile, f"{slo}: no evidence at {quantile} for {objective['displayName']!r}"
    bound_ms = Decimal(str(objective["value"])) * 1000
    missed = [item for item in at_quantile if Decimal(re.match(r"[\d.]+", str(item["measured"])).group(0)) > bound_ms]
    if missed:
        assert "not met" in status, f"{slo}: {objective['displayName']!r} is missed by {missed} but says {status!r}"
    else:
        assert status.startswith("met") and "not met" not in status, f"{slo}: {objective['displayName']!r}: {status!r}"
