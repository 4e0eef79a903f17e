"""Anomaly knobs, read from settings.FINOPS with defaults here, so tests can override them with `settings`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Severity from the incident's dollar AND percentage impact (both must reach the bar).
    "ANOMALY_WARNING_USD": Decimal("10"),
    "ANOMALY_WARNING_PCT": 50.0,
    "ANOMALY_CRITICAL_USD": Decimal("100"),
    "ANOMALY_CRITICAL_PCT": 200.0,
    # Below this dollar impact an anomalous run is not recorded at all: tiny series stay quiet.
    "ANOMALY_MIN_IMPACT_USD": Decimal("0.25"),
    # Re-alert cooldown: anomalous hours within this many hours after the end of a scope's open
    # incident extend that incident instead of opening (and paging for) a new one. Escalations still
    # notify. Chosen with the pattern threshold on NAB (docs/anomaly-eval.md, cross-validated).
    "ANOMALY_REALERT_COOLDOWN_HOURS": 12,
    # Hours of history a scan reads: the trailing baselines need up to 4 weeks.
    "ANOMALY_LOOKBACK_HOURS": 24 * 29,
    # Only runs that touch the last N complete hours are written by a scan; older ones are history.
    "ANOMALY_SCAN_HORIZON_HOURS": 24,
    # Webhook receivers: seconds per attempt, and attempts (retried by Celery with backoff).
    "ALERT_WEBHOOK_TIMEOUT_S": 3.0,
    "ALERT_WEBHOOK_MAX_ATTEMPTS": 4,
    # Base URL that runbook links and alert texts point to (the admin, the repository).
    "ALERT_ADMIN_BASE_URL": "http://localhost:8000",
}


def knob(name: str) -> Any:
    value = getattr(settings, "FINOPS", {}).get(name, DEFAULTS[name])
    default = DEFAULTS[name]
    if isinstance(default, Decimal) and not isinstance(value, Decimal):
        value = Decimal(str(value))
    return value
