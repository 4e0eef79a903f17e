"""The routing admin: finance's and platform's UI for tiers, policies and keyword rules."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.routing.models import KeywordRule, RoutePolicy, Tier, TierModel
from apps.routing.services import routing_defaults_ensure


@pytest.fixture
def seeded(prices):
    routing_defaults_ensure()


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["tier", "tiermodel", "routepolicy", "keywordrule"])
def test_changelists_render(admin_client, seeded, model: str) -> None:
    response = admin_client.get(reverse(f"admin:routing_{model}_changelist"))
    assert response.status_code == 200


@pytest.mark.django_db
def test_tier_models_show_price_and_flag_unpriced(admin_client, seeded) -> None:
    premium = Tier.objects.get(ladder="default", name="premium")
    TierModel.objects.create(tier=premium, model="no-such-model")
    page = admin_client.get(reverse("admin:routing_tiermodel_changelist")).content.decode()
    assert "$2.500000 / $10.000000" in page  # gpt-4o's price row
    assert "UNPRICED (never routed)" in page


@pytest.mark.django_db
def test_tier_change_page_has_the_models_inline(admin_client, seeded) -> None:
    tier = Tier.objects.get(ladder="eval", name="cheap")
    page = admin_client.get(reverse("admin:routing_tier_change", args=[tier.pk])).content.decode()
    assert "mixtral-8x7b-instruct" in page


@pytest.mark.django_db
def test_invalid_regex_is_refused_on_save(admin_client, seeded) -> None:
    response = admin_client.post(
        reverse("admin:routing_keywordrule_add"),
        {
            "name": "broken",
            "match": "regex",
            "pattern": "(unclosed",
            "scope": "all",
            "tier": "premium",
            "priority": 10,
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert "Invalid pattern" in response.content.decode()
    assert not KeywordRule.objects.filter(name="broken").exists()


@pytest.mark.django_db
def test_disable_action_reports_and_takes_effect(admin_client, seeded) -> None:
    ids = list(KeywordRule.objects.filter(tier="cheap").values_list("pk", flat=True))
    response = admin_client.post(
        reverse("admin:routing_keywordrule_changelist"), {"action": "disable", "_selected_action": ids}, follow=True
    )
    assert f"Disabled {len(ids)} rule(s)." in response.content.decode()
    assert not KeywordRule.objects.filter(pk__in=ids, enabled=True).exists()


@pytest.mark.django_db
def test_policy_name_cannot_contain_a_slash(admin_client, seeded) -> None:
    response = admin_client.post(
        reverse("admin:routing_routepolicy_add"),
        {
            "name": "a/b",
            "ladder": "default",
            "enabled": "on",
            "weight_cost": 1,
            "weight_latency": 0,
            "weight_quality": 0,
            "complexity_thresholds": "{}",
            "complexity_weights": "{}",
            "confidence_threshold": 0.6,
            "logprob_floor": -1,
        },
    )
    assert response.status_code == 200
    assert not RoutePolicy.objects.filter(name="a/b").exists()
