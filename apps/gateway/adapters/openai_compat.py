"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, DeepSeek, Together…): the request is relayed as it is.

Two transports speak the OpenAI wire format to any compatible base URL (FINOPS_UPSTREAM_TRANSPORT):

- `sdk` (default): the official `AsyncOpenAI` client over aiohttp (`openai.DefaultAioHttpClient`), called
  through its low-level `post()` so the SDK's request-parameter transforms and pydantic parsing stay off
  the hot path (the gateway relays JSON, it does not need typed objects). `sdk-httpx` uses the SDK's
  default httpx transport instead; measured here it carries about half the requests per second.
- `raw`: the same request on a pooled `aiohttp.ClientSession` directly. It skips the SDK's request
  building (headers, URL and options objects per call), which on this machine is most of the gateway's
  own CPU per request (docs/benchmarks.md, gateway section).

Retries are off: the fallback chain decides. The answer's usage is read by `apps.gateway.usage` at billing
(OpenAI's cached/reasoning details, DeepSeek's cache hit tokens, `service_tier`), so it is relayed untouched.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx2
import orjson
from openai import AsyncOpenAI, AsyncStream, DefaultAioHttpClient, DefaultAsyncHttpxClient

from apps.gateway.adapters.base import (
    OPENAI,
    Adapter,
    Body,
    EventStream,
    UpstreamFailure,
    failure_from,
    sse_events,
    status_failure,
    stream_start,
)
from apps.gateway.selectors import Upstream
from finops.conf import conf
from finops.runtime import runtime

# httpx2 logs every request at INFO: one log line per LLM call costs more than the rest of the relay.
logging.getLogger("httpx2").setLevel(logging.WARNING)

SDK, SDK_HTTPX, RAW = "sdk", "sdk-httpx", "raw"


def transport() -> str:
    value = conf().upstream_transport
    return {"aiohttp": SDK, "httpx": SDK_HTTPX}.get(value, value)


async def _close_client(client: AsyncOpenAI | aiohttp.ClientSession) -> None:
    await client.close()


def sdk_options(upstream: Upstream) -> dict[str, Any]:
    """The timeouts and the pooled HTTP client the SDK clients share."""
    kind = transport()
    timeout = httpx2.Timeout(upstream.timeout_s, connect=upstream.connect_timeout_s)
    limits = httpx2.Limits(max_connections=upstream.max_connections, max_keepalive_connections=upstream.max_connections)
    http_client = (DefaultAsyncHttpxClient if kind == SDK_HTTPX else DefaultAioHttpClient)(timeout=timeout, limits=limits)
    return {"max_retries": 0, "timeout": timeout, "http_client": http_client}


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
            client = AsyncOpenAI(base_url=upstream.base_url, api_key=upstream.api_key, **sdk_options(upstream))
        rt.put(key, client, close=_close_client)
    return client


def as_bytes(body: Body) -> bytes:
    return body if isinstance(body, bytes) else orjson.dumps(body)


def checked_completion(name: str, raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise UpstreamFailure("malformed", f"{name} returned a malformed completion.")
    return data


async def sdk_complete(client: AsyncOpenAI, name: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    try:
        raw = await client.post("/chat/completions", content=body, cast_to=bytes, options={"headers": headers} if headers else {})
    except Exception as exc:
        raise failure_from(exc) from exc
    return checked_completion(name, raw)


async def sdk_stream(client: AsyncOpenAI, name: str, body: bytes, headers: dict[str, str]) -> tuple[EventStream, dict[str, Any]]:
    try:
        events = await client.post(
            "/chat/completions", content=body, cast_to=object, stream=True, stream_cls=AsyncStream[object],
            options={"headers": headers} if headers else {},
        )  # fmt: skip
    except Exception as exc:
        raise failure_from(exc) from exc
    return await stream_start(name, EventStream(events, events.__aiter__(), events.close))


class OpenAICompatible(Adapter):
    kind = OPENAI

    async def complete(self, upstream: Upstream, body: Body, *, headers: dict[str, str]) -> dict[str, Any]:
        client = client_for(upstream)
        if not isinstance(client, aiohttp.ClientSession):
            return await sdk_complete(client, upstream.name, as_bytes(body), headers)
        try:
            url = f"{upstream.base_url}/chat/completions"
            async with client.post(url, data=as_bytes(body), headers=headers or None) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise status_failure(response.status, raw)
        except UpstreamFailure:
            raise
        except Exception as exc:
            raise failure_from(exc) from exc
        return checked_completion(upstream.name, raw)

    async def stream(self, upstream: Upstream, body: Body, *, headers: dict[str, str]) -> tuple[EventStream, dict[str, Any]]:
        client = client_for(upstream)
        if not isinstance(client, aiohttp.ClientSession):
            return await sdk_stream(client, upstream.name, as_bytes(body), headers)
        try:
            response = await client.post(f"{upstream.base_url}/chat/completions", data=as_bytes(body), headers=headers or None)
            if response.status >= 400:
                raw = await response.read()
                response.release()
                raise status_failure(response.status, raw)
        except UpstreamFailure:
            raise
        except Exception as exc:
            raise failure_from(exc) from exc

        async def close_raw() -> None:
            response.close()

        return await stream_start(upstream.name, EventStream(response, _chunks(response), close_raw))


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    async for _, event in sse_events(response):
        if isinstance(event, dict) and event.get("error"):
            error = event["error"]
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            raise UpstreamFailure("stream", f"the upstream reported an error: {message}")
        yield event
