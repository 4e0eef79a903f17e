"""Hand-built router snapshots for the pure engine tests (no database)."""

from __future__ import annotations

import re
from decimal import Decimal

from apps.routing.engine import ModelSpec, PolicySpec, RouterConfig, RuleSpec, TierSpec
from apps.routing.models import keyword_regex, keyword_terms


def model(
    name: str,
    tier: str,
    rank: int,
    *,
    inp: str = "1",
    out: str = "2",
    quality: float = 0.5,
    latency: float | None = None,
    provider: str = "openai",
) -> ModelSpec:
    return ModelSpec(
        model=name,
        provider=provider,
        tier=tier,
        rank=rank,
        input_per_1m=Decimal(inp),
        output_per_1m=Decimal(out),
        quality=quality,
        latency_p50_ms=latency,
    )


def tier(name: str, rank: int, cmin: float, *models: ModelSpec) -> TierSpec:
    return TierSpec(name=name, rank=rank, complexity_min=cmin, models=tuple(models))


def rule(
    rule_id: int,
    name: str,
    pattern: str,
    tier_name: str,
    priority: int = 100,
    *,
    regex: bool = False,
    org_id: int | None = None,
    last_user_only: bool = False,
) -> RuleSpec:
    match = "regex" if regex else "terms"
    return RuleSpec(
        id=rule_id,
        name=name,
        tier=tier_name,
        priority=priority,
        regex=keyword_regex(match=match, pattern=pattern),
        org_id=org_id,
        last_user_only=last_user_only,
        terms=() if regex else keyword_terms(pattern),
    )


def three_tiers() -> tuple[TierSpec, ...]:
    return (
        tier(
            "cheap",
            0,
            0.0,
            model("small-a", "cheap", 0, inp="0.15", out="0.6", quality=0.6),
            model("small-b", "cheap", 0, inp="0.10", out="0.4", quality=0.4),
        ),
        tier("mid", 1, 0.15, model("mid-a", "mid", 1, inp="0.4", out="1.6", quality=0.7)),
        tier(
            "premium",
            2,
            0.30,
            model("big-a", "premium", 2, inp="2.5", out="10", quality=0.85),
            model("big-b", "premium", 2, inp="3", out="15", quality=0.9),
        ),
    )


def config(
    *,
    tiers: tuple[TierSpec, ...] | None = None,
    rules: tuple[RuleSpec, ...] = (),
    policies: tuple[PolicySpec, ...] | None = None,
    extra_models: tuple[ModelSpec, ...] = (),
) -> RouterConfig:
    tiers = tiers if tiers is not None else three_tiers()
    ordered = tuple(sorted(rules, key=lambda r: (-r.priority, -next((t.rank for t in tiers if t.name == r.tier), -1), r.id)))
    models = {m.model: m for t in tiers for m in t.models}
    models.update({m.model: m for m in extra_models})
    return RouterConfig(
        ladders={"default": tiers},
        policies=policies if policies is not None else (PolicySpec(id=1),),
        rules=ordered,
        models=models,
    )


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


__all__ = ["config", "model", "re", "rule", "three_tiers", "tier", "user"]
