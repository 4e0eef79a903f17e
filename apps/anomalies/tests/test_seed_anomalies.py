"""`manage.py seed_anomalies`: the seeded month's incidents are in the admin with their severities, recent ones
open, older ones resolved with a triage note, and nothing is paged for history."""

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command

from apps.alerts.models import AlertDelivery, AlertRoute
from apps.anomalies.models import Anomaly
from demo import seed

pytestmark = pytest.mark.django_db

END = dt.date(2026, 3, 1)  # the seeded month is February 2026
NOW = dt.datetime(2026, 3, 1, 6, 30, tzinfo=dt.UTC)


@pytest.fixture
def seeded(prices):
    seed.seed_demo(per_day=400, days=30, seed=42, end=END, incident_scale=40)
    AlertRoute.objects.create(name="pager", severity="critical", receiver="webhook", target="http://127.0.0.1:9/pager")


def seed_anomalies(**options) -> str:
    out = StringIO()
    call_command("seed_anomalies", stdout=out, now=NOW, **options)
    return out.getvalue()


def test_it_records_the_seeded_incidents_with_their_severities_and_triages_the_old_ones(seeded):
    text = seed_anomalies()
    assert "critical" in text and "warning" in text
    severities = set(Anomaly.objects.values_list("severity", flat=True))
    assert {"critical", "warning"} <= severities
    open_ = Anomaly.objects.filter(status=Anomaly.Status.OPEN)
    resolved = Anomaly.objects.filter(status=Anomaly.Status.RESOLVED)
    assert open_.exists() and resolved.exists()
    assert all(a.window_end >= NOW - dt.timedelta(days=10) for a in open_)
    assert all(a.window_end < NOW - dt.timedelta(days=10) and a.triage_note for a in resolved)
    # The runaway loop (21 days before the end) is the critical one, resolved, with its cause in the note.
    loop = resolved.get(scope_type="org", scope_label="globex-bank", detector="combined")
    assert loop.severity == "critical" and loop.feedback == Anomaly.Feedback.TRUE_POSITIVE
    assert "runaway loop" in loop.triage_note
    # History is not paged: no deliveries, and the later hourly scans will not notify these again.
    assert not AlertDelivery.objects.exists()
    assert not Anomaly.objects.filter(notified_severity="").exists()
    # Safe to run twice: the same rows, nothing reopened or duplicated.
    before = sorted(Anomaly.objects.values_list("dedupe_key", "status", "severity"))
    assert " 0 new" in seed_anomalies()
    assert sorted(Anomaly.objects.values_list("dedupe_key", "status", "severity")) == before
