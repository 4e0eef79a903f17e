"""Alert metrics: per-process counters."""

from __future__ import annotations

from prometheus_client import Counter

alerts_dispatched = Counter(
    "finops_alerts_dispatched_total", "Alerts routed to a receiver, by receiver type and severity.", ["receiver", "severity"]
)
