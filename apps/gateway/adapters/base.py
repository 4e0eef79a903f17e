"""The adapter interface: one upstream wire format behind `complete` and `stream`, in the gateway's internal shape.

Every adapter takes the internal request (an OpenAI chat.completions body, as a dict) and returns:

- `complete`: a chat.completion dict whose `usage` is normalised by `apps.gateway.usage`
  (prompt_tokens_details.cached_tokens / .cache_write_tokens, completion_tokens_details.reasoning_tokens);
- `stream`: an `EventStream` of chat.completion.chunk dicts ending with a `choices: []` chunk that carries that
  usage, and its first chunk (errors before the first chunk are raised by `stream` itself).

Failures are raised as `UpstreamFailure` with a `kind` (status, timeout, connection, malformed, stream), so the
pipeline's retries, fallbacks and circuit breaker do not depend on the provider.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import openai
import orjson

from apps.gateway.selectors import Upstream
from finops.runtime import runtime

OPENAI, ANTHROPIC, AZURE, GEMINI = "openai", "anthropic", "azure", "gemini"
KINDS = (OPENAI, ANTHROPIC, AZURE, GEMINI)


logger = logging.getLogger(__name__)

# The public side of a failure: what an API caller may read. The upstream's own text goes to the log only.
_PUBLIC_MESSAGES = {
    "timeout": "no answer in time",
    "connection": "the connection failed",
    "malformed": "the answer was malformed",
    "stream": "the upstream reported an error",
}
_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CONTEXT_LENGTH = ("context length", "maximum context", "context_length", "too many tokens", "prompt is too long")


class UpstreamFailure(Exception):
    """An upstream call that failed. `message` is safe to show an API caller (the kind and status class only);
    `detail` is what the upstream or the transport said, which may name hosts, echo the prompt or carry the
    upstream's internals: it is logged here and never put in a response."""

    def __init__(self, kind: str, message: str, *, status: int = 0, code: str = ""):
        self.kind = kind  # status | timeout | connection | malformed | stream
        self.detail = message
        self.status = status
        if code == "" and status and any(hint in message.lower() for hint in _CONTEXT_LENGTH):
            code = "context_length_exceeded"  # the pipeline moves up the chain on it, without the upstream's text
        self.code = code if _SAFE_CODE.match(code) else ""
        self.message = f"HTTP {status}" if kind == "status" else _PUBLIC_MESSAGES.get(kind, "the upstream call failed")
        super().__init__(self.message)
        logger.warning("upstream failure (%s, HTTP %s, code %r): %s", kind, status or "-", code, message[:1000])


Body = dict[str, Any] | bytes  # the internal request: a dict, or its JSON (relayed as it is when the format is OpenAI's)


def as_dict(body: Body) -> dict[str, Any]:
    return orjson.loads(body) if isinstance(body, bytes) else body


class Adapter:
    """One wire format. Subclasses implement both calls; `body` is the internal (OpenAI chat) request."""

    kind = ""

    async def complete(self, upstream: Upstream, body: Body, *, headers: dict[str, str]) -> dict[str, Any]:
        raise NotImplementedError

    async def stream(self, upstream: Upstream, body: Body, *, headers: dict[str, str]) -> tuple[EventStream, dict[str, Any]]:
        raise NotImplementedError


class EventStream:
    """An upstream stream of chat.completion.chunk dicts; `close()` drops the connection (the upstream stops)."""

    def __init__(self, source: Any, iterator: AsyncIterator[Any], closer: Callable[[], Awaitable[None]]):
        self._source = source
        self._iterator = iterator
        self._closer = closer

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await self._iterator.__anext__()
        except (StopAsyncIteration, UpstreamFailure):
            raise
        except Exception as exc:
            raise failure_from(exc) from exc

    async def close(self) -> None:
        try:
            await self._closer()
        except Exception:
            pass


async def stream_start(name: str, stream: EventStream) -> tuple[EventStream, dict[str, Any]]:
    """The stream and its first chunk; a stream that ends or fails before it is closed and raised here."""
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        await stream.close()
        raise UpstreamFailure("malformed", f"{name} closed the stream before any data.") from None
    except BaseException:
        await stream.close()
        raise
    return stream, first


# --- a pooled aiohttp session per upstream (the native adapters) --------------------------------------


