"""GET /api/budgets/: current-period usage of the caller's budgets.

Scope: an API key sees its org; a signed-in user sees the org of their finops member; a superuser
sees every org (optionally `?org=<slug>`). Never another org's budgets.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.budgets.selectors import budget_status_list
from finops.errors import PermissionDenied


def caller_org_scope(user) -> tuple[int | None, bool]:
    """(org_id, all_orgs) for the authenticated caller."""
    org = getattr(user, "org", None)  # ApiKeyUser
    if org is not None and getattr(user, "api_key", None) is not None:
        return org.id, False
    if getattr(user, "is_superuser", False) and getattr(user, "is_staff", False):
        return None, True
    member = getattr(user, "finops_member", None)
    if member is not None:
        return member.org_id, False
    raise PermissionDenied("This account is not linked to a finops member, so it has no organization to show budgets for.")


class BudgetListApi(APIView):
    # A component name of its own: "Output" collides with ChatApi.OutputSerializer and /chat got this schema.
    @extend_schema_serializer(component_name="BudgetStatus")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField(source="budget.id")
        scope = serializers.CharField(source="budget.scope")
        org = serializers.CharField(source="budget.org.slug")
        team = serializers.SerializerMethodField()
        user = serializers.SerializerMethodField()
        period = serializers.CharField(source="budget.period")
        period_start = serializers.DateTimeField()
        period_end = serializers.DateTimeField()
        action = serializers.CharField(source="budget.action")
        soft_pct = serializers.ListField(source="budget.soft_pct", child=serializers.IntegerField())
        cap_usd = serializers.DecimalField(source="budget.cap_usd", max_digits=14, decimal_places=2)
        spent_usd = serializers.DecimalField(max_digits=20, decimal_places=10)
        reserved_usd = serializers.DecimalField(max_digits=20, decimal_places=10)
        remaining_usd = serializers.DecimalField(max_digits=20, decimal_places=10)
        forecast_usd = serializers.DecimalField(
            max_digits=20, decimal_places=2, help_text="End-of-period spend at the burn rate so far."
        )
        utilisation = serializers.FloatField(allow_null=True, help_text="spent / cap")

        def get_team(self, status) -> str | None:
            team = status.budget.team
            return team.slug if team is not None and status.budget.scope != "org" else None

        def get_user(self, status) -> str | None:
            member = status.budget.member
            return member.username if member is not None else None

    @extend_schema(
        responses=OutputSerializer(many=True),
        parameters=[OpenApiParameter("org", str, description="Superusers only: one org's budgets, by slug.")],
    )
    def get(self, request):
        org_id, all_orgs = caller_org_scope(request.user)
        statuses = budget_status_list(org_id=org_id, include_all_orgs=all_orgs)
        org_slug = request.query_params.get("org")
        if all_orgs and org_slug:
            statuses = [s for s in statuses if s.budget.org.slug == org_slug]
        return Response(self.OutputSerializer(statuses, many=True).data)
