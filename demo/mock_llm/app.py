"""The mock LLM's raw ASGI app (`MockLLM`): routing, chat completions (plain and SSE), embeddings, the fault and stats API."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import struct
import time
from collections.abc import Mapping
from typing import Any

from demo.mock_llm import anthropic, azure, gemini
from demo.mock_llm.common import (
    _ADVERTISED_MODELS,
    _ERROR_TYPES,
    DEFAULT_EMBEDDING_DIM,
    MAX_EMBEDDING_DIM,
    TIMEOUT_FAULT_SECONDS,
    Receive,
    Scope,
    Send,
    _answer_from_digest,
    _answer_of_length,
    _apply_stop,
    _dumps,
    _embed,
    _embedding_inputs,
    _forced_tool,
    _JSONError,
    _loads,
    _logprob_entries,
    _new_id,
    _prompt_digest,
    _tool_call,
    _truthy,
)
from demo.mock_llm.stores import FaultStore, ReplayStore, _check_error_kind
from finops.tokens import count_message_tokens, count_tokens, token_pieces, truncate_tokens

# --------------------------------------------------------------------------- the app


class _ClientWatch:
    """Sleeps that end early when the client disconnects (so 'timeout' faults don't pile up)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[None] | None = None
        self._gone = asyncio.Event()

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._gone.set()
                return

    @property
    def disconnected(self) -> bool:
        return self._gone.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns False if the client went away meanwhile."""
        if seconds <= 0:
            return not self._gone.is_set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._watch())
        try:
            await asyncio.wait_for(self._gone.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class MockLLM:
    """The ASGI application. Build it with :func:`build_app`."""

    def __init__(
        self,
        *,
        replay_path: str | os.PathLike[str] | None = None,
        default_latency_ms: float = 0.0,
        model_faults: Mapping[str, Any] | None = None,
        replay_model_map: Mapping[str, str] | None = None,
        faults_file: str | None = None,
    ) -> None:
        self.default_latency_ms = float(default_latency_ms)
        self.faults = FaultStore(model_faults, faults_file)
        self.replay = ReplayStore(replay_path, replay_model_map) if replay_path else None
        self.stats: dict[str, dict[str, int]] = {}
        self.started_at = int(time.time())

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"].rstrip("/") or "/"
        if path.startswith("/v1/"):
            path = path[3:]
        try:
            if method == "POST" and path == "/chat/completions":
                await self._chat(scope, receive, send)
            elif method == "POST" and path == "/embeddings":
                await self._embeddings(scope, receive, send)
            elif method == "GET" and path == "/health":
                await _send_json(send, 200, {"status": "ok"})
            elif method == "GET" and path == "/models":
                await _send_json(send, 200, {"object": "list", "data": [self._model_obj(m) for m in self._models()]})
            elif method == "GET" and path.startswith("/models/"):
                await _send_json(send, 200, self._model_obj(path[len("/models/") :]))
            elif path == "/_mock/faults":
                await self._faults_api(method, receive, send)
            elif path == "/_mock/stats":
                if method == "DELETE":
                    self.stats.clear()
                await _send_json(send, 200, self.stats)
            elif native := next((m for m in (anthropic, azure, gemini) if m.handles(method, path)), None):
                await native.handle(self, scope, receive, send)  # the native wire formats (demo/mock_llm/<format>.py)
            else:
                raise _HTTPError(404, f"Unknown route {method} {scope['path']}", "unknown_url")
        except _HTTPError as exc:
            await _send_error(send, exc.status, exc.message, code=exc.code, param=exc.param)
        except (ValueError, TypeError) as exc:
            # Malformed X-Mock-* headers or request fields (e.g. max_tokens="x").
            await _send_error(send, 400, f"invalid request: {exc}")

    # ------------------------------------------------------------------ helpers

    def _models(self) -> list[str]:
        names = dict.fromkeys(_ADVERTISED_MODELS)
        if self.replay is not None:
            names.update(dict.fromkeys(self.replay.model_map))
        names.update(dict.fromkeys(m for m in self.faults.snapshot() if m != "*"))
        return list(names)

    def _model_obj(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self.started_at, "owned_by": "finops-mock"}

    def _count(self, bucket: str, model: str) -> None:
        counts = self.stats.setdefault(bucket, {})
        counts[model] = counts.get(model, 0) + 1

    async def _faults_api(self, method: str, receive: Receive, send: Send) -> None:
        if method == "POST":
            body = await _read_json(receive)
            try:
                self.faults.update(body)
            except (ValueError, TypeError) as exc:
                raise _HTTPError(400, str(exc)) from None
        elif method == "DELETE":
            self.faults.clear()
        elif method != "GET":
            raise _HTTPError(405, f"{method} not allowed on /_mock/faults")
        await _send_json(send, 200, self.faults.snapshot())

    async def _pre_response(
        self, model: str, headers: dict[str, str], watch: _ClientWatch, send: Send, *, stream: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        """Apply latency and error faults.

        Returns (handled, fault): ``handled`` is True when a response (error or
        malformed body) was already sent, or the client vanished during a delay.
        """
        fault = self.faults.for_model(model) or {}
        latency_ms = float(headers["x-mock-latency-ms"]) if "x-mock-latency-ms" in headers else self.default_latency_ms
        latency_ms += float(fault.get("latency_ms") or 0.0)

        error = headers.get("x-mock-error", "").strip().lower() or None
        if error is None and fault.get("error"):
            rate = fault.get("rate")
            if self.faults.trigger(model, 1.0 if rate is None else float(rate)):
                error = fault["error"]

        if latency_ms > 0 and not await watch.sleep(latency_ms / 1000.0):
            return True, fault
        if error is None:
            return False, fault
        self._count("errors", model)
        if error == "timeout":
            if not await watch.sleep(TIMEOUT_FAULT_SECONDS):
                return True, fault
            return False, fault  # a very patient client simply gets the answer
        if error == "malformed":
            # 200 OK whose payload is not valid JSON, in the framing the client expects.
            broken = b'{"id": "chatcmpl-mock", "object": "chat.completion", "choices": [{"inde'
            if stream:
                await _send_raw(send, 200, b"data: " + broken + b"\n\ndata: [DONE]\n\n", b"text/event-stream; charset=utf-8")
            else:
                await _send_raw(send, 200, broken, b"application/json")
            return True, fault
        try:
            _check_error_kind(error)
        except ValueError as exc:
            raise _HTTPError(400, str(exc)) from None
        status = int(error)
        retry_after = headers.get("x-mock-retry-after") or fault.get("retry_after")
        extra: list[tuple[bytes, bytes]] = []
        if retry_after is not None:
            seconds = float(retry_after)
            extra = [
                (b"retry-after", str(max(0, math.ceil(seconds))).encode()),
                (b"retry-after-ms", str(int(seconds * 1000)).encode()),
            ]
        type_, code, message = _ERROR_TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Mock error {status}.")
        )
        await _send_error(send, status, message, type_=type_, code=code, extra_headers=extra)
        return True, fault

    # ------------------------------------------------------------------ chat

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_json(receive)
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "you must provide a model parameter", param="model")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, Mapping) for m in messages):
            raise _HTTPError(400, "'messages' must be a non-empty array of objects", param="messages")
        headers = _mock_headers(scope)
        self._count("chat", model)

        watch = _ClientWatch(receive)
        try:
            handled, fault = await self._pre_response(model, headers, watch, send, stream=bool(body.get("stream")))
            if handled:
                return
            await self._chat_answer(body, model, messages, headers, fault, watch, send)
        finally:
            watch.close()

    async def _chat_answer(
        self,
        body: Mapping[str, Any],
        model: str,
        messages: list[Mapping[str, Any]],
        headers: dict[str, str],
        fault: Mapping[str, Any],
        watch: _ClientWatch,
        send: Send,
    ) -> None:
        prompt_tokens = count_message_tokens(messages)
        cached = headers.get("x-mock-cached-tokens")
        if cached is None and isinstance(body.get("metadata"), Mapping):
            cached = body["metadata"].get("mock_cached_tokens")
        cached_tokens = min(max(int(cached), 0), prompt_tokens) if cached is not None else 0

        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        truncate = _truthy(headers.get("x-mock-truncate", "")) or _truthy(fault.get("truncate", False))
        want_logprobs = bool(body.get("logprobs"))
        forced_logprob: float | None = None
        if "x-mock-logprob" in headers:
            forced_logprob = float(headers["x-mock-logprob"])
        elif fault.get("logprob") is not None:
            forced_logprob = float(fault["logprob"])
        n = int(body.get("n") or 1)
        if not 1 <= n <= 8:
            raise _HTTPError(400, "n must be between 1 and 8", param="n")

        replay = self.replay.lookup(model, messages) if self.replay is not None else None
        if self.replay is not None:
            self._count("replay_hit" if replay else "replay_miss", model)

        choices: list[tuple[str, str, bytes]] = []  # (text, finish_reason, digest)
        thinking = int(headers.get("x-mock-reasoning-tokens") or 0)  # reasoning tokens per answer, before it
        reasoning: list[int] = []
        for index in range(n):
            digest = _prompt_digest(model, messages, index)
            text = replay[0] if replay is not None else _answer_from_digest(model, digest)
            if "x-mock-completion-tokens" in headers:
                text = _answer_of_length(text, int(headers["x-mock-completion-tokens"]))
            text, _ = _apply_stop(text, body.get("stop"))
            finish = "stop"
            if isinstance(max_tokens, int) and max_tokens > 0:
                cut = truncate_tokens(text, max_tokens)
                if cut != text:
                    text, finish = cut, "length"
            if truncate and not body.get("stream"):
                text, finish = truncate_tokens(text, max(1, count_tokens(text) // 2)), "length"
            if thinking:  # the limit bounds the reasoning and the answer together
                cap = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None
                reasoning.append(min(thinking, cap) if cap is not None else thinking)
                if cap is not None and count_tokens(text) > cap - reasoning[-1]:
                    text, finish = truncate_tokens(text, cap - reasoning[-1]), "length"
            choices.append((text, finish, digest))

        tool = _forced_tool(body)
        if tool:
            choices = [
                (json.dumps({"answer": text}), "tool_calls" if finish == "stop" else finish, digest)
                for text, finish, digest in choices
            ]
        completion_tokens = sum(count_tokens(c[0]) for c in choices) + sum(reasoning)
        usage = _usage(prompt_tokens, completion_tokens, cached_tokens)
        usage["completion_tokens_details"]["reasoning_tokens"] = sum(reasoning)
        resp_headers = [
            (b"x-mock-replay", b"hit" if replay is not None else b"miss"),
            (b"openai-processing-ms", b"0"),
        ]
        if replay is not None:
            resp_headers.append((b"x-mock-replay-model", replay[1].encode()))
        chat_id = _new_id("chatcmpl")
        created = int(time.time())

        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            include_usage = include_usage and not _truthy(headers.get("x-mock-no-usage", ""))
            # vLLM's stream_options.continuous_usage_stats: every chunk carries the usage so far (cumulative).
            continuous = include_usage and bool((body.get("stream_options") or {}).get("continuous_usage_stats"))
            chunk_delay_ms = (
                float(headers["x-mock-chunk-delay-ms"])
                if "x-mock-chunk-delay-ms" in headers
                else float(fault.get("chunk_delay_ms") or 0.0)
            )
            await self._stream(
                send,
                watch,
                chat_id,
                created,
                model,
                choices,
                usage,
                resp_headers,
                include_usage=include_usage,
                continuous_usage=continuous,
                tool=tool,
                want_logprobs=want_logprobs,
                forced_logprob=forced_logprob,
                truncate=truncate,
                chunk_delay_s=chunk_delay_ms / 1000.0,
                service_tier=headers.get("x-mock-service-tier", "default"),
                reasoning=reasoning,
            )
            return

        out_choices = []
        for index, (text, finish, digest) in enumerate(choices):
            logprobs = None
            if want_logprobs:
                logprobs = {"content": _logprob_entries(token_pieces(text), digest, forced_logprob), "refusal": None}
            out_choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []}
                    if not tool
                    else {"role": "assistant", "content": None, "tool_calls": [_tool_call(tool, text, digest)]},
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            )
        payload = {
            "id": chat_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": out_choices,
            "usage": usage,
            "service_tier": headers.get("x-mock-service-tier", "default"),
            "system_fingerprint": "fp_mock",
        }
        await _send_raw(send, 200, _dumps(payload), b"application/json", resp_headers)

    async def _stream(
        self,
        send: Send,
        watch: _ClientWatch,
        chat_id: str,
        created: int,
        model: str,
        choices: list[tuple[str, str, bytes]],
        usage: dict[str, Any],
        resp_headers: list[tuple[bytes, bytes]],
        *,
        include_usage: bool,
        want_logprobs: bool,
        continuous_usage: bool = False,
        tool: str = "",
        forced_logprob: float | None,
        truncate: bool,
        chunk_delay_s: float,
        service_tier: str = "default",
        reasoning: list[int] | None = None,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", chat_id.encode()),
                    *resp_headers,
                ],
            }
        )

        def frame(choice: dict[str, Any] | None, usage_obj: dict[str, Any] | None = None) -> bytes:
            chunk: dict[str, Any] = {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": service_tier,
                "system_fingerprint": "fp_mock",
                "choices": [choice] if choice is not None else [],
            }
            if include_usage:
                if usage_obj is None and continuous_usage:
                    usage_obj = _usage(usage["prompt_tokens"], streamed[0], usage["prompt_tokens_details"]["cached_tokens"])
                chunk["usage"] = usage_obj
            return b"data: " + _dumps(chunk) + b"\n\n"

        streamed = [0]  # completion tokens sent so far, for continuous usage

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        for index, (text, finish, digest) in enumerate(choices):
            first_delta: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
            if tool:
                call = _tool_call(tool, "", digest)
                first_delta = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}
            await emit(
                frame(
                    {
                        "index": index,
                        "delta": first_delta,
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
            )
            if reasoning and reasoning[index]:
                for i, piece in enumerate(token_pieces(" ".join(["think"] * reasoning[index]))):
                    if chunk_delay_s > 0 and i and not await watch.sleep(chunk_delay_s):
                        return
                    streamed[0] += 1
                    delta: dict[str, Any] = {"reasoning_content": piece}
                    await emit(frame({"index": index, "delta": delta, "logprobs": None, "finish_reason": None}))
            pieces = token_pieces(text)
            entries = _logprob_entries(pieces, digest, forced_logprob) if want_logprobs else None
            limit = max(1, len(pieces) // 2) if truncate else len(pieces)
            for i, piece in enumerate(pieces[:limit]):
                if chunk_delay_s > 0 and i and not await watch.sleep(chunk_delay_s):
                    return
                logprobs = {"content": [entries[i]], "refusal": None} if entries is not None else None
                streamed[0] += 1
                delta = {"content": piece} if not tool else {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                await emit(frame({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}))
            if truncate:
                # Simulates an upstream that drops the stream: no finish_reason, usage or [DONE].
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await emit(frame({"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}))
        if include_usage:
            await emit(frame(None, usage))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    # ------------------------------------------------------------------ embeddings

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_json(receive)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "you must provide a model parameter", param="model")
        inputs = _embedding_inputs(body.get("input"))
        if inputs is None:
            raise _HTTPError(400, "'input' must be a non-empty string or array", param="input")
        dim = body.get("dimensions") or DEFAULT_EMBEDDING_DIM
        if not isinstance(dim, int) or not 1 <= dim <= MAX_EMBEDDING_DIM:
            raise _HTTPError(400, f"dimensions must be an integer in 1..{MAX_EMBEDDING_DIM}", param="dimensions")
        fmt = body.get("encoding_format") or "float"
        if fmt not in {"float", "base64"}:
            raise _HTTPError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
        headers = _mock_headers(scope)
        self._count("embeddings", model)

        watch = _ClientWatch(receive)
        try:
            handled, _ = await self._pre_response(model, headers, watch, send)
            if handled:
                return
        finally:
            watch.close()

        data = []
        tokens = 0
        for index, (text, n_tokens) in enumerate(inputs):
            vec = _embed(text, dim)
            tokens += n_tokens
            embedding: Any = vec if fmt == "float" else base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        payload = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        await _send_raw(send, 200, _dumps(payload), b"application/json")


# --------------------------------------------------------------------------- wire helpers


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _mock_headers(scope: Scope) -> dict[str, str]:
    """Only the ``x-mock-*`` request headers (names are already lower-case in ASGI)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k.startswith(b"x-mock-")}


async def _read_json(receive: Receive) -> dict[str, Any]:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _HTTPError(400, "client disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    try:
        body = _loads(raw) if raw else {}
    except _JSONError:
        raise _HTTPError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise _HTTPError(400, "Request body must be a JSON object.")
    return body


async def _send_raw(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", _new_id("req").encode()),
    ]
    if extra_headers:
        headers += extra_headers
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, obj: Any) -> None:
    await _send_raw(send, status, _dumps(obj), b"application/json")


async def _send_error(
    send: Send,
    status: int,
    message: str,
    *,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    if type_ is None:
        type_ = "server_error" if status >= 500 else "invalid_request_error"
    payload = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    await _send_raw(send, status, _dumps(payload), b"application/json", extra_headers)
