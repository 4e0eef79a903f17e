"""POST /v1/responses: OpenAI's Responses API, translated to a chat completion and back.

No upstream Responses endpoint is called: the request becomes an internal chat request (`input` a string or
message items → messages, `instructions` → a system message first, `max_output_tokens` → max_completion_tokens,
temperature, top_p, user, `text.format` → response_format, `reasoning.effort` → reasoning_effort, stream) and
goes through the whole pipeline (`pipeline.chat`) under the ledger endpoint "responses". The answer comes back
as a `response` object (or its typed SSE events: response.created, response.in_progress,
response.output_item.added, response.content_part.added, response.output_text.delta, response.output_text.done,
response.content_part.done, response.output_item.done, response.completed with the usage).

Usage: `input_tokens_details.cached_tokens` from `prompt_tokens_details.cached_tokens`,
`output_tokens_details.reasoning_tokens` from `completion_tokens_details.reasoning_tokens` (reasoning tokens are
part of the completion tokens, so billed at the output price). Errors keep OpenAI's shape. Not supported (a 400
that says so): tools, `store: true`, `previous_response_id`, `background`, `conversation`, non-text input items.
The limits are listed in docs/usage.md.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apps.gateway import pipeline
from apps.gateway.context import RequestContext
from apps.gateway.wire import WireReply, answer_usage, as_dict, authorization_of, finalizer, named_event, sse_events
from finops.errors import BadRequest, FinopsError

UNSUPPORTED = {
    "tools": "tools (function calling, built-in tools) are not supported on /v1/responses by this gateway",
    "previous_response_id": "previous_response_id is not supported: this gateway does not store responses; "
    "send the whole conversation in 'input'",
    "background": "background responses are not supported by this gateway",
    "conversation": "conversations are not supported by this gateway; send the whole conversation in 'input'",
    "prompt": "stored prompt templates are not supported by this gateway",
}
ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text")


async def responses(ctx: RequestContext, headers: dict[str, str], body: bytes, rejection: FinopsError | None) -> WireReply:
    chat_body: bytes | dict[str, Any] = body
    data: dict[str, Any] = {}
    if rejection is None:
        try:
            parsed = orjson.loads(body or b"")
        except orjson.JSONDecodeError:
            parsed = None  # the pipeline answers invalid_json
        if isinstance(parsed, dict):
            data = parsed
            try:
                chat_body = to_chat(data)
            except FinopsError as exc:
                model = data.get("model")
                chat_body = {"model": model} if isinstance(model, str) else {}
                rejection = exc
    reply = await pipeline.chat(ctx, authorization=authorization_of(headers), body=chat_body, rejection=rejection)
    if reply.stream is not None:
        return WireReply(status=200, headers=reply.headers, stream=ResponsesStream(reply.stream, ctx, data))
    payload = reply.payload or {}
    out = to_response(ctx, data, payload) if reply.status == 200 else payload
    return WireReply(status=reply.status, headers=reply.headers, payload=out, finish=finalizer(reply))


# --- request -----------------------------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"'{where}' must be a string or an array of content parts.", param=where)
    parts: list[str] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise BadRequest(
                f"'{where}[{i}]' of type '{kind}' is not supported by this gateway (text parts only).", param=f"{where}[{i}]"
            )
        parts.append(part["text"])
    return "".join(parts)


def _messages(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        if not raw:
            raise BadRequest("'input' must not be empty.", param="input")
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'input' must be a string or a non-empty array of message items.", param="input")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or item.get("type", "message") != "message" or item.get("role") not in ROLES:
            kind = item.get("type") if isinstance(item, dict) else type(item).__name__
            raise BadRequest(
                f"'input[{i}]' must be a message item with a role in {list(ROLES)}; items of type '{kind}' "
                "are not supported by this gateway.",
                param=f"input[{i}]",
            )
        messages.append({"role": item["role"], "content": _text_of(item.get("content"), f"input[{i}].content")})
    return messages


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise BadRequest("'text.format.type' must be 'text', 'json_object' or 'json_schema'.", param="text.format.type")


def to_chat(data: dict[str, Any]) -> dict[str, Any]:
    """A Responses request as the internal chat request; BadRequest names what is wrong or unsupported."""
    for name, reason in UNSUPPORTED.items():
        if data.get(name):
            raise BadRequest(f"{reason}.", param=name, code="unsupported_parameter")
    if data.get("store") is True:
        raise BadRequest(
            "'store: true' is not supported: this gateway does not store responses; send store=false.",
            param="store",
            code="unsupported_parameter",
        )
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", param="model", code="missing_model")
    messages = _messages(data.get("input"))
    instructions = data.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("'instructions' must be a string.", param="instructions")
        messages.insert(0, {"role": "system", "content": instructions})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    limit = data.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise BadRequest("'max_output_tokens' must be a positive integer.", param="max_output_tokens")
        chat["max_completion_tokens"] = limit
    for name in ("temperature", "top_p", "user"):
        if data.get(name) is not None:
            chat[name] = data[name]
    response_format = _response_format(data.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    reasoning = data.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean.", param="stream")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the usage chunk becomes response.completed's usage
    return chat


# --- response ------------------------------------------------------------------------------------------


def responses_usage(usage: dict[str, Any] | None, finops: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI chat usage (normalised by the adapters) → the Responses API's usage."""
    counts = answer_usage(usage, finops)
    return {
        "input_tokens": counts.prompt,
        "input_tokens_details": {"cached_tokens": counts.cached},
        "output_tokens": counts.completion,
        "output_tokens_details": {"reasoning_tokens": counts.reasoning},
        "total_tokens": counts.prompt + counts.completion,
    }


