"""The router's decisions for one request (stages 6 and 9, and the circuit breaker), as typed functions of values.

- `route_select(messages=…, requested_model=…, caller=…, prompt_tokens=…, prompt_vectors=…)` returns a
  RouteDecision: the model to call first and `chain`, the fallback order (same tier first, then upward,
  never down); `decision.plan` keeps the router's working for the later calls. When the learned strategy
  would decide (`learned_wanted`), it scores the prompt with the served index (`apps.routing.learned`): the
  vector comes from `prompt_vectors` (text → vector, e.g. what the semantic cache embedded already), else
  one embedding on the embedding thread (never on the event loop).
- `route_cheapest(decision=…, org_id=…)` returns the decision for a budget downgrade.
- `confidence_escalate(decision=…, answered_tier=…, …)` returns an `Escalation` when a cheap answer should
  be re-asked one tier up (the gateway re-asks and records why), else None.
- `circuit_allows(model)` / `circuit_record(model, ok)`: the per-model circuit breaker.
- `router_warmup()`: load the learned index and the embedding model at worker start-up.

How a request names its route (see `apps.routing.engine`): `model="auto"` / `"finops/auto"` / `"router"`
routes with the org's default policy, `"finops/<route>"` with a named policy, `"finops/<tier>"` asks for a
tier, and any other model name is a pin (honoured when the org allows pinning, else routed anyway
with the refusal in the reason). The decision's strategy / reason / tier / requested_tier go to the
ledger row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from apps.embeddings.embeddings import embed_for_routing
from apps.routing import learned, metrics
from apps.routing.circuit import OPEN, CircuitBreaker
from apps.routing.engine import (
    BUILTIN_POLICY,
    LearnedScore,
    NoRoutableModel,
    RoutePlan,
    UnknownRoute,
    chain_build,
    escalation_decide,
    escalation_threshold,
    learned_apply,
    learned_wanted,
    route_plan,
    tier_above,
    tier_by_name,
)
from apps.routing.features import answer_confidence
from apps.routing.selectors import router_config
from apps.routing.types import ConfidenceCheck, RouteDecision
from apps.tenancy.types import Caller
from finops.conf import conf
from finops.errors import ModelNotFound
from finops.tokens import message_text

# After the embedding model failed to load, the learned strategy steps aside (complexity decides) this long.
EMBED_RETRY_AFTER_S = 60.0
_embed_retry_at = 0.0
_breaker: CircuitBreaker | None = None


def breaker() -> CircuitBreaker:
    global _breaker
    if _breaker is None:
        _breaker = CircuitBreaker(
            failures=int(conf().router_circuit_failures),
            cooldown_s=float(conf().router_circuit_cooldown_s),
        )
    return _breaker


def _decision(plan: RoutePlan, providers: dict[str, str]) -> RouteDecision:
    cb = breaker()
    # Peek only: `allows()` would spend a half-open probe that the gateway's own check must get.
    model = next((m for _, m in plan.chain if cb.state(m) != OPEN), plan.model)
    return RouteDecision(
        model=model,
        tier=next((t for t, m in plan.chain if m == model), plan.tier),
        provider=providers.get(model, ""),
        strategy=plan.strategy,
        reason=plan.reason,
        requested_tier=plan.requested_tier,
        chain=list(plan.chain),
        plan=plan,
    )


async def route_select(
    *,
    messages: list[dict[str, Any]],
    requested_model: str,
    caller: Caller | None,
    prompt_tokens: int = 0,
    prompt_vectors: Mapping[str, np.ndarray] | None = None,
) -> RouteDecision:
    config = await router_config()
    try:
        plan = route_plan(
            config,
            messages=messages,
            requested_model=requested_model,
            org_id=caller.org_id if caller else None,
            allow_pinning=caller.allow_model_pinning if caller else True,
            prompt_tokens=prompt_tokens or None,
        )
    except (UnknownRoute, NoRoutableModel) as exc:
        raise ModelNotFound(str(exc), param="model") from exc
    if learned_wanted(plan):
        score = await learned_score(messages=messages, prompt_vectors=prompt_vectors)
        if score is not None:
            plan = learned_apply(config, plan, score)
    decision = _decision(plan, {name: spec.provider for name, spec in config.models.items()})
    metrics.ROUTE_DECISIONS.labels(plan.strategy, plan.tier or "none").inc()
    return decision


async def learned_score(
    *, messages: list[dict[str, Any]], prompt_vectors: Mapping[str, np.ndarray] | None = None
) -> LearnedScore | None:
    """The prompt's score from the served index; None (complexity decides) without an index, text or vector,
    or when the index abstains (the prompt is far from its exemplars, or their vote is indecisive)."""
    global _embed_retry_at
    index = learned.served_index() if learned.served_index_ready() else await asyncio.to_thread(learned.served_index)
    if index is None:
        metrics.LEARNED_SCORES.labels("no_index").inc()
        return None
    text = learned.route_text(messages)
    if not text:
        metrics.LEARNED_SCORES.labels("no_text").inc()
        return None
    vector = (prompt_vectors or {}).get(text)
    outcome = "cache_vector"
    if vector is None and time.monotonic() >= _embed_retry_at:
        vector, outcome = await embed_for_routing(text), "embedded"
        if vector is None:  # the model cannot load: do not retry the load on every request
            _embed_retry_at = time.monotonic() + EMBED_RETRY_AFTER_S
    if vector is None:
        metrics.LEARNED_SCORES.labels("no_vector").inc()
        return None
    abstained = index.abstains(vector)
    if abstained is not None:  # far from the exemplars, or their vote is indecisive: complexity decides
        metrics.LEARNED_SCORES.labels(f"abstained_{abstained}").inc()
        return None
    metrics.LEARNED_SCORES.labels(outcome).inc()
    return index.score(vector)


async def router_warmup() -> None:
    """Load the learned index and, when a route uses it, the embedding model, before the worker takes traffic."""
    index = await asyncio.to_thread(learned.served_index)
    config = await router_config()
    if index is not None and any(p.use_learned for p in config.policies):
        await embed_for_routing("warm up")


async def route_cheapest(*, decision: RouteDecision | None, org_id: int | None) -> RouteDecision:
    """The lowest tier of the request's ladder, and only its models: a downgrade must not fall back into cost."""
    config = await router_config()
    plan: RoutePlan | None = decision.plan if decision else None
    policy = plan.policy if plan else (config.policy_for(org_id=org_id) or BUILTIN_POLICY)
    tiers = config.tiers(policy.ladder)
    usable = [t for t in tiers if t.models]
    if not usable:
        raise ModelNotFound(f"route '{policy.label}' has no tier with an enabled, priced model", param="model")
    lowest = usable[0]
    chain = chain_build((lowest,), lowest.rank, policy)
    previous = decision.tier if decision else ""
    downgraded = RoutePlan(
        tier=lowest.name,
        strategy="downgrade",
        reason=f"budget downgrade {previous or '?'} → {lowest.name}",
        chain=chain,
        policy=policy,
        requested_tier=decision.requested_tier if decision else lowest.name,
        complexity=plan.complexity if plan else None,
    )
    metrics.ROUTE_DECISIONS.labels("downgrade", lowest.name).inc()
    return _decision(downgraded, {name: spec.provider for name, spec in config.models.items()})


