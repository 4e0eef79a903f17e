from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.alerts import services
from apps.alerts.models import AlertDelivery, AlertRoute
from apps.tenancy.access import OrgScopedAdminMixin


@admin.register(AlertRoute)
class AlertRouteAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    list_display = ("name", "severity", "scope_type", "org", "receiver", "target", "enabled", "updated_at")
    list_filter = ("severity", "receiver", "enabled", "scope_type")
    list_select_related = ("org",)
    list_editable = ("enabled",)
    search_fields = ("name", "target")
    fieldsets = (
        (None, {"fields": ("name", "enabled")}),
        ("Match", {"fields": ("severity", "scope_type", "org")}),
        ("Receiver", {"fields": ("receiver", "target")}),
    )


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "severity", "receiver", "title", "status", "attempts", "sent_at", "last_error")
    list_filter = ("status", "receiver", "severity")
    list_select_related = ("route", "anomaly", "org")
    search_fields = ("title", "target")
    readonly_fields = [f.name for f in AlertDelivery._meta.fields]
    actions = ("retry",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Retry selected failed deliveries")
    def retry(self, request: HttpRequest, queryset: QuerySet[AlertDelivery]) -> None:
        n = services.alert_deliveries_retry(delivery_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{n} deliver{'y' if n == 1 else 'ies'} queued again.", messages.SUCCESS)
