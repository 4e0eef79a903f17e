"""`eval_anomalies`: run both evaluations and write docs/anomaly-eval.md (with one plot)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from django.db import transaction

from apps.anomalies import evaluation, reporting
from apps.anomalies.conf import knob


class _Rollback(Exception):
    pass


def anomaly_eval_run(
    *, nab_dir: Path, nab_source: str, output: Path, seed_per_day: int | None, progress: Callable[[str], None] | None = None
) -> str:
    nab = evaluation.nab_evaluate(evaluation.nab_load(nab_dir), source=nab_source, progress=progress)
    seed_section = "_Skipped (--skip-seed)._"
    plot_rel = "img/anomaly-incident.png"
    summary = [f"NAB ({nab_source}, {nab.files} files):"] + [f"  {k}: F1 {v['all'].f1:.3f}" for k, v in nab.scores.items()]
    if seed_per_day is not None:
        seed_section, seed_summary = _seed_section(seed_per_day=seed_per_day, plot_path=output.parent / plot_rel)
        summary.append(seed_summary)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(_document(nab=nab, seed_section=seed_section, plot_rel=plot_rel))
    summary.append(f"wrote {output}")
    return "\n".join(summary)


def _seed_section(*, seed_per_day: int, plot_path: Path) -> tuple[str, str]:
    from apps.ledger.models import SeedIncident

    if SeedIncident.objects.exists():
        return _seed_report(plot_path=plot_path, note="the seeded workload already in this database")
    try:
        with transaction.atomic():
            from django.conf import settings

            from apps.ledger import seed
            from apps.ledger.services import prices_load_fixture

            prices_load_fixture(path=settings.BASE_DIR / "fixtures" / "prices.json")
            seed.seed_demo(per_day=seed_per_day, days=30, seed=42)
            result = _seed_report(
                plot_path=plot_path,
                note=f"`seed_demo --per-day {seed_per_day} --days 30 --seed 42`, seeded for the run and rolled back",
            )
            raise _Rollback
    except _Rollback:
        return result


def _seed_report(*, plot_path: Path, note: str) -> tuple[str, str]:
    report = evaluation.seed_evaluate()
    caught = report.caught_in_time
    total = len(report.outcomes)
    lines = [
        f"Workload: {note}; {report.rows:,} ledger rows, {report.start:%Y-%m-%d} to {report.end:%Y-%m-%d}. "
        f"Thresholds: minimum impact ${knob('ANOMALY_MIN_IMPACT_USD')}, warning ≥ ${knob('ANOMALY_WARNING_USD')} and ≥ "
        f"{knob('ANOMALY_WARNING_PCT'):g} %, critical ≥ ${knob('ANOMALY_CRITICAL_USD')} and ≥ {knob('ANOMALY_CRITICAL_PCT'):g} %.",
        "",
        reporting.seed_markdown(report),
        "",
        f"- **Caught within {report.max_scan_hours} scan hours: {caught}/{total}.**",
        f"- Incidents recorded over the month: {report.incidents_total}; not overlapping a seeded incident: "
        f"{len(report.false_positives)} (by severity: {_by_severity(report.false_positives)}).",
        f"- **False criticals: {len(report.false_criticals)}.**",
    ]
    _plot_first_caught(report, plot_path)
    return (
        "\n".join(lines),
        f"seed: {caught}/{total} caught in time, {len(report.false_criticals)} false criticals, {len(report.false_positives)} other incidents",
    )


def _by_severity(incidents) -> str:
    counts: dict[str, int] = {}
    for inc in incidents:
        counts[inc.severity] = counts.get(inc.severity, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _plot_first_caught(report: evaluation.SeedReport, plot_path: Path) -> None:
    from apps.anomalies.selectors import SCOPE_TEAM, hourly_series
    from apps.ledger.models import SeedIncident

    target = next((o for o in report.outcomes if o.caught and o.kind == "runaway_loop"), None) or next(
        (o for o in report.outcomes if o.caught), None
    )
    if target is None:
        return
    seeded = SeedIncident.objects.get(kind=target.kind, start=target.start)
    series = hourly_series(start=report.start, end=report.end)
    index = next(i for i in range(len(series)) if series.scope_type[i] == SCOPE_TEAM and series.team_id[i] == seeded.team_id)
    start_idx = int((seeded.start.replace(minute=0) - series.start).total_seconds() // 3600)
    end_idx = int((seeded.end - series.start).total_seconds() // 3600)

    class _Span:
        start, end = start_idx, max(end_idx, start_idx + 1)

    reporting.plot_incident(
        series=series,
        index=index,
        incident=_Span,
        seeded_start=seeded.start,
        seeded_end=seeded.end,
        path=plot_path,
        title=f"{target.kind} on {target.scope}: team spend per hour, caught by the scan "
        f"{target.scan_hours} h after it began ({target.severity})",
    )


def _document(*, nab: evaluation.NabReport, seed_section: str, plot_rel: str) -> str:
    now = dt.datetime.now(dt.UTC)
    return f"""# Anomaly detection: evaluation