def _answer(response: dict[str, Any]) -> tuple[str, str | None, list[float] | None, bool]:
    choices = response.get("choices") or [{}]
    choice = choices[0] or {}
    message = choice.get("message") or {}
    content = message_text(message.get("content"))
    logprobs = None
    lp = choice.get("logprobs")
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):
        values = [t.get("logprob") for t in lp["content"] if isinstance(t, dict)]
        logprobs = [float(v) for v in values if isinstance(v, int | float)] or None
    return content, choice.get("finish_reason"), logprobs, bool(message.get("tool_calls"))


async def confidence_escalate(
    *,
    decision: RouteDecision | None,
    answered_tier: str,
    messages: list[dict[str, Any]],
    body: dict[str, Any],
    response: dict[str, Any],
) -> ConfidenceCheck | None:
    """Whether a cheap answer should be re-asked one tier up, with the (tier, model) to ask first and why;
    None when no tier is above the one that answered (nothing to escalate to)."""
    plan: RoutePlan | None = decision.plan if decision else None
    if plan is None or decision is None:
        return None
    config = await router_config()
    tiers = config.tiers(plan.policy.ladder)
    answered_tier = answered_tier or decision.tier
    if tier_by_name(tiers, answered_tier) is None:
        return None
    above = tier_above(tiers, answered_tier)
    if above is None:
        return None
    content, finish_reason, logprobs, tool_calls = _answer(response)
    confidence = answer_confidence(
        messages,
        answer=content,
        finish_reason=finish_reason,
        token_logprobs=logprobs,
        response_format=body.get("response_format") if isinstance(body, dict) else None,
        has_tool_calls=tool_calls,
        logprob_floor=plan.policy.logprob_floor,
    )
    escalate, risk = escalation_decide(
        policy=plan.policy,
        strategy=plan.strategy,
        complexity=plan.complexity,
        uncertainty=confidence.uncertainty,
        learned=plan.learned.score if plan.learned else None,
    )
    metrics.CONFIDENCE_CHECKS.labels(answered_tier or "none", "escalate" if escalate else "keep").inc()
    check = ConfidenceCheck(escalate=escalate, uncertainty=confidence.uncertainty, risk=risk, signals=confidence.signals)
    if not escalate:
        return check
    target = chain_build(tiers, above.rank, plan.policy)
    threshold = escalation_threshold(plan.policy, plan.strategy)
    return dataclasses.replace(
        check,
        target=target[0] if target else None,
        reason=f"escalated {answered_tier}→{above.name}: risk={risk:.2f}≥{threshold:.2f} ({confidence.reason})",
    )


def circuit_allows(model: str) -> bool:
    return breaker().allows(model)


def circuit_record(model: str, ok: bool) -> None:
    changed = breaker().record(model, ok)
    if changed:
        metrics.CIRCUIT_TRANSITIONS.labels(model, changed).inc()
