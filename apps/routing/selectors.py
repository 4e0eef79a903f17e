"""Reads of the routing configuration and of the ledger figures the triangle uses.

The hot path reads one immutable `RouterConfig` snapshot per process, rebuilt at most every
`FINOPS["ROUTER_CONFIG_TTL_S"]` seconds and at once when a routing row or a price changes in this
process (admin edits reach the other workers within the TTL).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.db import connection

from apps.ledger.pricing import Price
from apps.ledger.selectors import prices_in_force as ledger_prices_in_force
from apps.routing.engine import ModelSpec, PolicySpec, RouterConfig, RuleSpec, TierSpec
from apps.routing.models import KeywordRule, RoutePolicy, Tier, TierModel, keyword_regex, keyword_terms
from finops import clock
from finops.conf import conf
from finops.runtime import runtime

logger = logging.getLogger(__name__)

_state: dict[str, object] = {"config": None, "expires": 0.0}


def _ttl() -> float:
    return conf().router_config_ttl_s


def prices_in_force(*, on: dt.date | None = None) -> dict[str, Price]:
    """The price in force on `on` (default today, UTC) for every priced model (the ledger's rule)."""
    return ledger_prices_in_force(on=on or clock.today())


def router_config_load() -> RouterConfig:
    """Build the snapshot from the database (sync; a handful of small queries)."""
    prices = prices_in_force()
    ladders: dict[str, list[TierSpec]] = {}
    tiered: dict[str, ModelSpec] = {}
    tier_rows = list(Tier.objects.order_by("ladder", "rank"))
    members: dict[int, list[TierModel]] = {}
    for tm in TierModel.objects.filter(enabled=True).order_by("model"):
        members.setdefault(tm.tier_id, []).append(tm)
    for tier in tier_rows:
        specs = []
        for tm in members.get(tier.id, []):
            price = prices.get(tm.model)
            if price is None:
                # An unpriced model is never routed to (it would bill as $0); the admin flags it.
                logger.warning("routing: %s in tier %s has no price in force; skipped", tm.model, tier)
                continue
            spec = ModelSpec(
                model=tm.model,
                provider=price.provider,
                tier=tier.name,
                rank=tier.rank,
                input_per_1m=Decimal(price.input_per_1m),
                output_per_1m=Decimal(price.output_per_1m),
                quality=float(tm.quality),
                latency_p50_ms=tm.latency_p50_ms,
            )
            specs.append(spec)
            tiered.setdefault(tm.model, spec)
        ladders.setdefault(tier.ladder, []).append(
            TierSpec(name=tier.name, rank=tier.rank, complexity_min=float(tier.complexity_min), models=tuple(specs))
        )

    models: dict[str, ModelSpec] = {}
    for name, price in prices.items():
        models[name] = tiered.get(name) or ModelSpec(
            model=name,
            provider=price.provider,
            tier="",
            rank=-1,
            input_per_1m=Decimal(price.input_per_1m),
            output_per_1m=Decimal(price.output_per_1m),
        )

    policies = tuple(
        PolicySpec(
            id=p.id,
            org_id=p.org_id,
            name=p.name,
            ladder=p.ladder,
            weight_cost=p.weight_cost,
            weight_latency=p.weight_latency,
            weight_quality=p.weight_quality,
            use_keywords=p.use_keywords,
            use_complexity=p.use_complexity,
            use_confidence=p.use_confidence,
            default_tier=p.default_tier,
            complexity_thresholds=dict(p.complexity_thresholds or {}),
            complexity_weights=dict(p.complexity_weights or {}),
            confidence_threshold=p.confidence_threshold,
            logprob_floor=p.logprob_floor,
            fallback_on_pinned=p.fallback_on_pinned,
            use_learned=p.use_learned,
            learned_threshold=p.learned_threshold,
        )
        for p in RoutePolicy.objects.filter(enabled=True).order_by("id")
    )

    rules = []
    for rule in KeywordRule.objects.filter(enabled=True).order_by("-priority", "id"):
        try:
            regex = keyword_regex(match=rule.match, pattern=rule.pattern)
        except (re.error, ValueError):
            logger.warning("routing: keyword rule %s has an invalid pattern; skipped", rule.id)
            continue
        terms = keyword_terms(rule.pattern) if rule.match == KeywordRule.Match.TERMS else ()
        rules.append(
            RuleSpec(
                id=rule.id,
                name=rule.name,
                tier=rule.tier,
                priority=rule.priority,
                regex=regex,
                org_id=rule.org_id,
                last_user_only=rule.scope == KeywordRule.Scope.LAST_USER,
                terms=terms,
            )
        )
    # Ties on priority: the higher tier wins (a rule that buys quality beats one that saves), then the older rule.
    rank_of = {t.name: t.rank for t in tier_rows}
    rules.sort(key=lambda r: (-r.priority, -rank_of.get(r.tier, -1), r.id))

    return RouterConfig(
        ladders={name: tuple(tiers) for name, tiers in ladders.items()},
        policies=policies,
        rules=tuple(rules),
        models=models,
        loaded_at=time.time(),
    )


def router_config_cached() -> RouterConfig:
    """Sync access to the cached snapshot (admin, management commands, tests)."""
    config = _state["config"]
    if config is None or time.monotonic() >= float(_state["expires"]):  # type: ignore[arg-type]
        config = router_config_load()
        _state["config"], _state["expires"] = config, time.monotonic() + _ttl()
    return config  # type: ignore[return-value]


async def router_config() -> RouterConfig:
    """The snapshot for the async hot path, served from memory.

    When it is stale, the request keeps the old snapshot and one background task rebuilds it
    (stale-while-revalidate), so no request waits on — or fails with — a slow or unreachable
    database. Only the first request of a process, and every request with a TTL of 0 (tests),
    loads synchronously.
    """
    config = _state["config"]
    now = time.monotonic()
    if config is not None and now < float(_state["expires"]):  # type: ignore[arg-type]
        return config  # type: ignore[return-value]
    if config is not None and _ttl() > 0:
        if not _state.get("refreshing"):
            _state["refreshing"] = True
            task = asyncio.get_running_loop().create_task(_refresh())
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)
        return config  # type: ignore[return-value]
    async with runtime().lock("routing.config"):
        config = _state["config"]
        if config is None or time.monotonic() >= float(_state["expires"]):  # type: ignore[arg-type]
            config = await sync_to_async(router_config_load)()
            _state["config"], _state["expires"] = config, time.monotonic() + _ttl()
    return config  # type: ignore[return-value]


