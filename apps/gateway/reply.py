"""What a transport sends, and what runs after it has been sent: headers, the usage extension, settle, cache, record.

`Reply` is what `apps.gateway.pipeline.chat()` returns: a JSON body or an SSE stream. The transport sends it,
then awaits `finalize(reply)`: settlement, the cache store and stage 11 (record) happen after the response
has left, off the critical path.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from apps.gateway import metrics
from apps.gateway.context import RequestContext
from apps.gateway.stages import budget_settle, cache_store
from apps.ledger.money import usd_str
from apps.ledger.recorder import ledger_intent_final, ledger_record

if TYPE_CHECKING:
    from apps.gateway.streams import CachedStream, ChatStream

logger = logging.getLogger(__name__)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


@dataclass(slots=True)
class Reply:
    """What a transport sends: a JSON body, or an SSE stream; then it awaits `finalize(reply)`."""

    ctx: RequestContext
    status: int
    headers: dict[str, str]
    payload: dict[str, Any] | None = None
    stream: ChatStream | CachedStream | None = None
    response: dict[str, Any] | None = None  # the served completion, for the cache
    row: dict[str, Any] | None = field(default=None, repr=False)


def finops_summary(ctx: RequestContext) -> dict[str, Any]:
    """The usage extension: the same figures as the X-* headers (documented in docs/usage.md)."""
    route = ctx.route
    return {
        "request_id": str(ctx.request_id),
        "cost_usd": usd_str(ctx.cost_usd),
        "prompt_tokens": ctx.prompt_tokens,
        "completion_tokens": ctx.completion_tokens,
        "cached_tokens": ctx.cached_tokens,
        "cache": ctx.cache_status,
        "saved_usd": usd_str(ctx.saved_usd),
        "model": ctx.model or (route.model if route else ""),
        "provider": ctx.provider,
        "tier": ctx.tier,
        "route": {
            "strategy": route.strategy if route else "",
            "reason": route.reason if route else "",
            "fallback_from": ctx.fallback_from or None,
            "attempts": ctx.attempts,
            "escalated": ctx.escalated,
            "escalation_cost_usd": usd_str(ctx.escalation_cost_usd),
        },
        "budget": {
            "state": ctx.budget_state,
            "remaining_usd": usd_str(ctx.budget_remaining_usd) if ctx.budget_remaining_usd is not None else None,
        },
    }


def _ascii(value: str) -> str:
    return value.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")


def finops_headers(ctx: RequestContext, *, with_cost: bool = True) -> dict[str, str]:
    route = ctx.route
    model = ctx.model or (route.model if route else "")
    route_header = model
    if route:
        route_header += f"; tier={ctx.tier or route.tier or '-'}; strategy={route.strategy or '-'}"
        if ctx.fallback_from:
            route_header += f"; fallback_from={ctx.fallback_from}"
        if ctx.escalated:
            route_header += "; escalated"
    headers = {
        "x-request-id": str(ctx.request_id),
        "x-cache": ctx.cache_status,
        "x-route": _ascii(route_header),
        "x-budget-remaining-usd": _budget_remaining_header(ctx),
    }
    if with_cost:
        headers["x-cost-usd"] = usd_str(ctx.cost_usd)
        headers["x-tokens-prompt"] = str(ctx.prompt_tokens)
        headers["x-tokens-completion"] = str(ctx.completion_tokens)
    return headers


def _budget_remaining_header(ctx: RequestContext) -> str:
    """What is left of the tightest budget; `unknown` when budgets could not be read (fail-open), `unlimited` when none applies."""
    if ctx.budget_remaining_usd is not None:
        return usd_str(ctx.budget_remaining_usd)
    return "unknown" if ctx.budget_state == "fail_open" else "unlimited"


def snapshot_row(ctx: RequestContext) -> dict[str, Any]:
    """The ledger row as of now: the response is about to leave, so overhead is measured here."""
    row = ctx.ledger_row()
    overhead_ms = max(ctx.elapsed_ms() - (ctx.upstream_ms or 0.0), 0.0)
    row["overhead_ms"] = overhead_ms
    metrics.child(metrics.OVERHEAD_SECONDS, ctx.endpoint, ctx.cache_status).observe(overhead_ms / 1000)
    ledger_intent_final(row)
    return row


# --- after the response: settle, cache, 11. record ----------------------------------------------------


async def finalize(reply: Reply) -> None:
    """Runs after the response was sent. Never raises; the row is durable when it returns."""
    ctx = reply.ctx
    if ctx.reserved:
        try:
            await budget_settle(ctx)
        except Exception:
            logger.exception("budget settlement failed for %s", ctx.request_id)
    if reply.response is not None and ctx.status == "served":
        try:
            await cache_store(ctx, reply.response)
        except Exception:
            logger.exception("cache store failed for %s", ctx.request_id)
    if ctx.ledger_skip:
        # An auth failure past the sampled ones: counted in finops_gateway_auth_failures_total only, so that
        # requests_total keeps matching the rows written (finops:ledger_rows_missing:increase1h).
        return
    metrics.child(metrics.REQUESTS, ctx.endpoint, ctx.status, ctx.cache_status).inc()
    if ctx.saved_usd:
        metrics.child(metrics.SAVED, ctx.cache_status).inc(float(ctx.saved_usd))
    await stage11_record(reply.row if reply.row is not None else snapshot_row(ctx))


async def stage11_record(row: dict[str, Any]) -> None:
    try:
        await ledger_record(row)
    except Exception:
        logger.exception("ledger row %s could not be recorded", row.get("request_id"))


# Work that a Django-served endpoint (/chat) defers until its response has been sent: the ASGI
# dispatcher sets a list here and awaits it after Django returns. Without one, the work runs inline.
deferred_work: ContextVar[list | None] = ContextVar("finops_deferred_work", default=None)


async def finalize_after_response(reply: Reply) -> None:
    pending = deferred_work.get()
    if pending is None:
        await finalize(reply)
    else:
        pending.append(finalize(reply))


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
