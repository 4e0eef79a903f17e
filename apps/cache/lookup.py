"""The dual-tier cache of one request (stages 4 and 5, and the store after the response), as typed functions.

- `cache_plan(request=CacheRequest(…))` decides once what the cache may do for this request (policy,
  key, Cache-Control) and returns the `CacheState` that the later calls take.
- `cache_lookup_exact(state=…)` / `cache_lookup_semantic(state=…, price_for=…)` return a `CacheLookup`:
  the status to record (bypass, miss, exact, semantic) and, on a hit, a `CacheHit` with the full
  OpenAI chat.completion dict, the similarity and `saved_usd` — what the upstream call would have cost:
  the cached answer's usage at the price in force today for the model that produced it.
- `cache_store(state=…, response=…, answer_model=…)` stores a served answer (a full chat.completion
  dict, also for streams, which the gateway reassembles).
- `prompt_vectors(state)`: what the semantic tier embedded for this request (text → vector), for the router.

The semantic tier runs in two stages (apps.cache.semantic, docs/adr/001): a static embedding proposes cached
prompts, and the full model embeds this prompt only to confirm a probable hit; storing a miss embeds it after
the response, within a CPU budget. Prompts over the org's semantic length limit, or the model's window, skip it.

None of them raises: a cache that fails is a cache that misses ("bypass" when Redis is down). A remote
embedding is billed on its own ledger row (endpoint "embeddings"), never on the chat row.

Scope: entries are keyed on the org and the *requested* model (a concrete model or a route
class such as "auto"), since the route is not decided yet at lookup time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from apps.cache import metrics
from apps.cache.guard import GUARD_MAX_CHARS, Signature, choose_hit, guard_signature
from apps.cache.keys import RequestKey, request_key, uses_tools
from apps.cache.selectors import CachePolicy, StaticCandidate, cache_policy_for, confirmed_candidates, static_candidates
from apps.cache.semantic import guard_survivors, static_vector, store_budget
from apps.cache.services import exact_entry_store, exact_key, semantic_entry_hit, semantic_entry_store
from apps.cache.static_index import Versions, epoch_key, generation_key, static_index
from apps.embeddings.embeddings import EmbeddingCaller, backend, background_pending, embed_prompt_cpu
from apps.ledger.money import ZERO
from apps.ledger.pricing import Price, cost_compute
from apps.ledger.selectors import price_in_force_async
from apps.tenancy.types import Caller
from finops import clock
from finops.asyncdb import db_suspect
from finops.asyncredis import get_redis
from finops.conf import conf
from finops.tokens import count_tokens, message_text

logger = logging.getLogger(__name__)

COMPLETE_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "function_call"})
# After a Redis failure the exact tier is skipped for this long, so a hung Redis costs one
# timeout per window instead of one per request.
REDIS_RETRY_AFTER_S = 1.0
_redis_down_until = 0.0


@dataclass(slots=True, frozen=True)
class CacheRequest:
    """What the cache needs to know about a request: its tenant, what it asked, and what its client allows."""

    caller: Caller | None
    request_id: uuid.UUID
    requested_model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    prompt_tokens_estimate: int = 0
    prompt_hash: str = ""
    no_cache: bool = False  # Cache-Control: no-cache
    no_store: bool = False  # Cache-Control: no-store
    max_age_s: int | None = None  # Cache-Control: max-age


@dataclass(slots=True)
class CacheHit:
    response: dict[str, Any]  # the served chat.completion (id and created are this request's)
    tier: str  # exact | semantic
    similarity: float
    saved_usd: Decimal
    answer_model: str
    price: Price | None


@dataclass(slots=True)
class CacheLookup:
    status: str  # bypass | miss | exact | semantic
    hit: CacheHit | None = None


@dataclass(slots=True)
class CacheState:
    """What the cache decided about one request (`cache_plan`); the later calls of the same request take it."""

    request: CacheRequest
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
    vector: np.ndarray | None = None  # the full model's (only when a candidate had to be confirmed)
    static_vector: np.ndarray | None = None  # the first stage's
    versions: Versions | None = None  # the org's static-index versions, read with the exact key (None: unknown)
    signature: Signature | None = None
    semantic_looked_up: bool = False
    status: str = "none"  # the last lookup's outcome
    served: dict[str, Any] | None = field(default=None, repr=False)


def _bypass_state(request: CacheRequest, reason: str) -> CacheState:
    return CacheState(
        request=request,
        org_id=request.caller.org_id if request.caller else None,
        model_class=request.requested_model,
        policy=None,
        key=None,
        lookup=False,
        store=False,
        semantic=False,
        ttl_s=0,
        max_age_s=None,
        reason=reason,
    )


async def cache_plan(*, request: CacheRequest) -> CacheState:
    """What the cache may do for this request: look up, store, use the semantic tier, for how long."""
    return await _decide(request)


def prompt_vectors(state: CacheState | None) -> dict[str, np.ndarray]:
    """The local model's vector of the prompt, if the semantic tier embedded it for this request (text → vector).

    The router's learned strategy embeds the same last user message with the same model; reusing the
    vector keeps a request at one embedding. A remote embedding (another vector space) is never shared.
    """
    if state is None or state.vector is None or state.key is None or state.key.prompt_text is None or backend() != "local":
        return {}
    return {state.key.prompt_text: state.vector}


PROVIDER_DEFAULT_TEMPERATURE = 1.0  # what OpenAI-compatible providers sample at when the request names none


def sampling_temperature(body: dict[str, Any]) -> float:
    """The temperature the upstream will sample at: the request's, else the providers' default (1.0).

    An omitted temperature is not "deterministic": the answer is one sample of many, so under the default
    policy (max 0.7) it is not cached. `top_p` only narrows sampling, so it never makes a request less
    deterministic than its temperature says; it is part of the cache key, so answers sampled under different
    `top_p` never share an entry.
    """
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        return float(temperature)
    return PROVIDER_DEFAULT_TEMPERATURE


async def _decide(request: CacheRequest) -> CacheState:
    caller = request.caller
    if caller is None or not request.requested_model:
        return _bypass_state(request, "anonymous")
    model_class = request.requested_model
    try:
        policy = await cache_policy_for(org_id=caller.org_id, model_class=model_class)
    except Exception as exc:  # noqa: BLE001 - no policy, no cache; the request goes on
        logger.warning("cache: policy unavailable for org %s: %s", caller.org_id, exc)
        return _bypass_state(request, "policy_unavailable")
    key = request_key(org_id=caller.org_id, model_class=model_class, messages=request.messages, body=request.body)
    tools = uses_tools(request.body, request.messages)
    reason = ""
    if not policy.enabled:
        reason = "disabled"
    elif not policy.allow_high_temperature and sampling_temperature(request.body) > policy.max_temperature:
        reason = "temperature"  # a sampled answer is one of many; replaying it changes what the client asked for
    elif tools and not policy.allow_tools:
        reason = "tools"
    max_ttl = conf().cache_max_ttl_s
    ttl_s, max_age_s = min(policy.ttl_s, max_ttl), None
    if request.max_age_s is not None:
        # Cache-Control max-age: the answer may be at most this old, and a stored answer lives at most this long.
        # A client may shorten its org's TTL, never lengthen it: the org's policy is the ceiling.
        max_age_s = max(0, int(request.max_age_s))
        ttl_s = min(max_age_s, ttl_s)
    allowed = not reason
    return CacheState(
        request=request,
        org_id=caller.org_id,
        model_class=model_class,
        policy=policy,
        key=key,
        lookup=allowed and not request.no_cache and max_age_s != 0,
        store=allowed and not request.no_store and ttl_s > 0,
        # Tool calls are matched exactly or not at all: a paraphrase may need a different call.
        semantic=allowed
        and policy.semantic_enabled
        and key.prompt_text is not None
        and len(key.prompt_text) <= min(GUARD_MAX_CHARS, policy.semantic_max_chars or conf().cache_semantic_max_chars)
        and not tools,
        ttl_s=ttl_s,
        max_age_s=max_age_s,
        reason=reason or ("no-cache" if request.no_cache else ""),
    )


# --- stage 4: exact -----------------------------------------------------------------------------


async def cache_lookup_exact(*, state: CacheState, price_for: PriceFor | None = None) -> CacheLookup:
    global _redis_down_until
    started = time.perf_counter()
    if not state.lookup or state.key is None or state.org_id is None:
        metrics.CACHE_LOOKUPS.labels(tier="exact", outcome="bypass").inc()
        return _looked_up(state, "bypass")
    if time.monotonic() < _redis_down_until:
        state.redis_down = True
        metrics.CACHE_LOOKUPS.labels(tier="exact", outcome="bypass").inc()
        return _looked_up(state, "bypass")
    try:
        if state.semantic:  # the static index's versions come in the same round trip (apps.cache.static_index)
            raw, generation, epoch = await get_redis().mget(
                exact_key(state.org_id, state.key.exact), generation_key(state.org_id), epoch_key(state.org_id)
            )
            state.versions = Versions.parse(generation, epoch)
        else:
            raw = await get_redis().get(exact_key(state.org_id, state.key.exact))
    except (RedisError, OSError, TimeoutError) as exc:
        _redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_S
        state.redis_down = True
        metrics.CACHE_LOOKUPS.labels(tier="exact", outcome="bypass").inc()
        logger.warning("cache: Redis unavailable, exact tier bypassed: %s", exc)
        return _looked_up(state, "bypass")
    entry = _parse_entry(raw, org_id=state.org_id)
    if entry is None or not _young_enough(entry.get("t"), state.max_age_s):
        metrics.CACHE_LOOKUPS.labels(tier="exact", outcome="miss").inc()
        metrics.CACHE_LOOKUP_SECONDS.labels(tier="exact").observe(time.perf_counter() - started)
        return _looked_up(state, "miss")
    # A promoted paraphrase ("p") carries the usage of the prompt it paraphrased: price this prompt instead.
    hit = await _serve(
        state, entry["r"], answer_model=entry.get("m") or "", tier="exact", similarity=1.0,
        own_prompt=bool(entry.get("p")), price_for=price_for,
    )  # fmt: skip
    metrics.CACHE_LOOKUPS.labels(tier="exact", outcome="hit").inc()
    metrics.CACHE_LOOKUP_SECONDS.labels(tier="exact").observe(time.perf_counter() - started)
    return _looked_up(state, "exact", hit)


def _looked_up(state: CacheState, status: str, hit: CacheHit | None = None) -> CacheLookup:
    state.status = status
    return CacheLookup(status=status, hit=hit)


def _parse_entry(raw: bytes | str | None, *, org_id: int | None) -> dict[str, Any] | None:
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


async def cache_lookup_semantic(*, state: CacheState, price_for: PriceFor | None = None) -> CacheLookup:
    """The semantic tier, after an exact miss. A bypassed exact tier (Redis down) stays "bypass" on a semantic miss."""
    started = time.perf_counter()
    miss = "bypass" if state.status == "bypass" else "miss"
    try:
        if state.status == "exact":
            return CacheLookup(status="exact")
        if (
            not state.lookup
            or not state.semantic
            or state.key is None
            or state.key.prompt_text is None
            or state.org_id is None
            or state.policy is None
            or db_suspect()  # the database held for down (finops.asyncdb): the tier is skipped, not waited on
        ):
            metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="bypass").inc()
            return CacheLookup(status=state.status if state.status != "none" else "bypass")
        text = state.key.prompt_text
        state.semantic_looked_up = True
        # Stage 1: the static embedding finds the entries that could be paraphrases (microseconds, any length).
        state.static_vector, confirmable = static_vector(text)
        if state.static_vector is None or not confirmable:
            state.semantic = False  # nothing to store either: no later lookup could confirm it
            metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="bypass").inc()
            return CacheLookup(status=state.status)
        not_before = None
        if state.max_age_s is not None:
            not_before = clock.now() - dt.timedelta(seconds=state.max_age_s)
        near = await _stage1(state, not_before)
        if near:
            state.signature = guard_signature(text)
            near = guard_survivors(near, state.signature)
        if not near or state.signature is None:  # the signature is set whenever a candidate survived
            metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="miss").inc()
            return _looked_up(state, miss)
        # Stage 2, only for a probable hit: the full model, at the org's threshold, and the guard as before.
        metrics.CACHE_SEMANTIC_CONFIRMS.inc()
        state.vector, _ = await embed_prompt_cpu(text, caller=_embedding_caller(state.request))
        if state.vector is None:
            metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="bypass").inc()
            return CacheLookup(status=state.status)
        candidates = await confirmed_candidates(org_id=state.org_id, ids=[c.id for c in near], vector=state.vector)
        decision = choose_hit(
            [(c.similarity, Signature.from_json(c.guard)) for c in candidates],
            state.signature,
            threshold=state.policy.threshold,
        )
        for reason in decision.rejections:
            metrics.CACHE_GUARD_REJECTIONS.labels(reason=reason).inc()
        if decision.index is None:
            metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="miss").inc()
            return _looked_up(state, miss)
        candidate = candidates[decision.index]
        await semantic_entry_hit(entry_id=candidate.id)
        await _promote_to_exact(state, candidate.response, candidate.answer_model, candidate.expires_at)
        hit = await _serve(
            state, candidate.response, answer_model=candidate.answer_model, tier="semantic",
            similarity=round(candidate.similarity, 6), price_for=price_for,
        )  # fmt: skip
        metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="hit").inc()
        return _looked_up(state, "semantic", hit)
    except Exception:  # noqa: BLE001 - the semantic tier is an optimisation, never an outage
        logger.exception("cache: semantic lookup failed")
        metrics.CACHE_LOOKUPS.labels(tier="semantic", outcome="error").inc()
        return _looked_up(state, miss)
    finally:
        metrics.CACHE_LOOKUP_SECONDS.labels(tier="semantic").observe(time.perf_counter() - started)


async def _stage1(state: CacheState, not_before: dt.datetime | None) -> list[StaticCandidate]:
    """The cached prompts that could be paraphrases: from this process's static index, or from pgvector when the
    index cannot answer (no copy of the org yet, Redis unknown, the org over the index's cap)."""
    assert state.key is not None and state.org_id is not None and state.static_vector is not None
    k, min_similarity = conf().cache_semantic_top_k, conf().cache_semantic_static_threshold
    near = await static_index().candidates(
        org_id=state.org_id,
        scope=(state.model_class, state.key.context_hash, state.key.params_hash),
        vector=state.static_vector,
        k=k,
        min_similarity=min_similarity,
        not_before=not_before.timestamp() if not_before is not None else 0.0,
        versions=state.versions,
    )
    if near is not None:
        metrics.CACHE_STATIC_STAGE.labels(source="process").inc()
        return near
    metrics.CACHE_STATIC_STAGE.labels(source="postgres").inc()
    return await static_candidates(
        org_id=state.org_id,
        model_class=state.model_class,
        context_hash=state.key.context_hash,
        params_hash=state.key.params_hash,
        vector=state.static_vector,
        k=k,
        min_similarity=min_similarity,
        not_before=not_before,
    )


def _embedding_caller(request: CacheRequest) -> EmbeddingCaller:
    """Whom a remote embedding is billed to: this request's caller, on its own ledger row."""
    return EmbeddingCaller(caller=request.caller, request_id=request.request_id, prompt_hash=request.prompt_hash)


async def _promote_to_exact(state: CacheState, response: dict[str, Any], answer_model: str, expires_at: dt.datetime) -> None:
    """A paraphrase that hit once is stored under its own exact key, so its repeats skip the embedding."""
    if not state.store or state.redis_down or state.key is None or state.org_id is None or time.monotonic() < _redis_down_until:
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


PriceFor = Callable[[str, dt.date], Price | None]


async def _serve(
    state: CacheState,
    response: dict[str, Any],
    *,
    answer_model: str,
    tier: str,
    similarity: float,
    own_prompt: bool = False,
    price_for: PriceFor | None = None,
) -> CacheHit:
    request = state.request
    answer_model = answer_model or response.get("model") or request.requested_model
    saved, price = await _saved_usd(
        request, response, answer_model, own_prompt=own_prompt or tier == "semantic", price_for=price_for
    )
    metrics.CACHE_SAVED_USD.labels(tier=tier).inc(float(saved))
    # `response` was parsed from Redis/Postgres for this request alone: no other request shares it, no copy needed.
    served = response
    served["id"] = f"chatcmpl-{request.request_id.hex}"
    served["created"] = int(time.time())
    state.served = served
    return CacheHit(response=served, tier=tier, similarity=similarity, saved_usd=saved, answer_model=answer_model, price=price)


async def _saved_usd(
    request: CacheRequest, response: dict[str, Any], answer_model: str, *, own_prompt: bool, price_for: PriceFor | None
) -> tuple[Decimal, Price | None]:
    """The upstream call avoided: the cached answer's completion tokens, and the prompt tokens of the
    cached call (exact: the same prompt) or of this prompt (a paraphrase has its own length)."""
    usage = response.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if not isinstance(prompt, int) or (own_prompt and request.prompt_tokens_estimate > 0):
        prompt = request.prompt_tokens_estimate
    if not isinstance(completion, int):
        completion = sum(count_tokens(message_text((c.get("message") or {}).get("content"))) for c in response.get("choices", []))
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    cached = min(cached, prompt) if isinstance(cached, int) and cached > 0 else 0
    today = clock.today()
    price = price_for(answer_model, today) if price_for is not None else await price_in_force_async(model=answer_model, on=today)
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


async def cache_store(*, state: CacheState, response: dict[str, Any], answer_model: str, refusal: str = "") -> None:
    """Store a served answer in both tiers (never raises). Hits are not stored again, and neither is an answer the
    caller says does not match its key (`refusal`: degraded, downgraded, fallback)."""
    global _redis_down_until
    try:
        if state.status in ("exact", "semantic") or not state.store or state.key is None or state.org_id is None:
            return
        if refusal or not _complete(response):
            metrics.CACHE_STORES.labels(tier="exact", outcome="skipped").inc()
            return
        answer_model = str(response.get("model") or answer_model or state.request.requested_model)
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
        if state.semantic and state.key.prompt_text is not None and not db_suspect():
            await _store_semantic(state, response, answer_model)
    except Exception:  # noqa: BLE001 - storing must never fail the request
        logger.exception("cache: store failed")
        metrics.CACHE_STORES.labels(tier="semantic", outcome="error").inc()


async def _store_semantic(state: CacheState, response: dict[str, Any], answer_model: str) -> None:
    """After the response: the entry gets both vectors. The full model runs here only within the store budget
    (apps.cache.semantic); a busier process sheds the entry (the exact tier has it)."""
    if state.key is None or state.key.prompt_text is None or state.org_id is None:
        return  # cache_store stores a keyed, semantic-eligible request only
    text = state.key.prompt_text
    if state.static_vector is None:
        if state.semantic_looked_up:  # the lookup found the prompt unconfirmable (too long, or still loading)
            metrics.CACHE_STORES.labels(tier="semantic", outcome="skipped").inc()
            return
        state.static_vector, confirmable = static_vector(text)
        if state.static_vector is None or not confirmable:
            metrics.CACHE_STORES.labels(tier="semantic", outcome="skipped").inc()
            return
    if state.vector is None:
        if not store_budget.allows() or background_pending() >= conf().cache_semantic_store_queue:
            metrics.CACHE_STORES.labels(tier="semantic", outcome="shed").inc()
            return
        state.vector, spent = await embed_prompt_cpu(text, caller=_embedding_caller(state.request), background=True)
        store_budget.spend(spent)
    if state.vector is None:
        metrics.CACHE_STORES.labels(tier="semantic", outcome="skipped").inc()
        return
    signature = state.signature or guard_signature(text)
    caller = state.request.caller
    store_text = bool(caller and caller.store_prompts)
    await semantic_entry_store(
        org_id=state.org_id,
        model_class=state.model_class,
        context_hash=state.key.context_hash,
        params_hash=state.key.params_hash,
        prompt_hash=state.key.prompt_hash,
        vector=state.vector,
        static_vector=state.static_vector,
        prompt_text=text if store_text else None,
        guard=signature.as_json(),
        response=response,
        answer_model=answer_model,
        ttl_s=state.ttl_s,
        publish=not state.redis_down and time.monotonic() >= _redis_down_until,
    )
    metrics.CACHE_STORES.labels(tier="semantic", outcome="stored").inc()


def redis_breaker_reset() -> None:
    """Forget a recorded Redis outage (tests, or an operator who knows Redis is back)."""
    global _redis_down_until
    _redis_down_until = 0.0
