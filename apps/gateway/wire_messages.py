"""POST /v1/messages: Anthropic's Messages API, translated to a chat completion and back.

The request becomes an internal chat request (system → a system message, text content blocks → text,
max_tokens, stop_sequences → stop, temperature, top_p, metadata.user_id → user, stream) and goes through the
whole pipeline (`pipeline.chat`: auth, validation, cache, route, budget, upstream, cost, record) under the
ledger endpoint "messages". The answer comes back as an Anthropic `message` (or its SSE events:
message_start, content_block_start/delta/stop, message_delta with the usage, message_stop), errors in
Anthropic's shape `{"type": "error", "error": {"type", "message"}}` with the same HTTP status.

Usage: the upstream's normalised OpenAI usage, mapped to Anthropic's fields — `cache_read_input_tokens` from
`prompt_tokens_details.cached_tokens`, `cache_creation_input_tokens` from `prompt_tokens_details.cache_write_tokens`
(the finops extension of the provider adapters), and `input_tokens` the rest of the prompt (Anthropic counts
cache reads and writes outside input_tokens). Not supported (a 400 that says so): tools, images, documents,
extended thinking. Ignored: top_k, cache_control markers. The limits are listed in docs/usage.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from apps.gateway import pipeline
from apps.gateway.context import RequestContext
from apps.gateway.wire import WireReply, answer_usage, as_dict, authorization_of, finalizer, named_event, sse_events
from finops.errors import BadRequest, FinopsError
from finops.tokens import count_message_tokens

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
UNSUPPORTED = {
    "tools": "tools (tool use) are not supported on /v1/messages by this gateway",
    "tool_choice": "tool_choice is not supported on /v1/messages by this gateway",
    "thinking": "extended thinking is not supported on /v1/messages by this gateway",
}


async def messages(ctx: RequestContext, headers: dict[str, str], body: bytes, rejection: FinopsError | None) -> WireReply:
    chat_body: bytes | dict[str, Any] = body
    if rejection is None:
        try:
            data = orjson.loads(body or b"")
        except orjson.JSONDecodeError:
            data = None  # the pipeline answers invalid_json
        if isinstance(data, dict):
            try:
                chat_body = to_chat(data)
            except FinopsError as exc:
                model = data.get("model")
                chat_body = {"model": model} if isinstance(model, str) else {}
                rejection = exc
    reply = await pipeline.chat(ctx, authorization=authorization_of(headers), body=chat_body, rejection=rejection)
    if reply.stream is not None:
        stream = MessagesStream(reply.stream, ctx)
        return WireReply(status=200, headers=reply.headers, stream=stream)
    payload = reply.payload or {}
    out = to_message(ctx, payload) if reply.status == 200 else anthropic_error(reply.status, payload)
    return WireReply(status=reply.status, headers=reply.headers, payload=out, finish=finalizer(reply))


async def count_tokens(ctx: RequestContext, headers: dict[str, str], body: bytes, rejection: FinopsError | None) -> WireReply:
    """POST /v1/messages/count_tokens: the prompt's tokens as finops counts them (its estimate), free and unrecorded
    like GET /v1/models — Claude clients ask it before sending. The key is checked; nothing is reserved or billed."""
    try:
        await pipeline.stage2_authenticate(ctx, authorization_of(headers))
        if rejection is not None:
            raise rejection
        try:
            data = orjson.loads(body or b"")
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"We could not parse the JSON body of your request: {exc}") from exc
        if not isinstance(data, dict):
            raise BadRequest("The request body must be a JSON object.")
        chat = to_chat({"max_tokens": 1, **data, "stream": False})
    except FinopsError as exc:
        return WireReply(status=exc.status, headers={}, payload=anthropic_error(exc.status, exc.as_json()))
    return WireReply(status=200, headers={}, payload={"input_tokens": count_message_tokens(chat["messages"])})


# --- request -----------------------------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}: content must be a string or an array of content blocks.", param=where)
    parts: list[str] = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind != "text":
            raise BadRequest(
                f"{where}.{i}: content blocks of type '{kind}' are not supported by this gateway (text only).",
                param=f"{where}.{i}.type",
            )
        if not isinstance(block.get("text"), str):
            raise BadRequest(f"{where}.{i}.text: Field required", param=f"{where}.{i}.text")
        parts.append(block["text"])
    return "".join(parts)


def to_chat(data: dict[str, Any]) -> dict[str, Any]:
    """A Messages request as the internal chat request; BadRequest names what is wrong or unsupported."""
    for name, reason in UNSUPPORTED.items():
        if data.get(name):
            raise BadRequest(f"{name}: {reason}.", param=name, code="unsupported_parameter")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required", param="model", code="missing_model")
    max_tokens = data.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("max_tokens: Field required (a positive integer).", param="max_tokens")
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise BadRequest("messages: Field required (a non-empty array).", param="messages")
    chat_messages: list[dict[str, Any]] = []
    system = data.get("system")
    if system is not None:
        chat_messages.append({"role": "system", "content": _text_of(system, "system")})
    for i, message in enumerate(raw_messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'.", param=f"messages.{i}.role")
        chat_messages.append({"role": message["role"], "content": _text_of(message.get("content"), f"messages.{i}.content")})
    chat: dict[str, Any] = {"model": model, "messages": chat_messages, "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        if data.get(name) is not None:
            chat[name] = data[name]
    stops = data.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise BadRequest("stop_sequences: Input should be an array of strings.", param="stop_sequences")
        if stops:
            chat["stop"] = stops
    metadata = data.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("stream: Input should be a valid boolean.", param="stream")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the usage chunk becomes message_delta's usage
    return chat


# --- response ------------------------------------------------------------------------------------------


def anthropic_usage(usage: dict[str, Any] | None, finops: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI usage (normalised by the adapters) → Anthropic's usage fields."""
    counts = answer_usage(usage, finops)
    return {
        "input_tokens": counts.prompt - counts.cached - counts.cache_write,
        "output_tokens": counts.completion,
        "cache_creation_input_tokens": counts.cache_write,
        "cache_read_input_tokens": counts.cached,
    }


