"""GET /api/spend/ and GET /api/anomalies/: read-only, scoped to the caller's organization.

Scope (apps/tenancy/access.py): an API key sees its org; a signed-in member sees their org; a
superuser sees every org, or one with `?org=<slug>`. Naming another org is a 403, never its data.
"""

from __future__ import annotations

import datetime as dt

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.ledger.money import ZERO, usd_str
from apps.reports.selectors import anomaly_queryset, spend_rows
from apps.tenancy.access import api_scope
from finops import clock
from finops.errors import BadRequest

MAX_RANGE_DAYS = 366

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "error": inline_serializer(
            name="ErrorBody",
            fields={
                "message": serializers.CharField(),
                "type": serializers.CharField(),
                "param": serializers.CharField(allow_null=True),
                "code": serializers.CharField(),
            },
        )
    },
)
ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid parameter (see `error.param`)."),
    401: OpenApiResponse(ErrorSerializer, description="Missing or invalid API key / session."),
    403: OpenApiResponse(ErrorSerializer, description="Another organization, or an account without one."),
}
ORG_PARAM = OpenApiParameter(
    "org",
    str,
    description="Superusers: one organization by slug (default: all). Anyone else: only their own org's slug (else 403).",
)


def _validated(serializer_class, request):
    serializer = serializer_class(data=request.query_params)
    if not serializer.is_valid():
        field, messages = next(iter(serializer.errors.items()))
        raise BadRequest(f"{field}: {' '.join(str(m) for m in messages)}", param=field)
    return serializer.validated_data


class SpendQuerySerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=["day", "model", "team", "user", "org"], default="day")
    start = serializers.DateField(required=False, help_text="First day (UTC, inclusive); default: the 1st of this month.")
    end = serializers.DateField(required=False, help_text="Last day (UTC, inclusive); default: today.")
    org = serializers.CharField(required=False)


class SpendRowSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="ISO date, model, org/team slug, or org/username, per `group_by`.")
    label = serializers.CharField()
    org = serializers.CharField(allow_null=True)
    team = serializers.CharField(allow_null=True)
    cost_usd = serializers.DecimalField(max_digits=20, decimal_places=10, source="totals.cost")
    saved_usd = serializers.DecimalField(max_digits=20, decimal_places=10, source="totals.saved")
    requests = serializers.IntegerField(source="totals.requests")
    errors = serializers.IntegerField(source="totals.errors")
    cache_hits = serializers.IntegerField(source="totals.cache_hits")
    prompt_tokens = serializers.IntegerField(source="totals.prompt_tokens")
    completion_tokens = serializers.IntegerField(source="totals.completion_tokens")
    cached_tokens = serializers.IntegerField(source="totals.cached_tokens")


class AnomalyQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["open", "acknowledged", "resolved"], required=False)
    severity = serializers.ChoiceField(choices=["info", "warning", "critical"], required=False)
    since = serializers.DateTimeField(required=False, help_text="Only anomalies whose window ends after this instant.")
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)
    org = serializers.CharField(required=False)


class AnomalySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    detector = serializers.CharField()
    metric = serializers.CharField()
    scope_type = serializers.CharField()
    org = serializers.CharField(source="org.slug", allow_null=True, help_text="null: a cross-org (per-model) anomaly")
    team = serializers.CharField(source="team.slug", allow_null=True)
    model = serializers.CharField()
    scope_label = serializers.CharField()
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    expected = serializers.FloatField()
    actual = serializers.FloatField()
    impact_usd = serializers.DecimalField(max_digits=20, decimal_places=10)
    impact_pct = serializers.FloatField()
    score = serializers.FloatField()
    severity = serializers.CharField()
    status = serializers.CharField()
    feedback = serializers.CharField()
    created_at = serializers.DateTimeField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)


class SpendApi(APIView):
    @extend_schema(
        operation_id="spend",
        summary="Spend time series and breakdowns",
        description=(
            "Cost, cache savings, requests and tokens over [start, end] (UTC days, inclusive), grouped by day (a gap-free "
            "time series), model, team, user or org. Read from the daily rollup (refreshed hourly). Scoped to the caller's org."
        ),
        parameters=[SpendQuerySerializer, ORG_PARAM],
        responses={
            200: inline_serializer(
                name="SpendResponse",
                fields={
                    "org": serializers.CharField(allow_null=True),
                    "group_by": serializers.CharField(),
                    "start": serializers.DateField(),
                    "end": serializers.DateField(),
                    "currency": serializers.CharField(),
                    "total_cost_usd": serializers.DecimalField(max_digits=20, decimal_places=10),
                    "total_saved_usd": serializers.DecimalField(max_digits=20, decimal_places=10),
                    "total_requests": serializers.IntegerField(),
                    "results": SpendRowSerializer(many=True),
                },
            ),
            **ERRORS,
        },
    )
    def get(self, request):
        params = _validated(SpendQuerySerializer, request)
        scope = api_scope(request.user, org_slug=params.get("org"))
        today = clock.today()
        start = params.get("start") or today.replace(day=1)
        end = params.get("end") or today
        if end < start:
            raise BadRequest("end is before start.", param="end")
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise BadRequest(f"At most {MAX_RANGE_DAYS} days per call.", param="start")
        rows = spend_rows(scope=scope, group_by=params["group_by"], start=start, end=end + dt.timedelta(days=1))
        results = SpendRowSerializer(rows, many=True).data
        return Response(
            {
                "org": scope.org_slug,
                "group_by": params["group_by"],
                "start": start,
                "end": end,
                "currency": "USD",
                "total_cost_usd": usd_str(sum((r.totals.cost for r in rows), ZERO)),
                "total_saved_usd": usd_str(sum((r.totals.saved for r in rows), ZERO)),
                "total_requests": sum(r.totals.requests for r in rows),
                "results": results,
            }
        )


class AnomalyListApi(APIView):
    @extend_schema(
        operation_id="anomalies_list",
        summary="Cost anomalies (read-only)",
        description=(
            "Cost incidents found by the hourly anomaly scan, newest window first. Scoped to the caller's org; "
            "cross-org (per-model) anomalies are visible to superusers only. Triage happens in the admin."
        ),
        parameters=[AnomalyQuerySerializer, ORG_PARAM],
        responses={200: AnomalySerializer(many=True), **ERRORS},
    )
    def get(self, request):
        params = _validated(AnomalyQuerySerializer, request)
        scope = api_scope(request.user, org_slug=params.get("org"))
        queryset = anomaly_queryset(scope=scope)
        if params.get("status"):
            queryset = queryset.filter(status=params["status"])
        if params.get("severity"):
            queryset = queryset.filter(severity=params["severity"])
        if params.get("since"):
            queryset = queryset.filter(window_end__gt=params["since"])
        anomalies = queryset.order_by("-window_start", "-id")[: params["limit"]]
        return Response(AnomalySerializer(anomalies, many=True).data)
