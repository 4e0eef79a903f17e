"""Scoring the detectors: NAB's labelled series (event-level) and the seeded incidents of the demo workload.

NAB scoring convention (the project's, from the shared data README):
- the first 15 % of each file is probation: no alert there counts, and windows that end inside it are dropped;
- a labelled window is caught (a true positive) when at least one alert falls inside it;
- every alert outside all windows is a false positive;
- an alert is the first point of a run of consecutive flagged points (one incident, one page), the way the
  scan merges consecutive anomalous hours;
- precision = caught / (caught + false positives), recall = caught / windows, F1 their harmonic mean,
  all summed over the files of a corpus before dividing (micro-average).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apps.anomalies import detectors as d

PROBATION = 0.15
NAB_CORPORA = ("realAdExchange", "realKnownCause")


@dataclass
class NabSeries:
    name: str  # "<corpus>/<file>.csv"
    timestamps: np.ndarray  # datetime64[s]
    values: np.ndarray
    windows: list[tuple[np.datetime64, np.datetime64]]

    @property
    def corpus(self) -> str:
        return self.name.split("/")[0]

    @property
    def step_seconds(self) -> float:
        return float(np.median(np.diff(self.timestamps).astype("timedelta64[s]").astype(np.int64)))


@dataclass
class Score:
    caught: int = 0
    windows: int = 0
    false_positives: int = 0
    alerts: int = 0

    def add(self, other: Score) -> None:
        self.caught += other.caught
        self.windows += other.windows
        self.false_positives += other.false_positives
        self.alerts += other.alerts

    @property
    def precision(self) -> float:
        return self.caught / (self.caught + self.false_positives) if self.caught + self.false_positives else 0.0

    @property
    def recall(self) -> float:
        return self.caught / self.windows if self.windows else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def nab_root(repo_root: Path) -> tuple[Path, str]:
    """The full NAB set in ../shared/data/nab when present, else the vendored subset in fixtures/nab."""
    full = repo_root.parent / "shared" / "data" / "nab"
    if (full / "combined_windows.json").exists() and (full / "data").is_dir():
        return full, "full"
    return repo_root / "fixtures" / "nab", "vendored subset"


def nab_load(root: Path, *, corpora: tuple[str, ...] = NAB_CORPORA) -> list[NabSeries]:
    windows_file = root / "combined_windows.json"
    if not windows_file.exists():
        windows_file = root / "windows.json"
    labels: dict[str, list[list[str]]] = json.loads(windows_file.read_text())
    series: list[NabSeries] = []
    for name in sorted(labels):
        if name.split("/")[0] not in corpora or not (root / "data" / name).exists():
            continue
        with open(root / "data" / name, newline="") as fh:
            rows = list(csv.DictReader(fh))
        stamps = np.array([np.datetime64(r["timestamp"].replace(" ", "T")[:19]) for r in rows], dtype="datetime64[s]")
        values = np.array([float(r["value"]) for r in rows])
        windows = [(np.datetime64(a.replace(" ", "T")[:19]), np.datetime64(b.replace(" ", "T")[:19])) for a, b in labels[name]]
        series.append(NabSeries(name=name, timestamps=stamps, values=values, windows=windows))
    return series


def score_alerts(series: NabSeries, alert_idx: list[int]) -> Score:
    n = len(series.values)
    probation_end = int(n * PROBATION)
    probation_time = series.timestamps[probation_end]
    windows = [w for w in series.windows if w[1] >= probation_time]
    alerts = [series.timestamps[i] for i in alert_idx if i >= probation_end]
    caught = sum(1 for lo, hi in windows if any(lo <= a <= hi for a in alerts))
    fps = sum(1 for a in alerts if not any(lo <= a <= hi for lo, hi in windows))
    return Score(caught=caught, windows=len(windows), false_positives=fps, alerts=len(alerts))


def alerts_from_flags(flags: np.ndarray, *, gap: int = 0) -> list[int]:
    return [lo for lo, _ in d.merge_runs(d.runs(flags), gap=gap)]


# --- detectors as used on NAB --------------------------------------------------------------------------


def _hours(step_seconds: float, hours: float) -> int:
    return max(2, int(round(hours * 3600 / step_seconds)))


def nab_params(step_seconds: float) -> d.CombinedParams:
    """The scan's defaults (in hours) converted to this file's sampling step, two-sided."""
    h = lambda hours: _hours(step_seconds, hours)  # noqa: E731
    return d.CombinedParams(
        spike=d.SpikeParams(window=h(168), min_history=h(24), direction="both"),
        iqr=d.IQRParams(window=h(168), min_history=h(24), direction="both"),
        pattern=d.PatternParams(
            season=h(168), slot_halfwidth=max(1, h(1) // 2), residual_window=h(336), min_residuals=h(24), direction="both"
        ),
    )


def nab_hourly(series: NabSeries) -> NabSeries:
    """Hourly means (empty hours NaN): the resolution the scan works at, for the detectors and the baseline alike."""
    hours = series.timestamps.astype("datetime64[h]")
    axis = np.arange(hours.min(), hours.max() + 1)
    idx = (hours - hours.min()).astype(np.int64)
    sums = np.bincount(idx, weights=series.values, minlength=len(axis))
    counts = np.bincount(idx, minlength=len(axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return NabSeries(name=series.name, timestamps=axis.astype("datetime64[s]"), values=values, windows=series.windows)


# A profile tuned ON NAB itself (in-sample, so optimistic): a stricter hour-of-week bar and one page a day per series.
NAB_TUNED_PATTERN_THRESHOLD = 8.0
NAB_TUNED_COOLDOWN_HOURS = 24


def alerts_with_cooldown(flags: np.ndarray, *, cooldown: int) -> list[int]:
    """Run starts, dropping any that come less than `cooldown` points after the previous alert."""
    alerts: list[int] = []
    for lo, _ in d.runs(flags):
        if not alerts or lo >= alerts[-1] + cooldown:
            alerts.append(lo)
    return alerts


def nab_detector_alerts(series: NabSeries) -> dict[str, list[int]]:
    params = nab_params(series.step_seconds)
    x = series.values
    result, parts = d.combined(x, params)
    probation = x[: max(2, int(len(x) * PROBATION))]
    probation = probation[~np.isnan(probation)]
    with np.errstate(invalid="ignore"):
        naive = np.abs(x - probation.mean()) > 3 * probation.std()
    s, q, p = (np.abs(np.nan_to_num(parts[k].score[0])) for k in ("spike", "iqr", "pattern"))
    tuned = (p > NAB_TUNED_PATTERN_THRESHOLD) & ((s > params.confirm_spike) | (q > params.confirm_iqr))
    cooldown = NAB_TUNED_COOLDOWN_HOURS
    return {
        "naive: abs(x − mean) > 3σ of probation": alerts_with_cooldown(naive, cooldown=0),
        "spike": alerts_with_cooldown(parts["spike"].flags[0], cooldown=0),
        "iqr": alerts_with_cooldown(parts["iqr"].flags[0], cooldown=0),
        "pattern": alerts_with_cooldown(parts["pattern"].flags[0], cooldown=0),
        "combined (scan defaults)": alerts_with_cooldown(result.flags[0], cooldown=0),
        f"naive, {cooldown} h cooldown": alerts_with_cooldown(naive, cooldown=cooldown),
        f"combined, NAB-tuned (pattern z > {NAB_TUNED_PATTERN_THRESHOLD:g}, {cooldown} h cooldown)": alerts_with_cooldown(
            tuned, cooldown=cooldown
        ),
    }


@dataclass
class NabReport:
    source: str
    files: int
    scores: dict[str, dict[str, Score]] = field(default_factory=dict)  # detector → corpus (and "all") → score
    per_file: dict[str, dict[str, Score]] = field(default_factory=dict)


def nab_evaluate(series_list: list[NabSeries], *, source: str, progress: Callable[[str], None] | None = None) -> NabReport:
    """Score every detector on each file at hourly resolution (the scan's), micro-averaged per corpus."""
    report = NabReport(source=source, files=len(series_list))
    for raw in series_list:
        if progress:
            progress(raw.name)
        series = nab_hourly(raw)
        report.per_file[series.name] = {}
        for detector, alerts in nab_detector_alerts(series).items():
            score = score_alerts(series, alerts)
            report.per_file[series.name][detector] = score
            by_corpus = report.scores.setdefault(detector, {})
            by_corpus.setdefault(series.corpus, Score()).add(score)
            by_corpus.setdefault("all", Score()).add(score)
    return report


def to_datetime(value: np.datetime64) -> dt.datetime:
    return dt.datetime.fromtimestamp(value.astype("datetime64[s]").astype(np.int64), tz=dt.UTC)


# --- the seeded workload ------------------------------------------------------------------------------


@dataclass
class SeedOutcome:
    kind: str
    scope: str
    start: dt.datetime
    end: dt.datetime
    caught: bool = False
    detected_by_scan_at: dt.datetime | None = None  # the first hourly scan that would have recorded it
    scan_hours: int | None = None  # scans after the incident's first hour, 1 = the very next scan
    severity: str = ""
    matched: list[str] = field(default_factory=list)


@dataclass
class SeedReport:
    start: dt.datetime
    end: dt.datetime
    rows: int
    outcomes: list[SeedOutcome]
    incidents_total: int
    false_positives: list  # Incident objects overlapping no seeded incident
    false_criticals: list
    max_scan_hours: int = 2

    @property
    def caught_in_time(self) -> int:
        return sum(1 for o in self.outcomes if o.caught and o.scan_hours is not None and o.scan_hours <= self.max_scan_hours)


def _detection_hour(incident, min_impact: float) -> int:
    """Index of the hour whose completion first puts the incident over the minimum impact."""
    cumulative = np.cumsum(incident.hour_impacts)
    over = np.flatnonzero(cumulative >= min_impact)
    return incident.start + (int(over[0]) if over.size else len(cumulative) - 1)


def seed_evaluate(*, max_scan_hours: int = 2) -> SeedReport:
    """Replay the hourly scan over the seeded month and match its incidents to `seed_incidents`.

    The detectors are causal and the scan reads complete hours only, so one pass over the month gives
    what each hourly scan would have found: an incident is recorded by the scan right after the hour in
    which its cumulative impact first reached ANOMALY_MIN_IMPACT_USD. A seeded incident is caught when
    an incident of its org, team or model overlaps it, and in time when that scan ran at most
    `max_scan_hours` hours after the seeded incident's first hour began.
    """
    from apps.anomalies.conf import knob
    from apps.anomalies.models import Severity
    from apps.anomalies.selectors import hourly_series, scope_labels
    from apps.anomalies.services import anomalies_detect
    from apps.ledger.models import LLMRequest, SeedIncident

    bounds = LLMRequest.objects.order_by().values_list("received_at", flat=True)
    first, last = bounds.order_by("received_at").first(), bounds.order_by("-received_at").first()
    if first is None:
        raise ValueError("the ledger is empty: run `manage.py seed_demo` first")
    start = first.replace(minute=0, second=0, microsecond=0)
    end = last.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    series = hourly_series(start=start, end=end)
    labels = scope_labels(org_ids={o for o in series.org_id if o}, team_ids={t for t in series.team_id if t})
    incidents = anomalies_detect(series=series, evaluate_from=0, labels=labels)
    min_impact = float(knob("ANOMALY_MIN_IMPACT_USD"))
    seeded = list(SeedIncident.objects.select_related("org", "team"))
    outcomes: list[SeedOutcome] = []
    matched_ids: set[int] = set()
    for s in seeded:
        outcome = SeedOutcome(
            kind=s.kind, scope=f"{s.org.slug} / {s.team.slug if s.team else '-'} / {s.model}", start=s.start, end=s.end
        )
        first_hour = s.start.replace(minute=0, second=0, microsecond=0)
        for k, inc in enumerate(incidents):
            same_scope = (
                (inc.scope_type == "org" and inc.org_id == s.org_id)
                or (inc.scope_type == "team" and inc.team_id == s.team_id)
                or (inc.scope_type == "model" and inc.model == s.model)
            )
            if not same_scope or inc.window_end <= s.start or inc.window_start >= s.end:
                continue
            matched_ids.add(k)
            scan_at = series.hour_at(_detection_hour(inc, min_impact) + 1)
            hours = int((scan_at - first_hour).total_seconds() // 3600)
            outcome.matched.append(f"{inc.scope_type}:{inc.scope_label}:{inc.detector}/{inc.metric}:{inc.severity}")
            if outcome.scan_hours is None or hours < outcome.scan_hours:
                outcome.scan_hours, outcome.detected_by_scan_at = hours, scan_at
            if _rank(inc.severity) > _rank(outcome.severity):
                outcome.severity = inc.severity
            outcome.caught = True
        outcomes.append(outcome)
    false_positives = [inc for k, inc in enumerate(incidents) if k not in matched_ids]
    return SeedReport(
        start=start,
        end=end,
        rows=LLMRequest.objects.count(),
        outcomes=outcomes,
        incidents_total=len(incidents),
        false_positives=false_positives,
        false_criticals=[inc for inc in false_positives if inc.severity == Severity.CRITICAL],
        max_scan_hours=max_scan_hours,
    )


def _rank(severity: str) -> int:
    return {"": 0, "info": 1, "warning": 2, "critical": 3}[severity]
