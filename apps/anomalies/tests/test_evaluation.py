from pathlib import Path

import numpy as np
import pytest

from apps.anomalies import evaluation

ROOT = Path(__file__).resolve().parents[3]


def test_event_scoring_counts_caught_windows_and_false_alerts():
    stamps = np.arange(np.datetime64("2024-01-01T00:00:00"), np.datetime64("2024-01-05T04:00:00"), np.timedelta64(1, "h"))
    series = evaluation.NabSeries(
        name="x/y.csv",
        timestamps=stamps,
        values=np.zeros(len(stamps)),
        windows=[(stamps[50], stamps[60]), (stamps[80], stamps[90]), (stamps[2], stamps[5])],  # the last is in probation
    )
    # index 3 is in probation (ignored); 55 catches window 1 (twice: still one catch); 70 and 95 are false alerts.
    score = evaluation.score_alerts(series, [3, 55, 57, 70, 95])
    assert (score.caught, score.windows, score.false_positives) == (1, 2, 2)
    assert score.precision == pytest.approx(1 / 3) and score.recall == pytest.approx(0.5)


def test_alerts_with_cooldown_keep_one_alert_per_period():
    flags = np.zeros(100, dtype=bool)
    flags[[10, 11, 20, 40, 41, 70]] = True
    assert evaluation.alerts_with_cooldown(flags, cooldown=0) == [10, 20, 40, 70]
    assert evaluation.alerts_with_cooldown(flags, cooldown=24) == [10, 40, 70]


def test_nab_vendored_subset_is_scored_for_every_detector():
    root = ROOT / "fixtures" / "nab"
    report = evaluation.nab_evaluate(evaluation.nab_load(root), source="vendored subset")
    assert report.files == 3
    assert "combined (scan defaults)" in report.scores and any(k.startswith("naive") for k in report.scores)
    for by_corpus in report.scores.values():
        assert by_corpus["all"].windows == 9
    # nyc_taxi's holidays are hour-of-week departures: the pattern-based combined detector finds most.
    assert report.per_file["realKnownCause/nyc_taxi.csv"]["combined (scan defaults)"].caught >= 4


@pytest.mark.skipif(
    not (ROOT.parent / "shared" / "data" / "nab" / "combined_windows.json").exists(), reason="full NAB set not present"
)
def test_full_nab_set_loads_both_corpora():
    root, source = evaluation.nab_root(ROOT)
    assert source == "full"
    series = evaluation.nab_load(root)
    assert {s.corpus for s in series} == {"realAdExchange", "realKnownCause"} and len(series) == 13


@pytest.mark.django_db
def test_the_seeded_incidents_are_caught_within_two_scans_with_no_false_critical(prices):
    from apps.ledger import seed

    seed.seed_demo(per_day=400, days=30, seed=42)
    report = evaluation.seed_evaluate()
    assert {o.kind for o in report.outcomes} == {"runaway_loop", "leaked_key", "premium_switch", "cache_outage"}
    for outcome in report.outcomes:
        assert outcome.caught, outcome
        assert outcome.scan_hours <= 2, outcome
    assert report.false_criticals == []
