"""Issue #16 item 5: only answers that are exactly what the key asked for are cached (real Redis and pgvector).

A fail-open answer (max_tokens and n clamped), a downgraded one (a cheaper model than the key's) and a fallback (another
model than the one routed first) are served to their client but never replayed to the next one, on either tier.
"""

from __future__ import annotations

import pytest

from apps.cache.tests.conftest import completion, make_ctx
from apps.gateway.stages import cache_lookup_exact, cache_lookup_semantic, cache_refusal, cache_store

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "What is the boiling point of water at sea level?"


async def lookup(ctx):
    hit = await cache_lookup_exact(ctx)
    if hit is None:
        hit = await cache_lookup_semantic(ctx)
    return hit


def mark(ctx, how: str) -> None:
    if how == "degraded":
        ctx.degraded, ctx.budget_state, ctx.max_tokens, ctx.max_tokens_requested = True, "fail_open", 256, None
    elif how == "downgraded":
        ctx.downgraded_from, ctx.budget_state, ctx.model = "gpt-4o", "downgraded", "gpt-4o-mini"
    elif how == "fallback":
        ctx.fallback_from, ctx.model = "gpt-4o-mini", "gpt-4.1-mini"


@pytest.mark.parametrize("how", ["degraded", "downgraded", "fallback"])
def test_an_answer_that_does_not_match_its_key_is_not_cached(cache_env, run, how):
    tenant = cache_env()
    served = make_ctx(tenant, PROMPT, temperature=0)
    assert run(lookup(served)) is None
    mark(served, how)
    assert cache_refusal(served) == how
    run(cache_store(served, completion("100 °C, cut short", model=served.model or "gpt-4o-mini", finish="length")))

    again = make_ctx(tenant, PROMPT, temperature=0)
    assert run(lookup(again)) is None
    assert again.cache_status == "miss"

    # The same request answered exactly as asked is cached, and replayed.
    run(cache_store(again, completion("100 °C.")))
    third = make_ctx(tenant, PROMPT, temperature=0)
    hit = run(lookup(third))
    assert hit is not None and hit["choices"][0]["message"]["content"] == "100 °C."
    assert third.cache_status == "exact"
