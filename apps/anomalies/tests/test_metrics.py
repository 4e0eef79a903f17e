import datetime as dt
from decimal import Decimal

import pytest

from apps.anomalies.models import Anomaly
from finops import metrics


def scrape() -> str:
    return metrics.render()[0].decode()


@pytest.mark.django_db
def test_open_anomalies_are_exported_by_severity_and_detector(make_tenant):
    org = make_tenant().org
    start = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    for i, (severity, status) in enumerate([("critical", "open"), ("critical", "open"), ("warning", "acknowledged")]):
        Anomaly.objects.create(
            detector="combined", metric="cost", scope_type="org", org=org, scope_label="x", series_key=f"s{i}", dedupe_key=f"d{i}",
            window_start=start, window_end=start + dt.timedelta(hours=1), expected=1, actual=2, impact_usd=Decimal(1),
            severity=severity, status=status,
        )  # fmt: skip
    text = scrape()
    assert 'finops_anomalies_open{detector="combined",severity="critical"} 2.0' in text
    # An acknowledged anomaly no longer counts; the zero keeps the series alive for `== 0` rules.
    assert 'finops_anomalies_open{detector="any",severity="warning"} 0.0' in text
    assert 'finops_anomalies_open{detector="any",severity="info"} 0.0' in text
