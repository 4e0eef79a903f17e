"""Markdown and the plot for docs/anomaly-eval.md, from the evaluation results."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from apps.anomalies import detectors as d
from evals.anomalies.evaluation import NabReport, Score, SeedReport


def nab_markdown(report: NabReport) -> str:
    corpora = sorted({c for by in report.scores.values() for c in by if c != "all"})
    head = "| detector | " + " | ".join(f"{c} F1" for c in corpora) + " | all: P | R | F1 | windows caught | false alerts |"
    lines = [head, "|" + "---|" * (len(corpora) + 6)]
    for detector, by in report.scores.items():
        a = by["all"]
        cells = " | ".join(f"{by[c].f1:.3f}" if c in by else "—" for c in corpora)
        lines.append(
            f"| {detector} | {cells} | {a.precision:.2f} | {a.recall:.2f} | **{a.f1:.3f}** | {a.caught}/{a.windows} | {a.false_positives} |"
        )
    return "\n".join(lines)


def nab_cv_markdown(report: NabReport) -> str:
    """The cross-validation table: in-sample, leave-one-file-out and one-family-out figures of the grid search."""
    from collections import Counter

    from evals.anomalies.evaluation import CV_COOLDOWNS, CV_THRESHOLDS, NAIVE

    cv = report.cv
    if cv is None:
        return "_Cross-validation skipped._"
    corpora = sorted({c for c in cv.lofo if c != "all"})
    naive = report.scores[NAIVE]

    def row(label: str, picks: str, by: dict[str, Score]) -> str:
        a = by["all"]
        cells = " | ".join(f"{by[c].f1:.3f}" if c in by else "—" for c in corpora)
        return (
            f"| {label} | {picks} | {cells} | {a.precision:.2f} | {a.recall:.2f} | **{a.f1:.3f}** | "
            f"{a.caught}/{a.windows} | {a.false_positives} | {a.f1 - naive['all'].f1:+.3f} |"
        )

    head = (
        "| validation | setting(s) used | "
        + " | ".join(f"{c} F1" for c in corpora)
        + " | all: P | R | F1 | windows caught | false alerts | F1 − naive |"
    )
    lines = [head, "|" + "---|" * (len(corpora) + 8)]
    lines.append(row("naive baseline (no parameters)", "—", naive))
    lines.append(row("in-sample: picked and scored on all files", str(cv.in_sample), cv.in_sample_scores))
    counts = Counter(str(s) for s in cv.lofo_picks.values())
    picks = "; ".join(f"{name} ({n} of {len(cv.lofo_picks)})" for name, n in counts.most_common())
    lines.append(row(f"leave one file out ({len(cv.lofo_picks)} folds)", picks, cv.lofo))
    if cv.family:
        family = {corpus: score for corpus, (_, score) in cv.family.items()}
        family["all"] = cv.family_all
        picks = "; ".join(f"for {corpus}: {setting} (picked on the other)" for corpus, (setting, _) in sorted(cv.family.items()))
        lines.append(row("one family out (pick on one, score the other)", picks, family))
    grid = (
        f"Grid: residuals plain or square-root × pattern z > {', '.join(f'{t:g}' for t in CV_THRESHOLDS)} × cooldown "
        f"{', '.join(str(c) for c in CV_COOLDOWNS)} h ({cv.grid} settings); the pick is the best pooled event F1 on the "
        "training files (ties: fewer false alerts)."
    )
    return "\n".join(lines) + "\n\n" + grid


def seed_markdown(report: SeedReport) -> str:
    lines = [
        "| incident | scope (org / team / model) | caught | scans after its first hour | severity | matched incidents |",
        "|---|---|---|---|---|---|",
    ]
    for o in report.outcomes:
        lines.append(
            f"| {o.kind} | {o.scope} | {'yes' if o.caught else '**no**'} | {o.scan_hours if o.scan_hours is not None else '—'} | "
            f"{o.severity or '—'} | {'<br>'.join(o.matched) or '—'} |"
        )
    return "\n".join(lines)


def plot_incident(
    *, series, index: int, incident, seeded_start: dt.datetime, seeded_end: dt.datetime, path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo = max(0, incident.start - 24 * 3)
    hi = min(series.hours, incident.end + 24)
    x = series.cost[index]
    active = np.maximum.accumulate(series.requests[index] > 0)
    det, _ = d.combined(np.where(active, x, np.nan), start=max(0, lo - 1))
    hours = [series.hour_at(i) for i in range(lo, hi)]
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=110)
    ax.plot(hours, x[lo:hi], color="#1f77b4", lw=1.4, label="actual $/hour")
    ax.plot(hours, det.expected[0, lo:hi], color="#7f7f7f", lw=1.0, ls="--", label="expected (hour-of-week baseline)")
    ax.axvspan(seeded_start, seeded_end, color="#E01E5A", alpha=0.12, label="seeded incident")  # type: ignore[arg-type]  # stubs say float; date axes take datetimes
    flagged = [i for i in range(lo, hi) if det.flags[0, i]]
    ax.scatter(
        [series.hour_at(i) for i in flagged],
        x[flagged],
        color="#E01E5A",
        s=18,
        zorder=3,
        label="flagged hour (cost metric, before the minimum-impact filter)",
    )
    ax.set_ylabel("USD per hour")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def calendar_markdown(report) -> str:
    """Per incident kind over every pinned "today": worst and median scan hours, worst severity; then each date."""
    import statistics

    rank = {"": 0, "info": 1, "warning": 2, "critical": 3}
    lines = [
        f"| incident | dates | caught within {report.max_scan_hours} scan hours | scan hours, worst | scan hours, median | worst severity seen |",
        "|---|---|---|---|---|---|",
    ]
    for kind, outcomes in report.by_kind().items():
        hours = [o.scan_hours for o in outcomes if o.scan_hours is not None]
        in_time = sum(1 for o in outcomes if o.caught and o.scan_hours is not None and o.scan_hours <= report.max_scan_hours)
        worst_severity = max((str(o.severity) for o in outcomes), key=lambda s: rank.get(s, 0), default="")
        worst = max(hours) if len(hours) == len(outcomes) else "missed"
        lines.append(
            f"| {kind} | {len(outcomes)} | {in_time}/{len(outcomes)} | {worst} | {statistics.median(hours) if hours else '—'} | "
            f"{worst_severity or '—'} |"
        )
    kinds = list(report.by_kind())
    lines += [
        "",
        "| now (UTC) | weekday | " + " | ".join(kinds) + " | live scan: incidents written | false criticals |",
        "|---|---|" + "---|" * len(kinds) + "---|---|",
    ]
    for run in report.runs:
        scan_hours = {o.kind: o.scan_hours for o in run.report.outcomes}
        cells = " | ".join(str(scan_hours.get(kind, "—")) for kind in kinds)
        lines.append(
            f"| {run.now:%Y-%m-%d %H:%M} | {run.now:%a} | {cells} | {run.live_created} | "
            f"{len(run.report.false_criticals) + run.live_false_criticals} |"
        )
    return "\n".join(lines)
