"""Pipeline hooks of budget governance (stage 7 and settlement).

Contract with apps.gateway.pipeline:
- `budget_reserve(ctx)` runs after routing, with ctx.estimated_cost_usd set. It sets
  ctx.budget_state / reserved_usd / reservation_id / budget_remaining_usd / degraded, may clamp
  ctx.max_tokens, may ask for a downgrade (ctx.extra["downgrade"] = True), and raises
  finops.errors.BudgetExceeded (429) or RateLimited to block.
- `budget_settle(ctx)` runs after the cost is known (also on failures, with cost 0) and
  settles the reservation to ctx.cost_usd. It must never raise into the request.

Stage 7, in order:
  7a. reserve: one asyncpg round trip (`budget_reserve` SQL function) against user, team and org.
  7b. refused by a downgrade budget: re-route to the cheapest tier, re-estimate, reserve again.
  7c. refused by a block budget: 429 naming the level and its cap.
  7d. no answer within FINOPS["BUDGET_TIMEOUT_MS"]: fail open under the per-user limiter, max_tokens clamped.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

from django.conf import settings

from apps.budgets import metrics
from apps.budgets.limiter import fail_open_admit
from apps.budgets.services import (
    BudgetUnavailable,
    ReserveResult,
    alerts_dispatch_soon,
    reservation_create,
    reservation_settle_later,
)
from apps.gateway.context import RequestContext
from apps.ledger.money import ZERO, quantize_usd
from finops import clock
from finops.errors import BudgetExceeded, FinopsError, RateLimited

logger = logging.getLogger(__name__)

_STATE = {"none": "none", "ok": "ok", "soft": "soft_exceeded"}


async def budget_reserve(ctx: RequestContext) -> None:
    caller = ctx.caller
    if caller is None:
        ctx.budget_state = "none"
        return
    started = time.perf_counter()
    try:
        result = await _reserve(ctx, over_downgrade=False)
        if result.decision == "downgrade":
            try:
                result = await _downgrade(ctx)
            except FinopsError as exc:
                # Nothing cheaper to route to: the cap holds, as a block.
                ctx.budget_state = "blocked"
                metrics.BUDGET_DECISIONS.labels(state="blocked").inc()
                alerts_dispatch_soon(result.alert_ids)
                raise BudgetExceeded(
                    _block_message(ctx, result) + f" No cheaper model to downgrade to: {exc.message}",
                    headers={"X-Budget-Remaining-USD": _usd(_non_negative(result.remaining_usd))},
                ) from exc
    except BudgetUnavailable as exc:
        try:
            await _fail_open(ctx, reason=exc.reason, started=started)
        finally:
            metrics.BUDGET_CHECK_SECONDS.labels(path="fail_open").observe(time.perf_counter() - started)
        return
    metrics.BUDGET_CHECK_SECONDS.labels(path="db").observe(time.perf_counter() - started)
    alerts_dispatch_soon(result.alert_ids)

    if result.decision == "block":
        ctx.budget_state = "blocked"
        ctx.budget_remaining_usd = _non_negative(result.remaining_usd)
        metrics.BUDGET_DECISIONS.labels(state="blocked").inc()
        raise BudgetExceeded(_block_message(ctx, result), headers={"X-Budget-Remaining-USD": _usd(ctx.budget_remaining_usd)})

    if result.decision != "none":
        ctx.reservation_id = result.reservation_id
        ctx.reserved_usd = quantize_usd(ctx.estimated_cost_usd)
        ctx.budget_remaining_usd = _non_negative(result.remaining_usd)
    if ctx.extra.get("downgrade"):
        ctx.budget_state = "downgraded"
    else:
        ctx.budget_state = _STATE.get(result.decision, "ok")
    metrics.BUDGET_DECISIONS.labels(state=ctx.budget_state).inc()


async def budget_settle(ctx: RequestContext) -> None:
    """Hand the settle to the per-loop batcher (see services._SettleQueue): it runs after the response anyway."""
    if ctx.reservation_id is None:
        return
    try:
        reservation_settle_later(reservation_id=ctx.reservation_id, actual_usd=ctx.cost_usd or ZERO)
    except Exception:
        metrics.BUDGET_SETTLE_FAILURES.labels(reason="error").inc()
        logger.exception("budget settle of reservation %s not queued", ctx.reservation_id)


async def _reserve(ctx: RequestContext, *, over_downgrade: bool) -> ReserveResult:
    caller = ctx.caller
    return await reservation_create(
        org_id=caller.org_id,
        team_id=caller.team_id,
        member_id=caller.member_id,
        request_id=ctx.request_id,
        amount_usd=ctx.estimated_cost_usd,
        over_downgrade=over_downgrade,
    )


async def _downgrade(ctx: RequestContext) -> ReserveResult:
    from apps.routing.pipeline import route_cheapest

    ctx.extra["downgrade"] = True
    ctx.extra["downgraded_from"] = ctx.route.model if ctx.route else ctx.requested_model
    ctx.route = await route_cheapest(ctx)
    ctx.estimated_cost_usd = await _estimate_for_route(ctx)
    return await _reserve(ctx, over_downgrade=True)


async def _estimate_for_route(ctx: RequestContext) -> Decimal:
    """The pre-call estimate for the downgraded model: prompt tokens + max_tokens at its price.

    Falls back to the previous estimate (an over-estimate: the cheapest tier costs no more) when the
    new model has no price in the catalog.
    """
    if ctx.route is None:
        return ctx.estimated_cost_usd
    try:
        from apps.gateway.selectors import catalog_get
        from apps.ledger.pricing import cost_compute

        catalog = await catalog_get()
        price = catalog.price_for(ctx.route.model, clock.today())
        if price is None:
            return ctx.estimated_cost_usd
        completion = ctx.max_tokens or settings.FINOPS.get("GATEWAY_DEFAULT_MAX_TOKENS", 1024)
        return cost_compute(price=price, prompt_tokens=ctx.prompt_tokens_estimate, completion_tokens=int(completion))
    except Exception:
        logger.exception("re-estimate after downgrade failed; keeping the original estimate")
        return ctx.estimated_cost_usd


async def _fail_open(ctx: RequestContext, *, reason: str, started: float) -> None:
    caller = ctx.caller
    # The decision as a whole must end by BUDGET_DECISION_MAX_MS: the Redis limiter gets what is left (≥ 1 ms).
    left_s = started + settings.FINOPS["BUDGET_DECISION_MAX_MS"] / 1000 - time.perf_counter()
    timeout_s = min(settings.FINOPS["BUDGET_LIMITER_TIMEOUT_MS"] / 1000, max(left_s, 0.001))
    admitted, limiter = await fail_open_admit(
        org_id=caller.org_id, member_id=caller.member_id, token=str(ctx.request_id), timeout_s=timeout_s
    )
    metrics.BUDGET_FAIL_OPEN.labels(reason=reason, limiter=limiter, outcome="allowed" if admitted else "limited").inc()
    ctx.degraded = True
    ctx.budget_state = "fail_open"
    ctx.reservation_id = None
    ctx.reserved_usd = ZERO
    ctx.budget_remaining_usd = None
    ctx.extra["budget_fail_open"] = {"reason": reason, "limiter": limiter}
    metrics.BUDGET_DECISIONS.labels(state="fail_open").inc()
    if not admitted:
        rpm = settings.FINOPS["BUDGET_FAIL_OPEN_RPM"]
        raise RateLimited(
            f"Budgets are temporarily unavailable, so requests are limited to {rpm} per minute per user; "
            "this user has reached that limit. Retry in a minute.",
            code="budget_degraded_rate_limit",
            headers={"Retry-After": "60"},
        )
    clamp = settings.FINOPS["BUDGET_FAIL_OPEN_MAX_TOKENS"]
    if clamp and (ctx.max_tokens is None or ctx.max_tokens > clamp):
        ctx.extra["max_tokens_requested"] = ctx.max_tokens
        ctx.max_tokens = clamp


def _block_message(ctx: RequestContext, result: ReserveResult) -> str:
    scope = {"user": "User", "team": "Team", "org": "Organization"}.get(result.limit_scope or "", "Budget")
    spent = quantize_usd(result.limit_spent_usd or ZERO, places=2)
    reserved = quantize_usd(result.limit_reserved_usd or ZERO, places=2)
    return (
        f"{scope} budget exceeded: {scope.lower()} '{result.limit_label}' has a {result.limit_period} cap of ${result.limit_cap_usd} "
        f"(spent ${spent}, ${reserved} reserved by requests in flight); this request needs about "
        f"${quantize_usd(ctx.estimated_cost_usd, places=4)}. The cap resets at the start of the next {_period_noun(result)} (UTC)."
    )


def _period_noun(result: ReserveResult) -> str:
    return "day" if result.limit_period == "daily" else "month"


def _non_negative(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    return quantize_usd(max(value, Decimal(0)))


def _usd(value: Decimal | None) -> str:
    return format(quantize_usd(value or ZERO), "f")
