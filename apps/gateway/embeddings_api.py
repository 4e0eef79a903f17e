"""POST /v1/embeddings: OpenAI's wire format, through the same stages as a chat request.

2 authenticate (and the key's rate limit), 3 validate (model of kind "embedding", `input` a string, a list of
strings, a token array or a list of token arrays, `encoding_format` float|base64), 4 exact cache (per org,
on the model, the input and the options; embeddings are deterministic, so always cacheable unless the org's
cache is off or the client sends Cache-Control: no-cache/no-store), 7 budget (reserve the input tokens at
the model's input price; an embedding has no output), 8 upstream (`AsyncOpenAI.embeddings` to the provider
that serves the model; the mock in development), 10 cost (the upstream's `usage.prompt_tokens` × input
price), 12 respond with the X-Cost headers, then settle and record one ledger row (endpoint "embeddings").

There is no semantic tier (a near-identical input is not the same vector), no router (a model is named,
and no fallback chain: another model's vectors live in another space).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import orjson
from openai import AsyncOpenAI, DefaultAioHttpClient

from apps.budgets import gate
from apps.cache.selectors import cache_policy_for
from apps.cache.services import exact_entry_store, exact_key
from apps.gateway import metrics, pipeline
from apps.gateway.billing import charge
from apps.gateway.context import RequestContext
from apps.gateway.providers import UpstreamFailure, _failure
from apps.gateway.reply import Reply, finalize, finops_headers, finops_summary, snapshot_row
from apps.gateway.selectors import Catalog, Upstream, catalog_get
from apps.gateway.stages import rate_admit
from apps.gateway.wire import WireReply, as_dict, authorization_of
from apps.ledger.pricing import cost_compute
from apps.routing.decide import circuit_allows, circuit_record
from finops.asyncredis import get_redis
from finops.conf import conf
from finops.errors import (
    BadRequest,
    BudgetDegradedRateLimited,
    BudgetExceeded,
    FinopsError,
    ModelNotFound,
    PayloadTooLarge,
    UnpricedModel,
    UpstreamError,
)
from finops.runtime import runtime
from finops.tokens import count_tokens

logger = logging.getLogger(__name__)

ENCODINGS = ("float", "base64")
MAX_INPUTS = 2048  # OpenAI's limit on the number of inputs of one request


async def embeddings(ctx: RequestContext, headers: dict[str, str], body: bytes, rejection: FinopsError | None) -> WireReply:
    reply = await _embeddings(ctx, authorization_of(headers), body, rejection)
    payload = reply.payload

    async def finish() -> None:
        if ctx.status == "served" and ctx.cache_status == "miss" and payload is not None:
            await _cache_store(ctx, payload)
        await finalize(reply)

    return WireReply(status=reply.status, headers=reply.headers, payload=payload, finish=finish)


async def _embeddings(ctx: RequestContext, authorization: str | None, body: bytes, rejection: FinopsError | None) -> Reply:
    try:
        await pipeline.stage2_authenticate(ctx, authorization)
        await rate_admit(ctx)
        catalog = await catalog_get()
        _validate(ctx, catalog, body, rejection)
        hit = await _cache_lookup(ctx)
        if hit is not None:
            return _respond(ctx, hit)
        upstream = _route(ctx, catalog)
        await _reserve(ctx, catalog)
        response = await _upstream(ctx, upstream)
        _bill(ctx, catalog, response)
        return _respond(ctx, response)
    except FinopsError as exc:
        return pipeline.reply_error(ctx, exc)
    except Exception:
        logger.exception("embeddings request %s failed inside the gateway", ctx.request_id)
        return pipeline.reply_error(ctx, pipeline.InternalError("The gateway failed to handle this request; it has been logged."))


# --- 3. validate -------------------------------------------------------------------------------------


def _input_tokens(raw: Any) -> int | None:
    """Our estimate of the input's tokens; None when `input` is not one of the accepted shapes."""
    if isinstance(raw, str):
        return count_tokens(raw) if raw else None
    if not isinstance(raw, list) or not raw or len(raw) > MAX_INPUTS:
        return None
    if all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in raw):
        return len(raw)  # one token array
    total = 0
    for item in raw:
        if isinstance(item, str) and item:
            total += count_tokens(item)
        elif isinstance(item, list) and item and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in item):
            total += len(item)
        else:
            return None
    return total


