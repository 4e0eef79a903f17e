"""Admin pages of the reports app: the org and team dashboards, and CSV downloads."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse

from apps.reports.dashboard import dashboard_context
from apps.reports.periods import Month, current_month, month_parse
from apps.reports.services import chargeback, focus_export, report_write
from apps.tenancy.access import admin_home_scope, admin_org_scope, admin_team_scope, is_finance
from apps.tenancy.models import Organization, Team
from finops.errors import BadRequest


def _month(request: HttpRequest) -> Month:
    try:
        return month_parse(request.GET.get("month"))
    except BadRequest:
        return current_month()


def _page(request: HttpRequest, *, scope, title: str, **extra) -> TemplateResponse:
    context = {
        **admin.site.each_context(request),
        **dashboard_context(scope=scope, month=_month(request), user=request.user),
        "title": title,
        **extra,
    }
    return TemplateResponse(request, "reports/dashboard_page.html", context)


def _get_or_refuse(request: HttpRequest, queryset, pk: int):
    """The object, or 404 for finance; anyone else gets the same 403 for a missing id as for another org's,
    so that the answer does not tell which ids exist."""
    if is_finance(request.user):
        return get_object_or_404(queryset, pk=pk)
    obj = queryset.filter(pk=pk).first()
    if obj is None:
        raise PermissionDenied("You can only see your own organization's costs.")
    return obj


def org_dashboard_view(request: HttpRequest, org_id: int) -> TemplateResponse:
    org = _get_or_refuse(request, Organization.objects.all(), org_id)
    return _page(request, scope=admin_org_scope(request.user, org), title=f"Costs: {org.name}", org=org)


def team_dashboard_view(request: HttpRequest, team_id: int) -> TemplateResponse:
    team = _get_or_refuse(request, Team.objects.select_related("org"), team_id)
    return _page(request, scope=admin_team_scope(request.user, team), title=f"Costs: {team.org.name} › {team.name}", team=team)


def chargeback_csv_view(request: HttpRequest) -> HttpResponse:
    """Chargeback for `?month=` (default current) and `?org=<slug>`; members of an org get their org only."""
    month = _month(request)
    org_slug = request.GET.get("org") or None
    if not is_finance(request.user):
        scope = admin_home_scope(request.user)
        if scope is None or (org_slug and org_slug != scope.org_slug):
            raise PermissionDenied("You can only download your own organization's chargeback.")
        org_slug = scope.org_slug
    try:
        table = chargeback(month=month, org_slug=org_slug)
    except BadRequest as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="chargeback-{month.label}{"-" + org_slug if org_slug else ""}.csv"'
    report_write(table, response, fmt="csv")
    return response


def focus_csv_view(request: HttpRequest) -> HttpResponse:
    """The month's FOCUS export, for finance (it spans every org)."""
    if not is_finance(request.user):
        raise PermissionDenied("The FOCUS export is for the finance group.")
    month = _month(request)
    # Written in full before the response goes out: the export checks its total against the ledger at the end,
    # and a download that fails that check must not look like a complete file.
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    focus_export(month=month, out=response)
    response["Content-Disposition"] = f'attachment; filename="focus-{month.label}.csv"'
    return response
