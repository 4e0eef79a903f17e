"""promtool and amtool checks of deploy/: the rule unit tests, and Alertmanager's routing by severity."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed: `apt-get install {package}` (or `make tools`) to run this check")
    return path


def all_rules() -> list[dict]:
    # Alerting rules only: rules/slo.yml also holds recording rules (`record:`), which have no severity or runbook.
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_every_rule_has_severity_summary_and_a_runbook_that_exists():
    rules = all_rules()
    assert {r["alert"] for r in rules} >= {
        "FinopsAnomalyCritical", "FinopsAnomalyWarning", "FinopsBudgetAbove80", "FinopsBudgetExhausted",
        "FinopsBudgetFailOpen", "FinopsAnomalyScanStale", "FinopsUpstreamErrorRate",
    }  # fmt: skip
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        runbook = re.search(r"/(docs/runbook/[\w-]+\.md)$", rule["annotations"]["runbook_url"])
        assert runbook and (ROOT / runbook.group(1)).exists(), rule["alert"]


def test_every_alert_has_a_promtool_unit_test():
    tests = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))  # finops_test.yml, slo_test.yml, ...
    tested = {name for path in tests for name in re.findall(r"alertname: (\w+)", path.read_text())}
    assert {r["alert"] for r in all_rules()} <= tested


def test_promtool_checks_the_config_and_rules(tmp_path):
    promtool = need("promtool", "prometheus")
    # promtool reads the scrape's bearer-token file, a compose secret that exists only in the container: the same
    # config, its rules beside it, with the secret's path pointed at a token file here.
    shutil.copytree(DEPLOY / "prometheus", tmp_path / "prometheus")
    token = tmp_path / "metrics-token"
    token.write_text("test-token\n")
    config = tmp_path / "prometheus" / "prometheus.yml"
    original = config.read_text()
    assert "/run/secrets/finops_metrics_token" in original
    config.write_text(original.replace("/run/secrets/finops_metrics_token", str(token)))
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    promtool = need("promtool", "prometheus")
    tests = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
    assert tests
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, tests)], capture_output=True, text=True, cwd=DEPLOY / "prometheus"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_accepts_the_alertmanager_config():
    amtool = need("amtool", "prometheus-alertmanager")
    result = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=critical", "alertname=FinopsAnomalyCritical"], "finance-channel,oncall-pager"),
        (["severity=critical", "alertname=FinopsBudgetExhausted", "org=acme"], "finance-channel,oncall-pager"),
        (["severity=critical", "alertname=FinopsUpstreamErrorRateHigh"], "oncall-pager"),
        (["severity=warning", "alertname=FinopsAnomalyWarning"], "team-channel"),
        (["severity=warning", "alertname=FinopsBudgetAbove80", "org=acme"], "team-channel"),
        (["severity=info", "alertname=Whatever"], "blackhole"),
        (["alertname=NoSeverity"], "team-channel"),
    ],
)
def test_alertmanager_routes_by_severity(labels, receivers):
    amtool = need("amtool", "prometheus-alertmanager")
    result = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers
