from __future__ import annotations

from django.db import models

from apps.ledger.models import cost_field


class RouteDailySummary(models.Model):
    """Rollup of llm_requests by routing decision, recomputed by `route_rollup` (INSERT … ON CONFLICT).

    cost_daily_summary has no route columns, and the dashboard must not scan the month's detail rows,
    so routing savings read this table. Tokens count answered requests only (served or disconnected):
    cache hits and failures are not priced at the premium counterfactual.
    """

    date = models.DateField()
    org = models.ForeignKey("tenancy.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey("tenancy.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=128)
    tier = models.CharField(max_length=32)
    route_strategy = models.CharField(max_length=32)
    requests = models.PositiveIntegerField(default=0)
    answered = models.PositiveIntegerField(default=0)
    escalations = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cost_usd = cost_field()
    escalation_cost_usd = cost_field()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "route_daily_summary"
        ordering = ["-date"]
        verbose_name_plural = "route daily summaries"
        constraints = [
            models.UniqueConstraint(
                fields=["date", "org", "team", "model", "tier", "route_strategy"],
                name="route_daily_summary_key",
                nulls_distinct=False,
            ),
        ]
        indexes = [models.Index(fields=["org", "date"], name="route_daily_org_date")]

    def __str__(self) -> str:
        return f"{self.date} {self.model} {self.route_strategy} team={self.team_id}"