async def _close_session(session: aiohttp.ClientSession) -> None:
    await session.close()


def session_for(upstream: Upstream, headers: dict[str, str]) -> aiohttp.ClientSession:
    """A pooled session for this upstream and event loop, with its auth headers and timeouts."""
    rt = runtime()
    key = f"upstream:native:{hash(upstream)}"
    session = rt.get(key)
    if session is None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=upstream.max_connections, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=upstream.connect_timeout_s, sock_read=upstream.timeout_s),
            headers={"Content-Type": "application/json", **headers},
        )
        rt.put(key, session, close=_close_session)
    return session


async def post_json(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], *, headers: dict[str, str], error: Callable
) -> dict[str, Any]:
    """POST a JSON body; the JSON answer (a dict), or UpstreamFailure (`error(status, raw)` for HTTP errors)."""
    try:
        async with session.post(url, data=orjson.dumps(payload), headers=headers or None) as response:
            raw = await response.read()
            if response.status >= 400:
                raise error(response.status, raw)
    except UpstreamFailure:
        raise
    except Exception as exc:
        raise failure_from(exc) from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamFailure("malformed", "the upstream returned a malformed answer")
    return data


async def post_sse(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], *, headers: dict[str, str], error: Callable
) -> aiohttp.ClientResponse:
    """POST a streaming request; the open response (HTTP errors are read, released and raised)."""
    try:
        response = await session.post(url, data=orjson.dumps(payload), headers=headers or None)
        if response.status >= 400:
            raw = await response.read()
            response.release()
            raise error(response.status, raw)
    except UpstreamFailure:
        raise
    except Exception as exc:
        raise failure_from(exc) from exc
    return response


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(event name, decoded data) for each server-sent event; a `[DONE]` data line ends the stream."""
    data: list[bytes] = []
    name = ""
    async for line in response.content:
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip())
            continue
        if line.startswith(b"event:"):
            name = line[6:].strip().decode(errors="replace")
            continue
        if line or not data:
            continue  # comments, keep-alives
        payload = b"\n".join(data)
        data = []
        if payload == b"[DONE]":
            return
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamFailure("stream", "the upstream sent an unreadable event") from exc
        yield name, event
        name = ""


def status_failure(status: int, raw: bytes) -> UpstreamFailure:
    """An HTTP error answer (OpenAI's, Anthropic's and Google's error JSON all put it under "error")."""
    code, message = "", ""
    try:
        data = orjson.loads(raw)
        error = data.get("error") or {}
        given = error.get("code")
        if not (isinstance(given, str) and given):
            # Anthropic: {"type": "error", "error": {"type": "rate_limit_error"}}; Google: {"error": {"code": 429, "status": …}}
            given = error.get("type") if data.get("type") == "error" else error.get("status")
        code = str(given or "")
        message = str(error.get("message") or "")
    except Exception:
        message = raw[:200].decode(errors="replace")
    lowered = message.lower()
    if "prompt is too long" in lowered or "exceeds the maximum number of tokens" in lowered:
        code = "context_length_exceeded"  # Anthropic's and Gemini's words for it
    return UpstreamFailure("status", message or f"HTTP {status}", status=status, code=code)


def failure_from(exc: Exception) -> UpstreamFailure:
    """The SDK's and aiohttp's exceptions in one vocabulary."""
    if isinstance(exc, UpstreamFailure):
        return exc
    if isinstance(exc, openai.APITimeoutError) or isinstance(exc, asyncio.TimeoutError):
        return UpstreamFailure("timeout", "no answer in time")
    if isinstance(exc, openai.APIConnectionError) or isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return UpstreamFailure("connection", f"could not reach it ({exc})")
    if isinstance(exc, openai.APIStatusError):
        return UpstreamFailure(
            "status", getattr(exc, "message", "") or str(exc), status=exc.status_code, code=str(getattr(exc, "code", "") or "")
        )
    if isinstance(exc, openai.APIError):  # an error event inside an SSE stream
        return UpstreamFailure("stream", f"the upstream reported an error: {exc.message}")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamFailure("stream", f"the connection broke ({exc})")
    return UpstreamFailure("malformed", f"{type(exc).__name__}: {exc}")


def completion_limit(body: dict[str, Any], default: int) -> int:
    """The completion limit the pipeline reserved (it sends it under the client's name), else `default`."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default
