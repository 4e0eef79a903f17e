"""Stage 10, cost: an upstream answer's tokens priced with the Decimal cost function at the price row in force."""

from __future__ import annotations

from typing import Any

from apps.gateway import metrics
from apps.gateway.context import RequestContext
from apps.gateway.selectors import Catalog
from apps.ledger.pricing import Price, cost_compute
from finops.errors import UnpricedModel
from finops.tokens import message_text, token_bound


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def bill(ctx: RequestContext, catalog: Catalog, response: dict[str, Any]) -> None:
    """Add one upstream answer's tokens and cost (Decimal, price row in force) to the context."""
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    prompt = _int(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = ctx.prompt_tokens_estimate
    completion = _int(usage.get("completion_tokens"))
    if completion is None:
        completion = sum(
            token_bound(message_text((c.get("message") or {}).get("content"))) for c in response.get("choices") or []
        )
    details = usage.get("prompt_tokens_details")
    cached = (_int(details.get("cached_tokens")) if isinstance(details, dict) else None) or 0
    charge(ctx, catalog, prompt=prompt, completion=completion, cached=min(cached, prompt))


def charge(ctx: RequestContext, catalog: Catalog, *, prompt: int, completion: int, cached: int) -> None:
    price: Price | None = catalog.price_for(ctx.model, ctx.received_at.date())
    if price is None:  # stage 8 only calls priced models; a price removed mid-request is still an error, not $0
        raise UnpricedModel(f"Model '{ctx.model}' has no price in force.", param="model")
    cost = cost_compute(price=price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    ctx.prompt_tokens += prompt
    ctx.completion_tokens += completion
    ctx.cached_tokens += cached
    ctx.cost_usd += cost
    ctx.price_id = price.id
    labels = (ctx.provider, ctx.model, ctx.tier or "-")
    metrics.child(metrics.TOKENS, *labels, "prompt").inc(prompt)
    metrics.child(metrics.TOKENS, *labels, "completion").inc(completion)
    if cached:
        metrics.child(metrics.TOKENS, *labels, "cached").inc(cached)
    metrics.child(metrics.COST, *labels).inc(float(cost))


def stage10_cost(ctx: RequestContext, catalog: Catalog, response: dict[str, Any]) -> None:
    if ctx.billed_response is not response:
        bill(ctx, catalog, response)
    ctx.response_text = first_content(response)


def first_content(response: dict[str, Any]) -> str | None:
    choices = response.get("choices") or []
    if choices and isinstance(choices[0], dict):
        return message_text((choices[0].get("message") or {}).get("content"))
    return None