def _message_id(ctx: RequestContext) -> str:
    return f"msg_{ctx.request_id.hex}"


def to_message(ctx: RequestContext, completion: dict[str, Any]) -> dict[str, Any]:
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = as_dict(choice.get("message"))
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    finops = completion.get("finops")
    return {
        "id": _message_id(ctx),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or ctx.model or ctx.requested_model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(completion.get("usage"), finops),
        "finops": finops,
    }


def anthropic_error(status: int, payload: dict[str, Any]) -> dict[str, Any]:
    error = as_dict(payload.get("error"))
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {
        "type": "error",
        "error": {"type": kind, "message": str(error.get("message") or f"HTTP {status}"), "code": error.get("code")},
    }


class MessagesStream:
    """The chat SSE relay (a ChatStream or a CachedStream) re-emitted as Anthropic's typed events."""

    def __init__(self, inner: Any, ctx: RequestContext):
        self.inner = inner
        self.ctx = ctx

    async def chunks(self) -> AsyncIterator[bytes]:
        ctx = self.ctx
        start: dict[str, Any] = {
            "id": _message_id(ctx),
            "type": "message",
            "role": "assistant",
            "model": ctx.model or ctx.requested_model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": ctx.prompt_tokens_estimate, "output_tokens": 0},
        }
        yield named_event("message_start", {"type": "message_start", "message": start})
        yield named_event(
            "content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        )
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None
        finops: dict[str, Any] | None = None
        async for chunk in self.inner.chunks():
            for event in sse_events(chunk):
                if not isinstance(event, dict):
                    continue
                if isinstance(event.get("error"), dict) and not event.get("choices"):
                    error = anthropic_error(502, event)
                    yield named_event("error", error)
                    return
                for choice in event.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    text = (choice.get("delta") or {}).get("content")
                    if isinstance(text, str) and text:
                        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
                        yield named_event("content_block_delta", delta)
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                if isinstance(event.get("finops"), dict):
                    finops = event["finops"]
        yield named_event("content_block_stop", {"type": "content_block_stop", "index": 0})
        delta = {"stop_reason": STOP_REASONS.get(finish_reason or "stop", "end_turn"), "stop_sequence": None}
        end = {"type": "message_delta", "delta": delta, "usage": anthropic_usage(usage, finops), "finops": finops}
        yield named_event("message_delta", end)
        yield named_event("message_stop", {"type": "message_stop"})

    async def finish(self, *, disconnected: bool) -> None:
        await self.inner.finish(disconnected=disconnected)
