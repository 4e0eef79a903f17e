"""Report figures on tenancy's admin pages: the chargeback download on organizations, this month's spend per API key.

Tenancy sits below reports (finops/contracts.py), so reports extends tenancy's admins here instead of tenancy
importing reports.
"""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from apps.reports.periods import current_month
from apps.reports.selectors import api_key_spend
from apps.reports.services import chargeback, report_write
from apps.tenancy import admin as tenancy_admin
from apps.tenancy.models import ApiKey, Organization


class OrganizationAdmin(tenancy_admin.OrganizationAdmin):
    actions = ["chargeback_previous_month"]  # the tenancy admin it extends has no actions of its own

    @admin.action(description="Download chargeback CSV (previous month)")
    def chargeback_previous_month(self, request: HttpRequest, queryset):
        month = current_month().previous
        rows = []
        for org in queryset.order_by("slug"):
            table = chargeback(month=month, org_slug=org.slug)
            rows.extend(table.rows)
        table.rows = rows
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="chargeback-{month.label}.csv"'
        report_write(table, response, fmt="csv")
        return response


class ApiKeyAdmin(tenancy_admin.ApiKeyAdmin):
    list_display = [*tenancy_admin.ApiKeyAdmin.list_display, "spend_month", "requests_month"]
    fields = [*tenancy_admin.ApiKeyAdmin.fields, "spend_month"]
    readonly_fields = [*tenancy_admin.ApiKeyAdmin.readonly_fields, "spend_month"]

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        self._attach_spend(list(changelist.result_list))
        return changelist

    @staticmethod
    def _attach_spend(keys: list[ApiKey]) -> None:
        """Spend of this month for one page of keys, in a couple of queries (see apps.reports.selectors.api_key_spend)."""
        spend = api_key_spend(api_keys=keys, month=current_month())
        for key in keys:
            key._spend_month = spend.get(key.id, (Decimal(0), 0))  # type: ignore[attr-defined]

    def _spend(self, obj: ApiKey) -> tuple[Decimal, int]:
        if not hasattr(obj, "_spend_month"):
            if obj.pk is None:
                return Decimal(0), 0
            self._attach_spend([obj])
        return obj._spend_month  # type: ignore[attr-defined]

    @admin.display(description="spend this month")
    def spend_month(self, obj: ApiKey) -> str:
        return f"${self._spend(obj)[0]:,.2f}"

    @admin.display(description="requests this month")
    def requests_month(self, obj: ApiKey) -> str:
        return f"{self._spend(obj)[1]:,}"


for model, model_admin in ((Organization, OrganizationAdmin), (ApiKey, ApiKeyAdmin)):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
