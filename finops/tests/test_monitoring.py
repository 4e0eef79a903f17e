"""The local monitoring stack of `make run` (finops.monitoring, finops.alert_receiver, the worker's /metrics):
deploy/'s configs rewritten for loopback are still valid, and an alert posted to the machine's Alertmanager is
routed by severity to the built-in receiver."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from conftest import ROOT
from finops import alert_receiver, monitoring
from finops.processes import free_port, stop_process, wait_for_port


def need(name: str) -> str:
    path = monitoring.binary_find(name=name)
    if path is None:
        pytest.skip(monitoring.binary_hint(name=name))
    return path


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=3) as response:
        return json.loads(response.read())


@pytest.fixture
def receiver():
    server = alert_receiver.server(port=free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_prometheus_config_keeps_deploys_rules_and_scrapes_api_and_worker(tmp_path):
    text = monitoring.prometheus_config(api="127.0.0.1:18000", worker="127.0.0.1:18808", alertmanager="127.0.0.1:18093")
    assert '"127.0.0.1:18000"' in text and '"127.0.0.1:18808"' in text and '"127.0.0.1:18093"' in text
    assert f"- {monitoring.RULES_DIR}/*.yml" in text
    assert '"api:8000"' not in text and '"alertmanager:9093"' not in text and "scrape_interval: 10s" in text
    assert f"credentials_file: {monitoring.METRICS_TOKEN_FILE}" in text and monitoring.DEPLOY_TOKEN_FILE not in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: `make tools`")
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace(str(monitoring.METRICS_TOKEN_FILE), str(tmp_path / "token")))
    (tmp_path / "token").write_text("t")
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_the_alertmanager_config_sends_every_webhook_to_the_receiver(tmp_path):
    text = monitoring.alertmanager_config(receiver_url="http://127.0.0.1:18095/")
    assert "127.0.0.1:9095" not in text
    assert {"http://127.0.0.1:18095/pager", "http://127.0.0.1:18095/finance", "http://127.0.0.1:18095/team"} <= set(
        line.split("url:", 1)[1].strip() for line in text.splitlines() if "url:" in line
    )
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool not installed: `make tools`")
    config = tmp_path / "alertmanager.yml"
    config.write_text(text)
    result = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_receiver_shows_alerts_by_severity(receiver):
    body = {
        "receiver": "oncall-pager",
        "status": "firing",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "FinopsAnomalyCritical", "severity": "critical", "org": "acme"},
             "annotations": {"summary": "1 critical cost anomaly open"}, "startsAt": "2026-01-01T00:00:00Z"},
            {"status": "firing", "labels": {"alertname": "FinopsBudgetAbove80", "severity": "warning"},
             "annotations": {"summary": "80 %"}, "startsAt": "2026-01-01T00:00:00Z"},
        ],
    }  # fmt: skip
    request = urllib.request.Request(f"{receiver}/pager", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=3) as response:
        assert response.status == 200
    items = get_json(f"{receiver}/alerts.json")
    assert [(i["alertname"], i["severity"], i["channel"]) for i in items] == [
        ("FinopsBudgetAbove80", "warning", "oncall-pager"),
        ("FinopsAnomalyCritical", "critical", "oncall-pager"),
    ]
    with urllib.request.urlopen(f"{receiver}/", timeout=3) as response:
        page = response.read().decode()
    assert page.index("<h2>critical (1)</h2>") < page.index("<h2>warning (1)</h2>")
    assert "org=acme" in page
    assert alert_receiver.line(alert_receiver.Received(**items[1])).startswith("[PAGE] critical FinopsAnomalyCritical")


def test_a_critical_alert_posted_to_alertmanager_pages_the_receiver(receiver, tmp_path):
    binary = need("alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(monitoring.alertmanager_config(receiver_url=receiver))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, proc=proc)
        now = dt.datetime.now(dt.UTC)  # Alertmanager drops alerts that have already ended: the real clock here
        monitoring.alertmanager_post(
            url=url,
            alerts=[{"labels": {"alertname": "FinopsAnomalyCritical", "severity": "critical", "org": "acme", "drill": "true"},
                     "annotations": {"summary": "test page"}, "startsAt": now.isoformat(),
                     "endsAt": (now + dt.timedelta(minutes=5)).isoformat()}],
        )  # fmt: skip
        assert [a["labels"]["alertname"] for a in monitoring.alertmanager_alerts(url=url)] == ["FinopsAnomalyCritical"]
        # Critical alerts wait 10 s (group_wait) and go to the pager and, as a cost alert, to finance too.
        deadline = time.monotonic() + 30
        receivers: set[str] = set()
        while time.monotonic() < deadline and receivers != {"oncall-pager", "finance-channel"}:
            time.sleep(0.5)
            receivers = {i["receiver"] for i in get_json(f"{receiver}/alerts.json")}
        assert receivers == {"oncall-pager", "finance-channel"}
    finally:
        stop_process(proc)


def test_the_worker_serves_its_own_counters(tmp_path):
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-c", "from prometheus_client import Counter; Counter('finops_selftest_total', 'x').inc(2)"],
        env=env, check=True,
    )  # fmt: skip
    code = f"from finops.metrics import worker_metrics_serve; worker_metrics_serve(port={port}); import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        wait_for_port(port, proc=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            assert "finops_selftest_total 2.0" in response.read().decode()
    finally:
        stop_process(proc)
