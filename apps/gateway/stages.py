"""The gateway's side of the stages other apps decide: values in, typed results out, copied into the context.

Each app exposes keyword-only functions of values (a caller, messages, an estimate) that return typed
results (a `CacheLookup`, a `RouteDecision`, a `BudgetDecision`); only these functions, and the stages of
`apps.gateway.pipeline`, write the `RequestContext`. The apps never see it.

| stage | app function | what is copied into the context |
|---|---|---|
| 2b rate limit | tenancy.keys.api_key_rate_admit | nothing (429 raised) |
| 4-5 cache | cache.lookup.cache_plan / cache_lookup_exact / cache_lookup_semantic | cache_status, similarity, saved_usd, price row |
| 6 route | routing.decide.route_select (vectors from the cache's embedding) | route |
| 7 budget | budgets.gate.budget_reserve (+ routing.decide.route_cheapest on a downgrade) | budget_state, reservation, remaining, clamp |
| 9 confidence | routing.decide.confidence_escalate | confidence, route strategy and reason |
| after | budgets.gate.budget_settle, cache.lookup.cache_store | — |
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from apps.budgets import gate
from apps.cache import lookup
from apps.gateway.context import RequestContext
from apps.gateway.selectors import Catalog, catalog_get
from apps.ledger.money import ZERO, quantize_usd
from apps.ledger.pricing import cost_upper_bound
from apps.routing import decide
from apps.routing.types import RouteDecision
from apps.tenancy.keys import api_key_rate_admit
from finops.conf import conf
from finops.errors import BudgetDegradedRateLimited, BudgetExceeded, FinopsError, UnpricedModel

logger = logging.getLogger(__name__)


# --- 2b. the key's rate limit ---------------------------------------------------------------------


async def rate_admit(ctx: RequestContext) -> None:
    if ctx.caller is not None:
        await api_key_rate_admit(caller=ctx.caller, token=str(ctx.request_id))


# --- 4-5. cache -----------------------------------------------------------------------------------


async def _cache_state(ctx: RequestContext) -> lookup.CacheState:
    if ctx.cache is None:
        ctx.cache = await lookup.cache_plan(
            request=lookup.CacheRequest(
                caller=ctx.caller,
                request_id=ctx.request_id,
                requested_model=ctx.requested_model,
                messages=ctx.messages,
                body=ctx.body,
                prompt_tokens_estimate=ctx.prompt_tokens_estimate,
                prompt_hash=ctx.prompt_hash,
                no_cache=ctx.cache_no_cache,
                no_store=ctx.cache_no_store,
                max_age_s=ctx.cache_ttl_s,
            )
        )
    return ctx.cache


def _price_for(ctx: RequestContext):
    return ctx.catalog.price_for if ctx.catalog is not None else None


def _served(ctx: RequestContext, result: lookup.CacheLookup) -> dict[str, Any] | None:
    ctx.cache_status = result.status
    hit = result.hit
    if hit is None:
        return None
    ctx.similarity = hit.similarity
    ctx.saved_usd = hit.saved_usd
    ctx.cost_usd = ZERO
    ctx.status = "cached"
    ctx.model = ctx.model or hit.answer_model
    if hit.price is not None:
        ctx.provider = ctx.provider or hit.price.provider
        if ctx.price_id is None:
            ctx.price_id = hit.price.id
    return hit.response


async def cache_lookup_exact(ctx: RequestContext) -> dict[str, Any] | None:
    state = await _cache_state(ctx)
    return _served(ctx, await lookup.cache_lookup_exact(state=state, price_for=_price_for(ctx)))


async def cache_lookup_semantic(ctx: RequestContext) -> dict[str, Any] | None:
    state = await _cache_state(ctx)
    if ctx.cache_status == "exact":
        return None
    return _served(ctx, await lookup.cache_lookup_semantic(state=state, price_for=_price_for(ctx)))


def cache_refusal(ctx: RequestContext) -> str:
    """Why this answer is not what its cache key asked for ("" when it is): the key names the request (model, messages,
    parameters), so only an answer of the model routed first, with the client's own limits, may be replayed."""
    if ctx.degraded:
        return "degraded"  # failed open: max_tokens and n clamped, the answer may be cut short
    if ctx.downgraded_from:
        return "downgraded"  # a downgrade budget moved it to a cheaper model
    if ctx.fallback_from:
        return "fallback"  # answered by another model than the one routed first
    return ""


async def cache_store(ctx: RequestContext, response: dict[str, Any]) -> None:
    state = await _cache_state(ctx)
    await lookup.cache_store(
        state=state, response=response, answer_model=ctx.model or ctx.requested_model, refusal=cache_refusal(ctx)
    )


# --- 6 and 9. routing --------------------------------------------------------------------------------


def with_chain(route: RouteDecision) -> RouteDecision:
    if not route.chain:
        route.chain = [(route.tier, route.model)]
    return route


async def route_select(ctx: RequestContext) -> RouteDecision:
    return with_chain(
        await decide.route_select(
            messages=ctx.messages,
            requested_model=ctx.requested_model,
            caller=ctx.caller,
            prompt_tokens=ctx.prompt_tokens_estimate,
            prompt_vectors=lookup.prompt_vectors(ctx.cache),
        )
    )


async def route_cheapest(ctx: RequestContext) -> RouteDecision:
    return with_chain(await decide.route_cheapest(decision=ctx.route, org_id=ctx.caller.org_id if ctx.caller else None))


