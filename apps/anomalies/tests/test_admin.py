import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from apps.anomalies.models import Anomaly


@pytest.fixture
def admin_client_logged(client, db):
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def anomalies(make_tenant):
    org = make_tenant().org
    start = dt.datetime(2025, 3, 1, 10, tzinfo=dt.UTC)
    rows = []
    for i, severity in enumerate(["info", "warning", "critical"]):
        rows.append(
            Anomaly.objects.create(
                detector="combined", metric="cost", scope_type="org", org=org, scope_label=org.slug, series_key=f"org:{org.id}:{i}",
                dedupe_key=f"k{i}", window_start=start + dt.timedelta(hours=i * 5), window_end=start + dt.timedelta(hours=i * 5 + 2),
                expected=1.0, actual=10.0, impact_usd=Decimal("9"), impact_pct=900.0, score=12.0, severity=severity,
            )
        )  # fmt: skip
    return rows


def test_it_lists_and_filters(admin_client_logged, anomalies):
    url = reverse("admin:anomalies_anomaly_changelist")
    page = admin_client_logged.get(url)
    assert page.status_code == 200
    assert page.content.count(b"+900%") == 3
    critical = admin_client_logged.get(url, {"severity__exact": "critical"})
    assert critical.content.count(b"+900%") == 1
    assert admin_client_logged.get(url, {"status__exact": "open", "detector": "combined"}).status_code == 200


def test_change_page_renders(admin_client_logged, anomalies):
    page = admin_client_logged.get(reverse("admin:anomalies_anomaly_change", args=[anomalies[0].id]))
    assert page.status_code == 200


@pytest.mark.parametrize(
    ("action", "field", "value", "message"),
    [
        ("acknowledge", "status", "acknowledged", "3 anomalies acknowledged."),
        ("resolve", "status", "resolved", "3 anomalies resolved."),
        ("mark_false_positive", "feedback", "false_positive", "3 anomalies marked false positive."),
        ("mark_planned", "feedback", "planned", "3 anomalies marked planned (expected spend)."),
        ("mark_true_positive", "feedback", "true_positive", "3 anomalies marked true positive."),
    ],
)
def test_triage_actions_report_what_they_did(admin_client_logged, anomalies, action, field, value, message):
    url = reverse("admin:anomalies_anomaly_changelist")
    response = admin_client_logged.post(url, {"action": action, "_selected_action": [a.id for a in anomalies]}, follow=True)
    assert message in [str(m) for m in response.context["messages"]]
    assert set(Anomaly.objects.values_list(field, flat=True)) == {value}