def _validate(ctx: RequestContext, catalog: Catalog, body: bytes, rejection: FinopsError | None) -> None:
    ctx.catalog = catalog
    data = pipeline.request_json(ctx, body, rejection)
    model = data.get("model")
    if rejection is not None:
        raise rejection
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", param="model", code="missing_model")
    tokens = _input_tokens(data.get("input"))
    if tokens is None:
        raise BadRequest(
            f"'input' must be a non-empty string, an array of (at most {MAX_INPUTS}) non-empty strings, "
            "a token array, or an array of token arrays.",
            param="input",
        )
    encoding = data.get("encoding_format", "float")
    if encoding not in ENCODINGS:
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    dimensions = data.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise BadRequest("'dimensions' must be a positive integer.", param="dimensions")
    if not catalog.is_known(model):
        raise ModelNotFound(f"The model '{model[:128]}' does not exist or you do not have access to it.", param="model")
    if (kind := catalog.kind_of(model)) != "embedding":
        raise BadRequest(
            f"The model '{model[:128]}' is a {kind} model; use POST /v1/chat/completions, /v1/responses or /v1/messages.",
            param="model",
            code="wrong_model_kind",
        )
    limit = conf().gateway_max_prompt_tokens
    if tokens > limit:
        raise PayloadTooLarge(f"This input has about {tokens} tokens; this gateway accepts at most {limit}.", param="input")
    ctx.prompt_tokens_estimate = tokens
    ctx.body = {"model": model, "input": data["input"], "encoding_format": encoding}
    for name in ("dimensions", "user"):
        if data.get(name) is not None:
            ctx.body[name] = data[name]
    canonical = orjson.dumps(
        [model, data["input"], encoding, dimensions], option=orjson.OPT_SORT_KEYS
    )  # the model and the options: another dimension or encoding is another answer
    ctx.prompt_hash = hashlib.sha256(b"embeddings\x00" + canonical).hexdigest()
    ctx.mock_headers = {k: v for k, v in ctx.headers.items() if k.startswith(pipeline.MOCK_HEADER_PREFIX)}


# --- 4. exact cache ----------------------------------------------------------------------------------


async def _cache_policy_ttl(ctx: RequestContext) -> int:
    """The org's exact-cache TTL for this model, 0 when it may not be cached."""
    if ctx.caller is None:
        return 0
    policy = await cache_policy_for(org_id=ctx.caller.org_id, model_class=ctx.requested_model)
    if not policy.enabled:
        return 0
    ttl = min(policy.ttl_s, conf().cache_max_ttl_s)
    return min(ttl, ctx.cache_ttl_s) if ctx.cache_ttl_s is not None else ttl


async def _cache_lookup(ctx: RequestContext) -> dict[str, Any] | None:
    if ctx.cache_no_cache or ctx.caller is None:
        ctx.cache_status = "bypass"
        return None
    try:
        if await _cache_policy_ttl(ctx) <= 0:
            ctx.cache_status = "bypass"
            return None
        raw = await get_redis().get(exact_key(ctx.caller.org_id, ctx.prompt_hash))
    except Exception as exc:  # the cache is an optimisation: its failure never fails a request
        logger.warning("embeddings cache lookup failed: %s", exc)
        ctx.cache_status = "bypass"
        return None
    entry = orjson.loads(raw) if raw else None
    if not isinstance(entry, dict) or entry.get("o") != ctx.caller.org_id or not isinstance(entry.get("r"), dict):
        ctx.cache_status = "miss"
        return None
    if ctx.cache_ttl_s is not None and time.time() - float(entry.get("t") or 0) > ctx.cache_ttl_s:
        ctx.cache_status = "miss"
        return None
    response: dict[str, Any] = entry["r"]
    ctx.cache_status, ctx.status, ctx.similarity = "exact", "cached", 1.0
    ctx.model = str(entry.get("m") or ctx.requested_model)
    price = ctx.catalog.price_for(ctx.model, ctx.received_at.date()) if ctx.catalog else None
    if price is not None:
        usage = as_dict(response.get("usage"))
        reported = usage.get("prompt_tokens")
        prompt = reported if isinstance(reported, int) and reported >= 0 else ctx.prompt_tokens_estimate
        ctx.saved_usd = cost_compute(price=price, prompt_tokens=prompt, completion_tokens=0)
        ctx.price_id, ctx.provider = price.id, price.provider
    return response


async def _cache_store(ctx: RequestContext, response: dict[str, Any]) -> None:
    if ctx.cache_no_store or ctx.caller is None or ctx.degraded:
        return
    try:
        ttl = await _cache_policy_ttl(ctx)
        if ttl > 0:
            stored = {k: v for k, v in response.items() if k != "finops"}
            stored["usage"] = {k: v for k, v in (stored.get("usage") or {}).items() if k != "finops"}
            await exact_entry_store(
                redis=get_redis(), org_id=ctx.caller.org_id, model_class=ctx.requested_model, digest=ctx.prompt_hash,
                response=stored, answer_model=ctx.model, ttl_s=ttl,
            )  # fmt: skip
    except Exception:
        logger.exception("embeddings cache store failed for %s", ctx.request_id)


# --- 6-7. route and budget -------------------------------------------------------------------------


def _route(ctx: RequestContext, catalog: Catalog) -> Upstream:
    model = ctx.requested_model
    upstream = catalog.upstream_for(model)
    if upstream is None:
        raise UpstreamError(f"No configured upstream serves '{model}'.", code="no_upstream")
    ctx.model, ctx.provider = model, upstream.name
    return upstream


