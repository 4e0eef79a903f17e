"""The ledger and API-key admin pages: bounded queries, filters, spend per key."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.ledger.money import ZERO
from apps.reports.periods import current_month
from apps.tenancy.services import api_key_create

LEDGER = "/admin/ledger/llmrequest/"


@pytest.fixture
def recent_and_old(ledger, two_orgs):
    acme, globex = two_orgs
    now = timezone.now()
    fresh = [ledger.add(acme, at=now - dt.timedelta(minutes=5 + i)) for i in range(30)]
    fresh.append(ledger.add(globex, at=now - dt.timedelta(hours=2), model="gpt-4o"))
    old = ledger.add(acme, at=now - dt.timedelta(days=3), model="gemini-2.0-flash")
    return {"fresh": fresh, "old": old, "acme": acme, "globex": globex}


def shown_ids(response) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


def test_the_ledger_list_is_bounded_to_the_last_day_by_default(client, superuser, recent_and_old, django_assert_max_num_queries):
    client.force_login(superuser)
    client.get(LEDGER)
    # session, user, capped count, page, three prefetches (org, team, member), org filter choices
    with django_assert_max_num_queries(8):
        response = client.get(LEDGER)
    assert response.status_code == 200
    assert recent_and_old["old"].pk not in shown_ids(response)
    assert response.context["cl"].result_count == 31
    assert len(shown_ids(response)) == 31
    html = response.content.decode()
    assert "Search" in html and "alice" in html  # names from the prefetched rows
    everything = client.get(f"{LEDGER}?received=all")
    assert recent_and_old["old"].pk in shown_ids(everything)


def test_the_query_count_does_not_grow_with_the_rows(
    client, superuser, recent_and_old, ledger, make_tenant, django_assert_max_num_queries
):
    client.force_login(superuser)
    for n in range(5):  # more orgs, teams and members on the page
        tenant = make_tenant(org=f"Org {n}", team=f"Team {n}", user=f"user{n}")
        ledger.add(tenant, at=timezone.now() - dt.timedelta(minutes=1))
    with django_assert_max_num_queries(8):
        response = client.get(LEDGER)
    assert response.context["cl"].result_count == 36


def test_the_ledger_filters(client, superuser, recent_and_old):
    client.force_login(superuser)
    old = recent_and_old["old"]
    by_day = client.get(f"{LEDGER}?day={old.received_at.date().isoformat()}")
    assert shown_ids(by_day) == {old.pk}  # a day replaces the default window
    by_org = client.get(f"{LEDGER}?org__id__exact={recent_and_old['globex'].org.id}")
    assert shown_ids(by_org) == {recent_and_old["fresh"][-1].pk}
    assert shown_ids(client.get(f"{LEDGER}?endpoint=embeddings")) == set()
    assert len(shown_ids(client.get(f"{LEDGER}?route_strategy=complexity&received=7d"))) == 32
    assert client.get(f"{LEDGER}?day=not-a-date").status_code == 200
    html = client.get(LEDGER).content.decode()
    assert "Last 24 hours" in html and "Previous month (UTC)" in html


def test_ledger_rows_are_read_only_for_finance(client, finance_user, recent_and_old):
    client.force_login(finance_user)
    assert client.get(LEDGER).status_code == 200
    row = recent_and_old["fresh"][0]
    page = client.get(reverse("admin:ledger_llmrequest_change", args=[row.pk])).content.decode()
    assert 'name="_save"' not in page
    assert client.get(reverse("admin:ledger_llmrequest_add")).status_code == 403


def test_api_keys_show_spend_this_month_and_last_use(client, superuser, ledger, two_orgs, django_assert_max_num_queries):
    acme, globex = two_orgs
    month = current_month()
    when = dt.datetime.combine(month.start, dt.time(0, 30), tzinfo=dt.UTC)
    ledger.add(acme, at=when, prompt=100_000, completion=20_000)
    ledger.add(acme, at=when, prompt=50_000, completion=1_000)
    second = api_key_create(member=globex.member, name="rotated")  # gina now has two keys: summed from the detail rows
    globex_second = type(globex)(
        org=globex.org, team=globex.team, member=globex.member, api_key=second.api_key, secret=second.secret
    )
    ledger.add(globex_second, at=when, prompt=300_000, completion=0)
    ledger.add(globex, at=when - dt.timedelta(days=40), prompt=300_000, completion=0)  # an earlier month: not counted
    ledger.rollup(since=month.start - dt.timedelta(days=45), until=timezone.now().date())
    client.force_login(superuser)
    client.get(reverse("admin:tenancy_apikey_changelist"))
    with django_assert_max_num_queries(9):
        response = client.get(reverse("admin:tenancy_apikey_changelist"))
    keys = {key.pk: key for key in response.context["cl"].result_list}
    acme_spend = sum((r.cost_usd for r in ledger.rows[:2]), ZERO)
    assert keys[acme.api_key.pk]._spend_month == (acme_spend, 2)
    assert keys[second.api_key.pk]._spend_month == (ledger.rows[2].cost_usd, 1)
    assert keys[globex.api_key.pk]._spend_month == (Decimal(0), 0)
    html = response.content.decode()
    assert f"${acme_spend:,.2f}" in html and "spend this month" in html.lower() and "last used" in html.lower()
    change = client.get(reverse("admin:tenancy_apikey_change", args=[acme.api_key.pk])).content.decode()
    assert f"${acme_spend:,.2f}" in change


def test_a_new_key_page_still_renders_and_creates_through_the_service(client, superuser, two_orgs):
    acme, _ = two_orgs
    client.force_login(superuser)
    assert client.get(reverse("admin:tenancy_apikey_add")).status_code == 200
    response = client.post(
        reverse("admin:tenancy_apikey_add"), {"member": acme.member.id, "name": "ci", "rate_limit_per_minute": 0}
    )
    assert response.status_code == 302
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("it will not be shown again" in m for m in messages)
