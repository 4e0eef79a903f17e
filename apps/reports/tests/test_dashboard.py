"""The admin home cost dashboard and its org / team pages: content, scoping and query counts."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from apps.ledger.models import LLMRequest
from apps.ledger.money import ZERO
from apps.reports.periods import current_month
from apps.reports.tests.conftest import at, make_anomaly, make_budget

INDEX = "/admin/"


@pytest.fixture
def dashboard_data(ledger, two_orgs, today):
    acme, globex = two_orgs
    month = current_month()
    for day in {month.start, today}:
        ledger.add(acme, model="gpt-4o-mini", at=at(day, 0), prompt=5000, completion=900)
        ledger.add(acme, model="gpt-4o", at=at(day, 0), prompt=3000, completion=600, tier="premium", route_strategy="keyword")
        ledger.add(acme, model="gpt-4o", at=at(day, 0), prompt=3000, completion=600, status="cached")
        ledger.add(globex, model="claude-sonnet-4-20250514", at=at(day, 0), prompt=7000, completion=1500, tier="premium")
    ledger.add(acme, model="gpt-4o-mini", at=at(month.previous.start, 8), prompt=4000, completion=800)
    ledger.rollup(since=month.previous.start, until=today)
    make_budget(tenant=acme, scope="org", cap="50.00", spent="12.00")
    make_budget(tenant=acme, scope="team", cap="20.00", spent="4.00")
    make_budget(tenant=globex, scope="org", cap="80.00", spent="30.00")
    make_anomaly(org=acme.org, team=acme.team, severity="critical", impact="42.00", label="acme/search spike")
    make_anomaly(org=globex.org, severity="warning", impact="9.00", label="globex spike")
    make_anomaly(org=None, severity="info", impact="1.00", label="gpt-4o model-wide")
    return {"acme": acme, "globex": globex, "month": month}


def mtd(org_slug: str | None = None) -> Decimal:
    month = current_month()
    rows = LLMRequest.objects.filter(received_at__gte=month.start_at)
    if org_slug:
        rows = rows.filter(org__slug=org_slug)
    return sum((r.cost_usd for r in rows), ZERO)


def money(amount: Decimal) -> str:
    return f"${amount:,.2f}"


def test_superuser_sees_every_org_and_the_app_list(client, superuser, dashboard_data, django_assert_max_num_queries):
    client.force_login(superuser)
    client.get(INDEX)
    # session, user, summary, org + team names, routing tiers (+ premium prices), routes, budgets, burn-down,
    # anomalies ×2, admin log: a constant, whatever the traffic.
    with django_assert_max_num_queries(13):
        response = client.get(INDEX)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="cost-dashboard"' in html and "All organizations" in html
    assert money(mtd()) in html
    assert reverse("reports_admin:org", args=[dashboard_data["acme"].org.id]) in html
    assert reverse("reports_admin:org", args=[dashboard_data["globex"].org.id]) in html
    assert html.count("<svg") >= 4  # daily, cumulative, top models, budget burn-downs
    assert "Routing savings" in html and "gpt-4o model-wide" in html  # the global scope includes cross-org anomalies
    assert 'id="app-list"' in html or "app-ledger" in html  # the stock app list is still there
    assert reverse("admin:ledger_llmrequest_changelist") in html


def test_finance_user_sees_budgets_and_anomalies(client, finance_user, dashboard_data, django_assert_max_num_queries):
    client.force_login(finance_user)
    client.get(INDEX)
    with django_assert_max_num_queries(16):  # + permissions ×2 and the finance-group check
        response = client.get(INDEX)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="budgets"' in html and "$50.00" in html and "Burn-down" in html
    assert "acme/search spike" in html and "globex spike" in html
    assert reverse("reports_admin:focus") in html  # finance may export FOCUS
    assert money(mtd()) in html


def test_a_staff_member_sees_only_their_own_org(client, django_user_model, dashboard_data):
    acme, globex = dashboard_data["acme"], dashboard_data["globex"]
    user = django_user_model.objects.create_user("alice-admin", password="x", is_staff=True)
    acme.member.user = user
    acme.member.save()
    client.force_login(user)
    html = client.get(INDEX).content.decode()
    assert "Costs — Acme" in html
    assert money(mtd("acme")) in html
    assert "Globex" not in html and "globex spike" not in html and "gpt-4o model-wide" not in html
    assert reverse("reports_admin:focus") not in html
    assert client.get(reverse("reports_admin:org", args=[globex.org.id])).status_code == 403
    assert client.get(reverse("reports_admin:team", args=[globex.team.id])).status_code == 403
    assert client.get(reverse("reports_admin:org", args=[acme.org.id])).status_code == 200
    assert client.get(reverse("reports_admin:focus")).status_code == 403
    assert client.get(reverse("reports_admin:chargeback") + "?org=globex").status_code == 403


def test_staff_without_a_member_get_a_notice_not_numbers(client, django_user_model, dashboard_data):
    user = django_user_model.objects.create_user("visitor", password="x", is_staff=True)
    client.force_login(user)
    html = client.get(INDEX).content.decode()
    assert "not linked to a finops member" in html
    assert money(mtd()) not in html


def test_org_and_team_pages_are_scoped(client, finance_user, dashboard_data, django_assert_max_num_queries):
    acme = dashboard_data["acme"]
    client.force_login(finance_user)
    with django_assert_max_num_queries(16):
        response = client.get(reverse("reports_admin:org", args=[acme.org.id]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Costs — Acme" in html and money(mtd("acme")) in html
    assert "Spend by team" in html and "globex spike" not in html and "acme/search spike" in html
    team_html = client.get(reverse("reports_admin:team", args=[acme.team.id])).content.decode()
    assert "Acme › Search" in team_html and "Spend by user" in team_html and "alice" in team_html
    assert client.get(reverse("reports_admin:org", args=[999999])).status_code == 404


def test_a_closed_month_is_shown_in_full_without_budgets(client, superuser, dashboard_data):
    client.force_login(superuser)
    previous = dashboard_data["month"].previous
    html = client.get(f"{INDEX}?month={previous.label}").content.decode()
    assert f"All organizations · {previous.label}" in html
    assert 'id="budgets"' not in html and "Month-end forecast" not in html
    rows = LLMRequest.objects.filter(received_at__gte=previous.start_at, received_at__lt=previous.end_at)
    assert money(sum((r.cost_usd for r in rows), ZERO)) in html
    assert client.get(f"{INDEX}?month=garbage").status_code == 200  # falls back to the current month


def test_chargeback_and_focus_downloads(client, finance_user, dashboard_data):
    client.force_login(finance_user)
    month = dashboard_data["month"]
    response = client.get(reverse("reports_admin:chargeback") + f"?month={month.label}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {r["org"] for r in rows} == {"acme", "globex"}
    assert sum((Decimal(r["cost_usd"]) for r in rows), ZERO) == mtd()
    focus = client.get(reverse("reports_admin:focus") + f"?month={month.label}")
    assert focus.status_code == 200
    focus_rows = list(csv.DictReader(io.StringIO(focus.content.decode())))
    assert sum((Decimal(r["BilledCost"]) for r in focus_rows), ZERO) == mtd()


def test_the_organization_admin_links_and_exports_chargeback(client, superuser, dashboard_data, ledger):
    acme = dashboard_data["acme"]
    client.force_login(superuser)
    changelist = client.get(reverse("admin:tenancy_organization_changelist")).content.decode()
    assert reverse("reports_admin:org", args=[acme.org.id]) in changelist
    change = client.get(reverse("admin:tenancy_team_change", args=[acme.team.id])).content.decode()
    assert reverse("reports_admin:team", args=[acme.team.id]) in change
    previous = current_month().previous
    response = client.post(
        reverse("admin:tenancy_organization_changelist"),
        {"action": "chargeback_previous_month", "_selected_action": [acme.org.id]},
    )
    assert response.status_code == 200 and response["Content-Disposition"].endswith(f'chargeback-{previous.label}.csv"')
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {r["org"] for r in rows} == {"acme"} and rows[0]["month"] == previous.label


def test_the_dashboard_forecast_extrapolates_the_daily_rate(dashboard_data, today):
    from apps.reports.selectors import spend_overview
    from apps.tenancy.access import GLOBAL

    overview = spend_overview(scope=GLOBAL, month=dashboard_data["month"], today=today)
    assert overview.current.cost == mtd()
    if today.day < dashboard_data["month"].length_days:
        assert overview.forecast > overview.current.cost
    assert sum((t.cost for _, t in overview.daily), ZERO) == overview.current.cost
    assert overview.daily[-1][0] == dashboard_data["month"].end - dt.timedelta(days=1)
