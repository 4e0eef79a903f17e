"""The mock's Anthropic Messages API: ``POST /v1/messages`` (plain and SSE), with the chat endpoint's fault injection.

Answers are the chat endpoint's (a pure function of model and messages, the system prompt as a first system
message), usage counted with :mod:`finops.tokens`, so the gateway's estimate of a translated request reconciles.

Auth: ``x-api-key`` (or ``Authorization: Bearer``) is required; a key starting ``sk-bad`` gets Anthropic's 401 (a bad upstream key, for tests).
Errors use Anthropic's shape: ``{"type": "error", "error": {"type": "rate_limit_error", "message": …}}``.

Prompt caching, as Anthropic does it: the prefix up to the last block marked ``cache_control`` (the messages up to
and including that block's message) is written to the mock's cache the first time (``cache_creation_input_tokens``)
and read on later requests with the same prefix (``cache_read_input_tokens``); ``input_tokens`` is the rest.
Headers override it: ``X-Mock-Cache-Write-Tokens`` / ``X-Mock-Cache-Read-Tokens`` (``X-Mock-Cached-Tokens`` = read).
The other ``X-Mock-*`` headers and per-model faults work as on ``/v1/chat/completions``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from demo.mock_llm.common import (
    Message,
    Receive,
    Scope,
    Send,
    _answer_from_digest,
    _answer_of_length,
    _apply_stop,
    _dumps,
    _loads,
    _new_id,
    _prompt_digest,
    _truthy,
)
from finops.tokens import count_message_tokens, count_tokens, token_pieces, truncate_tokens

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               503: "overloaded_error", 529: "overloaded_error"}  # fmt: skip


def handles(method: str, path: str) -> bool:
    return method == "POST" and path == "/messages"


# --- shared by the native formats (anthropic, gemini, azure) ---------------------------------------------


def reshaping_send(send: Send, reshape: Callable[[int, dict[str, Any]], dict[str, Any]]) -> Send:
    """A `send` that rewrites the mock's OpenAI-shaped error answers (from the shared fault injection) into a
    provider's error shape: `reshape(status, openai_error) -> payload`."""
    held: dict[str, Any] = {}

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held["start"] = message
            return
        if message["type"] == "http.response.body" and "start" in held:
            start = held.pop("start")
            try:
                error = _loads(message.get("body", b"")).get("error") or {}
            except Exception:
                error = {"message": "error"}
            body = _dumps(reshape(start["status"], error))
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return wrapped


def replaying_receive(raw: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the already-read body over once, then waits on the real one (disconnects)."""
    sent = [False]

    async def wrapped() -> Message:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return wrapped


def answer_texts(app: Any, model: str, messages: list[dict[str, Any]], headers: dict[str, str], *, n: int,
                 max_tokens: Any, stop: Any, truncate: bool) -> list[tuple[str, str, bytes]]:  # fmt: skip
    """(text, finish, digest) per choice, exactly as the chat endpoint computes them (replay included)."""
    replay = app.replay.lookup(model, messages) if app.replay is not None else None
    out = []
    for index in range(n):
        digest = _prompt_digest(model, messages, index)
        text = replay[0] if replay is not None else _answer_from_digest(model, digest)
        if "x-mock-completion-tokens" in headers:
            text = _answer_of_length(text, int(headers["x-mock-completion-tokens"]))
        text, stopped = _apply_stop(text, stop)
        finish = "stop_sequence" if stopped else "stop"
        if isinstance(max_tokens, int) and max_tokens > 0:
            cut = truncate_tokens(text, max_tokens)
            if cut != text:
                text, finish = cut, "length"
        if truncate:
            text, finish = truncate_tokens(text, max(1, count_tokens(text) // 2)), "length"
        out.append((text, finish, digest))
    return out


async def sse_start(send: Send, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                            *(extra or [])]})  # fmt: skip


async def with_faults(app: Any, scope: Scope, receive: Receive, send: Send, model: str, *, stream: bool,
                      answer: Callable[[dict[str, str], dict[str, Any], Any], Awaitable[None]]) -> None:  # fmt: skip
    """Count the call, apply the shared latency/error faults, then `answer(headers, fault, watch)`."""
    from demo.mock_llm.app import _ClientWatch, _mock_headers

    headers = _mock_headers(scope)
    app._count("chat", model)
    watch = _ClientWatch(receive)
    try:
        handled, fault = await app._pre_response(model, headers, watch, send, stream=stream)
        if not handled:
            await answer(headers, fault, watch)
    finally:
        watch.close()


def request_headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


# --- Anthropic ---------------------------------------------------------------------------------------


def _reshape(status: int, error: dict[str, Any]) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": str(error.get("message") or f"Mock error {status}.")}}


async def _error(send: Send, status: int, message: str) -> None:
    from demo.mock_llm.app import _send_raw

    await _send_raw(send, status, _dumps(_reshape(status, {"message": message})), b"application/json")


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    if block.get("type") == "text":
        return str(block.get("text", ""))
    if block.get("type") == "tool_result":
        content = block.get("content")
        return content if isinstance(content, str) else " ".join(_block_text(b) for b in content or [])
    if block.get("type") == "tool_use":
        return json.dumps(block.get("input") or {})
    return ""


def _content_text(content: Any) -> str:
    return content if isinstance(content, str) else "".join(_block_text(b) for b in content or [])


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request as chat messages (system first), for the answer's digest and the token count."""
    messages = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _content_text(system)})
    for message in body.get("messages") or []:
        messages.append({"role": message.get("role", "user"), "content": _content_text(message.get("content"))})
    return messages


def _marked(content: Any) -> bool:
    return isinstance(content, list) and any(isinstance(b, dict) and "cache_control" in b for b in content)


