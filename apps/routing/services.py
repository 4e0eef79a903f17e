"""Writes of the routing app: latency refresh from the ledger, quality learnt from the eval, tier/rule upkeep.

The A/B harness that measures the quality and the index builder live in `evals.router` (offline work).
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from apps.routing.models import Tier, TierModel
from apps.routing.selectors import latency_p50_by_model, router_config_invalidate
from finops import clock

LATENCY_WINDOW = dt.timedelta(hours=1)


def tier_latency_refresh(*, window: dt.timedelta = LATENCY_WINDOW, now: dt.datetime | None = None) -> int:
    """Set every tier model's latency_p50_ms to the p50 of its served requests in the window; returns rows updated.

    A model without traffic in the window keeps its last figure (an idle model is not a fast one).
    """
    now = now or clock.now()
    rows = list(TierModel.objects.all())
    figures = latency_p50_by_model(since=now - window, models=sorted({tm.model for tm in rows}))
    updated = 0
    with transaction.atomic():
        for tm in rows:
            if tm.model not in figures:
                continue
            p50, samples = figures[tm.model]
            TierModel.objects.filter(pk=tm.pk).update(latency_p50_ms=p50, latency_samples=samples, latency_updated_at=now)
            updated += 1
    router_config_invalidate()
    return updated


def tier_quality_learn(*, ladder: str, quality_by_model: dict[str, float]) -> int:
    """Store qualities measured by eval_router (0..1) on the ladder's tier models; returns rows updated."""
    updated = 0
    with transaction.atomic():
        for model, quality in quality_by_model.items():
            updated += TierModel.objects.filter(tier__ladder=ladder, model=model).update(
                quality=round(min(max(float(quality), 0.0), 1.0), 4), quality_source=TierModel.QualitySource.EVAL
            )
    router_config_invalidate()
    return updated


def tier_model_set(
    *, ladder: str, tier: str, rank: int, model: str, quality: float = 0.5, complexity_min: float = 0.0
) -> TierModel:
    """Create or update a tier and put a model in it (used by fixtures, seeding and tests)."""
    tier_row, _ = Tier.objects.update_or_create(
        ladder=ladder, name=tier, defaults={"rank": rank, "complexity_min": complexity_min}
    )
    tm, _ = TierModel.objects.update_or_create(tier=tier_row, model=model, defaults={"quality": quality, "enabled": True})
    router_config_invalidate()
    return tm


def routing_defaults_ensure() -> None:
    """Re-create the seeded tiers, policies and rules that are missing (idempotent; the migration does the same)."""
    from apps.routing import defaults
    from apps.routing.models import KeywordRule, RoutePolicy

    defaults.seed(Tier=Tier, TierModel=TierModel, RoutePolicy=RoutePolicy, KeywordRule=KeywordRule)
    router_config_invalidate()