async def confidence_escalate(ctx: RequestContext, response: dict[str, Any]) -> bool:
    """True when the router wants this answer re-asked higher up; one escalation per request at most."""
    if ctx.escalated or ctx.route is None:
        return False
    check = await decide.confidence_escalate(
        decision=ctx.route, answered_tier=ctx.tier, messages=ctx.messages, body=ctx.body, response=response
    )
    if check is None:
        return False
    ctx.confidence = check
    if not check.escalate:
        return False
    ctx.route.strategy = "confidence"
    ctx.route.reason = f"{ctx.route.reason}; {check.reason}"
    return True


# --- 7. budget -------------------------------------------------------------------------------------


def estimate(ctx: RequestContext, catalog: Catalog, model: str) -> Decimal:
    """The request's cost at most: the prompt estimate and `n` × the completion limit, at `model`'s price in force
    on the day the request was received (the same day its cost will be priced at)."""
    price = catalog.price_for(model, ctx.received_at.date())
    if price is None:
        raise UnpricedModel(f"Model '{model}' has no price in force; an administrator must add a ModelPrice row.", param="model")
    completion = (ctx.max_tokens or conf().gateway_default_max_tokens) * max(ctx.n, 1)
    # Every prompt token at the dearest prompt-side rate (an Anthropic cache write is 1.25 × input), × priority if asked.
    tier = ctx.body.get("service_tier") if isinstance(ctx.body.get("service_tier"), str) else None
    return cost_upper_bound(price=price, prompt_tokens=ctx.prompt_tokens_estimate, completion_tokens=completion, service_tier=tier)


async def budget_reserve(ctx: RequestContext) -> None:
    """Reserve `ctx.estimated_cost_usd`; on a downgrade budget's refusal, re-route to the cheapest tier and reserve
    its estimate instead. Raises BudgetExceeded (blocked) or BudgetDegradedRateLimited (fail-open limiter)."""
    try:
        decision = await gate.budget_reserve(caller=ctx.caller, request_id=ctx.request_id, amount_usd=ctx.estimated_cost_usd)
        if decision.state == "downgrade":
            decision = await _downgrade(ctx, decision)
    except BudgetExceeded as exc:
        ctx.budget_state = "blocked"
        ctx.budget_remaining_usd = exc.remaining_usd
        raise
    except BudgetDegradedRateLimited:
        ctx.budget_state, ctx.degraded = "fail_open", True
        raise
    ctx.budget_state = decision.state
    ctx.reservation_id = decision.reservation_id
    ctx.reserved_usd = decision.reserved_usd
    ctx.budget_remaining_usd = decision.remaining_usd
    if decision.state == "fail_open":
        ctx.degraded = True
        ctx.fail_open_reason = decision.fail_open_reason
        cap = decision.max_tokens_cap
        if cap and (ctx.max_tokens is None or ctx.max_tokens > cap):
            ctx.max_tokens_requested = ctx.max_tokens
            ctx.max_tokens = cap
        if ctx.n > 1:  # each of the limiter's requests asks for one clamped completion, not n
            ctx.n_requested = ctx.n
            ctx.n = 1


async def _downgrade(ctx: RequestContext, refused: gate.BudgetDecision) -> gate.BudgetDecision:
    try:
        route = await route_cheapest(ctx)
    except FinopsError as exc:  # nothing cheaper to route to: the cap holds, as a block
        assert refused.refusal is not None
        raise gate.budget_exceeded(
            refused.refusal, amount_usd=ctx.estimated_cost_usd, note=f" No cheaper model to downgrade to: {exc.message}"
        ) from exc
    ctx.downgraded_from = ctx.route.model if ctx.route else ctx.requested_model
    ctx.route = route
    try:
        ctx.estimated_cost_usd = estimate(ctx, ctx.catalog or await catalog_get(), route.model)
    except UnpricedModel:
        pass  # the previous estimate stands: the cheapest tier costs no more
    return await gate.budget_reserve(
        caller=ctx.caller, request_id=ctx.request_id, amount_usd=ctx.estimated_cost_usd, over_downgrade=True
    )


async def budget_topup(ctx: RequestContext, catalog: Catalog, model: str, *, why: str) -> None:
    """Before an upstream call to `model` (a fallback or an escalation): the request's reservations must cover what it
    has been billed so far plus this call's upper bound; reserve the difference, or raise FinopsError (the call is
    not made). A request without a reservation (no budget applies, or failed open: limited and clamped) has nothing
    to top up."""
    if ctx.reservation_id is None or ctx.caller is None:
        return
    need = quantize_usd(ctx.cost_usd + estimate(ctx, catalog, model))
    short = need - ctx.reserved_usd
    if short <= 0:
        return
    try:
        decision = await gate.budget_topup(
            caller=ctx.caller, request_id=ctx.request_id, amount_usd=short, note=f" (an extra call to {model}: {why})"
        )
    except gate.BudgetTopupRefused as refused:
        raise refused.error from refused
    if decision.reservation_id is not None:
        ctx.topup_reservation_ids.append(decision.reservation_id)
        ctx.reserved_usd += decision.reserved_usd
        ctx.budget_remaining_usd = decision.remaining_usd


async def budget_settle(ctx: RequestContext) -> None:
    """The request's total, once, on its first reservation; its top-ups released."""
    await gate.budget_settle(reservation_id=ctx.reservation_id, actual_usd=ctx.cost_usd or ZERO)
    if ctx.topup_reservation_ids:
        await gate.budget_settle_topups(reservation_ids=ctx.topup_reservation_ids)
