"""Anomaly metrics. Per-process counters here; database gauges are computed at scrape time (collectors.py)."""

from __future__ import annotations

from prometheus_client import Counter

alerts_dispatched = Counter(
    "finops_alerts_dispatched_total", "Alerts routed to a receiver, by receiver type and severity.", ["receiver", "severity"]
)
