"""The mock's Gemini API: ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``.

Answers, faults and token counts as on ``/v1/chat/completions`` (the system instruction as a first system message).
Auth: ``x-goog-api-key`` (or ``?key=``) is required; a key starting ``sk-bad`` gets Google's 400 API_KEY_INVALID.
``usageMetadata``: promptTokenCount (cached included), candidatesTokenCount, totalTokenCount, and
``cachedContentTokenCount`` from ``X-Mock-Cached-Tokens``, ``thoughtsTokenCount`` from ``X-Mock-Reasoning-Tokens``
(thinking tokens, reported outside candidatesTokenCount as Gemini does). ``candidateCount`` gives n answers.
Streams carry the usage so far on every event (as Gemini does) and the finishReason on the last.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from demo.mock_llm.anthropic import answer_texts, request_headers, reshaping_send, sse_start, with_faults
from demo.mock_llm.common import Receive, Scope, Send, _dumps, _new_id, _truthy
from finops.tokens import count_message_tokens, count_tokens, token_pieces

PREFIX = "/v1beta/models/"
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip
FINISH = {"stop": "STOP", "stop_sequence": "STOP", "length": "MAX_TOKENS"}


def handles(method: str, path: str) -> bool:
    return (
        method == "POST"
        and path.startswith(PREFIX)
        and (path.endswith(":generateContent") or path.endswith(":streamGenerateContent"))
    )


def _reshape(status: int, error: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": status, "message": str(error.get("message") or f"Mock error {status}."),
                      "status": STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")}}  # fmt: skip


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    def text(parts: Any) -> str:
        return "".join(str(p.get("text", "")) for p in parts or [] if isinstance(p, dict))

    messages = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict) and text(system.get("parts")):
        messages.append({"role": "system", "content": text(system.get("parts"))})
    for content in body.get("contents") or []:
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": text(content.get("parts"))})
    return messages


async def handle(app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    from demo.mock_llm.app import _HTTPError, _read_json, _send_raw

    send = reshaping_send(send, _reshape)
    path = scope["path"].rstrip("/")
    model, _, method = path[path.index(PREFIX) + len(PREFIX) :].partition(":")
    stream = method == "streamGenerateContent"

    async def error(status: int, message: str) -> None:
        await _send_raw(send, status, _dumps(_reshape(status, {"message": message})), b"application/json")

    try:
        body = await _read_json(receive)
    except _HTTPError as exc:
        await error(exc.status, exc.message)
        return
    query = parse_qs(scope.get("query_string", b"").decode())
    key = request_headers(scope).get("x-goog-api-key") or (query.get("key") or [""])[0]
    if not key or key.startswith("sk-bad"):
        await error(400, "API key not valid. Please pass a valid API key.")
        return
    if not isinstance(body.get("contents"), list) or not body["contents"]:
        await error(400, "* GenerateContentRequest.contents: contents is not specified")
        return
    config = body.get("generationConfig") or {}
    n = int(config.get("candidateCount") or 1)

    async def answer(headers: dict[str, str], fault: dict[str, Any], watch: Any) -> None:
        messages = chat_messages(body)
        prompt = count_message_tokens(messages)
        cached = min(max(int(headers.get("x-mock-cached-tokens") or 0), 0), prompt)
        thoughts = max(int(headers.get("x-mock-reasoning-tokens") or 0), 0)
        truncate = _truthy(headers.get("x-mock-truncate", "")) or _truthy(fault.get("truncate", False))
        choices = answer_texts(app, model, messages, headers, n=n, max_tokens=config.get("maxOutputTokens"),
                               stop=config.get("stopSequences"), truncate=truncate and not stream)  # fmt: skip

        def usage(candidates: int) -> dict[str, Any]:
            meta = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
                    "totalTokenCount": prompt + candidates + thoughts}  # fmt: skip
            if cached:
                meta["cachedContentTokenCount"] = cached
            if thoughts:
                meta["thoughtsTokenCount"] = thoughts
            return meta

        response_id = _new_id("gemini")
        if not stream:
            payload = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": FINISH[finish],
                                "index": i} for i, (text, finish, _) in enumerate(choices)],
                "usageMetadata": usage(sum(count_tokens(c[0]) for c in choices)),
                "modelVersion": model, "responseId": response_id,
            }  # fmt: skip
            await _send_raw(send, 200, _dumps(payload), b"application/json")
            return
        delay = float(headers.get("x-mock-chunk-delay-ms") or fault.get("chunk_delay_ms") or 0.0) / 1000.0
        await sse_start(send)
        sent = 0

        async def emit(candidate: dict[str, Any], more: bool = True) -> None:
            event = {"candidates": [candidate], "usageMetadata": usage(sent), "modelVersion": model, "responseId": response_id}
            await send({"type": "http.response.body", "body": b"data: " + _dumps(event) + b"\r\n\r\n", "more_body": more})

        for index, (text, finish, _) in enumerate(choices):
            pieces = token_pieces(text)
            limit = max(1, len(pieces) // 2) if truncate else len(pieces)
            for i, piece in enumerate(pieces[:limit]):
                if delay > 0 and i and not await watch.sleep(delay):
                    return
                sent += 1
                last = i == len(pieces) - 1 and not truncate
                candidate = {"content": {"role": "model", "parts": [{"text": piece}]}, "index": index}
                if last:
                    candidate["finishReason"] = FINISH[finish]
                await emit(candidate, more=not (last and index == len(choices) - 1))
            if truncate:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return

    await with_faults(app, scope, receive, send, model, stream=stream, answer=answer)
