"""What the wire-format endpoints (/v1/embeddings, /v1/responses, /v1/messages) hand the ASGI transport.

Each format lives in its own module (`embeddings_api`, `wire_responses`, `wire_messages`) as one handler
`(ctx, headers, body, rejection) -> WireReply`. The transport (`apps.gateway.asgi.GatewayASGI.wire`) sends the JSON
body or relays the stream, then awaits `finish()` (or the stream's `finish(disconnected=…)`): settlement,
the cache store and the ledger row happen after the response has left, as for /v1/chat/completions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from apps.gateway import reply as replies
from apps.gateway.context import RequestContext
from apps.gateway.usage import Usage, usage_read
from finops.errors import FinopsError


class WireStream(Protocol):
    def chunks(self) -> AsyncIterator[bytes]: ...

    async def finish(self, *, disconnected: bool) -> None: ...


async def _nothing() -> None:
    return None


@dataclass(slots=True)
class WireReply:
    status: int
    headers: dict[str, str]
    payload: dict[str, Any] | None = None
    stream: WireStream | None = None
    finish: Callable[[], Awaitable[None]] = _nothing


Handler = Callable[[RequestContext, dict[str, str], bytes, FinopsError | None], Awaitable[WireReply]]


def as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (upstream and client JSON is checked, never trusted)."""
    return value if isinstance(value, dict) else {}


def answer_usage(usage: Any, finops: Any = None) -> Usage:
    """An answer's usage as `apps.gateway.usage` normalises it, for the wire formats to rename: prompt and completion
    from the `finops` object (our own billing figures) when the usage reports none."""
    read = usage_read(usage) or Usage(prompt=0, completion=0)
    own = usage_read({k: v for k, v in as_dict(finops).items() if k in ("prompt_tokens", "completion_tokens")})
    if own is None:
        return read
    return replace(read, prompt=read.prompt or own.prompt, completion=read.completion or own.completion)


def authorization_of(headers: dict[str, str]) -> str | None:
    """`Authorization: Bearer <key>`, or Anthropic's `x-api-key: <key>` (what the anthropic SDK sends)."""
    if headers.get("authorization"):
        return headers["authorization"]
    key = headers.get("x-api-key", "").strip()
    return f"Bearer {key}" if key else None


def named_event(name: str, data: dict[str, Any]) -> bytes:
    """One typed SSE event (`event: <type>` then its JSON), as the Responses and Messages streams send them."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def sse_events(chunk: bytes) -> list[Any]:
    """The JSON events in a chunk of the chat SSE relay (`data: {...}` blocks; `[DONE]` is None)."""
    events: list[Any] = []
    for block in chunk.split(b"\n\n"):
        block = block.strip()
        if not block.startswith(b"data:"):
            continue
        data = block[5:].strip()
        events.append(None if data == b"[DONE]" else orjson.loads(data))
    return events


def finalizer(reply: replies.Reply) -> Callable[[], Awaitable[None]]:
    async def finish() -> None:
        await replies.finalize(reply)

    return finish
