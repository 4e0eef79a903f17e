import datetime as dt
from decimal import Decimal

import pytest

from apps.alerts.models import AlertDelivery, AlertRoute
from apps.anomalies import services
from apps.anomalies.models import Anomaly, Severity
from apps.anomalies.tests.helpers import diurnal, ledger_hours

NOW = dt.datetime(2025, 3, 20, 10, 20, tzinfo=dt.UTC)  # a Thursday; the scan reads up to 10:00
END = NOW.replace(minute=0)


@pytest.fixture
def runaway(make_tenant):
    """Two weeks of a steady diurnal workload, then a loop: 300 premium calls an hour for the last 2 hours."""
    tenant = make_tenant(org="Globex", team="Risk", user="bob")
    ledger_hours(tenant, end=END - dt.timedelta(hours=2), hours=14 * 24 - 2, per_hour=diurnal)
    ledger_hours(tenant, end=END, hours=2, per_hour=lambda i: 300, cost=Decimal("0.05"), model="gpt-4o", tier="premium")
    return tenant


def test_the_scan_finds_the_runaway_loop_per_org_and_team(runaway):
    result = services.anomaly_scan(now=NOW)
    rows = {(a.scope_type, a.scope_label): a for a in Anomaly.objects.filter(detector="combined")}
    # gpt-4o had no traffic before the loop: a scope has no baseline before its first request, so
    # the model scope stays silent and the org and team scopes report it.
    assert set(rows) == {("org", "globex"), ("team", "globex/risk")}
    org = rows[("org", "globex")]
    assert org.window_start == END - dt.timedelta(hours=2)
    assert org.window_end == END
    assert org.actual == pytest.approx(2 * 300 * 0.05, rel=1e-6)
    # About 12 cheap requests at $0.01 in each of those hours: an excess of ~$29.8 on ~$0.12.
    assert Decimal("29") < org.impact_usd < Decimal("30")
    assert org.impact_pct > 1000
    assert org.severity == Severity.WARNING  # $10 < impact < $100
    assert result.created == len(rows) + Anomaly.objects.filter(detector="mix").count()


def test_the_scan_reads_the_detail_table_in_one_query(runaway, django_assert_max_num_queries):
    # One query for the series; the rest are labels, the advisory lock and the incident upserts.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        services.anomaly_scan(now=NOW)
    assert sum("llm_requests" in q["sql"] for q in ctx.captured_queries) == 1


def test_running_the_scan_twice_gives_the_same_incidents(runaway):
    services.anomaly_scan(now=NOW)
    first = list(
        Anomaly.objects.order_by("id").values("id", "dedupe_key", "window_start", "window_end", "impact_usd", "severity")
    )
    again = services.anomaly_scan(now=NOW)
    second = list(
        Anomaly.objects.order_by("id").values("id", "dedupe_key", "window_start", "window_end", "impact_usd", "severity")
    )
    assert first == second
    assert again.created == 0 and again.updated == len(first)


def test_a_continuing_incident_extends_the_same_row(runaway):
    services.anomaly_scan(now=NOW)
    before = Anomaly.objects.get(scope_type="org", detector="combined")
    ledger_hours(
        runaway,
        end=END + dt.timedelta(hours=1),
        hours=1,
        per_hour=lambda i: 300,
        cost=Decimal("0.05"),
        model="gpt-4o",
        tier="premium",
    )
    services.anomaly_scan(now=NOW + dt.timedelta(hours=1))
    after = Anomaly.objects.get(scope_type="org", detector="combined")
    assert after.id == before.id and after.dedupe_key == before.dedupe_key
    assert after.window_end == END + dt.timedelta(hours=1)
    assert after.impact_usd > before.impact_usd


