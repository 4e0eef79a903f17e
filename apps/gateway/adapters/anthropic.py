"""Anthropic Messages API (`POST {base_url}/messages`): chat.completions translated both ways, streaming included.

Request (chat → Messages), `chat_to_messages`:
- system and developer messages → `system` (joined by blank lines); the other messages keep their order, consecutive
  messages of one role are merged (Anthropic alternates user/assistant);
- content parts: text, image_url (https URL or base64 data URL); a part's `cache_control` is kept, and a message's
  `cache_control` marks its last block (Anthropic caches the prefix up to a marked block);
- tools / tool_choice / assistant tool_calls / tool messages → tools / tool_choice / tool_use / tool_result blocks;
- max_tokens is required: the completion limit the gateway reserved, else FINOPS_GATEWAY_DEFAULT_MAX_TOKENS;
- stop → stop_sequences; temperature, top_p; user → metadata.user_id.
- Refused with a 400 (not silently dropped): n > 1, response_format other than text, audio/file parts.
  Dropped: logprobs (Anthropic has none: the router's confidence check sees no logprobs), seed, presence/frequency
  penalties, parallel_tool_calls.

Answer (Messages → chat), `messages_to_chat` and `StreamTranslator`: text blocks → content, tool_use → tool_calls,
thinking blocks are not relayed (their tokens are in output_tokens, so they are billed); stop_reason → finish_reason;
usage → `apps.gateway.usage.anthropic_usage` (cache reads and writes inside prompt_tokens, each priced at its rate).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apps.gateway.adapters.base import (
    ANTHROPIC,
    Adapter,
    Body,
    EventStream,
    UpstreamFailure,
    as_dict,
    completion_limit,
    post_json,
    post_sse,
    session_for,
    sse_events,
    status_failure,
    stream_start,
)
from apps.gateway.selectors import Upstream
from apps.gateway.usage import anthropic_usage
from finops.conf import conf
from finops.tokens import message_text

ANTHROPIC_VERSION = "2023-06-01"
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "pause_turn": "stop", "refusal": "content_filter"}  # fmt: skip


def _unsupported(message: str, param: str) -> UpstreamFailure:
    # A 400 from "the upstream": the pipeline answers the client with a 400 and does not try another model.
    return UpstreamFailure("status", f"{message} (the Anthropic adapter; docs/usage.md, Providers and adapters)",
                           status=400, code=f"unsupported_{param}")  # fmt: skip


# --- request ------------------------------------------------------------------------------------------


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": str(part.get("text", ""))}
        elif kind == "image_url":
            image = part.get("image_url")
            block = _image_block(str(image.get("url", "") if isinstance(image, dict) else image or ""))
        else:
            raise _unsupported(f"Content parts of type {kind!r} are not translated to Anthropic", "content")
        if isinstance(part.get("cache_control"), dict):
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id", "")),
            "content": message_text(message.get("content"))}  # fmt: skip


def _tool_uses(calls: Any) -> list[dict[str, Any]]:
    blocks = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):
            continue
        function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {"arguments": function.get("arguments")}
        blocks.append({"type": "tool_use", "id": str(call.get("id", "")), "name": str(function.get("name", "")),
                       "input": arguments if isinstance(arguments, dict) else {"value": arguments}})  # fmt: skip
    return blocks


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            raise _unsupported("Only function tools are translated to Anthropic", "tools")
        entry = {"name": function.get("name", ""), "input_schema": function.get("parameters") or {"type": "object"}}
        if function.get("description"):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name", "")}
    raise _unsupported(f"tool_choice {choice!r} is not translated to Anthropic", "tool_choice")


def chat_to_messages(body: dict[str, Any], *, default_max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat.completions body → an Anthropic Messages body (pure)."""
    if int(body.get("n") or 1) != 1:
        raise _unsupported("n > 1 is not supported by Anthropic", "n")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise _unsupported("response_format is not supported by Anthropic", "response_format")
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_blocks(message.get("content")))
            continue
        if role == "tool":
            role, blocks = "user", [_tool_result(message)]
        elif role in ("user", "assistant"):
            blocks = _blocks(message.get("content"))
            if role == "assistant":
                blocks += _tool_uses(message.get("tool_calls"))
        else:
            raise _unsupported(f"Messages of role {role!r} are not translated to Anthropic", "messages")
        if isinstance(message.get("cache_control"), dict) and blocks:
            blocks[-1] = {**blocks[-1], "cache_control": message["cache_control"]}
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    out: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "max_tokens": completion_limit(body, default_max_tokens),
    }
    if system:
        # Plain text when nothing is marked for caching (the most common, and most portable, form).
        marked = any("cache_control" in block for block in system)
        out["system"] = system if marked else "\n\n".join(block.get("text", "") for block in system)
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        choice = _tool_choice(body.get("tool_choice"))
        if choice is not None and choice.get("type") != "none":
            out["tool_choice"] = choice
        elif choice is not None:
            out.pop("tools")  # "none": the model may not call a tool
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


