"""Streams: an upstream SSE stream relayed to the client and billed from its usage, and a cache hit replayed as SSE."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from apps.gateway import metrics
from apps.gateway.billing import bill, charge
from apps.gateway.context import RequestContext
from apps.gateway.providers import EventStream, UpstreamFailure
from apps.gateway.reply import SSE_DONE, Reply, finalize, finops_summary, sse
from apps.gateway.selectors import Catalog
from apps.ledger.recorder import ledger_intent_final
from finops.conf import conf
from finops.tokens import message_text, token_bound

logger = logging.getLogger(__name__)

_END = object()  # the upstream stream ended


async def _next_event(events: EventStream) -> Any:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return _END


class ChatStream:
    """An upstream SSE stream relayed to the client, billed from the upstream's final usage chunk.

    The finish_reason chunk is held back until the usage chunk arrives, so that the client's final chunk
    carries the `finops` figures even when it did not ask for usage. If the client leaves, `finish(disconnected=True)`
    reads the upstream on, not relayed, until its final usage (bounded by FINOPS["GATEWAY_ABANDONED_DRAIN_S"] and
    ["GATEWAY_ABANDONED_DRAIN_MAX_EVENTS"]) and bills that. A stream that never reports its usage is billed from our
    upper-bound count of all it sent — text, reasoning, tool calls — capped at the reservation, and its row is
    marked `usage_estimated`. Each upstream read runs in its own task, so that the transport cancelling the relay
    on a disconnect does not break the upstream stream the drain goes on reading.
    """

    def __init__(self, ctx: RequestContext, catalog: Catalog, events: EventStream, first: Any):
        self.ctx = ctx
        self.catalog = catalog
        self.events = events
        self.first = first
        self.parts: dict[int, list[str]] = {}
        self.reasoning: dict[int, list[str]] = {}  # reasoning_content (DeepSeek, vLLM) or reasoning deltas
        self.pending: asyncio.Future | None = None  # the upstream read in flight
        self.started = False  # chunks() ran: the first event was relayed (else the drain reads it)
        self.roles: dict[int, str] = {}
        self.tool_calls: dict[int, dict[int, dict[str, Any]]] = {}  # choice index → tool call index → call so far
        self.finish_reasons: dict[int, str] = {}
        self.template: dict[str, Any] = {}
        self.pending_finish: dict[str, Any] | None = None
        self.billed = False
        self.failed: str | None = None
        self.done = False
        self.finished = False
        self.first_sent_at: float | None = None
        self.journal_at = 0.0
        self.service_tier: str | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        event = self.first
        try:
            while True:
                if isinstance(event, dict):
                    for chunk in self._relay(event):
                        yield chunk
                        if self.first_sent_at is None:
                            self.first_sent_at = time.perf_counter()
                    if self.first_sent_at is not None and not self.billed and time.perf_counter() >= self.journal_at:
                        self._journal()
                event = await self._next()
                if event is _END:
                    break
        except UpstreamFailure as exc:
            self.failed = "upstream_stream_error"
            logger.warning("upstream stream for %s broke: %s", self.ctx.request_id, exc)
            yield sse({"error": {"message": "The upstream stream broke before the answer was complete.", "type": "upstream_error",
                                  "param": None, "code": "upstream_stream_error"}})  # fmt: skip
            return
        if not self.finish_reasons:
            self.failed = "upstream_truncated"
            yield sse({"error": {"message": "The upstream ended the stream before the answer was complete.", "type": "upstream_error",
                                  "param": None, "code": "upstream_truncated"}})  # fmt: skip
            return
        if not self.billed:  # the stream ended without a usage-only chunk: the last usage seen, else our own count
            self._bill_usage(final=True)
        if self.pending_finish is not None:
            yield sse(self._with_summary(self.pending_finish))
            self.pending_finish = None
        self.done = True
        yield SSE_DONE

    def _relay(self, event: dict[str, Any]) -> list[bytes]:
        if not self.template:
            self.template = {k: event.get(k) for k in ("id", "object", "created", "model", "system_fingerprint") if k in event}
        choices = event.get("choices") or []
        finishing = False
        for choice in choices:
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            if delta.get("role"):
                self.roles[index] = delta["role"]
            if isinstance(delta.get("content"), str) and delta["content"]:
                self.parts.setdefault(index, []).append(delta["content"])
            for key in ("reasoning_content", "reasoning"):
                if isinstance(delta.get(key), str) and delta[key]:
                    self.reasoning.setdefault(index, []).append(delta[key])
            if isinstance(delta.get("tool_calls"), list):
                self._tool_call_fragments(index, delta["tool_calls"])
            if choice.get("finish_reason"):
                self.finish_reasons[index] = choice["finish_reason"]
                finishing = True
        if isinstance(event.get("service_tier"), str):
            self.service_tier = event["service_tier"]  # priced by the row's multiplier (apps.gateway.usage)
        usage = event.get("usage")
        if isinstance(usage, dict):
            # The latest usage replaces the previous one: with vLLM's continuous_usage_stats every chunk carries the
            # usage so far (cumulative), so summing them would bill the answer many times over. Billed once, below.
            self.ctx.upstream_usage = usage
        if isinstance(usage, dict) and not choices:  # the final usage chunk
            self._bill_usage(final=True)
            out = []
            if self.pending_finish is not None:
                out.append(
                    sse(
                        self._with_summary(self.pending_finish)
                        if not self.ctx.include_usage
                        else self._client_view(self.pending_finish)
                    )
                )
                self.pending_finish = None
            if self.ctx.include_usage:
                out.append(sse(self._with_summary(event)))
            return out
        if finishing:
            self.pending_finish = event
            return []
        return [sse(self._client_view(event))]

    def _tool_call_fragments(self, index: int, fragments: list[Any]) -> None:
        """Reassemble streamed tool calls: the first fragment of a call brings its id, type and name, the next ones
        pieces of its arguments (OpenAI's wire format), keyed by the call's index."""
        calls = self.tool_calls.setdefault(index, {})
        for fragment in fragments:
            if not isinstance(fragment, dict):
                continue
            call = calls.setdefault(
                fragment.get("index", len(calls)), {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if fragment.get("id"):
                call["id"] = fragment["id"]
            if fragment.get("type"):
                call["type"] = fragment["type"]
            function = fragment.get("function")
            function = function if isinstance(function, dict) else {}
            if function.get("name"):
                call["function"]["name"] += function["name"]
            if isinstance(function.get("arguments"), str):
                call["function"]["arguments"] += function["arguments"]

    def _message(self, index: int) -> dict[str, Any]:
        text = "".join(self.parts.get(index, []))
        message: dict[str, Any] = {"role": self.roles.get(index, "assistant"), "content": text}
        calls = self.tool_calls.get(index)
        if calls:
            message["content"] = text or None
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
        return message

    def _journal(self) -> None:
        """Refresh this request's intent with the tokens streamed so far, at most once a second (recorder step 5)."""
        self.journal_at = time.perf_counter() + 1.0
        if conf().ledger_intents:
            streamed = self._streamed_tokens()
            ctx = self.ctx
            from apps.gateway.pipeline import journal_intent  # the stage-8 journal, refreshed while streaming

            journal_intent(
                ctx, model=ctx.model, tier=ctx.tier, provider=ctx.provider, completion_tokens=streamed, http_status=200
            )

    def _client_view(self, event: dict[str, Any]) -> dict[str, Any]:
        if not self.ctx.include_usage and "usage" in event:
            event = {k: v for k, v in event.items() if k != "usage"}
        return event

    def _with_summary(self, event: dict[str, Any]) -> dict[str, Any]:
        summary = finops_summary(self.ctx)
        event = dict(event)
        usage = event.get("usage")
        if self.ctx.include_usage and isinstance(usage, dict):
            event["usage"] = {**usage, "finops": summary}
        else:
            event.pop("usage", None)
        event["finops"] = summary
        return event

    def _streamed_text(self) -> str:
        return "".join(self.parts.get(0, []))

    def _streamed_tokens(self) -> int:
        """Our own count of what was streamed, an upper bound (finops.tokens.token_bound): the text, the reasoning
        and the tool calls' names and arguments."""
        text = sum(token_bound("".join(parts)) for parts in self.parts.values())
        text += sum(token_bound("".join(parts)) for parts in self.reasoning.values())
        calls = sum(
            token_bound(call["function"]["name"]) + token_bound(call["function"]["arguments"])
            for calls in self.tool_calls.values()
            for call in calls.values()
        )
        return text + calls

    def _bill_usage(self, *, final: bool) -> None:
        """Bill the stream, once: from the provider's final usage (`final`: the usage-only chunk, or the last usage of
        a stream that ended normally), else estimated (`_bill_estimated`)."""
        if self.billed:
            return
        if final and isinstance(self.ctx.upstream_usage, dict):
            bill(self.ctx, self.catalog, {"usage": self.ctx.upstream_usage, "choices": [], "service_tier": self.service_tier})
        else:
            self._bill_estimated()
        self.billed = True

    def _bill_estimated(self) -> None:
        """No final usage: our upper-bound count of everything received (text, reasoning, tool calls), never less
        than a partial usage the provider reported, capped at the completion limit reserved (the provider cannot
        write more); the prompt as reported, else its upper bound. The row says it is estimated."""
        ctx = self.ctx
        usage: dict[str, Any] = ctx.upstream_usage if isinstance(ctx.upstream_usage, dict) else {}
        reported_completion, reported_prompt = usage.get("completion_tokens"), usage.get("prompt_tokens")
        reported = reported_completion if isinstance(reported_completion, int) else 0
        limit = (ctx.max_tokens or conf().gateway_default_max_tokens) * max(ctx.n, 1)
        completion = max(min(self._streamed_tokens(), limit), reported)
        prompt = reported_prompt if isinstance(reported_prompt, int) else ctx.prompt_tokens_estimate
        charge(ctx, self.catalog, prompt=prompt, completion=completion, cached=0, service_tier=self.service_tier or "")
        ctx.usage_estimated = True

    async def _next(self) -> Any:
        """The next upstream event (or _END), read in a task of its own: a cancelled reader leaves it running."""
        if self.pending is None:
            self.pending = asyncio.ensure_future(_next_event(self.events))
        pending = self.pending
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done():
                self.pending = None

    async def _drain(self) -> None:
        """The client left before the end: read the upstream on, not relayed, until its final usage (or its end),
        within the drain deadline and event count. Whatever was not billed by then is estimated by the caller."""
        settings_ = conf()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings_.gateway_abandoned_drain_s
        events = 0
        if not self.started:  # nobody relayed anything, not even the first event
            self.started = True
            if isinstance(self.first, dict):
                self._relay(self.first)
        try:
            while not self.billed and events < settings_.gateway_abandoned_drain_max_events:
                left = deadline - loop.time()
                if left <= 0:
                    break
                event = await asyncio.wait_for(self._next(), left)
                if event is _END:
                    if self.finish_reasons:  # ended normally: its last usage, if any, is final
                        self._bill_usage(final=True)
                    break
                events += 1
                if isinstance(event, dict):
                    self._relay(event)  # collects the text, reasoning, tool calls and usage; nothing is sent
        except (TimeoutError, UpstreamFailure) as exc:
            logger.warning("abandoned stream %s not read to its usage: %r", self.ctx.request_id, exc)
        finally:
            metrics.child(metrics.ABANDONED_DRAINS, "usage" if self.billed else "estimated").inc()

    def completion(self) -> dict[str, Any]:
        """The stream reassembled as a chat.completion, for the cache."""
        usage = self.ctx.upstream_usage or {}
        return {
            **{k: v for k, v in self.template.items() if k != "object"},
            "object": "chat.completion",
            "choices": [
                {
                    "index": index,
                    "message": self._message(index),
                    "finish_reason": reason,
                    "logprobs": None,
                }
                for index, reason in sorted(self.finish_reasons.items())
            ],
            "usage": {k: v for k, v in usage.items() if k != "finops"},
        }

    async def finish(self, *, disconnected: bool) -> None:
        """Close the upstream, bill, settle, cache and record. Called once by the transport, whatever happened."""
        if self.finished:
            return
        self.finished = True
        ctx = self.ctx
        if disconnected and not self.done and not self.failed and not self.billed:
            await self._drain()
        if self.pending is not None and not self.pending.done():
            self.pending.cancel()
        try:
            await self.events.close()
        except Exception:
            pass
        if not self.billed:
            self._bill_usage(final=False)
        ctx.response_text = self._streamed_text()
        if disconnected and not self.done:
            ctx.status = "disconnected"
        elif self.failed:
            ctx.status, ctx.error_code = "failed", self.failed
        reply = Reply(ctx=ctx, status=200, headers={})
        if ctx.status == "served":
            reply.response = self.completion()
        row = ctx.ledger_row()
        first_chunk_ms = ((self.first_sent_at or time.perf_counter()) - ctx.started) * 1000
        row["overhead_ms"] = max(first_chunk_ms - (ctx.upstream_ms or 0.0), 0.0)
        metrics.child(metrics.OVERHEAD_SECONDS, ctx.endpoint, ctx.cache_status).observe(row["overhead_ms"] / 1000)
        ledger_intent_final(row)
        reply.row = row
        await finalize(reply)


class CachedStream:
    """A cache hit replayed as SSE chunks, for a client that asked to stream."""

    def __init__(self, ctx: RequestContext, hit: dict[str, Any]):
        self.ctx = ctx
        self.hit = hit

    async def chunks(self) -> AsyncIterator[bytes]:
        base = {k: self.hit.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        base["object"] = "chat.completion.chunk"
        choices = self.hit.get("choices") or []
        for choice in choices:
            message = choice.get("message") or {}
            delta = {"role": message.get("role", "assistant"), "content": message_text(message.get("content"))}
            yield sse(
                {**base, "choices": [{"index": choice.get("index", 0), "delta": delta, "logprobs": None, "finish_reason": None}]}
            )
        summary = finops_summary(self.ctx)
        finish = {
            **base,
            "choices": [
                {"index": c.get("index", 0), "delta": {}, "logprobs": None, "finish_reason": c.get("finish_reason", "stop")}
                for c in choices
            ],
        }
        if self.ctx.include_usage:
            yield sse(finish)
            usage = self.hit.get("usage")
            usage = usage if isinstance(usage, dict) else {}
            yield sse({**base, "choices": [], "usage": {**usage, "finops": summary}, "finops": summary})
        else:
            yield sse({**finish, "finops": summary})
        yield SSE_DONE

    async def finish(self, *, disconnected: bool) -> None:
        reply = Reply(ctx=self.ctx, status=200, headers={})
        await finalize(reply)
