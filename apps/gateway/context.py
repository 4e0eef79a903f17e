"""The state of one request as it moves through the pipeline, and the ledger row it becomes.

Every stage of `apps.gateway.pipeline` reads and fills a `RequestContext`; `ledger_row()` maps it
onto the columns of `llm_requests`. Other apps' pipeline hooks (cache, routing, budgets) receive
the same object and fill their own section.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from apps.ledger.money import ZERO
from finops import clock


@dataclass(slots=True)
class Caller:
    api_key_id: int
    api_key_prefix: str
    org_id: int
    team_id: int
    member_id: int
    store_prompts: bool = False
    allow_model_pinning: bool = True
    rate_limit_per_minute: int = 0


@dataclass(slots=True)
class RouteDecision:
    """What the router chose. `chain` is the fallback order: this model first, then upward only."""

    model: str
    tier: str = ""
    provider: str = ""
    strategy: str = ""  # pinned, keyword, complexity, confidence, default, downgrade, fallback
    reason: str = ""
    requested_tier: str = ""
    chain: list[tuple[str, str]] = field(default_factory=list)  # [(tier, model), ...] to try in order


@dataclass(slots=True)
class RequestContext:
    endpoint: str  # "chat_completions" | "chat"
    request_id: uuid.UUID = field(default_factory=uuid.uuid4)
    received_at: dt.datetime = field(default_factory=lambda: clock.now())
    started: float = field(default_factory=time.perf_counter)

    caller: Caller | None = None
    body: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    requested_model: str = ""
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased request headers

    # Cache-Control from the client.
    cache_no_cache: bool = False  # skip the lookup
    cache_no_store: bool = False  # do not store the answer
    cache_ttl_s: int | None = None

    prompt_tokens_estimate: int = 0
    prompt_hash: str = ""

    # Stage 4-5: cache.
    cache_status: str = "none"
    similarity: float | None = None
    saved_usd: Decimal = ZERO

    # Stage 6 and 9: routing.
    route: RouteDecision | None = None
    escalated: bool = False
    escalation_cost_usd: Decimal = ZERO

    # Stage 7: budget.
    estimated_cost_usd: Decimal = ZERO
    budget_state: str = "none"
    reserved_usd: Decimal = ZERO
    reservation_id: Any = None
    budget_remaining_usd: Decimal | None = None
    degraded: bool = False  # fail-open: budgets unreachable, limiter in force, max_tokens clamped

    # Stage 8: upstream.
    model: str = ""  # the model that answered
    provider: str = ""
    tier: str = ""
    attempts: int = 0
    fallback_from: str = ""
    upstream_ms: float | None = None

    # Stage 10: cost.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = ZERO
    price_id: int | None = None

    status: str = "served"
    http_status: int = 200
    error_code: str = ""
    response_text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # per-stage scratch space

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def ledger_row(self) -> dict[str, Any]:
        caller = self.caller
        route = self.route
        store = bool(caller and caller.store_prompts)
        overhead = None
        if self.upstream_ms is not None:
            overhead = max(self.elapsed_ms() - self.upstream_ms, 0.0)
        return {
            "request_id": self.request_id,
            "endpoint": self.endpoint,
            "received_at": self.received_at,
            "org_id": caller.org_id if caller else None,
            "team_id": caller.team_id if caller else None,
            "member_id": caller.member_id if caller else None,
            "api_key_id": caller.api_key_id if caller else None,
            "api_key_prefix": caller.api_key_prefix if caller else "",
            "status": self.status,
            "http_status": self.http_status,
            "error_code": self.error_code,
            "stream": self.stream,
            "requested_model": self.requested_model,
            "model": self.model or (route.model if route else ""),
            "provider": self.provider or (route.provider if route else ""),
            "tier": self.tier or (route.tier if route else ""),
            "price_id": self.price_id,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": self.cost_usd,
            "saved_usd": self.saved_usd,
            "cache_status": self.cache_status,
            "similarity": self.similarity,
            "requested_tier": route.requested_tier if route else "",
            "route_strategy": route.strategy if route else "",
            "route_reason": (route.reason if route else "")[:255],
            "escalated": self.escalated,
            "escalation_cost_usd": self.escalation_cost_usd,
            "fallback_from": self.fallback_from,
            "attempts": self.attempts,
            "budget_state": self.budget_state,
            "reserved_usd": self.reserved_usd,
            "upstream_ms": self.upstream_ms,
            "overhead_ms": overhead,
            "prompt_hash": self.prompt_hash,
            "prompt_text": _prompt_text(self.messages) if store else None,
            "response_text": self.response_text if store else None,
        }


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)