_Written by `manage.py eval_anomalies` on {now:%Y-%m-%d %H:%M} UTC. Re-run it after changing a detector._

## Detectors and their parameters

All detectors work on hourly series (the scan reads complete hours only) and are causal: the verdict for an
hour uses that hour and the past, so replaying history gives what each hourly scan would have said.
Parameters are in hours; the defaults are in `apps/anomalies/detectors.py` (module docstring) and the
thresholds in `FINOPS[...]` (`apps/anomalies/conf.py`).

| detector | baseline | flags when | defaults |
|---|---|---|---|
| spike | median of the trailing 168 h | robust z = (x − median) / (1.4826 · MAD) > 5 | window 168 h, min history 24 h, scale floor 5 % of the median |
| iqr | quartiles of the trailing 168 h | x > Q3 + 3 · IQR (Tukey's far-out fence) | window 168 h, k 3, min history 24 h |
| pattern | median of the same hour of week (± 1 h) over the previous 4 weeks | z of the residual against the MAD of the last 336 h of residuals > 4 | season 168 h, weeks 4, residual window 336 h |
| mix | trailing 168 h median of the premium-model share of an org's spend | share − median > 0.2 and robust z > 3 | window 168 h |
| combined (the scan) | pattern's expectation | pattern AND (spike z > 2.5 OR above last week's Q3); spike AND iqr before a week of history | — |

The scan runs `combined` on cost, requests and tokens per request of every org, team and model, and `mix` on
every org's premium share. Flagged hours less than 2 h apart merge into one incident; its impact is the sum of
(actual − expected) cost over its hours; incidents under `ANOMALY_MIN_IMPACT_USD` are not recorded. Severity
needs both bars: critical ≥ $100 and ≥ 200 %, warning ≥ $10 and ≥ 50 % (defaults), else info. A scope has no
history before its first request, so a brand-new model is watched through its org and team until it has some.

**Slow ramp** (`test_a_slow_ramp_is_not_a_spike_but_the_weekly_pattern_sees_it_late`): +0.5 %/h of the mean
for two weeks. Spike and IQR follow the ramp and never fire; the hour-of-week detector fires after about two
days (+20 %); the combined detector after about three days (+40 %), once the level is also above last week's
upper quartile. Slow growth is mostly a budget matter: the 80 %/100 % budget alerts cover it.

## (a) NAB: realAdExchange + realKnownCause

Source: {nab.source} ({nab.files} files). Every file is averaged to hourly values (the scan's resolution), for
the detectors and the baseline alike; detectors run two-sided here (NAB labels drops too; the scan only looks
up, since lower spend is not an incident). Scoring: the first 15 % of each file is probation; a labelled
window is caught when at least one alert falls inside it; every alert outside all windows is a false
positive; an alert is the first hour of a run of flagged hours. Precision = caught / (caught + false alerts),
micro-averaged over the files.

{reporting.nab_markdown(nab)}

Reading the table honestly:
- With the scan's defaults the combined detector does **not** beat the naive static threshold on NAB (the
  acceptance asks for +0.15 event F1). Its recall is higher but it raises many more alerts: NAB's series
  (ad-exchange prices, machine temperatures) are noisier between labelled events than LLM spend, and a
  z > 4 hour-of-week bar, right for the seeded spend (zero false criticals below), is too low for them.
- The NAB-tuned row (pattern z > 8, at most one alert a day per series) was chosen by a grid search on these
  same files, so it is an in-sample, optimistic figure. It beats the naive baseline as specified by about 0.19
  F1, but only by about 0.09 against the naive baseline given the same one-alert-a-day cooldown.
- NAB's own scoreboard (windowed Gaussian 39.6, Twitter ADVec 47.1, RCF 51.7) uses a different, weighted
  score and is not comparable to these event-level F1 figures.

## (b) The seeded workload

Each seeded incident (runaway loop, leaked key, premium-model switch, cache outage) must be caught within 2
scan hours: the first hourly scan that would have recorded an incident of its org, team or model ran at most
2 hours after the seeded incident's first hour began. A false critical is a critical incident that overlaps no
seeded incident. For the 1.5M-row reference month, run it against the benchmark database:
`DATABASE_URL=<…/finops_bench> manage.py eval_anomalies` (the dollar figures there are 125× larger, so
the same incidents reach warning and critical).

{seed_section}

![a caught incident]({plot_rel})
"""
