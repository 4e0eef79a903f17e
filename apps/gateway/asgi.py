"""A lean ASGI front for the OpenAI-compatible `/v1/*` endpoints; everything else goes to Django.

Django's middleware stack runs its sync middleware through `sync_to_async` (a thread hop each) and DRF
adds its own request wrapping; measured here, that is several times the whole budget for gateway
overhead. `/v1/chat/completions` and `/v1/models` are therefore served straight from ASGI events by
the same pipeline that backs the DRF `/chat` view (apps.gateway.pipeline). No ORM, no thread per request.
The other wire formats (`/v1/embeddings`, `/v1/responses`, `/v1/messages`) are one module each, behind
`GatewayASGI.wire` (apps.gateway.wire).

This app also owns the ASGI lifespan: on shutdown it closes the loop's runtime (finops.runtime), newest
first — queued budget settles and ledger rows of answered requests drain before the clients and pools
close. Django does not speak lifespan.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apps.gateway import embeddings_api, pipeline, wire_messages, wire_responses
from apps.gateway.admission import Admission, overloaded_error
from apps.gateway.selectors import catalog_get
from apps.ledger.recorder import intent_journal_shutdown
from finops.asyncdb import get_pool
from finops.conf import conf
from finops.errors import FinopsError, PayloadTooLarge
from finops.runtime import runtime_close

logger = logging.getLogger(__name__)

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


# The other wire formats: path → (the ledger's endpoint, the module's handler).
WIRE_ENDPOINTS = {
    "/v1/embeddings": ("embeddings", embeddings_api.embeddings),
    "/v1/responses": ("responses", wire_responses.responses),
    "/v1/messages": ("messages", wire_messages.messages),
    "/v1/messages/count_tokens": ("messages", wire_messages.count_tokens),  # free: no ledger row, like /v1/models
}


class ClientGone(Exception):
    pass


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _client(scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers.items()]


async def _read_body(receive, limit: int, declared: str | None) -> tuple[bytes, bool]:
    if declared and declared.isdigit() and int(declared) > limit:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            return b"", True
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive):
    """A `receive` that hands Django the body already read, then waits on the client (for its disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


async def _send_json(send, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    body = pipeline.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": JSON_HEADERS + [(b"content-length", str(len(body)).encode())] + _encode_headers(headers or {}),
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(status: int, message: str, code: str, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


async def _warm_semantic_cache() -> None:
    """Load the embedding model before taking traffic: loading it under load holds the GIL for seconds."""
    if not conf().cache_enabled:
        return
    try:
        from apps.embeddings import embeddings

        if embeddings.backend() == "local":
            await asyncio.wait_for(asyncio.wrap_future(embeddings.local_embedder.warmup()), timeout=120)
    except Exception as exc:
        logger.warning("semantic cache warm-up failed (%s); its first lookups will miss", exc)


async def _warm_router() -> None:
    """Load the learned routing index (and the embedding model it needs, even with the cache off) before traffic."""
    try:
        from apps.routing.decide import router_warmup

        await asyncio.wait_for(router_warmup(), timeout=120)
    except Exception as exc:
        logger.warning("router warm-up failed (%s); the learned strategy loads on first use", exc)


def _freeze_heap() -> None:
    """Move everything loaded at start-up (Django, the SDKs, the embedding model: ~500k objects) out of the GC's reach.

    Without it every full collection walks that heap — measured at ~230 ms per collection with the
    embedding model loaded, i.e. stalls every few seconds under load. Request garbage is still collected.
    """
    gc.collect()
    gc.freeze()


async def _admitted(endpoint: str, send, serve: Callable[[Admission], Awaitable[None]]) -> None:
    """`serve(admission)` if the worker admits one more request (apps.gateway.admission); else the overloaded answer:
    a 503 with Retry-After (on /v1/messages Anthropic's 529 `overloaded_error`), never a budget 429. Every paid
    endpoint counts against the one in-flight limit; `serve` may release its slot once its response has left."""
    admission = Admission(endpoint)
    with admission as admitted:
        if admitted:
            await serve(admission)
            return
        status, body, headers = overloaded_error()
        if endpoint == "messages":
            status, body = 529, wire_messages.anthropic_error(529, body)
        await _send_json(send, status, body, headers)


class GatewayASGI:
    def __init__(self, django_app):
        self.django_app = django_app

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"].startswith("/v1/"):
            await self.v1(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        else:
            await self.django(scope, receive, send)

    async def django(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].rstrip("/") == "/chat":
            await _admitted("chat", send, lambda admission: self._django(scope, receive, send))
            return
        await self._django(scope, receive, send)

    async def _django(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            # Django's ASGI handler would spool any body (of any method), however large, before a view could refuse it.
            headers = _headers(scope)
            limit = conf().gateway_max_body_bytes
            try:
                body, too_large = await _read_body(receive, limit, headers.get("content-length"))
            except ClientGone:
                return
            if too_large:
                await self.body_too_large(scope, send, headers, limit)
                return
            receive = _replay(body, receive)
        pending: list = []
        token = pipeline.deferred_work.set(pending)
        try:
            await self.django_app(scope, receive, send)
        finally:
            pipeline.deferred_work.reset(token)
            for work in pending:  # /chat's settlement and ledger row, after its response has been sent
                try:
                    await work
                except Exception:
                    logger.exception("deferred work failed")

    async def body_too_large(self, scope, send, headers: dict[str, str], limit: int) -> None:
        """413 before Django: for /chat through the pipeline, so that the refused request has its ledger row."""
        message = f"The request body exceeds {limit} bytes."
        if scope["path"].rstrip("/") != "/chat" or scope["method"] != "POST":
            await _send_json(send, 413, _error(413, message, "request_too_large"))
            return
        ctx = pipeline.stage1_receive("chat", headers, client=_client(scope))
        rejection = PayloadTooLarge(message, code="request_too_large")
        reply = await pipeline.chat(ctx, authorization=headers.get("authorization"), body=b"", rejection=rejection)
        await _send_json(send, reply.status, reply.payload, reply.headers)
        await asyncio.shield(pipeline.finalize(reply))

    async def v1(self, scope, receive, send) -> None:
        path = scope["path"].rstrip("/")
        method = scope["method"]
        if path == "/v1/chat/completions":
            if method != "POST":
                await _send_json(
                    send, 405, _error(405, "Use POST for /v1/chat/completions.", "method_not_allowed"), {"allow": "POST"}
                )
                return
            await self.chat_completions(scope, receive, send)
        elif path in WIRE_ENDPOINTS:
            endpoint, handler = WIRE_ENDPOINTS[path]
            if method != "POST":
                await _send_json(send, 405, _error(405, f"Use POST for {path}.", "method_not_allowed"), {"allow": "POST"})
                return
            await self.wire(scope, receive, send, endpoint, handler)
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                await _send_json(send, 405, _error(405, "Use GET for /v1/models.", "method_not_allowed"), {"allow": "GET"})
                return
            await self.models(scope, send, model_id=path[len("/v1/models/") :] if path.startswith("/v1/models/") else None)
        else:
            await _send_json(send, 404, _error(404, f"Unknown request URL: {method} {scope['path']}.", "unknown_url"))

    async def chat_completions(self, scope, receive, send) -> None:
        await _admitted("chat_completions", send, lambda admission: self._chat_completions(scope, receive, send, admission))

    async def _chat_completions(self, scope, receive, send, admission: Admission) -> None:
        headers = _headers(scope)
        ctx = pipeline.stage1_receive("chat_completions", headers, client=_client(scope))
        limit = conf().gateway_max_body_bytes
        try:
            body, too_large = await _read_body(receive, limit, headers.get("content-length"))
        except ClientGone:
            return  # nothing was asked of an upstream: no request to record
        rejection = PayloadTooLarge(f"The request body exceeds {limit} bytes.", code="request_too_large") if too_large else None
        # In a shielded task: if this handler is cancelled (a server that cancels on disconnect, a forced shutdown),
        # the request still ends — billed, settled, recorded — once (#16).
        reply = await pipeline.chat_to_the_end(ctx, authorization=headers.get("authorization"), body=body, rejection=rejection)
        if reply.stream is None:
            await _send_json(send, reply.status, reply.payload, reply.headers)
            admission.release()
            await asyncio.shield(pipeline.finalize(reply))
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + _encode_headers(reply.headers)})
        disconnected = True  # unless the relay reaches the end: a cancelled handler still finishes the stream
        try:
            disconnected = await self._pump(reply.stream, receive, send)
        finally:
            await asyncio.shield(reply.stream.finish(disconnected=disconnected))

    async def wire(self, scope, receive, send, endpoint: str, handler) -> None:
        """/v1/embeddings, /v1/responses, /v1/messages: the format's module answers (apps.gateway.wire), as chat_completions."""
        await _admitted(endpoint, send, lambda admission: self._wire(scope, receive, send, endpoint, handler, admission))

    async def _wire(self, scope, receive, send, endpoint: str, handler, admission: Admission) -> None:
        headers = _headers(scope)
        ctx = pipeline.stage1_receive(endpoint, headers, client=_client(scope))
        limit = conf().gateway_max_body_bytes
        try:
            body, too_large = await _read_body(receive, limit, headers.get("content-length"))
        except ClientGone:
            return
        rejection = PayloadTooLarge(f"The request body exceeds {limit} bytes.", code="request_too_large") if too_large else None
        reply = await handler(ctx, headers, body, rejection)
        if reply.stream is None:
            await _send_json(send, reply.status, reply.payload, reply.headers)
            admission.release()
            await asyncio.shield(reply.finish())
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + _encode_headers(reply.headers)})
        disconnected = await self._pump(reply.stream, receive, send)
        await asyncio.shield(reply.stream.finish(disconnected=disconnected))

    async def _pump(self, stream, receive, send) -> bool:
        """Relay the stream; True if the client went away before the end."""

        async def relay() -> None:
            async for chunk in stream.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def client_left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        relay_task = asyncio.ensure_future(relay())
        watch_task = asyncio.ensure_future(client_left())
        try:
            await asyncio.wait({relay_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnected = not relay_task.done()
            for task in (relay_task, watch_task):
                if not task.done():
                    task.cancel()
            await asyncio.gather(relay_task, watch_task, return_exceptions=True)
        if not disconnected and relay_task.exception() is not None:
            logger.error("stream relay failed", exc_info=relay_task.exception())
            disconnected = True
        return disconnected

    async def models(self, scope, send, *, model_id: str | None) -> None:
        headers = _headers(scope)
        ctx = pipeline.stage1_receive("models", headers, client=_client(scope))
        try:
            await pipeline.stage2_authenticate(ctx, headers.get("authorization"))
            catalog = await catalog_get()
        except FinopsError as exc:
            await _send_json(send, exc.status, exc.as_json(), {k.lower(): v for k, v in exc.headers.items()})
            return
        allowed = {name for name in catalog.router_models if not name.endswith("*")}
        if ctx.caller is None:  # stage 2 authenticates or raises
            raise RuntimeError("an unauthenticated request reached /v1/models")
        if ctx.caller.allow_model_pinning:
            allowed.update(catalog.served_models())
        entries = {
            model: {
                "id": model,
                "object": "model",
                "created": 0,
                "owned_by": upstream.name if (upstream := catalog.upstream_for(model)) else "finops-router",
                "kind": catalog.kind_of(model),  # chat | embedding: which endpoint serves it
            }
            for model in sorted(allowed, key=lambda name: (catalog.kind_of(name) != "chat", name))  # chat models first
        }
        if model_id is None:
            await _send_json(send, 200, {"object": "list", "data": list(entries.values())})
        elif model_id in entries:
            await _send_json(send, 200, entries[model_id])
        else:
            message = f"The model '{model_id[:128]}' does not exist or you do not have access to it."
            await _send_json(send, 404, _error(404, message, "model_not_found"))

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    # Warm the pool and the price/provider catalog so the first requests do not pay for it.
                    await asyncio.wait_for(asyncio.gather(get_pool(), get_pool("budgets"), catalog_get()), timeout=5)
                except Exception as exc:
                    logger.warning("gateway warm-up failed (%s); continuing, requests will retry", exc)
                await _warm_semantic_cache()
                await _warm_router()
                _freeze_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    # Everything this loop owns, newest first: queued budget settles and ledger rows drain
                    # before the upstream clients, Redis and the pools they need are closed (finops.runtime).
                    await pipeline.abandoned_drain()  # /chat requests whose client left, still finishing
                    await runtime_close()
                    intent_journal_shutdown()
                except Exception:
                    logger.exception("gateway shutdown was not clean")
                await send({"type": "lifespan.shutdown.complete"})
                return
