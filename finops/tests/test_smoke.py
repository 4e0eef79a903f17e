"""`make smoke`: the quick end-to-end check, about a minute on a warm machine. One seeded month, one live gateway
(uvicorn + finops.asgi, through a TCP proxy to Postgres so that it alone can lose the database), the mock LLM over
real HTTP, the machine's Alertmanager. Each check is a subtest, so one failure does not hide the others:

    chat + cost headers · stream · exact hit · semantic hit · routed request · budget block ·
    fail-open with the database down · rollup · anomaly scan · admin login · FOCUS export · /metrics ·
    an alert reaching Alertmanager

Also part of `make test`. Dates are fixed (the seeded month is February 2026); the gateway's own rows are written
at the real time, and the checks on them never depend on which day that is.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import time
from decimal import Decimal

import pytest
import requests
from django.db import connection
from django.db.models import Sum

from conftest import gateway_server
from conftest import test_database_url as database_url
from finops import clock, monitoring
from finops.processes import free_port, stop_process, wait_for_port
from finops.testing.pgproxy import PgProxy, pg_target

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.smoke]

SEED_END = dt.date(2026, 3, 1)  # February 2026; its last labelled incident (cache outage) is 2026-02-25 10:00-16:00
SCAN_AT = dt.datetime(2026, 2, 25, 17, 20, tzinfo=dt.UTC)
ADMIN = ("smoke-admin", "smoke-pw-4815162342")


def chat(gateway: str, secret: str, prompt: str, *, model: str = "gpt-4o-mini", **extra) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 64, **extra}
    return requests.post(
        f"{gateway}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30, stream=bool(extra.get("stream"))
    )  # fmt: skip


def row_of(request_id: str, timeout: float = 10.0):
    from apps.ledger.models import LLMRequest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = LLMRequest.objects.filter(request_id=request_id).first()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError(f"no ledger row for {request_id}")


@pytest.fixture
def seeded(prices, routing_defaults, django_user_model):
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from demo import seed

    result = seed.seed_demo(per_day=400, days=30, seed=42, end=SEED_END, incident_scale=40)
    admin = django_user_model.objects.create_superuser(ADMIN[0])
    # Hashed for the gateway's settings (PBKDF2), not the test settings' fast MD5, which the gateway would refuse.
    hasher = PBKDF2PasswordHasher()
    admin.password = hasher.encode(ADMIN[1], hasher.salt(), iterations=1000)
    admin.save(update_fields=["password"])
    return result


@pytest.fixture
def alertmanager(tmp_path):
    """The machine's Alertmanager on deploy/'s routes (receivers pointed at a closed port: the check stops at
    Alertmanager), or None when it is not installed."""
    binary = monitoring.binary_find(name="alertmanager")
    if binary is None:
        yield None
        return
    config = tmp_path / "alertmanager.yml"
    config.write_text(monitoring.alertmanager_config(receiver_url=f"http://127.0.0.1:{free_port()}"))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture
def gateway(seeded, mock_llm_url, redis_client, tmp_path):
    proxy = PgProxy(pg_target(database_url()))
    env = {
        "DATABASE_URL": proxy.database_url(database_url(), connection.settings_dict["NAME"]),
        # Prices and routes are loaded once and kept, as in production, so that only budgets and keys meet the outage.
        "FINOPS_GATEWAY_CATALOG_CACHE_SECONDS": "300",
        "FINOPS_ROUTER_CONFIG_TTL_S": "300",
        "FINOPS_LEDGER_SPOOL_DIR": str(tmp_path / "spool"),
    }
    try:
        with gateway_server(mock_llm_url=mock_llm_url, env=env) as base:
            yield base, proxy
    finally:
        proxy.close()


def test_smoke(subtests, seeded, gateway, alertmanager, make_tenant):
    from apps.anomalies.models import Anomaly
    from apps.anomalies.services import anomaly_scan
    from apps.budgets.models import Budget
    from apps.budgets.services import budget_create
    from apps.ledger.models import CostDailySummary, LLMRequest
    from apps.ledger.outbox import ledger_outbox_replay
    from apps.ledger.services import cost_rollup
    from evals.costmodel.drill import anomaly_alerts

    base, proxy = gateway
    key = seeded.demo_secret
    prompt = f"Summarise our cloud bill in one sentence (smoke {time.time_ns()})"

    with subtests.test("chat call and its cost headers"):
        response = chat(base, key, prompt)
        assert response.status_code == 200, response.text
        cost = Decimal(response.headers["x-cost-usd"])
        assert cost > 0 and response.headers["x-cache"] == "miss"
        assert int(response.headers["x-tokens-prompt"]) > 0 and response.headers["x-budget-remaining-usd"]
        assert response.json()["choices"][0]["message"]["content"]
        assert row_of(response.headers["x-request-id"]).cost_usd == cost

    with subtests.test("stream"):
        response = chat(base, key, f"Stream a haiku about invoices ({time.time_ns()})", stream=True)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and len(events) > 2
        assert "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if json.loads(e)["choices"])
        row = row_of(response.headers["x-request-id"])
        assert row.status == "served" and row.cost_usd > 0

    with subtests.test("exact cache hit"):
        response = chat(base, key, prompt)
        assert response.status_code == 200 and response.headers["x-cache"] == "exact"
        assert Decimal(response.headers["x-cost-usd"]) == 0

    with subtests.test("semantic cache hit"):
        nonce = time.time_ns() % 10_000
        first = chat(base, key, f"How do I reset my password for account {nonce}?")
        assert first.status_code == 200 and first.headers["x-cache"] == "miss"
        row_of(first.headers["x-request-id"])  # stored once its row is written
        second = chat(base, key, f"How can I reset my password for account {nonce}?")
        assert second.status_code == 200 and second.headers["x-cache"] == "semantic", second.headers
        assert row_of(second.headers["x-request-id"]).similarity >= 0.92

    with subtests.test("routed request"):
        response = chat(base, key, f"Write a SQL query that lists the top 5 customers by revenue ({time.time_ns()})", model="auto")
        assert response.status_code == 200, response.text
        assert "strategy=" in response.headers["x-route"] and "strategy=pinned" not in response.headers["x-route"]
        row = row_of(response.headers["x-request-id"])
        assert row.route_strategy not in ("", "pinned") and row.tier

    with subtests.test("budget block"):
        capped = make_tenant(org="Smoke Capped", team="T", user="capped")
        budget_create(budget=Budget(scope="user", org=capped.org, team=capped.team, member=capped.member, period="monthly",
                                    cap_usd=Decimal("0.01"), action="block", soft_pct=[50, 80, 100]))  # fmt: skip
        response = chat(base, capped.secret, f"Write a long essay ({time.time_ns()})", max_tokens=20_000)
        assert response.status_code == 429 and response.json()["error"]["code"] == "budget_exceeded"
        assert row_of(response.headers["x-request-id"]).budget_state == "blocked"

    with subtests.test("fail-open with the database down"):
        proxy.outage()
        try:
            response = chat(base, key, f"Are we still up? ({time.time_ns()})")
            assert response.status_code == 200, response.text
            assert response.headers["x-budget-remaining-usd"] == "unknown"
            assert response.json()["finops"]["budget"]["state"] == "fail_open"
        finally:
            proxy.recover()
        request_id = response.headers["x-request-id"]
        deadline = time.monotonic() + 15  # the row waits in the outbox (Redis stream or spool) for the replay job
        while not LLMRequest.objects.filter(request_id=request_id).exists() and time.monotonic() < deadline:
            ledger_outbox_replay(directory=None)
            time.sleep(0.2)
        assert row_of(request_id, timeout=1).budget_state == "fail_open"

    with subtests.test("rollup"):
        today = dt.datetime.now(dt.UTC).date()  # the day the gateway wrote its rows, whichever it is
        cost_rollup(since=today, until=today)
        ledger = LLMRequest.objects.filter(received_at__date=today).aggregate(total=Sum("cost_usd"))["total"]
        summary = CostDailySummary.objects.filter(date=today).aggregate(total=Sum("cost_usd"))["total"]
        assert ledger and summary == ledger

    with subtests.test("anomaly scan"):
        result = anomaly_scan(now=SCAN_AT)
        assert result.created >= 1
        outage = Anomaly.objects.filter(org__slug="acme-retail", scope_type="org", window_start__date=SCAN_AT.date()).first()
        assert outage is not None and outage.severity == "warning" and outage.status == "open"

    admin = requests.Session()
    with subtests.test("admin login"):
        login = admin.get(f"{base}/admin/login/", timeout=10)
        token = admin.cookies["csrftoken"]
        response = admin.post(
            f"{base}/admin/login/?next=/admin/", data={"username": ADMIN[0], "password": ADMIN[1], "csrfmiddlewaretoken": token},
            headers={"Referer": login.url}, timeout=30,
        )  # fmt: skip
        assert response.status_code == 200 and response.url.endswith("/admin/"), response.url
        assert 'id="cost-dashboard"' in response.text and "Acme Retail" in response.text

    with subtests.test("FOCUS export"):
        response = admin.get(f"{base}/admin/reports/focus.csv?month=2026-02", timeout=60)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert rows and {"BilledCost", "ChargePeriodStart", "ServiceName", "SubAccountId"} <= set(rows[0])
        month = LLMRequest.objects.filter(received_at__gte=dt.datetime(2026, 2, 1, tzinfo=dt.UTC), received_at__lt=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
        assert sum(Decimal(r["BilledCost"]) for r in rows) == month.aggregate(total=Sum("cost_usd"))["total"]

    with subtests.test("/metrics"):
        body = requests.get(f"{base}/metrics", timeout=10).text
        assert "finops_gateway_requests_total{" in body and "finops_gateway_cost_usd_total{" in body
        assert 'finops_anomalies_open{detector="combined",severity="warning"}' in body

    with subtests.test("an alert reaching Alertmanager"):
        if alertmanager is None:
            pytest.skip(monitoring.binary_hint(name="alertmanager"))
        alerts = anomaly_alerts(anomalies=[outage], now=clock.wall_now())  # Alertmanager drops already-ended alerts
        monitoring.alertmanager_post(url=alertmanager, alerts=alerts)
        held = monitoring.alertmanager_alerts(url=alertmanager)
        assert [(a["labels"]["alertname"], a["labels"]["org"]) for a in held] == [("FinopsAnomalyWarning", "acme-retail")]
        assert held[0]["status"]["state"] == "active" and {r["name"] for r in held[0]["receivers"]} == {"team-channel"}
