from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property

from apps.ledger.models import CostDailySummary, LLMRequest, ModelPrice, SeedIncident
from apps.tenancy.access import OrgScopedAdminMixin
from finops import clock


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "model", "provider", "kind", "input_per_1m", "cached_input_per_1m", "cache_write_per_1m", "output_per_1m",
        "priority_multiplier", "effective_from", "effective_to",
    ]  # fmt: skip
    list_filter = ["provider", "kind"]
    search_fields = ["model", "provider"]
    fieldsets = [
        (None, {"fields": ["provider", "model", "source"]}),
        ("USD per 1M tokens", {"fields": ["input_per_1m", "cached_input_per_1m", "cache_write_per_1m", "output_per_1m"],
                               "description": "Empty cached input / cache write: billed at the input price."}),
        ("Service tiers", {"fields": ["priority_multiplier"],
                           "description": "Every rate × this for answers served at service_tier priority (empty: not priced)."}),
        ("Serves", {"fields": ["kind"]}),
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


class ReceivedWindowFilter(admin.SimpleListFilter):
    """A time window on received_at, last 24 hours by default.

    Every ledger query stays bounded by time (the BRIN index on received_at), so the list answers
    fast on a 1.5M-row month; picking a day (DayFilter) replaces the window.
    """

    title = "received"
    parameter_name = "received"
    DEFAULT = "24h"
    WINDOWS = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}

    def __init__(self, request, params, model, model_admin):
        self.drilldown = DayFilter.parameter_name in params
        super().__init__(request, params, model, model_admin)

    def lookups(self, request, model_admin):
        return [
            ("1h", "Last hour"),
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days"),
            ("month", "This month (UTC)"),
            ("previous", "Previous month (UTC)"),
            ("all", "All time"),
        ]

    def effective(self) -> str:
        return self.value() or ("all" if self.drilldown else self.DEFAULT)

    def choices(self, changelist):
        current = self.effective()
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request, queryset):
        window = self.effective()
        now = clock.now()
        if window in self.WINDOWS:
            return queryset.filter(received_at__gte=now - self.WINDOWS[window])
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if window == "month":
            return queryset.filter(received_at__gte=month_start)
        if window == "previous":
            previous_start = (month_start - dt.timedelta(days=1)).replace(day=1)
            return queryset.filter(received_at__gte=previous_start, received_at__lt=month_start)
        return queryset


class DayFilter(admin.SimpleListFilter):
    """One UTC day of the last five weeks. Static choices: a date hierarchy would scan for distinct dates on every view."""

    title = "day (UTC)"
    parameter_name = "day"

    def lookups(self, request, model_admin):
        today = clock.today()
        return [((today - dt.timedelta(days=i)).isoformat(), f"{today - dt.timedelta(days=i):%a %b %d}") for i in range(35)]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            day = dt.date.fromisoformat(self.value())
        except ValueError:
            return queryset.none()
        start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
        return queryset.filter(received_at__gte=start, received_at__lt=start + dt.timedelta(days=1))


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows (COUNT over a LIMITed subquery): page links stop there, filters narrow further."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list.order_by() if hasattr(self.object_list, "order_by") else self.object_list
        return object_list[: self.CAP].count()


class ValueListFilter(admin.SimpleListFilter):
    """Fixed choices: the stock filter would run SELECT DISTINCT over the whole table on every page view."""

    values: tuple[str, ...] = ()

    def lookups(self, request, model_admin):
        return [(value, value) for value in self.values]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{self.parameter_name: value}) if value else queryset


class EndpointFilter(ValueListFilter):
    title = "endpoint"
    parameter_name = "endpoint"
    values = ("chat", "chat_completions", "responses", "messages", "embeddings")


class RouteStrategyFilter(ValueListFilter):
    title = "route strategy"
    parameter_name = "route_strategy"
    values = ("pinned", "tier", "keyword", "complexity", "default", "confidence", "downgrade")


@admin.register(LLMRequest)
class LLMRequestAdmin(OrgScopedAdminMixin, ReadOnlyAdmin):
    list_display = [
        "received_at", "org_name", "team_name", "member_name", "endpoint", "model", "status", "cache_status", "route_strategy",
        "prompt_tokens", "completion_tokens", "cost_usd", "saved_usd",
    ]  # fmt: skip
    list_filter = [
        ReceivedWindowFilter, DayFilter, "status", "cache_status", EndpointFilter, RouteStrategyFilter, "budget_state", "org",
    ]  # fmt: skip
    # Names come from prefetches (three tiny queries) rather than joins: Postgres would join every row of the
    # window before sorting it for the top 50, which costs more than the scan itself on a busy day.
    list_select_related = False
    search_fields = ["=request_id", "=api_key_prefix", "model"]
    list_per_page = 50
    # A 1.5M-row month: no exact COUNT(*) of the whole table on every page view, and at most
    # CappedCountPaginator.CAP rows counted for the filtered one.
    show_full_result_count = False
    paginator = CappedCountPaginator
    exclude = ["prompt_text", "response_text"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("prompt_text", "response_text").prefetch_related("org", "team", "member")

    # Names straight from the prefetched rows: the models' __str__ would follow team → org (a query per row).
    @admin.display(description="org", ordering="org__name")
    def org_name(self, obj: LLMRequest) -> str:
        return obj.org.name if obj.org is not None else "—"

    @admin.display(description="team", ordering="team__name")
    def team_name(self, obj: LLMRequest) -> str:
        return obj.team.name if obj.team is not None else "—"

    @admin.display(description="user", ordering="member__username")
    def member_name(self, obj: LLMRequest) -> str:
        return obj.member.username if obj.member is not None else "—"


@admin.register(CostDailySummary)
class CostDailySummaryAdmin(OrgScopedAdminMixin, ReadOnlyAdmin):
    list_display = ["date", "org", "team_name", "user_name", "model", "endpoint", "requests", "cost_usd", "saved_usd"]
    list_filter = [EndpointFilter, "org"]
    list_select_related = ["org", "team", "user"]

    @admin.display(description="team", ordering="team__name")
    def team_name(self, obj: CostDailySummary) -> str:
        return obj.team.name if obj.team is not None else "—"

    @admin.display(description="user", ordering="user__username")
    def user_name(self, obj: CostDailySummary) -> str:
        return obj.user.username if obj.user is not None else "—"

    date_hierarchy = "date"
    show_full_result_count = False


@admin.register(SeedIncident)
class SeedIncidentAdmin(OrgScopedAdminMixin, ReadOnlyAdmin):
    list_display = ["kind", "org", "team", "member", "model", "start", "end", "extra_requests"]
    list_filter = ["kind"]
    list_select_related = ["org", "team", "member"]