_tasks: set[asyncio.Task] = set()
RETRY_AFTER_FAILURE_S = 5.0


async def _refresh() -> None:
    try:
        config = await sync_to_async(router_config_load)()
        _state["config"], _state["expires"] = config, time.monotonic() + _ttl()
    except Exception:  # keep routing on the last good snapshot; try again shortly
        logger.exception("routing: config reload failed; serving the previous snapshot")
        _state["expires"] = time.monotonic() + min(_ttl(), RETRY_AFTER_FAILURE_S)
    finally:
        _state["refreshing"] = False


def router_config_invalidate(**_: object) -> None:
    """Drop this process's snapshot (connected to the routing models' and prices' save/delete signals)."""
    _state["config"], _state["expires"], _state["refreshing"] = None, 0.0, False


def latency_p50_by_model(*, since: dt.datetime, models: list[str]) -> dict[str, tuple[float, int]]:
    """p50 of `upstream_ms` per model over served rows received since `since`: {model: (p50_ms, samples)}."""
    if not models:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT model, percentile_cont(0.5) WITHIN GROUP (ORDER BY upstream_ms), count(*)
            FROM llm_requests
            WHERE received_at >= %s AND model = ANY(%s) AND upstream_ms IS NOT NULL AND status = 'served'
            GROUP BY model
            """,
            [since, models],
        )
        return {model: (float(p50), int(n)) for model, p50, n in cursor.fetchall()}
