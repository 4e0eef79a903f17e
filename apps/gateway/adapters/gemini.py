"""Google Gemini API: `POST {base_url}/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`, the key in
the `x-goog-api-key` header (base_url e.g. https://generativelanguage.googleapis.com/v1beta).

Request (chat → Gemini), `chat_to_gemini`: system/developer → systemInstruction; user → "user", assistant → "model"
(consecutive turns of one role merged); text parts and base64 data-URL images (inlineData); max_tokens →
generationConfig.maxOutputTokens (the reserved limit), n → candidateCount, stop → stopSequences, temperature, top_p,
response_format json_object/json_schema → responseMimeType application/json (+ responseSchema).
Refused with a 400: tools and tool messages (function calling is not translated yet), image URLs that are not data URLs.

Answer (Gemini → chat), `gemini_to_chat` and `GeminiStreamTranslator`: candidates → choices, finishReason → finish_reason,
usageMetadata → `apps.gateway.usage.gemini_usage` (cachedContentTokenCount is the cached read; thoughtsTokenCount is
reasoning, billed as output). Explicit context caches (cachedContents, billed per hour of storage) are not modelled.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from apps.gateway.adapters.base import (
    GEMINI,
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
from apps.gateway.usage import gemini_usage
from finops.conf import conf

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
          "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter"}  # fmt: skip


def _unsupported(message: str, param: str) -> UpstreamFailure:
    return UpstreamFailure("status", f"{message} (the Gemini adapter; docs/usage.md, Providers and adapters)",
                           status=400, code=f"unsupported_{param}")  # fmt: skip


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = str(image.get("url", "") if isinstance(image, dict) else image or "")
            if not (url.startswith("data:") and ";base64," in url):
                raise _unsupported("Gemini takes images as base64 data URLs only", "content")
            mime, data = url[5:].split(";base64,", 1)
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        else:
            raise _unsupported(f"Content parts of type {part.get('type')!r} are not translated to Gemini", "content")
    return parts


def chat_to_gemini(body: dict[str, Any], *, default_max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat.completions body → a Gemini generateContent body (pure; the model goes in the URL)."""
    if body.get("tools"):
        raise _unsupported("tools are not translated to Gemini", "tools")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(message.get("content")))
            continue
        if role not in ("user", "assistant"):
            raise _unsupported(f"Messages of role {role!r} are not translated to Gemini", "messages")
        gemini_role = "model" if role == "assistant" else "user"
        parts = _parts(message.get("content"))
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    config: dict[str, Any] = {"maxOutputTokens": completion_limit(body, default_max_tokens)}
    if int(body.get("n") or 1) != 1:
        config["candidateCount"] = int(body["n"])
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    for name, key in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
        if body.get(name) is not None:
            config[key] = body[name]
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            config["responseJsonSchema"] = schema
    out: dict[str, Any] = {"contents": contents, "generationConfig": config}
    if system:
        out["systemInstruction"] = {"parts": system}
    return out


def _text(candidate: dict[str, Any]) -> str:
    parts = (candidate.get("content") or {}).get("parts") or []
    # Thought summaries (`thought: true`) are not part of the answer.
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict) and not p.get("thought"))


def gemini_to_chat(answer: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A Gemini generateContent answer → a chat.completion (pure)."""
    candidates = answer.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        reason = (answer.get("promptFeedback") or {}).get("blockReason")
        if reason:
            raise UpstreamFailure("status", f"Gemini blocked the prompt ({reason})", status=400, code="content_filter")
        raise UpstreamFailure("malformed", "the Gemini answer has no candidates")
    choices = [
        {"index": int(c.get("index", i)), "message": {"role": "assistant", "content": _text(c)}, "logprobs": None,
         "finish_reason": FINISH.get(str(c.get("finishReason")), "stop")}
        for i, c in enumerate(candidates) if isinstance(c, dict)
    ]  # fmt: skip
    return {
        "id": answer.get("responseId") or "gemini",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.get("modelVersion") or model,
        "choices": choices,
        "usage": gemini_usage(answer.get("usageMetadata")),
    }


class GeminiStreamTranslator:
    """streamGenerateContent events → chat.completion.chunk dicts. Every event carries the usage so far (cumulative):
    the last one is kept and sent once, in the final `choices: []` chunk, by `finish()`."""

    def __init__(self, model: str):
        self.model = model
        self.id = "gemini"
        self.created = int(time.time())
        self.started: set[int] = set()
        self.metadata: dict[str, Any] | None = None

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}  # fmt: skip

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if event.get("error"):
            raise UpstreamFailure("stream", f"the upstream reported an error: {(event['error'] or {}).get('message', '')}")
        self.id = event.get("responseId") or self.id
        if isinstance(event.get("usageMetadata"), dict):
            self.metadata = event["usageMetadata"]
        out = []
        for i, candidate in enumerate(event.get("candidates") or []):
            index = int(candidate.get("index", i))
            delta: dict[str, Any] = {"content": _text(candidate)}
            if index not in self.started:
                self.started.add(index)
                delta["role"] = "assistant"
            reason = candidate.get("finishReason")
            if delta.get("content") or "role" in delta:
                out.append(self._chunk(index, delta))
            if reason:
                out.append(self._chunk(index, {}, FINISH.get(str(reason), "stop")))
        return out

    def finish(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": gemini_usage(self.metadata)}  # fmt: skip


def _url(upstream: Upstream, model: str, method: str) -> str:
    return f"{upstream.base_url}/models/{model}:{method}"


class GeminiGenerateContent(Adapter):
    kind = GEMINI

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        return chat_to_gemini(body, default_max_tokens=conf().gateway_default_max_tokens)

    async def complete(self, upstream: Upstream, body: Body, *, headers: dict[str, str]) -> dict[str, Any]:
        body = as_dict(body)
        session = session_for(upstream, {"x-goog-api-key": upstream.api_key})
        model = str(body.get("model", ""))
        answer = await post_json(session, _url(upstream, model, "generateContent"), self._request(body), headers=headers,
                                 error=status_failure)  # fmt: skip
        return gemini_to_chat(answer, model=model)

    async def stream(self, upstream: Upstream, body: Body, *, headers: dict[str, str]) -> tuple[EventStream, dict[str, Any]]:
        body = as_dict(body)
        session = session_for(upstream, {"x-goog-api-key": upstream.api_key})
        model = str(body.get("model", ""))
        url = _url(upstream, model, "streamGenerateContent") + "?alt=sse"
        response = await post_sse(session, url, self._request(body), headers=headers, error=status_failure)
        translator = GeminiStreamTranslator(model)

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            async for _, event in sse_events(response):
                if isinstance(event, dict):
                    for chunk in translator.feed(event):
                        yield chunk
            if translator.metadata is not None:
                yield translator.finish()

        async def close() -> None:
            response.close()

        return await stream_start(upstream.name, EventStream(response, chunks(), close))
