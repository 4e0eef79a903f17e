"""The gateway hot path: one chat request through the numbered stages of docs/architecture.md, "One request, end to end".

Read `chat()` top to bottom: each stage is a small async function that fills the `RequestContext`,
and `ctx.ledger_row()` is the `llm_requests` row it becomes. Transports (the lean ASGI app for
`/v1/*` in `apps.gateway.asgi`, the DRF view for `/chat` in `apps.gateway.apis`) do stage 1, send
what `chat()` returns, and then run `finalize()` — settlement, cache store and stage 11 (record)
happen *after* the response has left, off the critical path.

Other apps own their stages' logic and are only called here, per their docstring contracts:
cache (4, 5, store), routing (6, 9, circuit breaker), budgets (7, settle).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings

from apps.budgets.pipeline import budget_reserve, budget_settle
from apps.cache.pipeline import cache_lookup_exact, cache_lookup_semantic, cache_store
from apps.gateway import metrics
from apps.gateway.context import RequestContext, RouteDecision
from apps.gateway.providers import EventStream, UpstreamFailure, upstream_complete, upstream_stream
from apps.gateway.recorder import ledger_intent, ledger_intent_final, ledger_record
from apps.gateway.selectors import Catalog, Upstream, caller_for_secret, catalog_get
from apps.gateway.tokens import count_message_tokens, count_tokens, message_text
from apps.ledger.money import usd_str
from apps.ledger.pricing import Price, cost_compute
from apps.routing.pipeline import circuit_allows, circuit_record, confidence_escalate, route_cheapest, route_select
from apps.tenancy.pipeline import api_key_rate_admit
from finops.errors import (
    AuthenticationFailed,
    BadRequest,
    BudgetExceeded,
    FinopsError,
    ModelNotFound,
    PayloadTooLarge,
    RateLimited,
    UnpricedModel,
    UpstreamError,
    UpstreamTimeout,
)

logger = logging.getLogger(__name__)

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MOCK_HEADER_PREFIX = "x-mock-"


class InternalError(FinopsError):
    status = 500
    type = "server_error"
    code = "internal_error"


class ServiceUnavailable(FinopsError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class UpstreamRateLimited(RateLimited):
    code = "upstream_rate_limited"


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


# --- 1. receive ----------------------------------------------------------------------------------


def stage1_receive(endpoint: str, headers: dict[str, str]) -> RequestContext:
    """Request id and clock (the context's defaults), lower-cased headers, Cache-Control."""
    ctx = RequestContext(endpoint=endpoint, headers=headers)
    cache_control = headers.get("cache-control", "")
    if cache_control:
        for directive in cache_control.lower().split(","):
            name, _, value = directive.strip().partition("=")
            if name == "no-cache":
                ctx.cache_no_cache = True
            elif name == "no-store":
                ctx.cache_no_store = True
            elif name in ("max-age", "s-maxage") and value.isdigit():
                ctx.cache_ttl_s = int(value)
    return ctx


# --- the pipeline ----------------------------------------------------------------------------------


async def chat(
    ctx: RequestContext, *, authorization: str | None, body: bytes | dict[str, Any] | None, rejection: FinopsError | None = None
) -> Reply:
    """Stages 2-10 and 12. `rejection` is a transport-level 4xx (body too large, serializer errors),
    raised at stage 3 so that the row still names the caller."""
    try:
        await stage2_authenticate(ctx, authorization)
        await api_key_rate_admit(ctx)  # 2b. the key's requests per minute (chat only: /v1/models is not counted)
        catalog = await catalog_get()
        stage3_validate(ctx, catalog, body, rejection)
        hit = await stage4_exact_cache(ctx)
        if hit is None:
            hit = await stage5_semantic_cache(ctx)
        if hit is not None:
            return stage12_respond_cached(ctx, hit)
        await stage6_route(ctx)
        await stage7_budget(ctx, catalog)
        if ctx.stream:
            return await stage8_upstream_stream(ctx, catalog)
        response, position = await stage8_upstream(ctx, catalog, ctx.route.chain)
        response = await stage9_confidence(ctx, catalog, response, position)
        stage10_cost(ctx, catalog, response)
        return stage12_respond(ctx, response)
    except FinopsError as exc:
        return reply_error(ctx, exc)
    except Exception:
        logger.exception("request %s failed inside the gateway", ctx.request_id)
        return reply_error(ctx, InternalError("The gateway failed to handle this request; it has been logged."))


# --- 2. authenticate -------------------------------------------------------------------------------


async def stage2_authenticate(ctx: RequestContext, authorization: str | None) -> None:
    scheme, _, secret = (authorization or "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise AuthenticationFailed(
            "Missing API key: send 'Authorization: Bearer <your finops key>'.", headers={"WWW-Authenticate": "Bearer"}
        )
    try:
        caller, revoked = await caller_for_secret(secret)
    except Exception as exc:
        logger.warning("API key lookup failed: %s", exc)
        raise ServiceUnavailable("The key store is unavailable; retry shortly.", headers={"Retry-After": "1"}) from exc
    if caller is None:
        raise AuthenticationFailed("Incorrect API key provided.", headers={"WWW-Authenticate": "Bearer"})
    ctx.caller = caller  # also when revoked: the refused request lands on the org's ledger
    if revoked:
        raise AuthenticationFailed(
            "This API key has been revoked.", code="api_key_revoked", headers={"WWW-Authenticate": "Bearer"}
        )


# --- 3. validate ------------------------------------------------------------------------------------


def stage3_validate(
    ctx: RequestContext, catalog: Catalog, body: bytes | dict[str, Any] | None, rejection: FinopsError | None
) -> None:
    ctx.extra["catalog"] = catalog
    if isinstance(body, dict):
        data = body
    else:
        try:
            data = orjson.loads(body or b"")
        except orjson.JSONDecodeError as exc:
            if rejection is None:
                raise BadRequest(f"We could not parse the JSON body of your request: {exc}", code="invalid_json") from exc
            data = {}
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    model = data.get("model")
    if isinstance(model, str):
        ctx.requested_model = model
    ctx.stream = data.get("stream") is True
    if rejection is not None:
        raise rejection

    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", param="model", code="missing_model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array of message objects.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"messages[{i}] must be an object with a role in {sorted(ROLES)}.", param=f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise BadRequest(
                f"messages[{i}].content must be a string or an array of content parts.", param=f"messages[{i}].content"
            )
    stream = data.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean.", param="stream")
    stream_options = data.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise BadRequest("'stream_options' must be an object.", param="stream_options")
    ctx.include_usage = bool(stream_options and stream_options.get("include_usage") is True)
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = data.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise BadRequest(f"'{name}' must be a positive integer.", param=name)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = data.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise BadRequest(f"'{name}' must be a number.", param=name)
    ctx.max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    ctx.body = data
    ctx.messages = messages

    if not catalog.is_known(model):
        raise ModelNotFound(f"The model '{model[:128]}' does not exist or you do not have access to it.", param="model")
    ctx.prompt_tokens_estimate = count_message_tokens(messages)
    limit = settings.FINOPS["GATEWAY_MAX_PROMPT_TOKENS"]
    if ctx.prompt_tokens_estimate > limit:
        raise PayloadTooLarge(
            f"This prompt has about {ctx.prompt_tokens_estimate} tokens; this gateway accepts at most {limit}.", param="messages"
        )
    canonical = orjson.dumps([[m.get("role"), message_text(m.get("content"))] for m in messages])
    ctx.prompt_hash = hashlib.sha256(canonical).hexdigest()
    ctx.extra["mock_headers"] = {k: v for k, v in ctx.headers.items() if k.startswith(MOCK_HEADER_PREFIX)}


# --- 4-5. cache ------------------------------------------------------------------------------------


async def stage4_exact_cache(ctx: RequestContext) -> dict[str, Any] | None:
    try:
        return await cache_lookup_exact(ctx)
    except Exception:  # the cache is an optimisation: its failure never fails a request
        logger.exception("exact cache lookup failed")
        ctx.cache_status = "bypass"
        return None


async def stage5_semantic_cache(ctx: RequestContext) -> dict[str, Any] | None:
    try:
        return await cache_lookup_semantic(ctx)
    except Exception:
        logger.exception("semantic cache lookup failed")
        ctx.cache_status = "bypass"
        return None


# --- 6. route ----------------------------------------------------------------------------------------


async def stage6_route(ctx: RequestContext) -> None:
    ctx.route = _with_chain(await route_select(ctx))


def _with_chain(route: RouteDecision) -> RouteDecision:
    if not route.chain:
        route.chain = [(route.tier, route.model)]
    return route


# --- 7. budget ---------------------------------------------------------------------------------------


async def stage7_budget(ctx: RequestContext, catalog: Catalog) -> None:
    """Estimate (price in force × prompt estimate and max_tokens), then reserve it."""
    ctx.estimated_cost_usd = _estimate(ctx, catalog)
    try:
        await budget_reserve(ctx)
    except BudgetExceeded:
        if ctx.budget_state in ("none", "ok"):
            ctx.budget_state = "blocked"
        raise
    except FinopsError:
        raise
    except Exception as exc:  # fail closed, loudly: a broken budget check must not turn into free spend
        logger.exception("budget reservation failed")
        raise ServiceUnavailable("Budgets could not be checked; retry shortly.", code="budget_unavailable") from exc
    ctx.extra["reserved"] = True
    if ctx.extra.get("downgrade"):
        ctx.route = _with_chain(await route_cheapest(ctx))


def _estimate(ctx: RequestContext, catalog: Catalog) -> Decimal:
    model = ctx.route.model
    price = catalog.price_for(model, ctx.received_at.date())
    if price is None:
        raise UnpricedModel(f"Model '{model}' has no price in force; an administrator must add a ModelPrice row.", param="model")
    completion = ctx.max_tokens or settings.FINOPS["GATEWAY_DEFAULT_MAX_TOKENS"]
    return cost_compute(price=price, prompt_tokens=ctx.prompt_tokens_estimate, completion_tokens=completion)


# --- 8. upstream ------------------------------------------------------------------------------------


class _Retry(Exception):
    """This attempt failed in a way the next model of the chain may not: move on."""

    def __init__(self, reason: str, error: FinopsError, *, unhealthy: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.unhealthy = unhealthy


def _upstream_body(ctx: RequestContext, model: str, *, stream: bool) -> dict[str, Any]:
    body = dict(ctx.body)
    body["model"] = model
    # A budget in fail-open mode may clamp max_tokens; honour whichever name the client used.
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if ctx.max_tokens is not None and body.get(key) != ctx.max_tokens:
        body[key] = ctx.max_tokens
    if stream:
        # Always ask for usage: it is what we bill. The client gets the usage chunk only if it asked.
        body["stream"] = True
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


async def _attempt(ctx: RequestContext, upstream: Upstream, model: str, *, stream: bool):
    """One upstream call: the completion dict, or (stream, first event). Raises _Retry or FinopsError."""
    headers = ctx.extra["mock_headers"] if upstream.name == "mock" else {}  # fault injection reaches the mock only
    body = orjson.dumps(_upstream_body(ctx, model, stream=stream))
    try:
        if stream:
            return await upstream_stream(upstream, body, headers=headers)
        return await upstream_complete(upstream, body, headers=headers)
    except UpstreamFailure as failure:
        raise _classify(failure, upstream, model) from failure


def _classify(failure: UpstreamFailure, upstream: Upstream, model: str) -> Exception:
    """Which failures move on to the next model of the chain (_Retry), and which are the client's (FinopsError)."""
    name = upstream.name
    if failure.kind == "timeout":
        return _Retry("timeout", UpstreamTimeout(f"{name} did not answer for {model} in time."))
    if failure.kind == "connection":
        return _Retry("connection", UpstreamError(f"Could not reach {name} for {model}: {failure.message}."))
    if failure.kind in ("malformed", "stream"):
        return _Retry(failure.kind, UpstreamError(f"{name} failed for {model}: {failure.message}."))
    status, code, message = failure.status, failure.code, failure.message
    if status == 429:
        return _Retry("rate_limited", UpstreamRateLimited(f"{name} is rate limiting {model}; retry later."))
    if status >= 500 or status == 408:
        return _Retry("server_error", UpstreamError(f"{name} failed for {model} (HTTP {status})."))
    if code == "context_length_exceeded" or "context length" in message.lower() or "maximum context" in message.lower():
        # A bigger model further up the chain may take it; not a sign that this model is unhealthy.
        return _Retry("context_length", PayloadTooLarge(f"The prompt is too long for {model}: {message}"), unhealthy=False)
    if status in (401, 403, 404):
        return _Retry("upstream_config", UpstreamError(f"{name} refused the call for {model} (HTTP {status}); check its key."))
    # Other 4xx: the request itself is wrong, and every model would say so.
    return BadRequest(f"Upstream rejected the request: {message}", code=(code or "upstream_bad_request")[:64])


async def stage8_upstream(ctx: RequestContext, catalog: Catalog, chain: list[tuple[str, str]], *, stream: bool = False):
    """Walk the chain (same tier, then upward): skip open circuits, move on after 429/5xx/timeout/context length.

    Returns (completion, position) — or ((stream, first_event), position) with stream=True.
    """
    day = ctx.received_at.date()
    first_model = chain[0][1]  # an escalation passes its own chain: re-asking higher up is not a fallback
    last_error: FinopsError | None = None
    for position, (tier, model) in enumerate(chain):
        upstream = catalog.upstream_for(model)
        if upstream is None or catalog.price_for(model, day) is None:
            continue  # never serve what we cannot bill
        if not circuit_allows(model):
            metrics.child(metrics.FALLBACKS, model, "circuit_open").inc()
            last_error = last_error or UpstreamError(
                f"{model} is temporarily disabled after repeated upstream failures.", code="circuit_open"
            )
            continue
        ctx.attempts += 1
        ledger_intent(ctx, model=model, tier=tier, provider=upstream.name)  # this process may die mid-call: recorder step 5
        started = time.perf_counter()
        outcome = "ok"
        try:
            result = await _attempt(ctx, upstream, model, stream=stream)
        except _Retry as retry:
            outcome = "timeout" if retry.reason == "timeout" else "error"
            last_error = retry.error
            if retry.unhealthy:
                circuit_record(model, False)
            metrics.child(metrics.FALLBACKS, model, retry.reason).inc()
            continue
        except FinopsError:
            outcome = "error"
            raise
        finally:
            elapsed = time.perf_counter() - started
            ctx.upstream_ms = (ctx.upstream_ms or 0.0) + elapsed * 1000
            metrics.child(metrics.UPSTREAM_SECONDS, upstream.name, model, outcome).observe(elapsed)
        circuit_record(model, True)
        ctx.model, ctx.provider, ctx.tier = model, upstream.name, tier
        if model != first_model:
            ctx.fallback_from = first_model
        return result, position
    if last_error is None:
        last_error = UpstreamError(
            f"No configured upstream serves '{ctx.route.model if ctx.route else ctx.requested_model}'.", code="no_upstream"
        )
    raise last_error


# --- 9. confidence ---------------------------------------------------------------------------------


async def stage9_confidence(ctx: RequestContext, catalog: Catalog, response: dict[str, Any], position: int) -> dict[str, Any]:
    """A low-confidence cheap answer is re-asked one tier up; both answers are billed."""
    try:
        escalate = await confidence_escalate(ctx, response)
    except Exception:
        logger.exception("confidence check failed; serving the first answer")
        return response
    if not escalate:
        return response
    chain = ctx.route.chain
    tier = chain[position][0]
    higher = [entry for entry in chain[position + 1 :] if entry[0] != tier or not tier]
    target = ctx.extra.get("escalate_to")  # the router may name the (tier, model) to re-ask
    if target:
        target = tuple(target)
        higher = [target] + [entry for entry in higher if entry != target]
    if not higher:
        return response
    first_tier = ctx.tier
    _bill(ctx, catalog, response)
    ctx.extra["billed"] = response
    try:
        second, _ = await stage8_upstream(ctx, catalog, higher)
    except FinopsError as exc:
        logger.warning("escalation from %s failed (%s); serving the first answer", ctx.model, exc.message)
        return response
    ctx.escalated = True
    ctx.escalation_cost_usd = ctx.cost_usd
    metrics.child(metrics.ESCALATIONS, first_tier or "-").inc()
    return second


# --- 10. cost ---------------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _bill(ctx: RequestContext, catalog: Catalog, response: dict[str, Any]) -> None:
    """Add one upstream answer's tokens and cost (Decimal, price row in force) to the context."""
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    prompt = _int(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = ctx.prompt_tokens_estimate
    completion = _int(usage.get("completion_tokens"))
    if completion is None:
        completion = sum(
            count_tokens(message_text((c.get("message") or {}).get("content"))) for c in response.get("choices") or []
        )
    details = usage.get("prompt_tokens_details")
    cached = (_int(details.get("cached_tokens")) if isinstance(details, dict) else None) or 0
    _charge(ctx, catalog, prompt=prompt, completion=completion, cached=min(cached, prompt))


def _charge(ctx: RequestContext, catalog: Catalog, *, prompt: int, completion: int, cached: int) -> None:
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
    if ctx.extra.get("billed") is not response:
        _bill(ctx, catalog, response)
    ctx.response_text = _first_content(response)


def _first_content(response: dict[str, Any]) -> str | None:
    choices = response.get("choices") or []
    if choices and isinstance(choices[0], dict):
        return message_text((choices[0].get("message") or {}).get("content"))
    return None


# --- 12. respond ------------------------------------------------------------------------------------


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


def _snapshot_row(ctx: RequestContext) -> dict[str, Any]:
    """The ledger row as of now: the response is about to leave, so overhead is measured here."""
    row = ctx.ledger_row()
    overhead_ms = max(ctx.elapsed_ms() - (ctx.upstream_ms or 0.0), 0.0)
    row["overhead_ms"] = overhead_ms
    metrics.child(metrics.OVERHEAD_SECONDS, ctx.endpoint, ctx.cache_status).observe(overhead_ms / 1000)
    ledger_intent_final(row)
    return row


def stage12_respond(ctx: RequestContext, response: dict[str, Any]) -> Reply:
    summary = finops_summary(ctx)
    usage = response.get("usage")
    response["usage"] = {**usage, "finops": summary} if isinstance(usage, dict) else {"finops": summary}
    response["finops"] = summary
    reply = Reply(ctx=ctx, status=200, headers=finops_headers(ctx), payload=response, response=response)
    reply.row = _snapshot_row(ctx)
    return reply


def stage12_respond_cached(ctx: RequestContext, hit: dict[str, Any]) -> Reply:
    ctx.status = "cached"
    ctx.model = str(hit.get("model", "")) if ctx.extra["catalog"].is_router_name(ctx.requested_model) else ctx.requested_model
    ctx.response_text = _first_content(hit)
    if ctx.stream:
        reply = Reply(ctx=ctx, status=200, headers=finops_headers(ctx, with_cost=False), stream=CachedStream(ctx, hit))
        return reply
    return stage12_respond(ctx, dict(hit))


def reply_error(ctx: RequestContext, exc: FinopsError) -> Reply:
    ctx.http_status = exc.status
    ctx.error_code = exc.code
    ctx.status = "rejected" if exc.status < 500 else "failed"
    headers = {**finops_headers(ctx), **{k.lower(): str(v) for k, v in exc.headers.items()}}
    reply = Reply(ctx=ctx, status=exc.status, headers=headers, payload=exc.as_json())
    reply.row = _snapshot_row(ctx)
    return reply


async def stage8_upstream_stream(ctx: RequestContext, catalog: Catalog) -> Reply:
    (events, first), _ = await stage8_upstream(ctx, catalog, ctx.route.chain, stream=True)
    stream = ChatStream(ctx, catalog, events, first)
    return Reply(ctx=ctx, status=200, headers=finops_headers(ctx, with_cost=False), stream=stream)


# --- after the response: settle, cache, 11. record ----------------------------------------------------


async def finalize(reply: Reply) -> None:
    """Runs after the response was sent. Never raises; the row is durable when it returns."""
    ctx = reply.ctx
    if ctx.extra.get("reserved"):
        try:
            await budget_settle(ctx)
        except Exception:
            logger.exception("budget settlement failed for %s", ctx.request_id)
    if reply.response is not None and ctx.status == "served":
        try:
            await cache_store(ctx, reply.response)
        except Exception:
            logger.exception("cache store failed for %s", ctx.request_id)
    metrics.child(metrics.REQUESTS, ctx.endpoint, ctx.status, ctx.cache_status).inc()
    if ctx.saved_usd:
        metrics.child(metrics.SAVED, ctx.cache_status).inc(float(ctx.saved_usd))
    await stage11_record(reply.row if reply.row is not None else _snapshot_row(ctx))


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


# --- streams -------------------------------------------------------------------------------------------


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


class ChatStream:
    """An upstream SSE stream relayed to the client, billed from the upstream's final usage chunk.

    The finish_reason chunk is held back until the usage chunk arrives, so that the client's final chunk
    carries the `finops` figures even when it did not ask for usage. If the client leaves, `finish(disconnected=True)`
    closes the upstream and bills what was streamed: the prompt estimate plus the tokens of the text sent so far.
    """

    def __init__(self, ctx: RequestContext, catalog: Catalog, events: EventStream, first: Any):
        self.ctx = ctx
        self.catalog = catalog
        self.events = events
        self.first = first
        self.parts: dict[int, list[str]] = {}
        self.roles: dict[int, str] = {}
        self.finish_reasons: dict[int, str] = {}
        self.template: dict[str, Any] = {}
        self.pending_finish: dict[str, Any] | None = None
        self.billed = False
        self.failed: str | None = None
        self.done = False
        self.finished = False
        self.first_sent_at: float | None = None
        self.journal_at = 0.0

    async def chunks(self) -> AsyncIterator[bytes]:
        event = self.first
        try:
            while True:
                if isinstance(event, dict):
                    for chunk in self._relay(event):
                        yield chunk
                        if self.first_sent_at is None:
                            self.first_sent_at = time.perf_counter()
                    if self.first_sent_at is not None and not self.billed and time.perf_counter() >= self.journal_at:
                        self._journal()
                try:
                    event = await self.events.__anext__()
                except StopAsyncIteration:
                    break
        except UpstreamFailure as exc:
            self.failed = "upstream_stream_error"
            logger.warning("upstream stream for %s broke: %s", self.ctx.request_id, exc)
            yield sse({"error": {"message": "The upstream stream broke before the answer was complete.", "type": "upstream_error",
                                  "param": None, "code": "upstream_stream_error"}})  # fmt: skip
            return
        if not self.finish_reasons:
            self.failed = "upstream_truncated"
            yield sse({"error": {"message": "The upstream ended the stream before the answer was complete.", "type": "upstream_error",
                                  "param": None, "code": "upstream_truncated"}})  # fmt: skip
            return
        if not self.billed:  # an upstream that ignores include_usage: bill from our own count
            self._bill_streamed()
        if self.pending_finish is not None:
            yield sse(self._with_summary(self.pending_finish))
            self.pending_finish = None
        self.done = True
        yield SSE_DONE

    def _relay(self, event: dict[str, Any]) -> list[bytes]:
        if not self.template:
            self.template = {k: event.get(k) for k in ("id", "object", "created", "model", "system_fingerprint") if k in event}
        choices = event.get("choices") or []
        finishing = False
        for choice in choices:
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            if delta.get("role"):
                self.roles[index] = delta["role"]
            if isinstance(delta.get("content"), str) and delta["content"]:
                self.parts.setdefault(index, []).append(delta["content"])
            if choice.get("finish_reason"):
                self.finish_reasons[index] = choice["finish_reason"]
                finishing = True
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.ctx.extra["upstream_usage"] = usage
            _bill(self.ctx, self.catalog, {"usage": usage, "choices": []})
            self.billed = True
            out = []
            if self.pending_finish is not None:
                out.append(
                    sse(
                        self._with_summary(self.pending_finish)
                        if not self.ctx.include_usage
                        else self._client_view(self.pending_finish)
                    )
                )
                self.pending_finish = None
            if choices:
                out.append(sse(self._with_summary(event)))
            elif self.ctx.include_usage:
                out.append(sse(self._with_summary(event)))
            return out
        if finishing:
            self.pending_finish = event
            return []
        return [sse(self._client_view(event))]

    def _journal(self) -> None:
        """Refresh this request's intent with the tokens streamed so far, at most once a second (recorder step 5)."""
        self.journal_at = time.perf_counter() + 1.0
        if settings.FINOPS["LEDGER_INTENTS"]:
            streamed = sum(count_tokens("".join(parts)) for parts in self.parts.values())
            ctx = self.ctx
            ledger_intent(ctx, model=ctx.model, tier=ctx.tier, provider=ctx.provider, completion_tokens=streamed, http_status=200)

    def _client_view(self, event: dict[str, Any]) -> dict[str, Any]:
        if not self.ctx.include_usage and "usage" in event:
            event = {k: v for k, v in event.items() if k != "usage"}
        return event

    def _with_summary(self, event: dict[str, Any]) -> dict[str, Any]:
        summary = finops_summary(self.ctx)
        event = dict(event)
        usage = event.get("usage")
        if self.ctx.include_usage and isinstance(usage, dict):
            event["usage"] = {**usage, "finops": summary}
        else:
            event.pop("usage", None)
        event["finops"] = summary
        return event

    def _streamed_text(self) -> str:
        return "".join(self.parts.get(0, []))

    def _bill_streamed(self) -> None:
        completion = sum(count_tokens("".join(parts)) for parts in self.parts.values())
        _charge(self.ctx, self.catalog, prompt=self.ctx.prompt_tokens_estimate, completion=completion, cached=0)
        self.billed = True

    def completion(self) -> dict[str, Any]:
        """The stream reassembled as a chat.completion, for the cache."""
        usage = self.ctx.extra.get("upstream_usage") or {}
        return {
            **{k: v for k, v in self.template.items() if k != "object"},
            "object": "chat.completion",
            "choices": [
                {
                    "index": index,
                    "message": {"role": self.roles.get(index, "assistant"), "content": "".join(self.parts.get(index, []))},
                    "finish_reason": reason,
                    "logprobs": None,
                }
                for index, reason in sorted(self.finish_reasons.items())
            ],
            "usage": {k: v for k, v in usage.items() if k != "finops"},
        }

    async def finish(self, *, disconnected: bool) -> None:
        """Close the upstream, bill, settle, cache and record. Called once by the transport, whatever happened."""
        if self.finished:
            return
        self.finished = True
        ctx = self.ctx
        try:
            await self.events.close()
        except Exception:
            pass
        if not self.billed:
            self._bill_streamed()
        ctx.response_text = self._streamed_text()
        if disconnected and not self.done:
            ctx.status = "disconnected"
        elif self.failed:
            ctx.status, ctx.error_code = "failed", self.failed
        reply = Reply(ctx=ctx, status=200, headers={})
        if ctx.status == "served":
            reply.response = self.completion()
        row = ctx.ledger_row()
        first_chunk_ms = ((self.first_sent_at or time.perf_counter()) - ctx.started) * 1000
        row["overhead_ms"] = max(first_chunk_ms - (ctx.upstream_ms or 0.0), 0.0)
        metrics.child(metrics.OVERHEAD_SECONDS, ctx.endpoint, ctx.cache_status).observe(row["overhead_ms"] / 1000)
        ledger_intent_final(row)
        reply.row = row
        await finalize(reply)


class CachedStream:
    """A cache hit replayed as SSE chunks, for a client that asked to stream."""

    def __init__(self, ctx: RequestContext, hit: dict[str, Any]):
        self.ctx = ctx
        self.hit = hit

    async def chunks(self) -> AsyncIterator[bytes]:
        base = {k: self.hit.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        base["object"] = "chat.completion.chunk"
        choices = self.hit.get("choices") or []
        for choice in choices:
            message = choice.get("message") or {}
            delta = {"role": message.get("role", "assistant"), "content": message_text(message.get("content"))}
            yield sse(
                {**base, "choices": [{"index": choice.get("index", 0), "delta": delta, "logprobs": None, "finish_reason": None}]}
            )
        summary = finops_summary(self.ctx)
        finish = {
            **base,
            "choices": [
                {"index": c.get("index", 0), "delta": {}, "logprobs": None, "finish_reason": c.get("finish_reason", "stop")}
                for c in choices
            ],
        }
        if self.ctx.include_usage:
            yield sse(finish)
            usage = self.hit.get("usage") if isinstance(self.hit.get("usage"), dict) else {}
            yield sse({**base, "choices": [], "usage": {**usage, "finops": summary}, "finops": summary})
        else:
            yield sse({**finish, "finops": summary})
        yield SSE_DONE

    async def finish(self, *, disconnected: bool) -> None:
        reply = Reply(ctx=self.ctx, status=200, headers={})
        await finalize(reply)
