"""The budget decision of one request (stage 7) and its settlement, as typed functions of values.

- `budget_reserve(caller=…, request_id=…, amount_usd=…)` reserves the estimate against the caller's user,
  team and org caps — the reservations waiting in this worker share one asyncpg round trip
  (`budget_reserve_many`, apps.budgets.hotpath) — and returns a
  `BudgetDecision`. It raises finops.errors.BudgetExceeded (429) for a block and RateLimited for the
  fail-open limiter (BudgetDegradedRateLimited). A downgrade budget that refuses returns `state="downgrade"`: the caller re-routes to
  the cheapest tier (the router's job, not ours), re-estimates and calls again with `over_downgrade=True`,
  or raises `budget_exceeded(decision, amount_usd=…, note=…)` when there is nothing cheaper.
- An error that is not an outage (missing function or table, permission, constraint): `services.BudgetBroken`
  is raised, counted in finops_budget_fail_closed_total; the gateway answers 503 `budget_unavailable`.
- No answer within FINOPS["BUDGET_TIMEOUT_MS"] of the round trip being *sent*, the database unreachable, or held for
  down after a request-path query went unanswered (finops.asyncdb.db_down): fail open under the per-user limiter; the decision
  carries `max_tokens_cap` (FINOPS["BUDGET_FAIL_OPEN_MAX_TOKENS"]) for the caller to apply. Time spent queued in a busy
  worker never fails open: that is local load, shed by apps.gateway.admission with a 503, never a budget 429.
- `budget_settle(reservation_id=…, actual_usd=…)` hands the settle to the per-loop batcher; never raises.
- `budget_topup(caller=…, request_id=…, amount_usd=…)` reserves more for a request that already holds a
  reservation, before an escalation or a fallback to a pricier model: a second reservation under the same
  request id, checked against every cap like the first. It never fails open: a refusal, an outage or a broken
  schema all raise `BudgetTopupRefused`, and the caller does not make the call. The request's total is settled
  once, on its first reservation; each top-up is settled at $0 (`budget_settle_topups`), which only releases it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings

from apps.budgets import metrics
from apps.budgets.hotpath import (
    BudgetBroken,
    BudgetUnavailable,
    ReserveResult,
    alerts_dispatch_soon,
    reservation_create,
    reservation_settle_later,
)
from apps.budgets.limiter import fail_open_admit
from apps.ledger.money import ZERO, quantize_usd
from apps.tenancy.types import Caller
from finops.conf import conf
from finops.errors import BudgetDegradedRateLimited, BudgetExceeded, FinopsError

logger = logging.getLogger(__name__)

_STATE = {"none": "none", "ok": "ok", "soft": "soft_exceeded"}


@dataclass(slots=True, frozen=True)
class BudgetDecision:
    """What the budgets decided. `state`: none (no budget applies), ok, soft_exceeded, downgraded, fail_open,
    or downgrade (a downgrade budget refused this estimate: re-route cheaper and reserve again)."""

    state: str
    reservation_id: Any = None
    reserved_usd: Decimal = ZERO
    remaining_usd: Decimal | None = None
    max_tokens_cap: int | None = None  # fail-open: the completion limit to enforce
    fail_open_reason: str = ""
    limiter: str = ""
    refusal: ReserveResult | None = None  # state "downgrade": the level that refused, for the block message


NO_BUDGET = BudgetDecision(state="none")


async def budget_reserve(
    *, caller: Caller | None, request_id: uuid.UUID, amount_usd: Decimal, over_downgrade: bool = False
) -> BudgetDecision:
    if caller is None:
        return NO_BUDGET
    started = time.perf_counter()
    try:
        result = await reservation_create(
            org_id=caller.org_id,
            team_id=caller.team_id,
            member_id=caller.member_id,
            request_id=request_id,
            amount_usd=amount_usd,
            over_downgrade=over_downgrade,
        )
    except BudgetBroken as exc:  # not an outage: fail closed, loudly (the gateway answers 503 budget_unavailable)
        metrics.BUDGET_FAIL_CLOSED.labels(reason=exc.reason).inc()
        metrics.BUDGET_DECISIONS.labels(state="fail_closed").inc()
        raise
    except BudgetUnavailable as exc:
        try:
            return await _fail_open(caller, request_id=request_id, reason=exc.reason)
        finally:
            metrics.BUDGET_CHECK_SECONDS.labels(path="fail_open").observe(time.perf_counter() - started)
    metrics.BUDGET_CHECK_SECONDS.labels(path="db").observe(time.perf_counter() - started)
    if result.decision == "downgrade":
        return BudgetDecision(state="downgrade", refusal=result)
    alerts_dispatch_soon(result.alert_ids)
    if result.decision == "block":
        raise budget_exceeded(result, amount_usd=amount_usd)
    reserved = result.decision != "none"
    state = "downgraded" if over_downgrade else _STATE.get(result.decision, "ok")
    metrics.BUDGET_DECISIONS.labels(state=state).inc()
    return BudgetDecision(
        state=state,
        reservation_id=result.reservation_id if reserved else None,
        reserved_usd=quantize_usd(amount_usd) if reserved else ZERO,
        remaining_usd=_non_negative(result.remaining_usd) if reserved else None,
    )


class BudgetCheckUnavailable(FinopsError):
    status = 503
    type = "server_error"
    code = "budget_unavailable"


class BudgetTopupRefused(Exception):
    """The top-up was not reserved: `error` is what to tell the client (a BudgetExceeded for a cap)."""

    def __init__(self, reason: str, error: Exception):
        super().__init__(reason)
        self.reason = reason  # block | downgrade | unavailable | broken (a bounded metric label)
        self.error = error


async def budget_topup(*, caller: Caller, request_id: uuid.UUID, amount_usd: Decimal, note: str = "") -> BudgetDecision:
    """Reserve `amount_usd` more for `request_id` (module docstring). Returns the top-up's decision (its reservation
    id and amount); raises BudgetTopupRefused when any block or downgrade cap of the user, team or org would be
    exceeded, or the budgets cannot be read: spending without a reservation is what the top-up exists to prevent."""
    try:
        result = await reservation_create(
            org_id=caller.org_id,
            team_id=caller.team_id,
            member_id=caller.member_id,
            request_id=request_id,
            amount_usd=amount_usd,
        )
    except (BudgetUnavailable, BudgetBroken) as exc:
        reason = "broken" if isinstance(exc, BudgetBroken) else "unavailable"
        metrics.BUDGET_DECISIONS.labels(state=f"topup_{reason}").inc()
        raise BudgetTopupRefused(
            reason, BudgetCheckUnavailable("Budgets could not be checked for the extra upstream call; retry shortly.")
        ) from exc
    if result.decision in ("block", "downgrade"):
        raise BudgetTopupRefused(result.decision, budget_exceeded(result, amount_usd=amount_usd, note=note))
    alerts_dispatch_soon(result.alert_ids)
    metrics.BUDGET_DECISIONS.labels(state="topup").inc()
    reserved = result.decision != "none"
    return BudgetDecision(
        state=_STATE.get(result.decision, "ok"),
        reservation_id=result.reservation_id if reserved else None,
        reserved_usd=quantize_usd(amount_usd) if reserved else ZERO,
        remaining_usd=_non_negative(result.remaining_usd) if reserved else None,
    )


async def budget_settle_topups(*, reservation_ids: list[Any]) -> None:
    """Release a request's top-ups: its total was booked on its first reservation (`budget_settle`)."""
    for reservation_id in reservation_ids:
        await budget_settle(reservation_id=reservation_id, actual_usd=ZERO)


