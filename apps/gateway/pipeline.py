"""The gateway hot path: one chat request through the numbered stages of docs/architecture.md, "One request, end to end".

Read `chat()` top to bottom: each stage is a small async function that fills the `RequestContext`,
and `ctx.ledger_row()` is the `llm_requests` row it becomes. Transports (the lean ASGI app for
`/v1/*` in `apps.gateway.asgi`, the DRF view for `/chat` in `apps.gateway.apis`) do stage 1, send
what `chat()` returns, and then run `finalize()` — settlement, cache store and stage 11 (record)
happen *after* the response has left, off the critical path.

Other apps own their stages' logic and never see the context: `apps.gateway.stages` calls their typed
functions with values and copies the typed results back — cache (4, 5, store), routing (6, 9, circuit
breaker), budgets (7, settle), tenancy (2, 2b). The rest of the gateway: `billing` (10), `reply` (12, and
what runs after the response: settle, cache store, 11 record), `streams` (SSE relay and replay).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson

from apps.gateway import metrics
from apps.gateway.billing import bill, first_content, stage10_cost
from apps.gateway.context import RequestContext
from apps.gateway.providers import UpstreamFailure, upstream_complete, upstream_stream
from apps.gateway.reply import (  # noqa: F401 - the transports' interface is this module
    Reply,
    deferred_work,
    dumps,
    finalize,
    finalize_after_response,
    finops_headers,
    finops_summary,
    snapshot_row,
)
from apps.gateway.selectors import Catalog, Upstream, catalog_get
from apps.gateway.stages import (
    budget_reserve,
    budget_topup,
    cache_lookup_exact,
    cache_lookup_semantic,
    confidence_escalate,
    estimate,
    rate_admit,
    route_select,
)
from apps.gateway.streams import CachedStream, ChatStream
from apps.ledger.pricing import cost_compute
from apps.ledger.recorder import INTERRUPTED, ledger_intent
from apps.routing.decide import circuit_allows, circuit_record
from apps.tenancy.keys import AuthThrottled, auth_failure_note, caller_for_secret
from finops.conf import conf
from finops.errors import (
    AuthenticationFailed,
    BadRequest,
    FinopsError,
    ModelNotFound,
    PayloadTooLarge,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from finops.runtime import runtime
from finops.tokens import message_text, prompt_token_bound

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


# --- 1. receive ----------------------------------------------------------------------------------


def stage1_receive(endpoint: str, headers: dict[str, str], *, client: str = "") -> RequestContext:
    """Request id and clock (the context's defaults), lower-cased headers, the client's address, Cache-Control."""
    ctx = RequestContext(endpoint=endpoint, headers=headers, client_addr=client)
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
        await rate_admit(ctx)  # 2b. the key's requests per minute (chat only: /v1/models is not counted)
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
        response, position = await stage8_upstream(ctx, catalog, ctx.routed.chain)
        response = await stage9_confidence(ctx, catalog, response, position)
        stage10_cost(ctx, catalog, response)
        return stage12_respond(ctx, response)
    except FinopsError as exc:
        return reply_error(ctx, exc)
    except Exception:
        logger.exception("request %s failed inside the gateway", ctx.request_id)
        return reply_error(ctx, InternalError("The gateway failed to handle this request; it has been logged."))


async def chat_to_the_end(
    ctx: RequestContext, *, authorization: str | None, body: bytes | dict[str, Any] | None, rejection: FinopsError | None = None
) -> Reply:
    """`chat()` for a transport that may be cancelled: Django cancels /chat's view when its client disconnects, and
    CancelledError is not an Exception, so it would skip the settlement and the ledger row. Here the pipeline runs
    in its own task, shielded: if the caller is cancelled, the request still ends — the upstream answer (bounded by
    the upstream timeout) is billed, the reservation settled and the row recorded as `disconnected`, once."""
    task = asyncio.ensure_future(chat(ctx, authorization=authorization, body=body, rejection=rejection))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        _detach(_end_abandoned(task))
        raise


def _abandoned() -> set[asyncio.Future]:
    """This loop's requests whose transport was cancelled, finishing on their own."""
    tasks: set[asyncio.Future] = runtime().get_or_put("gateway.abandoned", set, close=_abandoned_wait)
    return tasks


def _detach(work: Awaitable[Any]) -> None:
    """Run `work` as a task of this loop's finishing set (a strong reference: asyncio keeps only weak ones)."""
    tasks = _abandoned()
    task = asyncio.ensure_future(work)
    tasks.add(task)
    task.add_done_callback(functools.partial(_finished, tasks))


def _finished(tasks: set[asyncio.Future], task: asyncio.Future) -> None:
    tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("an abandoned request failed to finish", exc_info=task.exception())


async def abandoned_drain() -> None:
    """Wait for the requests still finishing after their transport was cancelled: the lifespan shutdown calls it
    before `runtime_close()`, while the settle queue and the ledger writer they need are still open."""
    tasks = runtime().get("gateway.abandoned")
    if tasks:
        await _abandoned_wait(tasks)


async def _abandoned_wait(tasks: set[asyncio.Future]) -> None:
    pending = [t for t in tasks if not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=conf().upstream_timeout_s + 5)


async def _end_abandoned(task: asyncio.Future) -> None:
    reply: Reply = await task  # chat() returns a Reply for every Exception
    if reply.stream is not None:  # a stream nobody will read: read to its usage, bill, settle and record it
        await reply.stream.finish(disconnected=True)
        return
    ctx = reply.ctx
    if ctx.status == "served":
        ctx.status = "disconnected"  # answered and billed, but nobody received it (and it is not cached)
        if reply.row is not None:
            reply.row["status"] = ctx.status
    await finalize(reply)


# --- 2. authenticate -------------------------------------------------------------------------------


async def stage2_authenticate(ctx: RequestContext, authorization: str | None) -> None:
    """Who is asking. Refusals are counted (finops_gateway_auth_failures_total) and only a sample gets a ledger
    row (apps.tenancy.keys.auth_failure_note): a flood of bad keys costs neither a row nor a lookup each."""
    scheme, _, secret = (authorization or "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        ctx.ledger_skip = not auth_failure_note(reason="missing", client=ctx.client_addr)
        raise AuthenticationFailed(
            "Missing API key: send 'Authorization: Bearer <your finops key>'.", headers={"WWW-Authenticate": "Bearer"}
        )
    try:
        caller, revoked = await caller_for_secret(secret, client=ctx.client_addr)
    except AuthThrottled:
        ctx.ledger_skip = not auth_failure_note(reason="throttled", client=ctx.client_addr)
        raise
    except Exception as exc:
        logger.warning("API key lookup failed: %s", exc)
        raise ServiceUnavailable("The key store is unavailable; retry shortly.", headers={"Retry-After": "1"}) from exc
    if caller is None:
        ctx.ledger_skip = not auth_failure_note(reason="unknown", client=ctx.client_addr)
        raise AuthenticationFailed("Incorrect API key provided.", headers={"WWW-Authenticate": "Bearer"})
    ctx.caller = caller  # also when revoked: the refused request lands on the org's ledger (sampled)
    if revoked:
        ctx.ledger_skip = not auth_failure_note(reason="revoked", client=ctx.client_addr, api_key_id=caller.api_key_id)
        raise AuthenticationFailed(
            "This API key has been revoked.", code="api_key_revoked", headers={"WWW-Authenticate": "Bearer"}
        )


# --- 3. validate ------------------------------------------------------------------------------------


def request_json(ctx: RequestContext, body: bytes | dict[str, Any] | None, rejection: FinopsError | None) -> dict[str, Any]:
    """The request's JSON object (400 `invalid_json` otherwise, unless a rejection is already pending, which the
    caller raises), with the model it names noted on the context so that even a refused request's row says it."""
    if isinstance(body, dict):
        data: Any = body
    else:
        try:
            data = orjson.loads(body or b"")
        except orjson.JSONDecodeError as exc:
            if rejection is None:
                raise BadRequest(f"We could not parse the JSON body of your request: {exc}", code="invalid_json") from exc
            data = {}
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    if isinstance(data.get("model"), str):
        ctx.requested_model = data["model"]
    return data


def stage3_validate(
    ctx: RequestContext, catalog: Catalog, body: bytes | dict[str, Any] | None, rejection: FinopsError | None
) -> None:
    ctx.catalog = catalog
    data = request_json(ctx, body, rejection)
    model = data.get("model")
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
    n = data.get("n")
    max_n = conf().gateway_max_n
    if n is not None and n > max_n:
        raise BadRequest(f"'n' must be at most {max_n} on this gateway; got {n}.", param="n")
    ctx.n = n or 1
    # The completion limit: the one reserved is the one sent upstream, under the client's name for it (the smaller
    # when both are sent); with none, the gateway's default, so that the model cannot write past the reservation.
    limits = [(data[name], name) for name in ("max_completion_tokens", "max_tokens") if data.get(name) is not None]
    if limits:
        ctx.max_tokens, ctx.max_tokens_param = min(limits)
    else:
        ctx.max_tokens = conf().gateway_default_max_tokens
    ctx.body = data
    ctx.messages = messages

    if not catalog.is_known(model):
        raise ModelNotFound(f"The model '{model[:128]}' does not exist or you do not have access to it.", param="model")
    if (kind := catalog.kind_of(model)) != "chat":  # e.g. the cache's own embedding model: never a $0 chat answer
        raise BadRequest(
            f"The model '{model[:128]}' is an {kind} model; use POST /v1/embeddings.", param="model", code="wrong_model_kind"
        )
    # An upper bound, not a guess (finops.tokens.token_bound): it is reserved for and checked against the limit.
    ctx.prompt_tokens_estimate = prompt_token_bound(
        messages, data.get("tools"), data.get("functions"), data.get("response_format")
    )
    limit = conf().gateway_max_prompt_tokens
    if ctx.prompt_tokens_estimate > limit:
        raise PayloadTooLarge(
            f"This prompt has about {ctx.prompt_tokens_estimate} tokens; this gateway accepts at most {limit}.", param="messages"
        )
    canonical = orjson.dumps([[m.get("role"), message_text(m.get("content"))] for m in messages])
    ctx.prompt_hash = hashlib.sha256(canonical).hexdigest()
    ctx.mock_headers = {k: v for k, v in ctx.headers.items() if k.startswith(MOCK_HEADER_PREFIX)}


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
    ctx.route = await route_select(ctx)


# --- 7. budget ---------------------------------------------------------------------------------------


async def stage7_budget(ctx: RequestContext, catalog: Catalog) -> None:
    """Estimate (price in force × prompt estimate and the completion limit), then reserve it (a downgrade
    budget may re-route to the cheapest tier and reserve that instead: `stages.budget_reserve`)."""
    ctx.estimated_cost_usd = estimate(ctx, catalog, ctx.routed.model)
    try:
        await budget_reserve(ctx)
    except FinopsError:
        raise
    except Exception as exc:  # fail closed, loudly: a broken budget check must not turn into free spend
        logger.exception("budget reservation failed")
        raise ServiceUnavailable("Budgets could not be checked; retry shortly.", code="budget_unavailable") from exc
    ctx.reserved = True


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
    # Exactly the completion limit that was reserved (a fail-open clamp included), once, under the client's name.
    body.pop("max_tokens", None)
    body.pop("max_completion_tokens", None)
    if ctx.max_tokens is not None:
        body[ctx.max_tokens_param] = ctx.max_tokens
    if "n" in body or ctx.n != 1:
        body["n"] = ctx.n  # the n that was reserved for (1 while failed open)
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
    headers = ctx.mock_headers if upstream.mock else {}  # fault injection reaches the mock only
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
        try:  # a fallback or an escalation to a pricier model spends only what it has reserved (#16 item 7)
            await budget_topup(ctx, catalog, model, why="fallback" if position else "escalation" if ctx.billed_response else "")
        except FinopsError as refused:
            metrics.child(metrics.FALLBACKS, model, "budget").inc()
            last_error = refused
            continue
        ctx.attempts += 1
        journal_intent(ctx, model=model, tier=tier, provider=upstream.name)  # this process may die mid-call: recorder step 5
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


def journal_intent(
    ctx: RequestContext, *, model: str, tier: str, provider: str, completion_tokens: int = 0, http_status: int = 502
) -> None:
    """The row `ctx` becomes if this process dies now (apps.ledger.recorder, step 5): failed/gateway_interrupted,
    with the prompt estimate priced at `model` (and the completion tokens streamed so far) on top of what is billed."""
    if not conf().ledger_intents:
        return
    try:
        row = ctx.ledger_row()
        catalog = ctx.catalog
        price = catalog.price_for(model, ctx.received_at.date()) if catalog is not None else None
        prompt = ctx.prompt_tokens_estimate
        if price is not None:
            row["cost_usd"] += cost_compute(price=price, prompt_tokens=prompt, completion_tokens=completion_tokens)
            row["price_id"] = price.id
        row.update(
            status="failed", http_status=http_status, error_code=INTERRUPTED, model=model, tier=tier, provider=provider,
            prompt_tokens=row["prompt_tokens"] + prompt, completion_tokens=row["completion_tokens"] + completion_tokens,
            usage_estimated=True,  # the prompt's bound and the tokens streamed so far: no provider usage
        )  # fmt: skip
    except Exception:
        logger.exception("ledger intent for %s not built", ctx.request_id)
        return
    ledger_intent(row)


# --- 9. confidence ---------------------------------------------------------------------------------


async def stage9_confidence(ctx: RequestContext, catalog: Catalog, response: dict[str, Any], position: int) -> dict[str, Any]:
    """A low-confidence cheap answer is re-asked one tier up; both answers are billed."""
    try:
        escalate = await confidence_escalate(ctx, response)
    except Exception:
        logger.exception("confidence check failed; serving the first answer")
        return response
    if not escalate or ctx.degraded:  # failed open: nothing reserved, so no extra call
        return response
    chain = ctx.routed.chain
    tier = chain[position][0]
    higher = [entry for entry in chain[position + 1 :] if entry[0] != tier or not tier]
    target = ctx.confidence.target if ctx.confidence else None  # the router may name the (tier, model) to re-ask
    if target:
        higher = [target] + [entry for entry in higher if entry != target]
    if not higher:
        return response
    first_tier = ctx.tier
    bill(ctx, catalog, response)
    ctx.billed_response = response
    try:
        second, _ = await stage8_upstream(ctx, catalog, higher)
    except FinopsError as exc:
        logger.warning("escalation from %s failed (%s); serving the first answer", ctx.model, exc.message)
        return response
    ctx.escalated = True
    ctx.escalation_cost_usd = ctx.cost_usd
    metrics.child(metrics.ESCALATIONS, first_tier or "-").inc()
    return second


# --- 12. respond ------------------------------------------------------------------------------------


def stage12_respond(ctx: RequestContext, response: dict[str, Any]) -> Reply:
    summary = finops_summary(ctx)
    usage = response.get("usage")
    response["usage"] = {**usage, "finops": summary} if isinstance(usage, dict) else {"finops": summary}
    response["finops"] = summary
    reply = Reply(ctx=ctx, status=200, headers=finops_headers(ctx), payload=response, response=response)
    reply.row = snapshot_row(ctx)
    return reply


def stage12_respond_cached(ctx: RequestContext, hit: dict[str, Any]) -> Reply:
    ctx.status = "cached"
    ctx.model = str(hit.get("model", "")) if ctx.validated_catalog.is_router_name(ctx.requested_model) else ctx.requested_model
    ctx.response_text = first_content(hit)
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
    reply.row = snapshot_row(ctx)
    return reply


async def stage8_upstream_stream(ctx: RequestContext, catalog: Catalog) -> Reply:
    (events, first), _ = await stage8_upstream(ctx, catalog, ctx.routed.chain, stream=True)
    stream = ChatStream(ctx, catalog, events, first)
    return Reply(ctx=ctx, status=200, headers=finops_headers(ctx, with_cost=False), stream=stream)
