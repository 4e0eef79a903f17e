"""Routing configuration: tiers of models, keyword rules and route policies (all editable in the admin).

A *ladder* is an ordered set of tiers (cheapest first). The `default` ladder is cheap / mid / premium;
the `eval` ladder pairs the RouteLLM models (Mixtral-8x7B cheap, GPT-4-1106 premium) for the A/B harness
and the replay upstream. Add or remove Tier rows to change the number of tiers.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from apps.routing.engine import DEFAULT_LEARNED_THRESHOLD

UNIT_INTERVAL = [MinValueValidator(0.0), MaxValueValidator(1.0)]


class Tier(models.Model):
    ladder = models.CharField(max_length=32, default="default", help_text="Tiers of one ladder are routed between.")
    name = models.CharField(max_length=32)
    rank = models.PositiveSmallIntegerField(help_text="Higher = stronger and pricier. Fallbacks only ever go up.")
    complexity_min = models.FloatField(
        default=0.0,
        validators=UNIT_INTERVAL,
        help_text="Lowest complexity score (0..1) that selects this tier; ignored for the ladder's lowest tier.",
    )
    description = models.CharField(max_length=255, blank=True)

    class Meta:
        db_table = "routing_tiers"
        ordering = ["ladder", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["ladder", "name"], name="routing_tier_unique_name"),
            models.UniqueConstraint(fields=["ladder", "rank"], name="routing_tier_unique_rank"),
        ]

    def __str__(self) -> str:
        return f"{self.ladder}/{self.name}"


class TierModel(models.Model):
    class QualitySource(models.TextChoices):
        CONFIGURED = "configured"
        EVAL = "eval"

    tier = models.ForeignKey(Tier, on_delete=models.CASCADE, related_name="tier_models")
    model = models.CharField(max_length=128, help_text="Must have a price row (ledger › model prices).")
    enabled = models.BooleanField(default=True)
    quality = models.FloatField(default=0.5, validators=UNIT_INTERVAL, help_text="0..1; configured, or learnt by eval_router.")
    quality_source = models.CharField(max_length=16, choices=QualitySource.choices, default=QualitySource.CONFIGURED)
    latency_p50_ms = models.FloatField(null=True, blank=True, help_text="Rolling p50 of upstream_ms from the ledger.")
    latency_samples = models.PositiveIntegerField(default=0)
    latency_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "routing_tier_models"
        ordering = ["tier__ladder", "tier__rank", "model"]
        constraints = [models.UniqueConstraint(fields=["tier", "model"], name="routing_tier_model_unique")]

    def __str__(self) -> str:
        return f"{self.tier} · {self.model}"


class RoutePolicy(models.Model):
    """How one org (or everyone, when org is empty) routes; `name` empty = the default route, else `finops/<name>`."""

    org = models.ForeignKey("tenancy.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(
        max_length=64, blank=True, help_text="Empty: the default route (model 'auto'). Else model 'finops/<name>'."
    )
    ladder = models.CharField(max_length=32, default="default")
    enabled = models.BooleanField(default=True)

    weight_cost = models.FloatField(default=0.5, validators=[MinValueValidator(0.0)])
    weight_latency = models.FloatField(default=0.2, validators=[MinValueValidator(0.0)])
    weight_quality = models.FloatField(default=0.3, validators=[MinValueValidator(0.0)])

    use_keywords = models.BooleanField(default=True)
    use_complexity = models.BooleanField(default=True)
    use_confidence = models.BooleanField(default=True)
    default_tier = models.CharField(max_length=32, blank=True, help_text="Tier when no strategy decides; empty = the lowest.")
    complexity_thresholds = models.JSONField(
        default=dict, blank=True, help_text='Per-tier override of Tier.complexity_min, e.g. {"premium": 0.5}.'
    )
    complexity_weights = models.JSONField(
        default=dict, blank=True, help_text="Override of the feature weights (length, code, math, multi_step, reasoning, depth)."
    )
    confidence_threshold = models.FloatField(
        default=0.6, validators=UNIT_INTERVAL, help_text="Escalate one tier up when the escalation risk (0..1) reaches this."
    )
    logprob_floor = models.FloatField(
        default=-1.0, help_text="Mean token logprob at which the logprob signal is fully uncertain."
    )
    fallback_on_pinned = models.BooleanField(default=True, help_text="A pinned model may fall back to its tier's peers and up.")
    use_learned = models.BooleanField(
        default=False,
        help_text="Route by the learned index (kNN over labelled prompts, FINOPS_ROUTER_INDEX_PATH) after keyword rules, "
        "before complexity. Its labels are Mixtral-8x7B vs GPT-4-1106 outcomes (the eval ladder's pair).",
    )
    learned_threshold = models.FloatField(
        default=DEFAULT_LEARNED_THRESHOLD,
        validators=UNIT_INTERVAL,
        help_text="Learned score (0..1: the prompt's percentile among the index's prompts) at which the request goes to "
        "the top tier; below it, the lowest tier. 0.75 ≈ the hardest quarter of benchmark-like prompts go up.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "routing_policies"
        verbose_name_plural = "route policies"
        ordering = ["org_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["org", "name"], name="routing_policy_unique", nulls_distinct=False),
            models.CheckConstraint(
                condition=Q(weight_cost__gte=0) & Q(weight_latency__gte=0) & Q(weight_quality__gte=0),
                name="routing_policy_weights_non_negative",
            ),
        ]

    def __str__(self) -> str:
        scope = f"org {self.org_id}" if self.org_id else "global"
        return f"{self.name or 'default'} ({scope})"

    def clean(self) -> None:
        if "/" in self.name:
            raise ValidationError({"name": "A route name cannot contain '/'."})
        for field in ("complexity_thresholds", "complexity_weights"):
            value = getattr(self, field)
            if not isinstance(value, dict) or not all(isinstance(v, int | float) for v in value.values()):
                raise ValidationError({field: "Expected an object of numbers."})


class KeywordRule(models.Model):
    class Match(models.TextChoices):
        TERMS = "terms", "terms (comma-separated, whole words, any case)"
        REGEX = "regex", "regular expression (case-insensitive)"

    class Scope(models.TextChoices):
        ALL = "all", "every message (system prompt included)"
        LAST_USER = "last_user", "the last user message"

    org = models.ForeignKey("tenancy.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=64)
    match = models.CharField(max_length=8, choices=Match.choices, default=Match.TERMS)
    pattern = models.TextField()
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ALL)
    tier = models.CharField(max_length=32, help_text="Tier name in the policy's ladder; rules for absent tiers are skipped.")
    priority = models.IntegerField(default=100, help_text="Higher is tried first; the first match wins.")
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "routing_keyword_rules"
        ordering = ["-priority", "id"]

    def __str__(self) -> str:
        return f"{self.name} → {self.tier}"

    def compiled(self) -> re.Pattern[str]:
        return keyword_regex(match=self.match, pattern=self.pattern)

    def clean(self) -> None:
        try:
            self.compiled()
        except (re.error, ValueError) as exc:
            raise ValidationError({"pattern": f"Invalid pattern: {exc}"}) from exc


def keyword_terms(pattern: str) -> tuple[str, ...]:
    return tuple(t.strip().lower() for t in pattern.split(",") if t.strip())


def keyword_regex(*, match: str, pattern: str) -> re.Pattern[str]:
    if match == KeywordRule.Match.REGEX:
        return re.compile(pattern, re.I | re.M)
    terms = keyword_terms(pattern)
    if not terms:
        raise ValueError("no terms")
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(t) for t in terms) + r")(?!\w)", re.I)
