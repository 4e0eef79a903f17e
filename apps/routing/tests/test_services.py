"""Latency from the ledger, qualities from the eval, the seeded defaults and the snapshot loader."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from apps.ledger.models import LLMRequest, ModelPrice
from apps.routing.models import RoutePolicy, Tier, TierModel
from apps.routing.selectors import router_config_load
from apps.routing.services import routing_defaults_ensure, tier_latency_refresh, tier_quality_learn
from apps.routing.tasks import tier_latency_refresh_task
from finops.models import JobRun


def ledger_row(model: str, upstream_ms: float | None, *, at: dt.datetime, status: str = "served") -> LLMRequest:
    return LLMRequest.objects.create(
        request_id=uuid.uuid4(), endpoint="chat_completions", received_at=at, status=status, model=model, upstream_ms=upstream_ms
    )


@pytest.mark.django_db
def test_latency_p50_comes_from_recent_served_rows(prices) -> None:
    routing_defaults_ensure()
    now = timezone.now()
    for ms in (100.0, 300.0, 200.0):
        ledger_row("gpt-4o-mini", ms, at=now - dt.timedelta(minutes=5))
    ledger_row("gpt-4o-mini", 9000.0, at=now - dt.timedelta(hours=3))  # outside the window
    ledger_row("gpt-4o-mini", 9000.0, at=now - dt.timedelta(minutes=1), status="failed")
    ledger_row("gpt-4o-mini", None, at=now - dt.timedelta(minutes=1))
    assert tier_latency_refresh(now=now) == 1
    tm = TierModel.objects.get(model="gpt-4o-mini")
    assert (tm.latency_p50_ms, tm.latency_samples) == (200.0, 3)
    assert TierModel.objects.get(model="gpt-4o").latency_p50_ms is None  # no traffic: unknown, not zero
    spec = router_config_load().models["gpt-4o-mini"]
    assert spec.latency_p50_ms == 200.0


@pytest.mark.django_db
def test_latency_task_records_its_success(prices) -> None:
    routing_defaults_ensure()
    tier_latency_refresh_task()
    assert JobRun.objects.get(name="routing_latency_refresh").last_success_at is not None


@pytest.mark.django_db
def test_quality_learn_is_clamped_and_scoped_to_the_ladder(prices) -> None:
    routing_defaults_ensure()
    assert tier_quality_learn(ladder="eval", quality_by_model={"mixtral-8x7b-instruct": 0.61, "gpt-4-1106-preview": 1.7}) == 2
    assert TierModel.objects.get(model="gpt-4-1106-preview").quality == 1.0
    assert TierModel.objects.get(model="gpt-4o").quality_source == "configured"


@pytest.mark.django_db
def test_defaults_are_idempotent_and_keep_admin_edits(prices) -> None:
    routing_defaults_ensure()
    Tier.objects.filter(ladder="default", name="premium").update(complexity_min=0.5)
    counts = (Tier.objects.count(), TierModel.objects.count(), RoutePolicy.objects.count())
    routing_defaults_ensure()
    assert (Tier.objects.count(), TierModel.objects.count(), RoutePolicy.objects.count()) == counts
    assert Tier.objects.get(ladder="default", name="premium").complexity_min == 0.5


@pytest.mark.django_db
def test_snapshot_skips_unpriced_and_disabled_models(prices) -> None:
    routing_defaults_ensure()
    cheap = Tier.objects.get(ladder="default", name="cheap")
    TierModel.objects.create(tier=cheap, model="unpriced-model")
    TierModel.objects.create(tier=cheap, model="gpt-4.1-nano", enabled=False)
    ModelPrice.objects.filter(model="gpt-4o").update(effective_to=timezone.now().date())  # price window ended today
    config = router_config_load()
    names = {t.name: [m.model for m in t.models] for t in config.tiers("default")}
    assert names == {"cheap": ["gpt-4o-mini"], "mid": ["gpt-4.1-mini"], "premium": []}
    assert {p.name for p in config.policies} == {"", "eval"}
    assert [r.name for r in config.rules][:2] == ["legal", "stack trace"]
