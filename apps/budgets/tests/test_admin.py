"""The budget admin through Django's test client: finance edits and sees history; other staff only read."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from apps.budgets.models import Budget, BudgetChange, BudgetCounter
from apps.budgets.services import finance_group_ensure
from apps.budgets.tests.forms import form_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def finance_user(django_user_model):
    user = django_user_model.objects.create_user("fiona", password="pw-fiona-123", is_staff=True)
    user.groups.add(finance_group_ensure())
    return user


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("sam", password="pw-sam-123", is_staff=True)


def test_the_migration_creates_the_finance_group():
    group = Group.objects.get(name="finance")
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert {"add_budget", "change_budget", "view_budget"} <= codenames
    assert "delete_budget" not in codenames


def test_finance_creates_a_budget_and_the_history_starts(client, finance_user, make_tenant):
    tenant = make_tenant()
    client.force_login(finance_user)
    page = client.get(reverse("admin:budgets_budget_add"))
    assert page.status_code == 200
    data = form_data(
        page.content.decode(),
        scope="team",
        team=str(tenant.team.id),
        period="monthly",
        cap_usd="250.00",
        soft_pct="80, 50",
        action="downgrade",
    )
    response = client.post(reverse("admin:budgets_budget_add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    budget = Budget.objects.get()
    assert (budget.scope, budget.org_id, budget.team_id, budget.cap_usd) == (
        "team",
        tenant.org.id,
        tenant.team.id,
        Decimal("250.00"),
    )
    assert budget.soft_pct == [50, 80]
    created = {c.field: c.new_value for c in BudgetChange.objects.filter(budget=budget)}
    assert created["cap_usd"] == "250.00" and created["action"] == "downgrade"
    assert all(c.changed_by == finance_user for c in BudgetChange.objects.all())


def test_finance_edits_a_cap_and_sees_it_in_the_history(client, finance_user, make_tenant, make_budget):
    budget = make_budget(scope="org", tenant=make_tenant(), cap="100.00")
    client.force_login(finance_user)
    url = reverse("admin:budgets_budget_change", args=[budget.id])
    data = form_data(client.get(url).content.decode(), cap_usd="150.00")
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]

    budget.refresh_from_db()
    assert budget.cap_usd == Decimal("150.00")
    change = BudgetChange.objects.get(budget=budget, field="cap_usd", old_value="100.00")
    assert (change.new_value, change.changed_by, change.changed_by_label) == ("150.00", finance_user, "fiona")
    assert BudgetChange.objects.filter(budget=budget, field="action", old_value="block").count() == 0  # unchanged fields: no rows

    page = client.get(url).content.decode()
    assert "History (who changed what, when)" in page
    assert "100.00" in page and "150.00" in page and "fiona" in page


@pytest.mark.parametrize(("cap", "message"), [("-1.00", "cannot be negative"), ("25000000.00", "almost certainly a typo")])
def test_negative_and_absurd_caps_are_rejected(client, finance_user, make_tenant, make_budget, cap, message):
    budget = make_budget(scope="org", tenant=make_tenant(), cap="100.00")
    client.force_login(finance_user)
    url = reverse("admin:budgets_budget_change", args=[budget.id])
    response = client.post(url, form_data(client.get(url).content.decode(), cap_usd=cap))
    assert response.status_code == 200
    assert message in response.content.decode()
    budget.refresh_from_db()
    assert budget.cap_usd == Decimal("100.00")
    assert not BudgetChange.objects.filter(budget=budget, field="cap_usd", old_value="100.00").exists()


def test_a_team_cap_above_its_orgs_cap_warns(client, finance_user, make_tenant, make_budget):
    tenant = make_tenant()
    make_budget(scope="org", tenant=tenant, cap="100.00")
    team = make_budget(scope="team", tenant=tenant, cap="50.00")
    client.force_login(finance_user)
    url = reverse("admin:budgets_budget_change", args=[team.id])
    response = client.post(url, form_data(client.get(url).content.decode(), cap_usd="120.00"))
    assert response.status_code == 302
    warnings = [m.message for m in get_messages(response.wsgi_request) if m.level_tag == "warning"]
    assert any("exceeds its organization's monthly cap of $100.00" in w for w in warnings)


def test_other_staff_can_read_but_not_change(client, staff_user, make_tenant, make_budget):
    tenant = make_tenant()
    budget = make_budget(scope="org", tenant=tenant, cap="100.00")
    tenant.member.user = staff_user  # staff see their own org's budgets (apps.tenancy.access)
    tenant.member.save(update_fields=["user"])
    client.force_login(staff_user)
    url = reverse("admin:budgets_budget_change", args=[budget.id])

    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="cap_usd"' not in html and "_save" not in html  # a read-only view
    assert client.get(reverse("admin:budgets_budget_add")).status_code == 403

    response = client.post(url, {"cap_usd": "1000000.00", "period": "monthly", "action": "block", "soft_pct": "50"})
    assert response.status_code == 403
    budget.refresh_from_db()
    assert budget.cap_usd == Decimal("100.00")


def test_the_list_shows_utilisation_bars(client, finance_user, make_tenant, make_budget):
    budget = make_budget(scope="org", tenant=make_tenant(), cap="100.00")
    now = timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    BudgetCounter.objects.create(
        budget=budget, period_start=start, spent_usd=Decimal("85"), reserved_usd=Decimal("1"), updated_at=now
    )
    client.force_login(finance_user)
    response = client.get(reverse("admin:budgets_budget_changelist"))
    html = response.content.decode()
    assert 'class="budget-bar"' in html and "85%" in html and "#ef6c00" in html
    assert "$85.00" in html
