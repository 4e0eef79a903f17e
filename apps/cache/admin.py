from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.cache.models import CacheRouteOverride, CacheSettings, SemanticCacheEntry
from apps.cache.selectors import cache_policy_forget
from apps.cache.services import cache_invalidate
from apps.tenancy.access import OrgScopedAdminMixin


class CacheRouteOverrideInline(admin.TabularInline):
    model = CacheRouteOverride
    extra = 0
    fields = ["model_class", "enabled", "threshold", "ttl_s"]


@admin.register(CacheSettings)
class CacheSettingsAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    list_display = [
        "org",
        "enabled",
        "semantic_enabled",
        "threshold_similarity",
        "ttl_s",
        "max_temperature",
        "allow_tools",
        "updated_at",
    ]
    list_filter = ["enabled", "semantic_enabled", "allow_tools", "allow_high_temperature"]
    list_select_related = ["org"]
    search_fields = ["org__name", "org__slug"]
    inlines = [CacheRouteOverrideInline]
    actions = ["invalidate_orgs"]
    fieldsets = [
        (None, {"fields": ["org", "enabled", "semantic_enabled"]}),
        (
            "Semantic matching",
            {
                "fields": ["threshold", "semantic_max_chars"],
                "description": "Cosine SIMILARITY, 1 = identical (not distance). Lower = more hits and more wrong answers; "
                "see docs/cache-threshold-runbook.md for the measured trade-off. Changes apply within ~15 s.",
            },
        ),
        ("Lifetime and eligibility", {"fields": ["ttl_s", "max_temperature", "allow_high_temperature", "allow_tools"]}),
    ]

    @admin.display(description="threshold (cosine similarity)", ordering="threshold")
    def threshold_similarity(self, obj: CacheSettings) -> str:
        return f"{obj.threshold:.3f}"

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        cache_policy_forget(obj.org_id)

    @admin.action(description="Invalidate all cached answers of the selected orgs (both tiers)")
    def invalidate_orgs(self, request: HttpRequest, queryset: QuerySet[CacheSettings]) -> None:
        semantic = exact = 0
        for settings_row in queryset:
            result = cache_invalidate(org_id=settings_row.org_id)
            semantic += result.semantic_deleted
            exact += result.exact_deleted
        self.message_user(
            request, f"Invalidated {semantic} semantic and {exact} exact entries of {queryset.count()} org(s).", messages.SUCCESS
        )


@admin.register(SemanticCacheEntry)
class SemanticCacheEntryAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    list_display = ["id", "org", "model_class", "answer_model", "hits", "created_at", "expires_at", "has_prompt_text"]
    list_filter = ["model_class", "answer_model", "org"]
    list_select_related = ["org"]
    search_fields = ["prompt_hash", "org__name"]
    date_hierarchy = "created_at"
    actions = ["invalidate_org_model", "invalidate_org"]
    exclude = ["embedding", "static_embedding"]
    readonly_fields = [
        "org", "model_class", "system_prompt_hash", "params_hash", "prompt_hash", "prompt_text", "guard", "response",
        "answer_model", "created_at", "expires_at", "hits", "last_hit_at",
    ]  # fmt: skip

    @admin.display(boolean=True, description="prompt text kept")
    def has_prompt_text(self, obj: SemanticCacheEntry) -> bool:
        return obj.prompt_text is not None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Invalidate the selected entries' org + model class (both tiers)")
    def invalidate_org_model(self, request: HttpRequest, queryset: QuerySet[SemanticCacheEntry]) -> None:
        scopes = set(queryset.values_list("org_id", "model_class"))
        semantic = exact = 0
        for org_id, model_class in scopes:
            result = cache_invalidate(org_id=org_id, model_class=model_class)
            semantic += result.semantic_deleted
            exact += result.exact_deleted
        self.message_user(request, f"Invalidated {semantic} semantic and {exact} exact entries in {len(scopes)} scope(s).")

    @admin.action(description="Invalidate everything cached for the selected entries' orgs (both tiers)")
    def invalidate_org(self, request: HttpRequest, queryset: QuerySet[SemanticCacheEntry]) -> None:
        orgs = set(queryset.values_list("org_id", flat=True))
        semantic = exact = 0
        for org_id in orgs:
            result = cache_invalidate(org_id=org_id)
            semantic += result.semantic_deleted
            exact += result.exact_deleted
        self.message_user(request, f"Invalidated {semantic} semantic and {exact} exact entries of {len(orgs)} org(s).")