def _second_burst(tenant, *, quiet_hours: int) -> dt.datetime:
    """`quiet_hours` normal hours after the runaway fixture's loop, then the loop again for 2 hours; returns the new end."""
    ledger_hours(tenant, end=END + dt.timedelta(hours=quiet_hours), hours=quiet_hours, per_hour=diurnal)
    end = END + dt.timedelta(hours=quiet_hours + 2)
    ledger_hours(tenant, end=end, hours=2, per_hour=lambda i: 300, cost=Decimal("0.05"), model="gpt-4o", tier="premium")
    return end


def test_a_second_burst_within_the_cooldown_extends_the_open_incident_without_paging_again(runaway):
    AlertRoute.objects.create(name="warn", severity="warning", receiver="email", target="sre@example.com")
    services.anomaly_scan(now=NOW)
    first = Anomaly.objects.get(scope_type="org", detector="combined")
    assert AlertDelivery.objects.filter(title__contains="org globex spend").count() == 1
    end = _second_burst(runaway, quiet_hours=6)  # 6 quiet hours < the 12 h cooldown
    result = services.anomaly_scan(now=end + dt.timedelta(minutes=20))
    org = Anomaly.objects.get(scope_type="org", detector="combined")
    assert org.id == first.id and result.created == 0
    assert (org.window_start, org.window_end) == (END - dt.timedelta(hours=2), end)
    assert org.details["runs"] == 2
    # Both bursts count, not the quiet hours between them: ~2 × $29.8.
    assert Decimal("58") < org.impact_usd < Decimal("60") and org.severity == Severity.WARNING
    assert AlertDelivery.objects.filter(title__contains="org globex spend").count() == 1


def test_a_burst_after_the_cooldown_is_a_new_incident(runaway, settings):
    settings.FINOPS = {**settings.FINOPS, "ANOMALY_REALERT_COOLDOWN_HOURS": 4}
    AlertRoute.objects.create(name="warn", severity="warning", receiver="email", target="sre@example.com")
    services.anomaly_scan(now=NOW)
    end = _second_burst(runaway, quiet_hours=6)
    result = services.anomaly_scan(now=end + dt.timedelta(minutes=20))
    org = list(Anomaly.objects.filter(scope_type="org", detector="combined").order_by("window_start"))
    assert [(a.window_start, a.window_end) for a in org] == [
        (END - dt.timedelta(hours=2), END),
        (end - dt.timedelta(hours=2), end),
    ]
    assert result.created >= 1
    assert AlertDelivery.objects.filter(title__contains="org globex spend").count() == 2


def test_quiet_history_gives_no_incident(make_tenant):
    tenant = make_tenant()
    ledger_hours(tenant, end=END, hours=14 * 24, per_hour=diurnal)
    assert services.anomaly_scan(now=NOW).incidents == 0
    assert not Anomaly.objects.exists()


def test_tiny_series_stay_below_the_minimum_impact(make_tenant, settings):
    tenant = make_tenant()
    ledger_hours(tenant, end=END - dt.timedelta(hours=1), hours=14 * 24 - 1, per_hour=diurnal, cost=Decimal("0.0001"))
    ledger_hours(tenant, end=END, hours=1, per_hour=lambda i: 100, cost=Decimal("0.0001"))  # a 15x spike worth 1 cent
    assert services.anomaly_scan(now=NOW).incidents == 0
    settings.FINOPS = {**settings.FINOPS, "ANOMALY_MIN_IMPACT_USD": Decimal("0.001")}
    assert services.anomaly_scan(now=NOW).incidents > 0


@pytest.mark.parametrize(
    ("impact", "pct", "expected"),
    [
        (Decimal("5"), 5000.0, Severity.INFO),  # big in %, small in $
        (Decimal("5000"), 20.0, Severity.INFO),  # big in $, small in %
        (Decimal("10"), 50.0, Severity.WARNING),
        (Decimal("99.99"), 10_000.0, Severity.WARNING),
        (Decimal("100"), 199.9, Severity.WARNING),
        (Decimal("100"), 200.0, Severity.CRITICAL),
    ],
)
def test_severity_needs_both_the_dollar_and_the_percentage_bar(impact, pct, expected):
    assert services.severity_for(impact_usd=impact, impact_pct=pct) == expected


