from __future__ import annotations

from django.contrib import admin

from apps.ledger.models import CostDailySummary, LLMRequest, ModelPrice, SeedIncident


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model", "provider", "input_per_1m", "cached_input_per_1m", "output_per_1m", "effective_from", "effective_to"]
    list_filter = ["provider"]
    search_fields = ["model", "provider"]
    fieldsets = [
        (None, {"fields": ["provider", "model", "source"]}),
        ("USD per 1M tokens", {"fields": ["input_per_1m", "cached_input_per_1m", "output_per_1m"]}),
        ("In force", {"fields": ["effective_from", "effective_to"]}),
    ]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Ledger rows are facts: nobody edits or deletes them from the admin."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(LLMRequest)
class LLMRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "received_at", "org", "team", "member", "endpoint", "model", "status", "cache_status", "route_strategy",
        "prompt_tokens", "completion_tokens", "cost_usd", "saved_usd",
    ]  # fmt: skip
    list_filter = ["status", "cache_status", "endpoint", "route_strategy", "budget_state", "org"]
    list_select_related = ["org", "team", "member"]
    search_fields = ["=request_id", "=api_key_prefix", "model"]
    date_hierarchy = "received_at"
    # A 1.5M-row month: no exact COUNT(*) on every page view.
    show_full_result_count = False
    exclude = ["prompt_text", "response_text"]


@admin.register(CostDailySummary)
class CostDailySummaryAdmin(ReadOnlyAdmin):
    list_display = ["date", "org", "team", "user", "model", "endpoint", "requests", "cost_usd", "saved_usd"]
    list_filter = ["endpoint", "org"]
    list_select_related = ["org", "team", "user"]
    date_hierarchy = "date"
    show_full_result_count = False


@admin.register(SeedIncident)
class SeedIncidentAdmin(ReadOnlyAdmin):
    list_display = ["kind", "org", "team", "member", "model", "start", "end", "extra_requests"]
    list_filter = ["kind"]
    list_select_related = ["org", "team", "member"]