def cache_usage(app: Any, model: str, body: dict[str, Any], messages: list[dict[str, Any]], headers: dict[str, str],
                prompt_tokens: int) -> tuple[int, int]:  # fmt: skip
    """(cache read, cache write) tokens: the headers' figures, else Anthropic's prefix rule against the mock's memory."""
    if any(h in headers for h in ("x-mock-cache-read-tokens", "x-mock-cache-write-tokens", "x-mock-cached-tokens")):
        read = int(headers.get("x-mock-cache-read-tokens") or headers.get("x-mock-cached-tokens") or 0)
        read = min(max(read, 0), prompt_tokens)
        write = min(max(int(headers.get("x-mock-cache-write-tokens") or 0), 0), prompt_tokens - read)
        return read, write
    offset = 1 if body.get("system") else 0
    last = -1
    if _marked(body.get("system")):
        last = 0
    for i, message in enumerate(body.get("messages") or []):
        if _marked(message.get("content")) if isinstance(message, dict) else False:
            last = i + offset
    if last < 0:
        return 0, 0
    prefix = messages[: last + 1]
    key = hashlib.blake2b(_dumps([model, prefix]), digest_size=16).digest()
    memory: set[bytes] = app.__dict__.setdefault("_prompt_cache", set())
    tokens = count_message_tokens(prefix)
    if key in memory:
        return tokens, 0
    memory.add(key)
    return 0, tokens


async def handle(app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    from demo.mock_llm.app import _HTTPError, _read_json, _send_raw

    send = reshaping_send(send, _reshape)
    try:
        body = await _read_json(receive)
    except _HTTPError as exc:
        await _error(send, exc.status, exc.message)
        return
    sent = request_headers(scope)
    key = sent.get("x-api-key") or sent.get("authorization", "").removeprefix("Bearer ")  # API key, or an OAuth token
    if not key or key.startswith("sk-bad"):
        await _error(send, 401, "invalid x-api-key")
        return
    model, raw_messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        await _error(send, 400, "model: Field required")
        return
    if not isinstance(raw_messages, list) or not raw_messages:
        await _error(send, 400, "messages: Field required")
        return
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        await _error(send, 400, "max_tokens: Field required")
        return
    stream = bool(body.get("stream"))

    async def answer(headers: dict[str, str], fault: dict[str, Any], watch: Any) -> None:
        messages = chat_messages(body)
        prompt_tokens = count_message_tokens(messages)
        read, write = cache_usage(app, model, body, messages, headers, prompt_tokens)
        truncate = _truthy(headers.get("x-mock-truncate", "")) or _truthy(fault.get("truncate", False))
        [(text, finish, digest)] = answer_texts(app, model, messages, headers, n=1, max_tokens=body["max_tokens"],
                                                stop=body.get("stop_sequences"), truncate=truncate and not stream)  # fmt: skip
        stop_reason = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}[finish]
        tool = _forced_tool(body)
        usage = {"input_tokens": prompt_tokens - read - write, "output_tokens": count_tokens(text),
                 "cache_creation_input_tokens": write, "cache_read_input_tokens": read}  # fmt: skip
        message_id = _new_id("msg")
        if not stream:
            block = ({"type": "tool_use", "id": f"toolu_{digest.hex()[:24]}", "name": tool, "input": {"answer": text}}
                     if tool else {"type": "text", "text": text})  # fmt: skip
            payload = {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": [block],
                       "stop_reason": "tool_use" if tool and finish == "stop" else stop_reason, "stop_sequence": None,
                       "usage": usage}  # fmt: skip
            await _send_raw(send, 200, _dumps(payload), b"application/json")
            return
        delay = float(headers.get("x-mock-chunk-delay-ms") or fault.get("chunk_delay_ms") or 0.0) / 1000.0
        await _stream(send, watch, message_id, model, text, stop_reason, usage, delay=delay, truncate=truncate)

    await with_faults(app, scope, receive, send, model, stream=stream, answer=answer)


def _forced_tool(body: dict[str, Any]) -> str:
    choice, tools = body.get("tool_choice"), body.get("tools")
    if not isinstance(choice, dict) or not isinstance(tools, list) or not tools:
        return ""
    if choice.get("type") == "tool":
        return str(choice.get("name", ""))
    return str(tools[0].get("name", "")) if choice.get("type") == "any" else ""


async def _stream(send: Send, watch: Any, message_id: str, model: str, text: str, stop_reason: str,
                  usage: dict[str, int], *, delay: float, truncate: bool) -> None:  # fmt: skip
    async def event(name: str, data: dict[str, Any], more: bool = True) -> None:
        frame = b"event: " + name.encode() + b"\ndata: " + _dumps({"type": name, **data}) + b"\n\n"
        await send({"type": "http.response.body", "body": frame, "more_body": more})

    await sse_start(send)
    start_usage = {**usage, "output_tokens": 1}
    await event("message_start", {"message": {"id": message_id, "type": "message", "role": "assistant", "model": model,
                                              "content": [], "stop_reason": None, "stop_sequence": None,
                                              "usage": start_usage}})  # fmt: skip
    await event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    await event("ping", {})
    pieces = token_pieces(text)
    limit = max(1, len(pieces) // 2) if truncate else len(pieces)
    for i, piece in enumerate(pieces[:limit]):
        if delay > 0 and i and not await watch.sleep(delay):
            return
        await event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
    if truncate:  # the upstream drops the stream: no message_delta / message_stop
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await event("content_block_stop", {"index": 0})
    await event("message_delta", {"delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                  "usage": {"output_tokens": usage["output_tokens"]}})  # fmt: skip
    await event("message_stop", {}, more=False)