def _ids(ctx: RequestContext) -> tuple[str, str]:
    return f"resp_{ctx.request_id.hex}", f"msg_{ctx.request_id.hex}"


def _envelope(ctx: RequestContext, request: dict[str, Any], *, status: str, model: str) -> dict[str, Any]:
    response_id, _ = _ids(ctx)
    text = request.get("text") if isinstance(request.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(ctx.received_at.timestamp()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": False,
        "previous_response_id": None,
        "reasoning": request.get("reasoning") if isinstance(request.get("reasoning"), dict) else None,
        "store": False,
        "temperature": request.get("temperature"),
        "text": text,
        "tool_choice": "none",
        "tools": [],
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": as_dict(request.get("metadata")),
    }


def _message_item(ctx: RequestContext, text: str, *, status: str) -> dict[str, Any]:
    _, message_id = _ids(ctx)
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": message_id, "status": status, "role": "assistant", "content": content}


def _finish(envelope: dict[str, Any], finish_reason: str | None) -> None:
    if finish_reason == "length":
        envelope["status"] = "incomplete"
        envelope["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        envelope["status"] = "incomplete"
        envelope["incomplete_details"] = {"reason": "content_filter"}


def to_response(ctx: RequestContext, request: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = as_dict(choice.get("message"))
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    envelope = _envelope(ctx, request, status="completed", model=completion.get("model") or ctx.model)
    _finish(envelope, choice.get("finish_reason"))
    envelope["output"] = [_message_item(ctx, text, status=envelope["status"])]
    envelope["usage"] = responses_usage(completion.get("usage"), completion.get("finops"))
    envelope["finops"] = completion.get("finops")
    return envelope


class ResponsesStream:
    """The chat SSE relay (a ChatStream or a CachedStream) re-emitted as the Responses API's typed events."""

    def __init__(self, inner: Any, ctx: RequestContext, request: dict[str, Any]):
        self.inner = inner
        self.ctx = ctx
        self.request = request
        self.sequence = 0

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return named_event(kind, data)

    async def chunks(self) -> AsyncIterator[bytes]:
        ctx = self.ctx
        _, item_id = _ids(ctx)
        envelope = _envelope(ctx, self.request, status="in_progress", model=ctx.model or ctx.requested_model)
        yield self._event("response.created", response=envelope)
        yield self._event("response.in_progress", response=envelope)
        yield self._event("response.output_item.added", output_index=0, item=_message_item(ctx, "", status="in_progress"))
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield self._event("response.content_part.added", item_id=item_id, output_index=0, content_index=0, part=part)
        texts: list[str] = []
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None
        finops: dict[str, Any] | None = None
        async for chunk in self.inner.chunks():
            for event in sse_events(chunk):
                if not isinstance(event, dict):
                    continue
                if isinstance(event.get("error"), dict) and not event.get("choices"):
                    error = event["error"]
                    failed = {
                        **envelope,
                        "status": "failed",
                        "error": {"code": error.get("code"), "message": error.get("message")},
                    }
                    yield self._event("response.failed", response=failed)
                    return
                for choice in event.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    text = (choice.get("delta") or {}).get("content")
                    if isinstance(text, str) and text:
                        texts.append(text)
                        yield self._event(
                            "response.output_text.delta",
                            item_id=item_id,
                            output_index=0,
                            content_index=0,
                            delta=text,
                            logprobs=[],
                        )
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                if isinstance(event.get("model"), str) and event["model"]:
                    envelope["model"] = event["model"]
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                if isinstance(event.get("finops"), dict):
                    finops = event["finops"]
        text = "".join(texts)
        done_part = {**part, "text": text}
        yield self._event("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text, logprobs=[])
        yield self._event("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=done_part)
        final = {**envelope, "status": "completed"}
        _finish(final, finish_reason)
        item = _message_item(ctx, text, status=final["status"])
        yield self._event("response.output_item.done", output_index=0, item=item)
        final.update(output=[item], usage=responses_usage(usage, finops), finops=finops)
        final["completed_at"] = int(time.time())
        yield self._event("response.completed" if final["status"] == "completed" else "response.incomplete", response=final)

    async def finish(self, *, disconnected: bool) -> None:
        await self.inner.finish(disconnected=disconnected)
