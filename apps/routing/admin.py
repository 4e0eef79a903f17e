from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from apps.routing.models import KeywordRule, RoutePolicy, Tier, TierModel
from apps.routing.selectors import prices_in_force, router_config_invalidate
from apps.tenancy.access import OrgScopedAdminMixin


class TierModelInline(admin.TabularInline):
    model = TierModel
    extra = 0
    fields = ("model", "enabled", "quality", "quality_source", "latency_p50_ms", "latency_samples", "latency_updated_at")
    readonly_fields = ("quality_source", "latency_p50_ms", "latency_samples", "latency_updated_at")


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = ("name", "ladder", "rank", "complexity_min", "enabled_models")
    list_filter = ("ladder",)
    ordering = ("ladder", "rank")
    inlines = [TierModelInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tier]:
        return super().get_queryset(request).annotate(_enabled=Count("tier_models", filter=Q(tier_models__enabled=True)))

    @admin.display(description="enabled models", ordering="_enabled")
    def enabled_models(self, obj: Tier) -> int:
        return obj._enabled  # type: ignore[attr-defined]


@admin.register(TierModel)
class TierModelAdmin(admin.ModelAdmin):
    list_display = ("model", "tier", "enabled", "quality", "quality_source", "price_per_1m", "latency_p50_ms", "latency_samples")
    list_filter = ("tier__ladder", "tier", "enabled", "quality_source")
    list_select_related = ("tier",)
    search_fields = ("model",)
    readonly_fields = ("latency_p50_ms", "latency_samples", "latency_updated_at")
    actions = ("enable", "disable")

    def changelist_view(self, request: HttpRequest, extra_context=None):
        self._prices = prices_in_force()  # one query for the whole page
        return super().changelist_view(request, extra_context)

    @admin.display(description="price in / out per 1M")
    def price_per_1m(self, obj: TierModel) -> str:
        price = getattr(self, "_prices", {}).get(obj.model)
        return f"${price.input_per_1m} / ${price.output_per_1m}" if price else "UNPRICED (never routed)"

    @admin.action(description="Enable the selected models")
    def enable(self, request: HttpRequest, queryset: QuerySet[TierModel]) -> None:
        n = queryset.update(enabled=True)
        router_config_invalidate()
        self.message_user(request, f"Enabled {n} model(s).", messages.SUCCESS)

    @admin.action(description="Disable the selected models")
    def disable(self, request: HttpRequest, queryset: QuerySet[TierModel]) -> None:
        n = queryset.update(enabled=False)
        router_config_invalidate()
        self.message_user(request, f"Disabled {n} model(s).", messages.SUCCESS)


@admin.register(RoutePolicy)
class RoutePolicyAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    list_display = (
        "__str__",
        "org",
        "ladder",
        "enabled",
        "weight_cost",
        "weight_latency",
        "weight_quality",
        "use_keywords",
        "use_complexity",
        "use_learned",
        "learned_threshold",
        "use_confidence",
        "confidence_threshold",
    )
    list_filter = ("enabled", "ladder", "use_keywords", "use_learned", "use_complexity", "use_confidence")
    list_select_related = ("org",)
    search_fields = ("name", "org__name")
    fieldsets = (
        (None, {"fields": ("org", "name", "ladder", "enabled", "default_tier")}),
        ("Triangle weights (within a tier)", {"fields": ("weight_cost", "weight_latency", "weight_quality")}),
        (
            "Strategies",
            {
                "fields": (
                    "use_keywords",
                    "use_learned",
                    "learned_threshold",
                    "use_complexity",
                    "complexity_thresholds",
                    "complexity_weights",
                )
            },
        ),
        (
            "Confidence and fallback",
            {"fields": ("use_confidence", "confidence_threshold", "logprob_floor", "fallback_on_pinned")},
        ),
    )


@admin.register(KeywordRule)
class KeywordRuleAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    list_display = ("name", "tier", "priority", "enabled", "match", "scope", "org", "pattern_head")
    list_editable = ("priority", "enabled")
    list_filter = ("enabled", "tier", "match", "scope")
    list_select_related = ("org",)
    search_fields = ("name", "pattern")
    actions = ("enable", "disable")

    @admin.display(description="pattern")
    def pattern_head(self, obj: KeywordRule) -> str:
        return obj.pattern if len(obj.pattern) <= 60 else obj.pattern[:57] + "…"

    @admin.action(description="Enable the selected rules")
    def enable(self, request: HttpRequest, queryset: QuerySet[KeywordRule]) -> None:
        n = queryset.update(enabled=True)
        router_config_invalidate()
        self.message_user(request, f"Enabled {n} rule(s).", messages.SUCCESS)

    @admin.action(description="Disable the selected rules")
    def disable(self, request: HttpRequest, queryset: QuerySet[KeywordRule]) -> None:
        n = queryset.update(enabled=False)
        router_config_invalidate()
        self.message_user(request, f"Disabled {n} rule(s).", messages.SUCCESS)