async def _reserve(ctx: RequestContext, catalog: Catalog) -> None:
    price = catalog.price_for(ctx.model, ctx.received_at.date())
    if price is None:
        raise UnpricedModel(
            f"Model '{ctx.model}' has no price in force; an administrator must add a ModelPrice row.", param="model"
        )
    ctx.estimated_cost_usd = cost_compute(price=price, prompt_tokens=ctx.prompt_tokens_estimate, completion_tokens=0)
    try:
        decision = await gate.budget_reserve(caller=ctx.caller, request_id=ctx.request_id, amount_usd=ctx.estimated_cost_usd)
    except BudgetExceeded as exc:
        ctx.budget_state, ctx.budget_remaining_usd = "blocked", exc.remaining_usd
        raise
    except BudgetDegradedRateLimited:
        ctx.budget_state, ctx.degraded = "fail_open", True
        raise
    except FinopsError:
        raise
    except Exception as exc:  # fail closed, loudly: a broken budget check must not turn into free spend
        logger.exception("budget reservation failed")
        raise pipeline.ServiceUnavailable("Budgets could not be checked; retry shortly.", code="budget_unavailable") from exc
    if decision.state == "downgrade":  # nothing cheaper to route an embedding to: the cap holds, as a block
        ctx.budget_state = "blocked"
        assert decision.refusal is not None
        raise gate.budget_exceeded(
            decision.refusal, amount_usd=ctx.estimated_cost_usd, note=" Embeddings are not downgraded to another model."
        )
    ctx.budget_state = decision.state
    ctx.reservation_id = decision.reservation_id
    ctx.reserved_usd = decision.reserved_usd
    ctx.budget_remaining_usd = decision.remaining_usd
    ctx.degraded = decision.state == "fail_open"
    ctx.reserved = True


# --- 8. upstream --------------------------------------------------------------------------------------


async def _close(client: AsyncOpenAI) -> None:
    await client.close()


def _client(upstream: Upstream) -> AsyncOpenAI:
    rt = runtime()
    key = f"embeddings-client:{hash(upstream)}"
    client = rt.get(key)
    if client is None:
        import httpx2

        timeout = httpx2.Timeout(upstream.timeout_s, connect=upstream.connect_timeout_s)
        limits = httpx2.Limits(max_connections=upstream.max_connections, max_keepalive_connections=upstream.max_connections)
        client = AsyncOpenAI(
            base_url=upstream.base_url, api_key=upstream.api_key, max_retries=0, timeout=timeout,
            http_client=DefaultAioHttpClient(timeout=timeout, limits=limits),
        )  # fmt: skip
        rt.put(key, client, close=_close)
    return client


async def _upstream(ctx: RequestContext, upstream: Upstream) -> dict[str, Any]:
    model = ctx.model
    if not circuit_allows(model):
        raise UpstreamError(f"{model} is temporarily disabled after repeated upstream failures.", code="circuit_open")
    ctx.attempts += 1
    pipeline.journal_intent(ctx, model=model, tier="", provider=upstream.name)
    headers = ctx.mock_headers if upstream.name == "mock" else {}
    options = {k: v for k, v in ctx.body.items() if k in ("dimensions", "user")}
    started = time.perf_counter()
    outcome = "ok"
    try:
        raw = await _client(upstream).embeddings.with_raw_response.create(
            model=model, input=ctx.body["input"], encoding_format=ctx.body["encoding_format"], extra_headers=headers or None,
            **options,
        )  # fmt: skip
        data = orjson.loads(raw.content)
    except Exception as exc:
        outcome = "error"
        failure = exc if isinstance(exc, UpstreamFailure) else _failure(exc)
        if failure.kind == "timeout":
            outcome = "timeout"
        error = pipeline._classify(failure, upstream, model)
        if isinstance(error, pipeline._Retry):
            if error.unhealthy:
                circuit_record(model, False)
            raise error.error from exc
        raise error from exc
    finally:
        elapsed = time.perf_counter() - started
        ctx.upstream_ms = (ctx.upstream_ms or 0.0) + elapsed * 1000
        metrics.child(metrics.UPSTREAM_SECONDS, upstream.name, model, outcome).observe(elapsed)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        circuit_record(model, False)
        raise UpstreamError(f"{upstream.name} returned a malformed embeddings answer for {model}.")
    circuit_record(model, True)
    return data


# --- 10, 12. cost and respond --------------------------------------------------------------------------


def _bill(ctx: RequestContext, catalog: Catalog, response: dict[str, Any]) -> None:
    usage = as_dict(response.get("usage"))
    prompt = usage.get("prompt_tokens")
    if not isinstance(prompt, int) or isinstance(prompt, bool) or prompt < 0:
        prompt = ctx.prompt_tokens_estimate  # no usage from the upstream: our own count
    charge(ctx, catalog, prompt=prompt, completion=0, cached=0)


def _respond(ctx: RequestContext, response: dict[str, Any]) -> Reply:
    summary = finops_summary(ctx)
    usage = as_dict(response.get("usage"))
    payload = {
        "object": "list",
        "data": response.get("data") or [],
        "model": response.get("model") or ctx.model,
        "usage": {**usage, "finops": summary},
        "finops": summary,
    }
    reply = Reply(ctx=ctx, status=200, headers=finops_headers(ctx), payload=payload)
    reply.row = snapshot_row(ctx)
    return reply
