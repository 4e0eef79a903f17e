"""Tenant isolation on every surface, in one place: the cache, the APIs, the admin and the reports.

Two organizations, "Acme Iso" (A) and "Globex Iso" (B), each with a key, ledger rows, a daily summary, budgets,
anomalies, an alert route and delivery, and cache entries. Every test asks as A (a key, a signed-in member, or a
staff member of A with *view permission on every model*, so that only the org scoping can hide B) and checks that
nothing of B comes back: not in lists, not by B's object ids, not in a form's choices or a list filter.
Positive controls (A does see its own) keep each test from passing on an empty page.

The cache tests go through the live gateway with the real openai SDK; the rest through Django's test client.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from decimal import Decimal

import openai
import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.alerts.models import AlertDelivery, AlertRoute
from apps.budgets.models import Reservation
from apps.cache.models import CacheSettings, SemanticCacheEntry
from apps.gateway.tests.conftest import wait_for_row
from apps.ledger.models import LLMRequest
from apps.reports.tests.conftest import Ledger, make_anomaly, make_budget
from apps.routing.models import KeywordRule, RoutePolicy
from apps.tenancy.models import ApiKey

A_NAME, B_NAME = "Acme Iso", "Globex Iso"
A_SLUG, B_SLUG = "acme-iso", "globex-iso"


def _org_data(make_tenant, ledger: Ledger, *, org: str, team: str, user: str):
    tenant = make_tenant(org=org, team=team, user=user)
    now = timezone.now()
    rows = [ledger.add(tenant, at=now - dt.timedelta(minutes=5 + i)) for i in range(3)]
    objects = {
        "llmrequest": rows[0],
        "organization": tenant.org,
        "team": tenant.team,
        "member": tenant.member,
        "apikey": tenant.api_key,
        "budget": make_budget(tenant=tenant, scope="team", cap="50.00", spent="1.00"),
        "anomaly": make_anomaly(org=tenant.org, team=tenant.team, label=f"{tenant.org.slug} spike"),
        "cachesettings": CacheSettings.objects.create(org=tenant.org),
        "semanticcacheentry": SemanticCacheEntry.objects.create(
            org=tenant.org, model_class="gpt-4o-mini", system_prompt_hash="0" * 64, params_hash="0" * 64,
            prompt_hash=uuid.uuid4().hex * 2, embedding=[1.0] + [0.0] * 383,
            response={"choices": [{"message": {"content": f"{org}'s private answer"}}]},
            created_at=now, expires_at=now + dt.timedelta(days=1),
        ),  # fmt: skip
        "reservation": Reservation.objects.create(
            request_id=uuid.uuid4(), org_id=tenant.org.id, team_id=tenant.team.id, member_id=tenant.member.id,
            counter_ids=[], amount_usd=Decimal("0.01"), created_at=now, expires_at=now + dt.timedelta(minutes=15),
        ),  # fmt: skip
    }
    objects["alertroute"] = AlertRoute.objects.create(
        name=f"{org} pager", severity="warning", scope_type="org", org=tenant.org, receiver="webhook",
        target=f"https://hooks.example/{tenant.org.slug}",
    )  # fmt: skip
    objects["alertdelivery"] = AlertDelivery.objects.create(
        route=objects["alertroute"], anomaly=objects["anomaly"], receiver="webhook", target=objects["alertroute"].target,
        severity="warning", scope_type="org", org=tenant.org, title=f"{org} spend spike",
    )  # fmt: skip
    objects["routepolicy"] = RoutePolicy.objects.create(org=tenant.org, name=f"{tenant.org.slug} policy")
    objects["keywordrule"] = KeywordRule.objects.create(org=tenant.org, name=f"{tenant.org.slug} rule", pattern="x", tier="premium")
    objects["budgetchange"] = objects["budget"].changes.first()
    objects["budgetcounter"] = objects["budget"].counters.first()
    return tenant, objects


@pytest.fixture
def world(db, prices, make_tenant):
    ledger = Ledger()
    a, a_objects = _org_data(make_tenant, ledger, org=A_NAME, team="Search", user="alice")
    b, b_objects = _org_data(make_tenant, ledger, org=B_NAME, team="Risk", user="bob")
    today = timezone.now().date()
    ledger.rollup(since=today.replace(day=1), until=today)
    from apps.ledger.models import CostDailySummary

    a_objects["costdailysummary"] = CostDailySummary.objects.filter(org=a.org).first()
    b_objects["costdailysummary"] = CostDailySummary.objects.filter(org=b.org).first()
    make_anomaly(org=None, label="model-wide iso anomaly")  # cross-org: finance's only
    assert all(a_objects.values()) and all(b_objects.values())
    return {"a": a, "b": b, "a_objects": a_objects, "b_objects": b_objects}


def _staff(django_user_model, *, username: str, member=None, extra_perms: tuple[str, ...] = ()):
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    apps = ["tenancy", "ledger", "alerts", "budgets", "anomalies", "cache", "routing"]
    perms = Permission.objects.filter(content_type__app_label__in=apps, codename__startswith="view_")
    user.user_permissions.add(*perms, *Permission.objects.filter(codename__in=extra_perms))
    if member is not None:
        member.user = user
        member.save(update_fields=["user"])
    return user


@pytest.fixture
def a_staff(world, django_user_model):
    return _staff(django_user_model, username="a-staff", member=world["a"].member, extra_perms=("add_apikey", "change_apikey"))


# --- admin ----------------------------------------------------------------------------------------------------------

ADMIN_MODELS = [
    ("tenancy", "organization"), ("tenancy", "team"), ("tenancy", "member"), ("tenancy", "apikey"),
    ("ledger", "llmrequest"), ("ledger", "costdailysummary"),
    ("budgets", "budget"), ("budgets", "budgetchange"), ("budgets", "budgetcounter"), ("budgets", "reservation"),
    ("anomalies", "anomaly"), ("alerts", "alertroute"), ("alerts", "alertdelivery"),
    ("cache", "cachesettings"), ("cache", "semanticcacheentry"),
    ("routing", "routepolicy"), ("routing", "keywordrule"),
]  # fmt: skip


def _listed(client, app: str, model: str) -> tuple[set[int], str]:
    response = client.get(reverse(f"admin:{app}_{model}_changelist"))
    assert response.status_code == 200, (app, model, response.status_code)
    return {obj.pk for obj in response.context["cl"].result_list}, response.content.decode()


@pytest.mark.parametrize("app,model", ADMIN_MODELS)
def test_a_staff_member_of_a_neither_lists_nor_opens_bs_rows(client, world, a_staff, app, model):
    client.force_login(a_staff)
    mine, theirs = world["a_objects"][model], world["b_objects"][model]
    listed, html = _listed(client, app, model)
    assert mine.pk in listed and theirs.pk not in listed
    assert B_NAME not in html and B_SLUG not in html  # nor in a list filter's choices
    opened = client.get(reverse(f"admin:{app}_{model}_change", args=[theirs.pk]))
    assert (opened.status_code, opened.url) == (302, reverse("admin:index"))  # "doesn't exist", like a missing id
    history = client.get(reverse(f"admin:{app}_{model}_history", args=[theirs.pk]))
    assert history.status_code == 302
    assert client.get(reverse(f"admin:{app}_{model}_change", args=[mine.pk])).status_code == 200


@pytest.mark.parametrize("app,model", ADMIN_MODELS)
def test_finance_sees_every_org_and_staff_without_an_org_see_nothing(client, world, django_user_model, app, model):
    from apps.budgets.services import finance_group_ensure

    finance = _staff(django_user_model, username="fin")
    finance.groups.add(finance_group_ensure())
    client.force_login(finance)
    listed, _ = _listed(client, app, model)
    assert {world["a_objects"][model].pk, world["b_objects"][model].pk} <= listed
    client.force_login(_staff(django_user_model, username="nobody"))
    assert _listed(client, app, model)[0] == set()


def test_a_staff_member_of_a_cannot_give_a_key_to_bs_member(client, world, a_staff):
    client.force_login(a_staff)
    a, b = world["a"], world["b"]
    found = client.get(
        "/admin/autocomplete/", {"app_label": "tenancy", "model_name": "apikey", "field_name": "member", "term": ""}
    ).json()
    assert {r["id"] for r in found["results"]} == {str(a.member.pk)}
    keys_before = ApiKey.objects.filter(org=b.org).count()
    response = client.post(reverse("admin:tenancy_apikey_add"), {"member": b.member.pk, "name": "sneaky", "rate_limit_per_minute": 0})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert ApiKey.objects.filter(org=b.org).count() == keys_before
    # The action on the changelist only ever sees A's keys: posting B's id revokes nothing.
    response = client.post(
        reverse("admin:tenancy_apikey_changelist"), {"action": "revoke_keys", "_selected_action": [b.api_key.pk]}
    )
    b.api_key.refresh_from_db()
    assert b.api_key.revoked_at is None


def test_a_keyword_rule_added_by_a_staff_member_of_a_applies_to_a_only(client, world, django_user_model):
    """Left blank, the org would make the rule global (every org's routing): for non-finance staff it becomes theirs."""
    staff = _staff(django_user_model, username="a-router", member=world["a"].member, extra_perms=("add_keywordrule",))
    client.force_login(staff)
    global_rules = KeywordRule.objects.filter(org__isnull=True).count()
    response = client.post(
        reverse("admin:routing_keywordrule_add"),
        {"name": "legal to premium", "match": "terms", "pattern": "contract", "scope": "all", "tier": "premium",
         "priority": 100, "enabled": "on", "org": ""},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:500]
    assert KeywordRule.objects.get(name="legal to premium").org == world["a"].org
    assert KeywordRule.objects.filter(org__isnull=True).count() == global_rules


# --- reports --------------------------------------------------------------------------------------------------------


def test_reports_pages_and_exports_are_scoped(client, world, a_staff):
    client.force_login(a_staff)
    a, b = world["a"], world["b"]
    home = client.get(reverse("admin:index")).content.decode()
    assert A_NAME in home and B_NAME not in home and "model-wide iso anomaly" not in home
    for name, obj in (("reports_admin:org", b.org), ("reports_admin:team", b.team)):
        assert client.get(reverse(name, args=[obj.pk])).status_code == 403
    # A missing id gets the same answer as B's: the response does not tell which ids exist.
    assert client.get(reverse("reports_admin:org", args=[10**9])).status_code == 403
    assert client.get(reverse("reports_admin:org", args=[a.org.pk])).status_code == 200
    chargeback = client.get(reverse("reports_admin:chargeback")).content.decode()
    assert A_SLUG in chargeback or A_NAME in chargeback
    assert B_SLUG not in chargeback and B_NAME not in chargeback
    assert client.get(reverse("reports_admin:chargeback"), {"org": B_SLUG}).status_code == 403
    assert client.get(reverse("reports_admin:focus")).status_code == 403  # FOCUS spans every org: finance only


def test_the_cost_report_command_keeps_to_the_org_it_is_given(world):
    for by in ("org", "team", "user", "model"):
        out = io.StringIO()
        call_command("cost_report", "--by", by, "--org", A_SLUG, "--format", "csv", stdout=out, stderr=io.StringIO())
        text = out.getvalue()
        assert text.count("\n") >= 2, (by, text)  # a header and A's rows
        assert B_SLUG not in text and "bob" not in text and "Risk" not in text, (by, text)


# --- REST API -------------------------------------------------------------------------------------------------------

API_ENDPOINTS = {"/api/spend/": [{"group_by": g} for g in ("day", "model", "team", "user", "org")],
                 "/api/budgets/": [{}], "/api/anomalies/": [{}]}  # fmt: skip


def _routes(resolver=None, prefix: str = "/") -> set[str]:
    found = set()
    for pattern in (resolver or get_resolver()).url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found |= _routes(pattern, route)
        elif isinstance(pattern, URLPattern):
            found.add(route)
    return found


def test_every_rest_endpoint_is_covered_here():
    """A new /api/ endpoint must join API_ENDPOINTS, and so the isolation tests below."""
    api = {r for r in _routes() if r.startswith("/api/") and not r.startswith(("/api/schema", "/api/docs"))}
    assert api == set(API_ENDPOINTS)


def _callers(world, django_user_model):
    key = APIClient()
    key.credentials(HTTP_AUTHORIZATION=f"Bearer {world['a'].secret}")
    session = APIClient()
    user = django_user_model.objects.create_user("a-web", password="pw")
    member = world["a"].member
    member.user = user
    member.save(update_fields=["user"])
    session.force_login(user)
    return {"key": key, "session": session}


@pytest.mark.parametrize("path", sorted(API_ENDPOINTS))
def test_a_caller_of_a_never_reads_bs_data(world, django_user_model, path):
    callers = _callers(world, django_user_model)
    for how, client in callers.items():
        for params in API_ENDPOINTS[path]:
            response = client.get(path, params)
            assert response.status_code == 200, (how, path, params, response.content[:300])
            text = response.content.decode()
            assert A_SLUG in text, (how, path, params)
            assert B_SLUG not in text and "bob" not in text and "model-wide iso anomaly" not in text, (how, path, params)
            asked_for_b = client.get(path, {**params, "org": B_SLUG})
            assert B_SLUG not in asked_for_b.content.decode(), (how, path)
            if path != "/api/budgets/":  # the budgets API ignores `org` for anyone but a superuser
                assert asked_for_b.status_code == 403 and asked_for_b.json()["error"]["code"] == "permission_denied"
    if path == "/api/spend/":  # the figures are A's alone, not just the labels
        spend = callers["key"].get(path).json()
        assert Decimal(spend["total_cost_usd"]) == sum(r.cost_usd for r in LLMRequest.objects.filter(org=world["a"].org))


# --- the cache, through the live gateway ----------------------------------------------------------------------------


def _ask(client: openai.OpenAI, prompt: str, **kwargs):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], temperature=0, **kwargs
    )
    wait_for_row(raw.headers["x-request-id"])  # the answer is stored (both tiers) before the row is written
    return raw


