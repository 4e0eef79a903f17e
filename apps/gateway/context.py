"""The state of one request as it moves through the pipeline, and the ledger row it becomes.

Only the gateway writes a `RequestContext`: the stages of `apps.gateway.pipeline` call the other apps'
typed functions with values (a caller, messages, an estimate) and copy their typed results (a cache
lookup, a route decision, a budget decision) into the fields below. `ledger_row()` maps it onto the
columns of `llm_requests` (apps.ledger.recorder.row_new).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from apps.ledger.money import ZERO
from apps.ledger.recorder import row_new
from apps.routing.types import RouteDecision  # noqa: F401 - re-exported for tests and benches
from apps.tenancy.types import Caller  # noqa: F401 - re-exported
from finops import clock

if TYPE_CHECKING:
    from apps.cache.lookup import CacheState
    from apps.gateway.selectors import Catalog
    from apps.routing.types import ConfidenceCheck


@dataclass(slots=True)
class RequestContext:
    endpoint: str  # "chat_completions" | "chat" | "responses" | "messages" | "embeddings" (the ledger row's)
    request_id: uuid.UUID = field(default_factory=uuid.uuid4)
    received_at: dt.datetime = field(default_factory=lambda: clock.now())
    started: float = field(default_factory=time.perf_counter)

    caller: Caller | None = None
    body: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    requested_model: str = ""
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None  # the completion limit reserved and sent upstream (stage 3: the default if none)
    max_tokens_param: str = "max_tokens"  # the name the client used for it ("max_completion_tokens" or "max_tokens")
    n: int = 1  # completions asked for (capped at FINOPS["GATEWAY_MAX_N"]; 1 while failed open)
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased request headers
    client_addr: str = ""  # the client's address (the ASGI server's, after its trusted proxy headers)
    ledger_skip: bool = False  # an auth failure beyond the sampled ones: counted in Prometheus, no ledger row

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
    cache_write_tokens: int = 0  # ⊂ prompt_tokens, written to the provider's prompt cache (apps.gateway.usage)
    reasoning_tokens: int = 0  # ⊂ completion_tokens
    service_tier: str = ""  # as the upstream reported it
    cost_usd: Decimal = ZERO
    price_id: int | None = None
    usage_estimated: bool = False  # billed from our upper-bound count: the provider reported no (final) usage

    status: str = "served"
    http_status: int = 200
    error_code: str = ""
    response_text: str | None = None

    # What the stages keep for the later ones (typed: no scratch dict).
    catalog: Catalog | None = None  # prices and upstreams as of stage 3
    mock_headers: dict[str, str] = field(default_factory=dict)  # x-mock-* fault injection, sent to the mock only
    cache: CacheState | None = None  # stage 4's plan, reused by stage 5 and the store
    downgraded_from: str = ""  # stage 7: the model a downgrade budget moved the request from
    fail_open_reason: str = ""  # stage 7: why the budgets could not be read
    max_tokens_requested: int | None = None  # stage 7: the client's limit before a fail-open clamp
    n_requested: int | None = None  # stage 7: the client's `n` before a fail-open clamp to 1
    reserved: bool = False  # stage 7 ran to completion: settle after the response
    topup_reservation_ids: list[Any] = field(default_factory=list)  # stage 8-9: reserved before a pricier call
    confidence: ConfidenceCheck | None = None  # stage 9: the router's verdict on the first answer
    billed_response: dict[str, Any] | None = field(default=None, repr=False)  # stage 9 billed it already
    upstream_usage: dict[str, Any] | None = None  # a stream's usage chunk

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    @property
    def routed(self) -> RouteDecision:
        """The route decision, for the stages after 6 (stage 7 may replace it): none yet is a pipeline bug."""
        if self.route is None:
            raise RuntimeError("the request is not routed yet (stage 6)")
        return self.route

    @property
    def validated_catalog(self) -> Catalog:
        """The catalog stage 3 validated the request against, for the stages after it."""
        if self.catalog is None:
            raise RuntimeError("the request is not validated yet (stage 3)")
        return self.catalog

    def ledger_row(self) -> dict[str, Any]:
        caller = self.caller
        route = self.route
        store = bool(caller and caller.store_prompts)
        overhead = None
        if self.upstream_ms is not None:
            overhead = max(self.elapsed_ms() - self.upstream_ms, 0.0)
        return row_new(
            request_id=self.request_id,
            endpoint=self.endpoint,
            received_at=self.received_at,
            org_id=caller.org_id if caller else None,
            team_id=caller.team_id if caller else None,
            member_id=caller.member_id if caller else None,
            api_key_id=caller.api_key_id if caller else None,
            api_key_prefix=caller.api_key_prefix if caller else "",
            status=self.status,
            http_status=self.http_status,
            error_code=self.error_code,
            stream=self.stream,
            requested_model=self.requested_model,
            model=self.model or (route.model if route else ""),
            provider=self.provider or (route.provider if route else ""),
            tier=self.tier or (route.tier if route else ""),
            price_id=self.price_id,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
            cache_write_tokens=self.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens,
            service_tier=self.service_tier,
            cost_usd=self.cost_usd,
            saved_usd=self.saved_usd,
            cache_status=self.cache_status,
            similarity=self.similarity,
            requested_tier=route.requested_tier if route else "",
            route_strategy=route.strategy if route else "",
            route_reason=(route.reason if route else "")[:255],
            escalated=self.escalated,
            escalation_cost_usd=self.escalation_cost_usd,
            fallback_from=self.fallback_from,
            attempts=self.attempts,
            budget_state=self.budget_state,
            reserved_usd=self.reserved_usd,
            upstream_ms=self.upstream_ms,
            overhead_ms=overhead,
            prompt_hash=self.prompt_hash,
            prompt_text=_prompt_text(self.messages) if store else None,
            response_text=self.response_text if store else None,
            usage_estimated=self.usage_estimated,
        )


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)
