from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from pgvector.django import HnswIndex, VectorField

from apps.embeddings import EMBEDDING_DIM, STATIC_DIM

_threshold_validators = [MinValueValidator(0.5), MaxValueValidator(1.0)]


class CacheSettings(models.Model):
    """Per-org cache policy. An org without a row gets the FINOPS["CACHE_*"] defaults.

    The threshold is cosine SIMILARITY (1 = identical), never distance: a hit needs
    similarity >= threshold. Raising it trades savings for fewer wrong answers.
    """

    org = models.OneToOneField("tenancy.Organization", on_delete=models.CASCADE, related_name="cache_settings")
    enabled = models.BooleanField(default=True, help_text="Both tiers on/off for the org.")
    semantic_enabled = models.BooleanField(default=True, help_text="Off: only identical requests are served from cache.")
    threshold = models.FloatField(
        default=0.92,
        validators=_threshold_validators,
        help_text="Cosine similarity (1 = identical, NOT distance) a paraphrase needs to be served the cached answer.",
    )
    ttl_s = models.PositiveIntegerField(default=86400, help_text="Lifetime of a cached answer, both tiers, in seconds.")
    max_temperature = models.FloatField(
        default=0.7,
        validators=[MinValueValidator(0.0)],
        help_text="Requests with a higher explicit temperature bypass the cache.",
    )
    allow_high_temperature = models.BooleanField(default=False, help_text="Cache requests above max_temperature anyway.")
    allow_tools = models.BooleanField(default=False, help_text="Cache requests that carry tools or function calls.")
    semantic_max_chars = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Prompts (last user turn) longer than this skip the semantic tier; empty: FINOPS_CACHE_SEMANTIC_MAX_CHARS.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "cache_settings"
        verbose_name = "cache settings"
        verbose_name_plural = "cache settings"
        ordering = ["org__name"]

    def __str__(self) -> str:
        return f"cache settings of {self.org}"


class CacheRouteOverride(models.Model):
    """Per model / route class (the `model` the client asked for) override of the org's settings."""

    settings = models.ForeignKey(CacheSettings, on_delete=models.CASCADE, related_name="route_overrides")
    model_class = models.CharField(max_length=128, help_text="The requested model or route alias, e.g. 'auto' or 'gpt-4o'.")
    enabled = models.BooleanField(default=True)
    threshold = models.FloatField(null=True, blank=True, validators=_threshold_validators, help_text="Cosine similarity.")
    ttl_s = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        db_table = "cache_route_overrides"
        constraints = [models.UniqueConstraint(fields=["settings", "model_class"], name="cache_route_override_unique")]

    def __str__(self) -> str:
        return f"{self.settings.org} / {self.model_class}"


class SemanticCacheEntry(models.Model):
    """One cached answer, found by meaning. Lookups are scoped to (org, model_class, system_prompt_hash, params_hash).

    The prompt text is kept only for orgs with store_prompts; the guard works from `guard`, a
    signature of keyed hashes (tokens, entities, numbers) and flags that reveals no text.
    """

    # No separate FK index: the scope index below starts with org_id.
    org = models.ForeignKey("tenancy.Organization", on_delete=models.CASCADE, related_name="+", db_index=False)
    model_class = models.CharField(max_length=128)
    # SHA-256 of the system prompt AND every turn before the last user message: a paraphrase
    # only matches inside an identical conversation.
    system_prompt_hash = models.CharField(max_length=64)
    params_hash = models.CharField(max_length=64)
    prompt_hash = models.CharField(max_length=64)
    embedding = VectorField(dimensions=EMBEDDING_DIM)  # the full model's: confirms a hit
    # The static first stage's (apps.embeddings.static): finds the candidates. NULL on entries of older releases.
    static_embedding = VectorField(dimensions=STATIC_DIM, null=True)
    prompt_text = models.TextField(null=True, blank=True)  # noqa: DJ001 - NULL: not kept (org did not opt in)
    guard = models.JSONField(default=dict)
    response = models.JSONField()
    answer_model = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    hits = models.PositiveIntegerField(default=0)
    last_hit_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "semantic_cache_entries"
        verbose_name = "semantic cache entry"
        verbose_name_plural = "semantic cache entries"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "model_class", "system_prompt_hash", "params_hash", "prompt_hash"],
                name="semantic_cache_unique_prompt",
            ),
        ]
        indexes = [
            # Lookups search the static vector (stage 1) and read the full one by id (stage 2): the full vector
            # needs no index of its own, and every insert is spared its HNSW update (docs/adr/001).
            HnswIndex(
                name="semantic_cache_static_hnsw",
                fields=["static_embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            models.Index(fields=["org", "model_class", "system_prompt_hash", "params_hash"], name="semantic_cache_scope"),
            models.Index(fields=["expires_at"], name="semantic_cache_expires"),
        ]

    def __str__(self) -> str:
        return f"{self.org_id}/{self.model_class} {self.prompt_hash[:12]}"