@pytest.mark.django_db(transaction=True)
def test_org_b_never_gets_org_as_cached_answer_in_either_tier(gateway_url, make_tenant, prices, redis_client):
    a = make_tenant(org=f"Cache A {uuid.uuid4().hex[:6]}", user="alice")
    b = make_tenant(org=f"Cache B {uuid.uuid4().hex[:6]}", user="bob")
    as_a = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=a.secret, max_retries=0)
    as_b = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=b.secret, max_retries=0)
    # Both orgs are new, so these plain prompts have no history in either scope.
    prompt, paraphrase = "How do I reset my password?", "How can I reset my password?"

    assert _ask(as_a, prompt).headers["x-cache"] == "miss"
    # B asks the identical question, a paraphrase, and the question as a stream: every lookup misses in both tiers
    # (x-cache names the tier that answered). no-store keeps B's own answers out of the cache, so that B's later
    # lookups cannot hit B's earlier ones.
    no_store = {"extra_headers": {"Cache-Control": "no-store"}}
    for question in (prompt, paraphrase):
        raw = _ask(as_b, question, **no_store)
        assert raw.headers["x-cache"] == "miss", question
        row = wait_for_row(raw.headers["x-request-id"])
        assert (row.org_id, row.cache_status, row.status) == (b.org.id, "miss", "served") and row.cost_usd > 0
    with as_b.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], temperature=0, stream=True, **no_store
    ) as streamed:
        assert streamed.headers["x-cache"] == "miss"
        request_id = streamed.headers["x-request-id"]
        assert "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    assert wait_for_row(request_id).cache_status == "miss"
    # Controls: A's own repeats hit, so B's misses are isolation, not a cold cache.
    assert _ask(as_a, prompt).headers["x-cache"] == "exact"
    assert _ask(as_a, paraphrase).headers["x-cache"] == "semantic"


@pytest.mark.django_db(transaction=True)
def test_v1_models_follows_each_orgs_own_pinning_setting(gateway_url, make_tenant, prices):
    a = make_tenant(org=f"Models A {uuid.uuid4().hex[:6]}", user="alice")
    b = make_tenant(org=f"Models B {uuid.uuid4().hex[:6]}", user="bob")
    b.org.allow_model_pinning = False
    b.org.save(update_fields=["allow_model_pinning"])
    listed = {
        who: {m.id for m in openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=t.secret, max_retries=0).models.list()}
        for who, t in (("a", a), ("b", b))
    }
    assert "gpt-4o-mini" in listed["a"] and "gpt-4o-mini" not in listed["b"]
    assert listed["b"] and listed["b"] < listed["a"]