def test_severity_thresholds_are_configurable(settings):
    settings.FINOPS = {**settings.FINOPS, "ANOMALY_CRITICAL_USD": Decimal("1"), "ANOMALY_CRITICAL_PCT": 10.0}
    assert services.severity_for(impact_usd=Decimal("1"), impact_pct=10.0) == Severity.CRITICAL


def test_notifications_go_out_once_per_incident_and_once_per_escalation(runaway, settings):
    AlertRoute.objects.create(name="warn", severity="warning", receiver="email", target="sre@example.com")
    AlertRoute.objects.create(name="crit", severity="critical", receiver="email", target="oncall@example.com")
    result = services.anomaly_scan(now=NOW)
    assert result.notified == Anomaly.objects.exclude(severity="info").count() > 0
    assert services.anomaly_scan(now=NOW).notified == 0
    assert AlertDelivery.objects.filter(severity="warning").count() == 3  # org, team, org premium share
    # The loop goes on: its impact crosses the critical bar, which notifies again (once).
    ledger_hours(
        runaway,
        end=END + dt.timedelta(hours=2),
        hours=2,
        per_hour=lambda i: 600,
        cost=Decimal("0.1"),
        model="gpt-4o",
        tier="premium",
    )
    escalated = services.anomaly_scan(now=NOW + dt.timedelta(hours=2))
    assert escalated.notified == 3
    assert AlertDelivery.objects.filter(severity="critical").count() == 3
    assert services.anomaly_scan(now=NOW + dt.timedelta(hours=2)).notified == 0


def test_a_resolved_incident_that_comes_back_reopens(runaway):
    services.anomaly_scan(now=NOW)
    org = Anomaly.objects.get(scope_type="org", detector="combined")
    services.anomalies_resolve(anomaly_ids=[org.id])
    services.anomaly_scan(now=NOW)  # the same window: stays resolved
    assert Anomaly.objects.get(id=org.id).status == Anomaly.Status.RESOLVED
    ledger_hours(
        runaway,
        end=END + dt.timedelta(hours=1),
        hours=1,
        per_hour=lambda i: 300,
        cost=Decimal("0.05"),
        model="gpt-4o",
        tier="premium",
    )
    services.anomaly_scan(now=NOW + dt.timedelta(hours=1))
    assert Anomaly.objects.get(id=org.id).status == Anomaly.Status.OPEN


def test_triage_services(runaway):
    services.anomaly_scan(now=NOW)
    ids = list(Anomaly.objects.values_list("id", flat=True))
    assert services.anomalies_acknowledge(anomaly_ids=ids) == len(ids)
    assert services.anomalies_acknowledge(anomaly_ids=ids) == 0
    assert services.anomalies_set_feedback(anomaly_ids=ids[:1], feedback="planned") == 1
    with pytest.raises(ValueError):
        services.anomalies_set_feedback(anomaly_ids=ids, feedback="maybe")
    assert services.anomalies_resolve(anomaly_ids=ids) == len(ids)
    assert set(Anomaly.objects.values_list("status", flat=True)) == {"resolved"}


def test_a_model_with_history_is_a_scope_too(make_tenant):
    tenant = make_tenant()
    ledger_hours(tenant, end=END - dt.timedelta(hours=1), hours=14 * 24 - 1, per_hour=diurnal, model="gpt-4o", tier="premium")
    ledger_hours(tenant, end=END, hours=1, per_hour=lambda i: 400, model="gpt-4o", tier="premium")
    services.anomaly_scan(now=NOW)
    assert set(Anomaly.objects.filter(detector="combined").values_list("scope_type", flat=True)) == {"org", "team", "model"}
    model = Anomaly.objects.get(scope_type="model")
    assert model.model == "gpt-4o" and model.org_id is None and model.metric in ("cost", "requests")
