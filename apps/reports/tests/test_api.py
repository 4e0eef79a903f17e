"""/api/spend/ and /api/anomalies/, the OpenAPI schema, and tenant isolation on every API endpoint."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import yaml
from rest_framework.test import APIClient

from apps.ledger.models import LLMRequest
from apps.ledger.money import ZERO
from apps.reports.tests.conftest import at, make_anomaly, make_budget

SPEND = "/api/spend/"
ANOMALIES = "/api/anomalies/"
BUDGETS = "/api/budgets/"


@pytest.fixture
def api_data(ledger, two_orgs, make_tenant, today):
    acme, globex = two_orgs
    bob = make_tenant(org="Acme", team="Catalog", user="bob")
    first = today.replace(day=1)
    ledger.add(acme, model="gpt-4o-mini", at=at(first, 0), prompt=4000, completion=800)
    ledger.add(bob, model="gpt-4o", at=at(today, 0), prompt=2000, completion=300)
    ledger.add(acme, model="gpt-4o", at=at(today, 0), prompt=2000, completion=300, status="cached")
    ledger.add(globex, model="claude-sonnet-4-20250514", at=at(today, 0), prompt=9000, completion=2000)
    ledger.rollup(since=first, until=today)
    make_budget(tenant=acme, scope="org", cap="100.00")
    make_budget(tenant=globex, scope="org", cap="200.00")
    make_anomaly(org=acme.org, team=acme.team, severity="critical", label="acme anomaly")
    make_anomaly(org=globex.org, severity="warning", label="globex anomaly")
    make_anomaly(org=None, severity="info", label="model-wide anomaly")
    return {"acme": acme, "globex": globex, "bob": bob, "first": first, "today": today}


def key_client(tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.secret}")
    return client


def org_cost(slug: str | None, start: dt.date, end: dt.date) -> Decimal:
    rows = LLMRequest.objects.filter(received_at__date__gte=start, received_at__date__lte=end)
    if slug:
        rows = rows.filter(org__slug=slug)
    return sum((r.cost_usd for r in rows), ZERO)


def test_spend_by_day_is_a_gap_free_series_of_the_callers_org(api_data):
    response = key_client(api_data["acme"]).get(SPEND, {"group_by": "day"})
    assert response.status_code == 200
    body = response.json()
    first, today = api_data["first"], api_data["today"]
    assert body["org"] == "acme" and body["currency"] == "USD"
    assert [r["key"] for r in body["results"]] == [
        (first + dt.timedelta(days=i)).isoformat() for i in range((today - first).days + 1)
    ]
    assert Decimal(body["total_cost_usd"]) == org_cost("acme", first, today)
    assert sum(Decimal(r["cost_usd"]) for r in body["results"]) == org_cost("acme", first, today)
    assert Decimal(body["total_saved_usd"]) > 0


@pytest.mark.parametrize("group_by, keys", [("model", {"gpt-4o-mini", "gpt-4o"}), ("team", {"acme/search", "acme/catalog"}),
                                            ("user", {"acme/alice", "acme/bob"}), ("org", {"acme"})])  # fmt: skip
def test_spend_breakdowns(api_data, group_by, keys):
    body = key_client(api_data["acme"]).get(SPEND, {"group_by": group_by}).json()
    assert {r["key"] for r in body["results"]} == keys
    assert all(isinstance(r["cost_usd"], str) for r in body["results"])  # money as exact strings


def test_spend_validates_its_parameters(api_data):
    client = key_client(api_data["acme"])
    for params, param in [({"group_by": "planet"}, "group_by"), ({"start": "2025-02-30"}, "start"),
                          ({"start": "2025-05-10", "end": "2025-05-01"}, "end"), ({"start": "2020-01-01", "end": "2025-01-01"}, "start")]:  # fmt: skip
        response = client.get(SPEND, params)
        assert response.status_code == 400, params
        assert response.json()["error"]["param"] == param


def test_an_anonymous_caller_gets_401(api_data):
    for url in (SPEND, ANOMALIES):
        assert APIClient().get(url).status_code in (401, 403)
        bad = APIClient()
        bad.credentials(HTTP_AUTHORIZATION="Bearer fo-not-a-key")
        assert bad.get(url).status_code == 401


def test_anomalies_are_scoped_and_filterable(api_data):
    client = key_client(api_data["acme"])
    body = client.get(ANOMALIES).json()
    assert [a["scope_label"] for a in body] == ["acme anomaly"]
    assert body[0]["org"] == "acme" and body[0]["team"] == "search" and body[0]["severity"] == "critical"
    assert client.get(ANOMALIES, {"severity": "warning"}).json() == []
    assert client.get(ANOMALIES, {"status": "resolved"}).json() == []
    assert client.get(ANOMALIES, {"limit": 0}).status_code == 400


ENDPOINTS = [
    (SPEND, {"group_by": "team"}),
    (SPEND, {"group_by": "user"}),
    (SPEND, {"group_by": "model"}),
    (SPEND, {"group_by": "day"}),
    (SPEND, {"group_by": "org"}),
    (BUDGETS, {}),
    (ANOMALIES, {}),
]


@pytest.mark.parametrize("url, params", ENDPOINTS)
def test_an_org_key_never_sees_another_orgs_data(api_data, url, params):
    for me, other in (("acme", "globex"), ("globex", "acme")):
        client = key_client(api_data[me])
        response = client.get(url, params)
        assert response.status_code == 200
        text = response.content.decode()
        assert other not in text.lower(), (url, params, me)
        assert "model-wide anomaly" not in text
        # Naming the other org is refused, never answered with its data.
        denied = client.get(url, {**params, "org": other})
        if url == BUDGETS:  # the budgets API ignores `org` for non-superusers: still only the caller's own
            assert other not in denied.content.decode().lower()
        else:
            assert denied.status_code == 403
            assert denied.json()["error"]["code"] == "permission_denied"
    globex_total = org_cost("globex", api_data["first"], api_data["today"])
    acme_body = key_client(api_data["acme"]).get(SPEND).json()
    assert Decimal(acme_body["total_cost_usd"]) == org_cost("acme", api_data["first"], api_data["today"]) != globex_total


def test_session_members_and_superusers(api_data, django_user_model, superuser):
    acme = api_data["acme"]
    user = django_user_model.objects.create_user("alice-web", password="x")
    acme.member.user = user
    acme.member.save()
    client = APIClient()
    client.force_login(user)
    assert client.get(SPEND).json()["org"] == "acme"
    assert "globex" not in client.get(ANOMALIES).content.decode()
    loner = django_user_model.objects.create_user("loner", password="x")
    client.force_login(loner)
    assert client.get(SPEND).status_code == 403
    client.force_login(superuser)
    everything = client.get(SPEND, {"group_by": "org"}).json()
    assert everything["org"] is None and {r["key"] for r in everything["results"]} == {"acme", "globex"}
    assert Decimal(everything["total_cost_usd"]) == org_cost(None, api_data["first"], api_data["today"])
    assert client.get(SPEND, {"org": "globex"}).json()["org"] == "globex"
    assert {a["scope_label"] for a in client.get(ANOMALIES).json()} == {"acme anomaly", "globex anomaly", "model-wide anomaly"}
    assert client.get(SPEND, {"org": "nope"}).status_code == 400


def test_the_schema_documents_params_and_errors(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    spend = schema["paths"]["/api/spend/"]["get"]
    assert {p["name"] for p in spend["parameters"]} >= {"group_by", "start", "end", "org"}
    assert {"200", "400", "401", "403"} <= set(spend["responses"])
    anomalies = schema["paths"]["/api/anomalies/"]["get"]
    assert {p["name"] for p in anomalies["parameters"]} >= {"status", "severity", "since", "limit", "org"}
    assert {"200", "400", "401", "403"} <= set(anomalies["responses"])
    assert schema["components"]["securitySchemes"]["finopsApiKey"]["scheme"] == "bearer"
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content.lower()
