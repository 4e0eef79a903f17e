"""Upstream calls: pooled clients per provider and event loop, explicit timeouts, one error vocabulary.

Two transports speak the OpenAI wire format to any compatible base URL (FINOPS_UPSTREAM_TRANSPORT):

- `sdk` (default): the official `AsyncOpenAI` client over aiohttp (`openai.DefaultAioHttpClient`), called
  through its low-level `post()` so the SDK's request-parameter transforms and pydantic parsing stay off
  the hot path (the gateway relays JSON, it does not need typed objects). `sdk-httpx` uses the SDK's
  default httpx transport instead; measured here it carries about half the requests per second.
- `raw`: the same request on a pooled `aiohttp.ClientSession` directly. It skips the SDK's request
  building (headers, URL and options objects per call), which on this machine is most of the gateway's
  own CPU per request (docs/benchmarks.md, gateway section).

Both raise `UpstreamFailure` with a `kind` (status, timeout, connection, malformed, stream) so the
pipeline's fallback logic does not depend on the transport. Retries are off: the fallback chain decides.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx2
import openai
import orjson
from django.conf import settings
from openai import AsyncOpenAI, AsyncStream, DefaultAioHttpClient, DefaultAsyncHttpxClient

from apps.gateway.selectors import Upstream
from finops.runtime import runtime

# httpx2 logs every request at INFO: one log line per LLM call costs more than the rest of the relay.
logging.getLogger("httpx2").setLevel(logging.WARNING)

SDK, SDK_HTTPX, RAW = "sdk", "sdk-httpx", "raw"


logger = logging.getLogger(__name__)

# The public side of a failure: what an API caller may read. The upstream's own text goes to the log only.
_PUBLIC_MESSAGES = {
    "timeout": "no answer in time",
    "connection": "the connection failed",
    "malformed": "the answer was malformed",
    "stream": "the upstream reported an error",
}
_SAFE_CODE = re.compile(r"^[a-z0-9_.-]{1,64}$")
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


def transport() -> str:
    value = settings.FINOPS["UPSTREAM_TRANSPORT"]
    return {"aiohttp": SDK, "httpx": SDK_HTTPX}.get(value, value)


# --- clients --------------------------------------------------------------------------------------

async def _close_client(client: AsyncOpenAI | aiohttp.ClientSession) -> None:
    await client.close()


def client_for(upstream: Upstream) -> AsyncOpenAI | aiohttp.ClientSession:
    kind = transport()
    rt = runtime()
    key = f"upstream:{kind}:{hash(upstream)}"
    client = rt.get(key)
    if client is None:
        if kind == RAW:
            client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=upstream.max_connections, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=upstream.connect_timeout_s, sock_read=upstream.timeout_s),
                headers={"Authorization": f"Bearer {upstream.api_key}", "Content-Type": "application/json"},
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        else:
            timeout = httpx2.Timeout(upstream.timeout_s, connect=upstream.connect_timeout_s)
            limits = httpx2.Limits(max_connections=upstream.max_connections, max_keepalive_connections=upstream.max_connections)
            http_client = (DefaultAsyncHttpxClient if kind == SDK_HTTPX else DefaultAioHttpClient)(timeout=timeout, limits=limits)
            client = AsyncOpenAI(
                base_url=upstream.base_url, api_key=upstream.api_key, max_retries=0, timeout=timeout, http_client=http_client
            )
        rt.put(key, client, close=_close_client)
    return client


# --- calls ----------------------------------------------------------------------------------------


async def upstream_complete(upstream: Upstream, body: bytes, *, headers: dict[str, str]) -> dict[str, Any]:
    """POST /chat/completions; the completion as a dict."""
    client = client_for(upstream)
    try:
        if isinstance(client, aiohttp.ClientSession):
            async with client.post(f"{upstream.base_url}/chat/completions", data=body, headers=headers or None) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise _status_failure(response.status, raw)
        else:
            raw = await client.post(
                "/chat/completions", content=body, cast_to=bytes, options={"headers": headers} if headers else {}
            )
    except UpstreamFailure:
        raise
    except Exception as exc:
        raise _failure(exc) from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise UpstreamFailure("malformed", f"{upstream.name} returned a malformed completion.")
    return data


class EventStream:
    """An upstream SSE stream of chat.completion.chunk dicts; `close()` drops the connection (the upstream stops)."""

    def __init__(self, source: Any, iterator: AsyncIterator[Any], closer):
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
            raise _failure(exc) from exc

    async def close(self) -> None:
        try:
            await self._closer()
        except Exception:
            pass


async def upstream_stream(upstream: Upstream, body: bytes, *, headers: dict[str, str]) -> tuple[EventStream, dict[str, Any]]:
    """POST a streaming /chat/completions; the stream and its first event (errors before it are raised here)."""
    client = client_for(upstream)
    try:
        if isinstance(client, aiohttp.ClientSession):
            response = await client.post(f"{upstream.base_url}/chat/completions", data=body, headers=headers or None)
            if response.status >= 400:
                raw = await response.read()
                response.release()
                raise _status_failure(response.status, raw)

            async def close_raw() -> None:
                response.close()

            stream = EventStream(response, _sse_events(response), close_raw)
        else:
            events = await client.post(
                "/chat/completions", content=body, cast_to=object, stream=True, stream_cls=AsyncStream[object],
                options={"headers": headers} if headers else {},
            )  # fmt: skip
            stream = EventStream(events, events.__aiter__(), events.close)
    except UpstreamFailure:
        raise
    except Exception as exc:
        raise _failure(exc) from exc
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        await stream.close()
        raise UpstreamFailure("malformed", f"{upstream.name} closed the stream before any data.") from None
    except BaseException:
        await stream.close()
        raise
    return stream, first


async def _sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    data: list[bytes] = []
    async for line in response.content:
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip())
            continue
        if line or not data:
            continue  # comments, event names, keep-alives
        payload = b"\n".join(data)
        data = []
        if payload == b"[DONE]":
            return
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamFailure("stream", "the upstream sent an unreadable event") from exc
        if isinstance(event, dict) and event.get("error"):
            error = event["error"]
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            raise UpstreamFailure("stream", f"the upstream reported an error: {message}")
        yield event


def _status_failure(status: int, raw: bytes) -> UpstreamFailure:
    code, message = "", ""
    try:
        error = orjson.loads(raw).get("error") or {}
        code, message = str(error.get("code") or ""), str(error.get("message") or "")
    except Exception:
        message = raw[:200].decode(errors="replace")
    return UpstreamFailure("status", message or f"HTTP {status}", status=status, code=code)


def _failure(exc: Exception) -> UpstreamFailure:
    """The SDK's and aiohttp's exceptions in one vocabulary."""
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
