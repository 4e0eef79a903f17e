"""Upstream calls: one entry point per call shape, dispatched to the provider's adapter (apps/gateway/adapters).

`upstream_complete` and `upstream_stream` take the internal request (an OpenAI chat.completions body, as bytes or a
dict) and return the answer in OpenAI's shape whatever the provider speaks: a chat.completion dict, or an
`EventStream` of chat.completion.chunk dicts and its first chunk. The adapter is chosen by the upstream's `kind`
(Provider.kind in the admin: openai | anthropic | azure | gemini).

Every failure is an `UpstreamFailure` with a `kind` (status, timeout, connection, malformed, stream), so the
pipeline's fallback logic and circuit breaker do not depend on the provider or the transport. Retries are off:
the fallback chain decides.
"""

from __future__ import annotations

from typing import Any

from apps.gateway.adapters import adapter_for
from apps.gateway.adapters.base import EventStream, UpstreamFailure, failure_from, status_failure
from apps.gateway.adapters.openai_compat import RAW, SDK, SDK_HTTPX, client_for, transport
from apps.gateway.selectors import Upstream

__all__ = [
    "RAW", "SDK", "SDK_HTTPX", "EventStream", "UpstreamFailure", "client_for", "transport", "upstream_complete",
    "upstream_stream",
]  # fmt: skip

_failure = failure_from  # the names this module had before the adapters
_status_failure = status_failure


async def upstream_complete(upstream: Upstream, body: bytes | dict[str, Any], *, headers: dict[str, str]) -> dict[str, Any]:
    """The completion as a chat.completion dict (usage in the internal shape: apps.gateway.usage)."""
    return await adapter_for(upstream.kind).complete(upstream, body, headers=headers)


async def upstream_stream(
    upstream: Upstream, body: bytes | dict[str, Any], *, headers: dict[str, str]
) -> tuple[EventStream, dict[str, Any]]:
    """A streaming completion: the stream of chat.completion.chunk dicts and its first chunk (errors before it raise)."""
    return await adapter_for(upstream.kind).stream(upstream, body, headers=headers)
