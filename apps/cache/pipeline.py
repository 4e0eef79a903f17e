"""Pipeline hooks of the dual-tier cache (stages 4 and 5).

Contract with apps.gateway.pipeline:
- `cache_lookup_exact(ctx)` / `cache_lookup_semantic(ctx)` return a full OpenAI chat.completion
  response dict on a hit (and set ctx.cache_status, ctx.similarity, ctx.saved_usd), or None.
- `cache_store(ctx, response)` stores a served answer (a full chat.completion dict, also for
  streams, which the gateway reassembles); it must never raise into the request.

None of the hooks raises: a cache that fails is a cache that misses ("bypass" when Redis is down).
On a hit ctx.status becomes "cached" and ctx.cost_usd stays 0; a remote embedding is billed on
its own ledger row (endpoint "embeddings"), never on the chat row, so nothing is counted twice.
ctx.saved_usd is what the upstream call would have cost: the cached answer's usage at the
price in force today for the model that produced it (ctx.price_id names that price row).

Scope: entries are keyed on the org and the *requested* model (a concrete model or a route
class such as "auto"), since the route is not decided yet at lookup time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from django.conf import settings
from redis.exceptions import RedisError

from apps.cache import metrics
from apps.cache.embeddings import backend, embed_prompt
from apps.cache.guard import Signature, choose_hit, guard_signature
from apps.cache.keys import RequestKey, request_key, uses_tools
from apps.cache.selectors import CachePolicy, cache_policy_for, price_in_force_async, semantic_candidates
from apps.cache.services import exact_entry_store, exact_key, semantic_entry_hit, semantic_entry_store
from apps.gateway.context import RequestContext
from apps.gateway.tokens import count_tokens, message_text
from apps.ledger.money import ZERO
from apps.ledger.pricing import cost_compute
from finops import clock
from finops.asyncredis import get_redis

logger = logging.getLogger(__name__)

COMPLETE_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "function_call"})
# After a Redis failure the exact tier is skipped for this long, so a hung Redis costs one
# timeout per window instead of one per request.
REDIS_RETRY_AFTER_S = 1.0
_redis_down_until = 0.0


@dataclass(slots=True)
class CacheState:
    """What the cache decided about one request; kept in ctx.extra["cache"] between the hooks."""

    org_id: int | None
    model_class: str
    policy: CachePolicy | None
    key: RequestKey | None
    lookup: bool
    store: bool
    semantic: bool
    ttl_s: int
    max_age_s: int | None
    reason: str = ""  # why the cache is bypassed, if it is
    redis_down: bool = False
    vector: np.ndarray | None = None
    signature: Signature | None = None
    semantic_looked_up: bool = False


def _bypass_state(ctx: RequestContext, reason: str) -> CacheState:
    return CacheState(
        org_id=ctx.caller.org_id if ctx.caller else None,
        model_class=ctx.requested_model,
        policy=None,
        key=None,
        lookup=False,
        store=False,
        semantic=False,
        ttl_s=0,
        max_age_s=None,
        reason=reason,
    )


async def cache_state(ctx: RequestContext) -> CacheState:
    state = ctx.extra.get("cache")
    if isinstance(state, CacheState):
        return state
    state = await _decide(ctx)
    ctx.extra["cache"] = state
    return state


def prompt_vector(ctx: RequestContext, text: str) -> np.ndarray | None:
    """The local model's vector of `text` if the semantic tier already embedded it for this request, else None.

    The router's learned strategy embeds the same last user message with the same model; reusing the
    vector keeps a request at one embedding. A remote embedding (another vector space) is never shared.
    """
    state = ctx.extra.get("cache")
    if not isinstance(state, CacheState) or state.vector is None or state.key is None or backend() != "local":
        return None
    return state.vector if state.key.prompt_text == text else None


async def _decide(ctx: RequestContext) -> CacheState:
    caller = ctx.caller
    if caller is None or not ctx.requested_model:
        return _bypass_state(ctx, "anonymous")
    model_class = ctx.requested_model
    try:
        policy = await cache_policy_for(org_id=caller.org_id, model_class=model_class)
    except Exception as exc:  # noqa: BLE001 - no policy, no cache; the request goes on
        logger.warning("cache: policy unavailable for org %s: %s", caller.org_id, exc)
        return _bypass_state(ctx, "policy_unavailable")
    key = request_key(org_id=caller.org_id, model_class=model_class, messages=ctx.messages, body=ctx.body)
    tools = uses_tools(ctx.body, ctx.messages)
    reason = ""
    temperature = ctx.body.get("temperature")
    if not policy.enabled:
        reason = "disabled"
    elif isinstance(temperature, (int, float)) and temperature > policy.max_temperature and not policy.allow_high_temperature:
        reason = "temperature"  # a sampled answer is one of many; replaying it changes what the client asked for
    elif tools and not policy.allow_tools:
        reason = "tools"
    max_ttl = settings.FINOPS.get("CACHE_MAX_TTL_S", 30 * 86400)
    ttl_s, max_age_s = policy.ttl_s, None
    if ctx.cache_ttl_s is not None:
        # Cache-Control max-age: the answer may be at most this old, and a stored answer lives this long.
        max_age_s = max(0, int(ctx.cache_ttl_s))
        ttl_s = min(max_age_s, max_ttl)
    ttl_s = min(ttl_s, max_ttl)
    allowed = not reason
    return CacheState(
        org_id=caller.org_id,
        model_class=model_class,
        policy=policy,
        key=key,
        lookup=allowed and not ctx.cache_no_cache and max_age_s != 0,
        store=allowed and not ctx.cache_no_store and ttl_s > 0,
        # Tool calls are matched exactly or not at all: a paraphrase may need a different call.
        semantic=allowed and policy.semantic_enabled and key.prompt_text is not None and not tools,
        ttl_s=ttl_s,
        max_age_s=max_age_s,
        reason=reason or ("no-cache" if ctx.cache_no_cache else ""),
    )


# --- stage 4: exact -----------------------------------------------------------------------------


async def cache_lookup_exact(ctx: RequestContext) -> dict[str, Any] | None:
    global _redis_down_until
    started = time.perf_counter()
    state = await cache_state(ctx)
    if not state.lookup or state.key is None:
        ctx.cache_status = "bypass"
        metrics.CACHE_LOOKUPS.labels(tier="exact", outcome="bypass").inc()
        return None
    if time.monotonic() < _redis_down_until:
        state.redis_down = True
        ctx.cache_status = "bypass"
        metrics.CACHE_LOOKUPS.labels(tier="exact", outcome="bypass").inc()
        return None
    try:
        raw = await get_redis().get(exact_key(state.org_id, state.key.exact))
    except (RedisError, OSError, TimeoutError) as exc:
        _redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_S
        state.redis_down = True
        ctx.cache_status = "bypass"
        metrics.CACHE_LOOKUPS.labels(tier="exact", outcome="bypass").inc()
        logger.warning("cache: Redis unavailable, exact tier bypassed: %s", exc)
        return None
    entry = _parse_entry(raw, org_id=state.org_id)
    if entry is None or not _young_enough(entry.get("t"), state.max_age_s):
        ctx.cache_status = "miss"
        metrics.CACHE_LOOKUPS.labels(tier="exact", outcome="miss").inc()
        metrics.CACHE_LOOKUP_SECONDS.labels(tier="exact").observe(time.perf_counter() - started)
        return None
    response = entry["r"]
    ctx.cache_status = "exact"
    ctx.similarity = 1.0
    # A promoted paraphrase ("p") carries the usage of the prompt it paraphrased: price this prompt instead.
    served = await _serve(ctx, response, answer_model=entry.get("m") or "", tier="exact", own_prompt=bool(entry.get("p")))
    metrics.CACHE_LOOKUPS.labels(tier="exact", outcome="hit").inc()
    metrics.CACHE_LOOKUP_SECONDS.labels(tier="exact").observe(time.perf_counter() - started)
    return served


def _parse_entry(raw: bytes | None, *, org_id: int | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    # The org is in the key already; checking it again costs nothing and survives a key-scheme bug.
    if not isinstance(entry, dict) or entry.get("o") != org_id or not isinstance(entry.get("r"), dict):
        return None
    return entry


def _young_enough(created_ts: Any, max_age_s: int | None) -> bool:
    if max_age_s is None:
        return True
    return isinstance(created_ts, (int, float)) and time.time() - created_ts <= max_age_s


# --- stage 5: semantic --------------------------------------------------------------------------


async def cache_lookup_semantic(ctx: RequestContext) -> dict[str, Any] | None:
    started = time.perf_counter()
    try:
        state = await cache_state(ctx)
        if ctx.cache_status == "exact":
            return None
        if not state.lookup or not state.semantic or state.key is None or state.key.prompt_text is None:
            metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="bypass").inc()
            return None
        text = state.key.prompt_text
        state.semantic_looked_up = True
        state.vector = await embed_prompt(text, ctx=ctx)
        if state.vector is None:
            metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="bypass").inc()
            return None
        state.signature = guard_signature(text)
        not_before = None
        if state.max_age_s is not None:
            not_before = clock.now() - dt.timedelta(seconds=state.max_age_s)
        candidates = await semantic_candidates(
            org_id=state.org_id,
            model_class=state.model_class,
            context_hash=state.key.context_hash,
            params_hash=state.key.params_hash,
            vector=state.vector,
            k=settings.FINOPS.get("CACHE_SEMANTIC_TOP_K", 5),
            not_before=not_before,
        )
        decision = choose_hit(
            [(c.similarity, Signature.from_json(c.guard)) for c in candidates],
            state.signature,
            threshold=state.policy.threshold,
        )
        for reason in decision.rejections:
            metrics.CACHE_GUARD_REJECTIONS.labels(reason=reason).inc()
        if decision.index is None:
            if ctx.cache_status != "bypass":
                ctx.cache_status = "miss"
            metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="miss").inc()
            return None
        hit = candidates[decision.index]
        ctx.cache_status = "semantic"
        ctx.similarity = round(hit.similarity, 6)
        await semantic_entry_hit(entry_id=hit.id)
        await _promote_to_exact(ctx, state, hit.response, hit.answer_model, hit.expires_at)
        served = await _serve(ctx, hit.response, answer_model=hit.answer_model, tier="semantic")
        metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="hit").inc()
        return served
    except Exception:  # noqa: BLE001 - the semantic tier is an optimisation, never an outage
        logger.exception("cache: semantic lookup failed")
        metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="error").inc()
        if ctx.cache_status == "semantic":
            ctx.cache_status, ctx.similarity, ctx.saved_usd = "miss", None, ZERO
        return None
    finally:
        metrics.CACHE_LOOKUP_SECONDS.labels(tier="semantic").observe(time.perf_counter() - started)


async def _promote_to_exact(
    ctx: RequestContext, state: CacheState, response: dict[str, Any], answer_model: str, expires_at: dt.datetime
) -> None:
    """A paraphrase that hit once is stored under its own exact key, so its repeats skip the embedding."""
    if not state.store or state.redis_down or state.key is None or time.monotonic() < _redis_down_until:
        return
    remaining = int((expires_at - clock.now()).total_seconds())
    if remaining <= 0:
        return
    try:
        await exact_entry_store(
            redis=get_redis(),
            org_id=state.org_id,
            model_class=state.model_class,
            digest=state.key.exact,
            response=response,
            answer_model=answer_model,
            ttl_s=min(remaining, state.ttl_s),
            paraphrase=True,
        )
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("cache: could not promote a semantic hit to the exact tier: %s", exc)


# --- serving a hit ------------------------------------------------------------------------------


async def _serve(
    ctx: RequestContext, response: dict[str, Any], *, answer_model: str, tier: str, own_prompt: bool = False
) -> dict[str, Any]:
    answer_model = answer_model or response.get("model") or ctx.requested_model
    saved, price = await _saved_usd(ctx, response, answer_model, own_prompt=own_prompt or tier == "semantic")
    ctx.saved_usd = saved
    ctx.cost_usd = ZERO
    ctx.status = "cached"
    if not ctx.model:
        ctx.model = answer_model
    if price is not None:
        ctx.provider = ctx.provider or price.provider
        if ctx.price_id is None:
            ctx.price_id = price.id
    metrics.CACHE_SAVED_USD.labels(tier=tier).inc(float(saved))
    # `response` was parsed from Redis/Postgres for this request alone: no other request shares it, no copy needed.
    served = response
    served["id"] = f"chatcmpl-{ctx.request_id.hex}"
    served["created"] = int(time.time())
    return served


async def _saved_usd(ctx: RequestContext, response: dict[str, Any], answer_model: str, *, own_prompt: bool):
    """The upstream call avoided: the cached answer's completion tokens, and the prompt tokens of the
    cached call (exact: the same prompt) or of this prompt (a paraphrase has its own length)."""
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if not isinstance(prompt, int) or (own_prompt and ctx.prompt_tokens_estimate > 0):
        prompt = ctx.prompt_tokens_estimate
    if not isinstance(completion, int):
        completion = sum(count_tokens(message_text((c.get("message") or {}).get("content"))) for c in response.get("choices", []))
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    cached = min(cached, prompt) if isinstance(cached, int) and cached > 0 else 0
    today = clock.today()
    catalog = ctx.extra.get("catalog")  # the gateway's price catalog, when the gateway runs the hooks
    if catalog is not None and hasattr(catalog, "price_for"):
        price = catalog.price_for(answer_model, today)
    else:
        price = await price_in_force_async(model=answer_model, on=today)
    if price is None:
        logger.warning("cache: no price in force for %s; saved_usd recorded as 0", answer_model)
        return ZERO, None
    saved: Decimal = cost_compute(price=price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    return saved, price


# --- storing ------------------------------------------------------------------------------------


def _complete(response: Any) -> bool:
    """Only whole answers are cached: a stream the client left half-way must not be replayed to others."""
    if not isinstance(response, dict) or response.get("error"):
        return False
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(
        isinstance(c, dict) and isinstance(c.get("message"), dict) and c.get("finish_reason") in COMPLETE_FINISH_REASONS
        for c in choices
    )


async def cache_store(ctx: RequestContext, response: dict[str, Any]) -> None:
    global _redis_down_until
    try:
        state = await cache_state(ctx)
        if ctx.cache_status in ("exact", "semantic") or not state.store or state.key is None:
            return
        if not _complete(response):
            metrics.CACHE_STORES.labels(tier="exact", outcome="skipped").inc()
            return
        answer_model = str(response.get("model") or ctx.model or ctx.requested_model)
        if not state.redis_down and time.monotonic() >= _redis_down_until:
            try:
                await exact_entry_store(
                    redis=get_redis(),
                    org_id=state.org_id,
                    model_class=state.model_class,
                    digest=state.key.exact,
                    response=response,
                    answer_model=answer_model,
                    ttl_s=state.ttl_s,
                )
                metrics.CACHE_STORES.labels(tier="exact", outcome="stored").inc()
            except (RedisError, OSError, TimeoutError) as exc:
                _redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_S
                metrics.CACHE_STORES.labels(tier="exact", outcome="error").inc()
                logger.warning("cache: Redis unavailable, answer not stored in the exact tier: %s", exc)
        if state.semantic and state.key.prompt_text is not None:
            await _store_semantic(ctx, state, response, answer_model)
    except Exception:  # noqa: BLE001 - storing must never fail the request
        logger.exception("cache: store failed")
        metrics.CACHE_STORES.labels(tier="semantic", outcome="error").inc()


async def _store_semantic(ctx: RequestContext, state: CacheState, response: dict[str, Any], answer_model: str) -> None:
    text = state.key.prompt_text
    if state.vector is None and not state.semantic_looked_up:
        state.vector = await embed_prompt(text, ctx=ctx)
    if state.vector is None:
        metrics.CACHE_STORES.labels(tier="semantic", outcome="skipped").inc()
        return
    signature = state.signature or guard_signature(text)
    store_text = bool(ctx.caller and ctx.caller.store_prompts)
    await semantic_entry_store(
        org_id=state.org_id,
        model_class=state.model_class,
        context_hash=state.key.context_hash,
        params_hash=state.key.params_hash,
        prompt_hash=state.key.prompt_hash,
        vector=state.vector,
        prompt_text=text if store_text else None,
        guard=signature.as_json(),
        response=response,
        answer_model=answer_model,
        ttl_s=state.ttl_s,
    )
    metrics.CACHE_STORES.labels(tier="semantic", outcome="stored").inc()


def redis_breaker_reset() -> None:
    """Forget a recorded Redis outage (tests, or an operator who knows Redis is back)."""
    global _redis_down_until
    _redis_down_until = 0.0
