"""Guards against date-dependent assumptions: the demo's whole path on a pinned day far from today.

2027-03-01 00:30 UTC is the first hour of a month that follows a short month: the seeded month ends at a
month boundary, "yesterday" is in another month, and the live scan's 24-hour horizon crosses it.
"""

import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum

from apps.anomalies.models import Anomaly, Severity
from apps.anomalies.services import anomaly_scan
from apps.ledger.models import CostDailySummary, LLMRequest, SeedIncident
from evals.anomalies import evaluation
from finops import clock

FAR_DAY = dt.datetime(2027, 3, 1, 0, 30, tzinfo=dt.UTC)


def test_the_clock_pins_freezes_nests_and_advances():
    before = clock.now()
    with clock.pinned(FAR_DAY) as at:
        assert clock.now() == at == FAR_DAY and clock.today() == dt.date(2027, 3, 1)
        with clock.pinned(FAR_DAY + dt.timedelta(days=1), frozen=False):
            assert clock.now() >= FAR_DAY + dt.timedelta(days=1)
            assert clock.now() - (FAR_DAY + dt.timedelta(days=1)) < dt.timedelta(seconds=5)
        assert clock.now() == FAR_DAY
    assert clock.now() >= before and abs(clock.now() - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)
    with pytest.raises(ValueError):
        with clock.pinned(dt.datetime(2027, 3, 1)):  # naive: refused
            pass


@pytest.mark.django_db
@pytest.mark.parametrize("pinned_now", [FAR_DAY], indirect=True)
def test_seed_scan_and_rollup_on_the_first_hour_of_a_month(prices, pinned_now):
    out = StringIO()
    call_command("seed_demo", "--demo-key-file", "", stdout=out)
    first = LLMRequest.objects.order_by("received_at").first().received_at
    last = LLMRequest.objects.order_by("-received_at").first().received_at
    assert first.date() == dt.date(2027, 1, 30) and last.date() == dt.date(2027, 2, 28)  # the 30 days before today
    assert SeedIncident.objects.count() == 4
    assert all(s.end <= FAR_DAY.replace(minute=0) for s in SeedIncident.objects.all())

    # The hourly rollup job's default range is yesterday and today: yesterday is in February.
    call_command("rollup_costs", stdout=out)
    feb_28 = LLMRequest.objects.filter(received_at__date=dt.date(2027, 2, 28)).aggregate(cost=Sum("cost_usd"))["cost"]
    summary = CostDailySummary.objects.filter(date=dt.date(2027, 2, 28)).aggregate(cost=Sum("cost_usd"))["cost"]
    assert summary == feb_28 and summary > Decimal(0)
    assert not CostDailySummary.objects.filter(date=dt.date(2027, 3, 1)).exists()  # no rows today yet

    # The live scan at the pinned instant reads the month up to the last complete hour (Feb 28, 23:00).
    result = anomaly_scan()
    assert result.hours == 24 * 29
    seeded = list(SeedIncident.objects.values_list("start", "end"))
    false_criticals = [
        a for a in Anomaly.objects.filter(severity=Severity.CRITICAL)
        if not any(a.window_start < end and a.window_end > start for start, end in seeded)
    ]  # fmt: skip
    assert false_criticals == []
    assert all(a.window_end <= FAR_DAY.replace(minute=0) for a in Anomaly.objects.all())

    # And the replay of every hourly scan over the month still catches each incident within two scans.
    report = evaluation.seed_evaluate()
    assert report.caught_in_time == 4, report.outcomes
