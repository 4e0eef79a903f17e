"""Stage 10, cost: an upstream answer's tokens priced with the Decimal cost function at the price row in force.

The answer's usage is read by `apps.gateway.usage` (every provider's format in one place): cached reads, cache writes,
reasoning tokens and the service tier each meet their own rate of the price row (apps.ledger.pricing.cost_compute).
"""

from __future__ import annotations

import logging
from typing import Any

from apps.gateway import metrics
from apps.gateway.context import RequestContext
from apps.gateway.selectors import Catalog
from apps.gateway.usage import usage_read
from apps.ledger.pricing import PRIORITY, Price, cost_compute
from finops.errors import UnpricedModel
from finops.tokens import message_text, token_bound

logger = logging.getLogger(__name__)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def bill(ctx: RequestContext, catalog: Catalog, response: dict[str, Any]) -> None:
    """Add one upstream answer's tokens and cost (Decimal, price row in force) to the context."""
    usage = usage_read(response.get("usage"), service_tier=response.get("service_tier"))
    if usage is None:  # no usage at all: our own counts (the prompt estimate, the answer's text)
        completion = sum(
            token_bound(message_text((c.get("message") or {}).get("content"))) for c in response.get("choices") or []
        )
        charge(ctx, catalog, prompt=ctx.prompt_tokens_estimate, completion=completion, cached=0)
        return
    prompt = usage.prompt if usage.prompt_known else ctx.prompt_tokens_estimate
    cached = min(usage.cached, prompt)
    charge(
        ctx, catalog, prompt=prompt, completion=usage.completion, cached=cached,
        cache_write=min(usage.cache_write, prompt - cached), reasoning=usage.reasoning, service_tier=usage.service_tier,
    )  # fmt: skip


def charge(
    ctx: RequestContext,
    catalog: Catalog,
    *,
    prompt: int,
    completion: int,
    cached: int,
    cache_write: int = 0,
    reasoning: int = 0,
    service_tier: str = "",
) -> None:
    price: Price | None = catalog.price_for(ctx.model, ctx.received_at.date())
    if price is None:  # stage 8 only calls priced models; a price removed mid-request is still an error, not $0
        raise UnpricedModel(f"Model '{ctx.model}' has no price in force.", param="model")
    if service_tier == PRIORITY and price.priority_multiplier is None:
        logger.warning("%s answered %s at service_tier=priority, which its price row does not price: billed at the "
                       "standard rates; add priority_multiplier to the row", ctx.provider, ctx.model)  # fmt: skip
    cost = cost_compute(
        price=price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
        cache_write_tokens=cache_write, service_tier=service_tier,
    )  # fmt: skip
    ctx.prompt_tokens += prompt
    ctx.completion_tokens += completion
    ctx.cached_tokens += cached
    ctx.cache_write_tokens += cache_write
    ctx.reasoning_tokens += min(reasoning, completion)
    if service_tier:
        ctx.service_tier = service_tier
    ctx.cost_usd += cost
    ctx.price_id = price.id
    labels = (ctx.provider, ctx.model, ctx.tier or "-")
    metrics.child(metrics.TOKENS, *labels, "prompt").inc(prompt)
    metrics.child(metrics.TOKENS, *labels, "completion").inc(completion)
    if cached:
        metrics.child(metrics.TOKENS, *labels, "cached").inc(cached)
    if cache_write:
        metrics.child(metrics.TOKENS, *labels, "cache_write").inc(cache_write)
    if reasoning:
        metrics.child(metrics.TOKENS, *labels, "reasoning").inc(min(reasoning, completion))
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
