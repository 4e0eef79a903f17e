from __future__ import annotations

import uuid

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q

from apps.ledger.money import (
    COST_DECIMAL_PLACES,
    COST_MAX_DIGITS,
    PRICE_DECIMAL_PLACES,
    PRICE_MAX_DIGITS,
)


def cost_field(**kwargs) -> models.DecimalField:
    kwargs.setdefault("default", 0)
    return models.DecimalField(max_digits=COST_MAX_DIGITS, decimal_places=COST_DECIMAL_PLACES, **kwargs)


def price_field(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=PRICE_MAX_DIGITS, decimal_places=PRICE_DECIMAL_PLACES, **kwargs)


class ModelPrice(models.Model):
    """A list price per 1M tokens, in force from `effective_from` (inclusive) to `effective_to` (exclusive)."""

    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=128)
    input_per_1m = price_field()
    output_per_1m = price_field()
    # NULL: the provider gives no discount for cached input, so cached tokens bill at the input price.
    cached_input_per_1m = price_field(null=True, blank=True)
    # NULL: the provider does not bill cache writes apart (OpenAI, Gemini, DeepSeek): written tokens bill at the
    # input price. Anthropic's 5-minute cache write is 1.25 × input.
    cache_write_per_1m = price_field(null=True, blank=True)
    # The factor on every rate of this row for an answer served at service_tier "priority" (OpenAI's Priority
    # processing is a uniform multiple of the standard rates per model). NULL: no priority price known.
    priority_multiplier = models.DecimalField(max_digits=6, decimal_places=3, null=True, blank=True)
    effective_from = models.DateField()
    effective_to = models.DateField(null=True, blank=True)
    source = models.CharField(max_length=500, blank=True)
    # What the model serves: /v1/chat/completions, /v1/responses, /v1/messages ("chat") or /v1/embeddings ("embedding").
    # A request to the other kind's endpoint is a 400 naming it; /v1/models lists it.
    kind = models.CharField(max_length=16, choices=[("chat", "chat"), ("embedding", "embedding")], default="chat")

    class Meta:
        db_table = "model_prices"
        ordering = ["provider", "model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "effective_from"], name="price_unique_model_from"),
            models.CheckConstraint(
                condition=Q(input_per_1m__gte=0) & Q(output_per_1m__gte=0) & (Q(cached_input_per_1m__isnull=True) | Q(cached_input_per_1m__gte=0)),
                name="price_non_negative",
            ),
            models.CheckConstraint(
                condition=(Q(cache_write_per_1m__isnull=True) | Q(cache_write_per_1m__gte=0))
                & (Q(priority_multiplier__isnull=True) | Q(priority_multiplier__gt=0)),
                name="price_usage_details_valid",
            ),
            models.CheckConstraint(
                condition=Q(effective_to__isnull=True) | Q(effective_to__gt=models.F("effective_from")),
                name="price_window_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from}"


class RequestStatus(models.TextChoices):
    SERVED = "served"
    CACHED = "cached"
    REJECTED = "rejected"
    FAILED = "failed"
    DISCONNECTED = "disconnected"


class CacheStatus(models.TextChoices):
    MISS = "miss"
    EXACT = "exact"
    SEMANTIC = "semantic"
    BYPASS = "bypass"  # not looked up: Cache-Control, policy, or Redis down
    NONE = "none"  # the request never reached the cache stage


class BudgetState(models.TextChoices):
    OK = "ok"
    SOFT_EXCEEDED = "soft_exceeded"
    FAIL_OPEN = "fail_open"
    BLOCKED = "blocked"
    DOWNGRADED = "downgraded"
    NONE = "none"


class LLMRequest(models.Model):
    """One row per request that reached the gateway, whatever became of it."""

    request_id = models.UUIDField(default=uuid.uuid4, unique=True)
    endpoint = models.CharField(max_length=32)  # chat, chat_completions, responses, messages, embeddings
    received_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    org = models.ForeignKey("tenancy.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey("tenancy.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    member = models.ForeignKey("tenancy.Member", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey("tenancy.ApiKey", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    api_key_prefix = models.CharField(max_length=16, blank=True)

    status = models.CharField(max_length=16, choices=RequestStatus.choices)
    http_status = models.PositiveSmallIntegerField(default=200)
    error_code = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)

    requested_model = models.CharField(max_length=128, blank=True)
    model = models.CharField(max_length=128, blank=True)  # the model that answered (or would have)
    provider = models.CharField(max_length=64, blank=True)
    tier = models.CharField(max_length=32, blank=True)
    price = models.ForeignKey(ModelPrice, null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)  # prompt tokens read from the provider's prompt cache
    # db_default: writers that name their columns (COPY in demo/seed.py, bench's chaos rows) need not know these.
    cache_write_tokens = models.PositiveIntegerField(default=0, db_default=0)  # prompt tokens written to the cache
    reasoning_tokens = models.PositiveIntegerField(default=0, db_default=0)  # hidden reasoning, part of completion_tokens
    service_tier = models.CharField(max_length=16, blank=True, default="", db_default="")  # as the upstream said
    cost_usd = cost_field()
    # The provider reported no usage (a stream abandoned and drained to its deadline without it, or cut short): the
    # tokens and cost are the gateway's upper-bound count of what it received (finops.tokens.token_bound), capped at
    # the reservation. docs/adr/013-reservation-upper-bound.md
    usage_estimated = models.BooleanField(default=False, db_default=False)
    saved_usd = cost_field()

    cache_status = models.CharField(max_length=16, choices=CacheStatus.choices, default=CacheStatus.NONE)
    similarity = models.FloatField(null=True, blank=True)  # cosine similarity (1 = identical), not distance

    requested_tier = models.CharField(max_length=32, blank=True)
    route_strategy = models.CharField(max_length=32, blank=True)
    route_reason = models.CharField(max_length=255, blank=True)
    escalated = models.BooleanField(default=False)
    escalation_cost_usd = cost_field()
    fallback_from = models.CharField(max_length=128, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    budget_state = models.CharField(max_length=16, choices=BudgetState.choices, default=BudgetState.NONE)
    reserved_usd = cost_field()

    upstream_ms = models.FloatField(null=True, blank=True)
    overhead_ms = models.FloatField(null=True, blank=True)

    prompt_hash = models.CharField(max_length=64, blank=True)
    # NULL means "not stored" (the org did not opt in), which an empty string could not say.
    prompt_text = models.TextField(null=True, blank=True)  # noqa: DJ001
    response_text = models.TextField(null=True, blank=True)  # noqa: DJ001

    class Meta:
        db_table = "llm_requests"
        ordering = ["-received_at"]
        verbose_name = "LLM request"
        indexes = [
            BrinIndex(fields=["received_at"], name="llm_requests_received_brin"),
            # The rollups find the days that received late rows by recorded_at (append order: BRIN fits).
            BrinIndex(fields=["recorded_at"], name="llm_requests_recorded_brin"),
            models.Index(fields=["org", "received_at"], name="llm_requests_org_time"),
            models.Index(fields=["member", "received_at"], name="llm_requests_member_time"),
            models.Index(fields=["api_key", "received_at"], name="llm_requests_key_time"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cost_usd__gte=0) & Q(saved_usd__gte=0), name="llm_request_money_non_negative"),
            models.CheckConstraint(condition=Q(cached_tokens__lte=models.F("prompt_tokens")), name="llm_request_cached_le_prompt"),
            models.CheckConstraint(
                condition=Q(cache_write_tokens__lte=models.F("prompt_tokens") - models.F("cached_tokens"))
                & Q(reasoning_tokens__lte=models.F("completion_tokens")),
                name="llm_request_usage_details_fit",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.cost_usd}"


class CostDailySummary(models.Model):
    """Rollup of llm_requests, recomputed by `cost_rollup` with INSERT … ON CONFLICT DO UPDATE.

    The unique key is (date, model, endpoint, user_id); org and team are carried along, and are
    functionally dependent on the user (every API key belongs to a member).
    """

    date = models.DateField()
    model = models.CharField(max_length=128)
    endpoint = models.CharField(max_length=32)
    user = models.ForeignKey("tenancy.Member", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    org = models.ForeignKey("tenancy.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey("tenancy.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    cache_hits = models.PositiveIntegerField(default=0)
    fail_open = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cost_usd = cost_field()
    saved_usd = cost_field()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "cost_daily_summary"
        ordering = ["-date"]
        verbose_name_plural = "cost daily summaries"
        constraints = [
            # NULLS NOT DISTINCT: unauthenticated rejects (no user) share one row per day and model.
            models.UniqueConstraint(
                fields=["date", "model", "endpoint", "user"], name="cost_daily_summary_key", nulls_distinct=False
            ),
        ]
        indexes = [models.Index(fields=["org", "date"], name="cost_daily_org_date")]

    def __str__(self) -> str:
        return f"{self.date} {self.model} {self.endpoint} user={self.user_id}"


class RollupWatermark(models.Model):
    """How far a daily summary has read llm_requests by `recorded_at`: the next run recomputes every day that received
    a row since (a row replayed from the outbox after a long outage lands days after it was received)."""

    name = models.CharField(max_length=64, unique=True)  # the summary table
    recorded_through = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "rollup_watermarks"

    def __str__(self) -> str:
        return f"{self.name} through {self.recorded_through.isoformat()}"


class SeedIncident(models.Model):
    """Ground truth for the anomaly evaluation: cost incidents that `seed_demo` injected on purpose."""

    class Kind(models.TextChoices):
        RUNAWAY_LOOP = "runaway_loop"
        LEAKED_KEY = "leaked_key"
        PREMIUM_SWITCH = "premium_switch"
        CACHE_OUTAGE = "cache_outage"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    org = models.ForeignKey("tenancy.Organization", on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey("tenancy.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey("tenancy.Member", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=128, blank=True)
    start = models.DateTimeField()
    end = models.DateTimeField()
    extra_requests = models.PositiveIntegerField(default=0)
    description = models.TextField(blank=True)

    class Meta:
        db_table = "seed_incidents"
        ordering = ["start"]

    def __str__(self) -> str:
        return f"{self.kind} {self.org_id} {self.start:%Y-%m-%d %H:%M}"
