"""GET /api/budgets/: the caller's org only, with spent, reserved, remaining, forecast and utilisation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.budgets.models import BudgetCounter
from apps.budgets.selectors import budget_status_list, period_start

pytestmark = pytest.mark.django_db

URL = "/api/budgets/"


@pytest.fixture
def two_orgs(make_tenant, make_budget):
    acme = make_tenant(org="Acme", team="Search", user="alice")
    globex = make_tenant(org="Globex", team="Ops", user="gina")
    org_budget = make_budget(scope="org", tenant=acme, cap="100.00")
    user_budget = make_budget(scope="user", tenant=acme, cap="10.00", period="daily")
    make_budget(scope="org", tenant=globex, cap="999.00")
    now = timezone.now()
    BudgetCounter.objects.create(
        budget=org_budget,
        period_start=period_start("monthly", now),
        spent_usd=Decimal("40"),
        reserved_usd=Decimal("2.5"),
        updated_at=now,
    )
    # Last month's spend must not show.
    BudgetCounter.objects.create(
        budget=org_budget,
        period_start=period_start("monthly", period_start("monthly", now) - dt.timedelta(days=1)),
        spent_usd=Decimal("77"),
        reserved_usd=0,
        updated_at=now,
    )
    return acme, globex, org_budget, user_budget


def test_an_api_key_sees_its_org_only(client, two_orgs):
    acme, _, org_budget, user_budget = two_orgs
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {acme.secret}")
    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json()}
    assert set(rows) == {org_budget.id, user_budget.id}
    org_row = rows[org_budget.id]
    assert org_row["org"] == "acme" and org_row["scope"] == "org" and org_row["team"] is None
    assert Decimal(org_row["spent_usd"]) == Decimal("40")
    assert Decimal(org_row["reserved_usd"]) == Decimal("2.5")
    assert Decimal(org_row["remaining_usd"]) == Decimal("57.5")
    assert org_row["utilisation"] == 0.4
    assert Decimal(org_row["forecast_usd"]) >= Decimal("40")
    user_row = rows[user_budget.id]
    assert user_row["user"] == "alice" and user_row["period"] == "daily"
    assert Decimal(user_row["spent_usd"]) == 0 and Decimal(user_row["remaining_usd"]) == Decimal("10")


def test_a_signed_in_member_sees_their_org(client, two_orgs, django_user_model):
    _, globex, _, _ = two_orgs
    user = django_user_model.objects.create_user("gina", password="x")
    globex.member.user = user
    globex.member.save()
    client.force_login(user)
    rows = client.get(URL).json()
    assert [row["org"] for row in rows] == ["globex"]


def test_a_superuser_sees_every_org_and_can_filter(client, two_orgs, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="x")
    client.force_login(admin)
    assert {row["org"] for row in client.get(URL).json()} == {"acme", "globex"}
    assert {row["org"] for row in client.get(URL, {"org": "globex"}).json()} == {"globex"}


def test_staff_without_a_member_is_refused(client, two_orgs, django_user_model):
    client.force_login(django_user_model.objects.create_user("sam", password="x", is_staff=True))
    response = client.get(URL)
    assert response.status_code == 403
    assert "not linked to a finops member" in response.json()["error"]["message"]


def test_anonymous_is_refused(client, two_orgs):
    assert client.get(URL).status_code in (401, 403)


def test_forecast_is_the_linear_burn_rate(two_orgs):
    _, _, org_budget, _ = two_orgs
    start = period_start("monthly", timezone.now())
    ten_days_in = start + dt.timedelta(days=10)
    BudgetCounter.objects.filter(budget=org_budget, period_start=start).update(spent_usd=Decimal("10"))
    status = next(s for s in budget_status_list(org_id=org_budget.org_id, now=ten_days_in) if s.budget.id == org_budget.id)
    days = (status.period_end - status.period_start).days
    assert status.forecast_usd == (Decimal(days)).quantize(Decimal("0.01"))  # $1/day


def test_the_list_is_one_query(two_orgs, django_assert_num_queries):
    acme = two_orgs[0]
    with django_assert_num_queries(1):
        budget_status_list(org_id=acme.org.id)
