"""Scrape-time gauges, read from the database so every worker reports the same value.

Budget utilisation by org (`finops_budget_utilisation_ratio{org, scope}`) is exported by the budgets app
itself (apps/budgets/metrics.py); the alert rules in deploy/prometheus read it from there.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, Metric

from apps.anomalies.models import Anomaly, Severity
from finops.metrics import register_scrape_collector


@register_scrape_collector
def anomalies_open() -> Iterable[Metric]:
    family = GaugeMetricFamily(
        "finops_anomalies_open",
        "Anomalies not yet acknowledged or resolved, by severity and detector.",
        labels=["severity", "detector"],
    )
    counts = {
        (row["severity"], row["detector"]): row["n"]
        for row in Anomaly.objects.filter(status=Anomaly.Status.OPEN).values("severity", "detector").annotate(n=Count("id"))
    }
    # Zeros for every severity keep the series alive, so `== 0` alerts and rule tests behave.
    for severity in Severity.values:
        if not any(key[0] == severity for key in counts):
            counts[(severity, "any")] = 0
    for (severity, detector), n in sorted(counts.items()):
        family.add_metric([severity, detector], n)
    yield family