def budget_exceeded(result: ReserveResult, *, amount_usd: Decimal, note: str = "") -> BudgetExceeded:
    """The 429 for a refused reservation (a block, or a downgrade with nothing cheaper to route to)."""
    metrics.BUDGET_DECISIONS.labels(state="blocked").inc()
    alerts_dispatch_soon(result.alert_ids)
    remaining = _non_negative(result.remaining_usd)
    return BudgetExceeded(
        _block_message(result, amount_usd) + note, remaining_usd=remaining, headers={"X-Budget-Remaining-USD": _usd(remaining)}
    )


async def budget_settle(*, reservation_id: Any, actual_usd: Decimal) -> None:
    """Hand the settle to the per-loop batcher (see hotpath._SettleQueue): it runs after the response anyway."""
    if reservation_id is None:
        return
    try:
        reservation_settle_later(reservation_id=reservation_id, actual_usd=actual_usd or ZERO)
    except Exception:
        metrics.BUDGET_SETTLE_FAILURES.labels(reason="error").inc()
        logger.exception("budget settle of reservation %s not queued", reservation_id)


async def _fail_open(caller: Caller, *, request_id: uuid.UUID, reason: str) -> BudgetDecision:
    # The decision ends within BUDGET_DECISION_MAX_MS of the round trip's sending: the Redis limiter gets what the
    # reserve's deadline leaves of it (at most its own timeout), counted from its own sending too (finops.limiter).
    # Not "what is left since the request arrived": time queued in a busy worker would squeeze it to nothing, and
    # under load the user's minute would be split between Redis and the in-process window.
    cfg = settings.FINOPS
    left_ms = cfg["BUDGET_DECISION_MAX_MS"] - (0 if reason == "suspect" else cfg["BUDGET_TIMEOUT_MS"])
    timeout_s = min(cfg["BUDGET_LIMITER_TIMEOUT_MS"], max(left_ms, 1)) / 1000
    admitted, limiter = await fail_open_admit(
        org_id=caller.org_id, member_id=caller.member_id, token=str(request_id), timeout_s=timeout_s
    )
    metrics.BUDGET_FAIL_OPEN.labels(reason=reason, limiter=limiter, outcome="allowed" if admitted else "limited").inc()
    metrics.BUDGET_DECISIONS.labels(state="fail_open").inc()
    if not admitted:
        rpm = conf().budget_fail_open_rpm
        raise BudgetDegradedRateLimited(
            f"Budgets are temporarily unavailable, so requests are limited to {rpm} per minute per user; "
            "this user has reached that limit. Retry in a minute.",
            headers={"Retry-After": "60"},
        )
    clamp = conf().budget_fail_open_max_tokens
    return BudgetDecision(state="fail_open", max_tokens_cap=clamp or None, fail_open_reason=reason, limiter=limiter)


def _block_message(result: ReserveResult, amount_usd: Decimal) -> str:
    scope = {"user": "User", "team": "Team", "org": "Organization"}.get(result.limit_scope or "", "Budget")
    spent = quantize_usd(result.limit_spent_usd or ZERO, places=2)
    reserved = quantize_usd(result.limit_reserved_usd or ZERO, places=2)
    period = "day" if result.limit_period == "daily" else "month"
    return (
        f"{scope} budget exceeded: {scope.lower()} '{result.limit_label}' has a {result.limit_period} cap of ${result.limit_cap_usd} "
        f"(spent ${spent}, ${reserved} reserved by requests in flight); this request needs about "
        f"${quantize_usd(amount_usd, places=4)}. The cap resets at the start of the next {period} (UTC)."
    )


def _non_negative(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    return quantize_usd(max(value, Decimal(0)))


def _usd(value: Decimal | None) -> str:
    return format(quantize_usd(value or ZERO), "f")