# --- answer -------------------------------------------------------------------------------------------


def messages_to_chat(answer: dict[str, Any], *, model: str) -> dict[str, Any]:
    """An Anthropic Messages answer → a chat.completion (pure)."""
    blocks = answer.get("content")
    if not isinstance(blocks, list):
        raise UpstreamFailure("malformed", "the Anthropic answer has no content")
    text = "".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "text")
    calls = [
        {"id": b.get("id", ""), "type": "function",
         "function": {"name": b.get("name", ""), "arguments": orjson.dumps(b.get("input") or {}).decode()}}
        for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"
    ]  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": answer.get("id") or "msg",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH.get(str(answer.get("stop_reason")), "stop"),
            }
        ],  # fmt: skip
        "usage": anthropic_usage(answer.get("usage")),
    }


class StreamTranslator:
    """Anthropic stream events → chat.completion.chunk dicts (pure: `feed` one event, get the chunks it makes).

    message_start carries the prompt's usage (input and cache tokens), message_delta the stop reason and the
    cumulative output tokens; message_stop ends the answer with the usage chunk (choices: []).
    """

    def __init__(self, model: str):
        self.model = model
        self.id = "msg"
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}  # content block index → tool call index
        self.done = False

    def _chunk(self, delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]}  # fmt: skip

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self.usage.update({k: v for k, v in (message.get("usage") or {}).items() if isinstance(v, int)})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tool_index.setdefault(int(event.get("index", 0)), len(self.tool_index))
                call = {"index": index, "id": block.get("id", ""), "type": "function",
                        "function": {"name": block.get("name", ""), "arguments": ""}}  # fmt: skip
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self.tool_index.get(int(event.get("index", 0)), 0)
                return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": delta.get("partial_json", "")}}]})]
            return []  # thinking and signature deltas are not relayed (billed through output_tokens)
        if kind == "message_delta":
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if isinstance(v, int)})
            reason = (event.get("delta") or {}).get("stop_reason")
            return [self._chunk(finish=FINISH.get(str(reason), "stop"))] if reason else []
        if kind == "message_stop":
            self.done = True
            return [{"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                     "choices": [], "usage": anthropic_usage(self.usage)}]  # fmt: skip
        if kind == "error":
            error = event.get("error") or {}
            raise UpstreamFailure("stream", f"the upstream reported an error: {error.get('message', '')}")
        return []  # ping, content_block_stop


# --- the adapter ------------------------------------------------------------------------------------


def _headers(upstream: Upstream) -> dict[str, str]:
    version = str(upstream.options.get("anthropic_version") or ANTHROPIC_VERSION)
    return {"x-api-key": upstream.api_key, "anthropic-version": version}


class AnthropicMessages(Adapter):
    kind = ANTHROPIC

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        return chat_to_messages(body, default_max_tokens=conf().gateway_default_max_tokens)

    async def complete(self, upstream: Upstream, body: Body, *, headers: dict[str, str]) -> dict[str, Any]:
        body = as_dict(body)
        session = session_for(upstream, _headers(upstream))
        answer = await post_json(session, f"{upstream.base_url}/messages", self._request(body), headers=headers,
                                 error=status_failure)  # fmt: skip
        return messages_to_chat(answer, model=str(body.get("model", "")))

    async def stream(self, upstream: Upstream, body: Body, *, headers: dict[str, str]) -> tuple[EventStream, dict[str, Any]]:
        body = as_dict(body)
        session = session_for(upstream, _headers(upstream))
        response = await post_sse(session, f"{upstream.base_url}/messages", self._request(body), headers=headers,
                                  error=status_failure)  # fmt: skip
        translator = StreamTranslator(str(body.get("model", "")))

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            async for _, event in sse_events(response):
                if isinstance(event, dict):
                    for chunk in translator.feed(event):
                        yield chunk
                if translator.done:
                    return

        async def close() -> None:
            response.close()

        return await stream_start(upstream.name, EventStream(response, chunks(), close))
