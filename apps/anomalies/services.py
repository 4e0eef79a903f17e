"""Anomaly writes: triage, and the hourly scan (alerts go out through apps.alerts)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
from django.db import connection, transaction

from apps.alerts.models import SEVERITY_RANK, Severity
from apps.alerts.services import alert_dispatch
from apps.anomalies import detectors as d
from apps.anomalies.models import Anomaly
from apps.anomalies.selectors import SCOPE_ORG, SCOPE_TEAM, HourlySeries, hourly_series, scope_labels
from apps.ledger.money import quantize_usd
from finops import clock
from finops.conf import conf

logger = logging.getLogger(__name__)

# --- triage -------------------------------------------------------------------------------------------


def anomalies_acknowledge(*, anomaly_ids: list[int]) -> int:
    return Anomaly.objects.filter(id__in=anomaly_ids, status=Anomaly.Status.OPEN).update(
        status=Anomaly.Status.ACKNOWLEDGED, acknowledged_at=clock.now(), updated_at=clock.now()
    )


def anomalies_resolve(*, anomaly_ids: list[int], note: str = "", now: dt.datetime | None = None) -> int:
    now = now or clock.now()
    fields: dict[str, Any] = {"status": Anomaly.Status.RESOLVED, "resolved_at": now, "updated_at": now}
    if note:
        fields["triage_note"] = note
    return Anomaly.objects.filter(id__in=anomaly_ids).exclude(status=Anomaly.Status.RESOLVED).update(**fields)


def anomalies_set_feedback(*, anomaly_ids: list[int], feedback: str) -> int:
    if feedback not in Anomaly.Feedback.values:
        raise ValueError(f"unknown feedback {feedback!r}")
    return Anomaly.objects.filter(id__in=anomaly_ids).update(feedback=feedback, updated_at=clock.now())


# --- detection and the scan ---------------------------------------------------------------------------

SCAN_LOCK_ID = 0x46494E0A  # pg advisory lock key: one scan writes at a time, a second one waits and then updates
MERGE_GAP_HOURS = 2  # runs this close together are one incident (a quiet hour inside a loop does not split it)
MAX_IMPACT_PCT = 10_000.0  # a series that was ~0 has an infinite relative impact; cap it for display and sorting


@dataclass
class Incident:
    """A candidate anomaly from one scan, before it is written."""

    detector: str
    metric: str
    scope_type: str
    org_id: int | None
    team_id: int | None
    model: str
    scope_label: str
    series_key: str
    start: int  # hour index in the series, inclusive
    end: int  # exclusive
    window_start: dt.datetime
    window_end: dt.datetime
    expected: float
    actual: float
    impact_usd: Decimal
    impact_pct: float
    score: float
    severity: str
    hour_impacts: list[float] = field(default_factory=list)  # one per hour of [start, end); 0 between its runs
    details: dict = field(default_factory=dict)
    spans: list[tuple[int, int]] = field(default_factory=list)  # its anomalous runs, [start, end) each


@dataclass
class ScanResult:
    hours: int = 0
    scopes: int = 0
    incidents: int = 0
    created: int = 0
    updated: int = 0
    notified: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.scopes} scopes × {self.hours} h: {self.incidents} incidents "
            f"({self.created} new, {self.updated} updated), {self.notified} notified in {self.seconds:.2f}s"
        )


def severity_for(*, impact_usd: Decimal, impact_pct: float) -> str:
    """Critical or warning only when BOTH the dollar and the percentage bar are reached; else info."""
    if impact_usd >= conf().anomaly_critical_usd and impact_pct >= conf().anomaly_critical_pct:
        return Severity.CRITICAL
    if impact_usd >= conf().anomaly_warning_usd and impact_pct >= conf().anomaly_warning_pct:
        return Severity.WARNING
    return Severity.INFO


def _usd(value: float) -> Decimal:
    # Detection statistics are floats; the stored impact is an estimate, rounded once to cents-and-below here.
    return quantize_usd(Decimal(repr(round(float(value), 10))))


def anomalies_detect(
    *, series: HourlySeries, evaluate_from: int = 0, labels: tuple[dict[int, str], dict[int, str]] | None = None
) -> list[Incident]:
    """Run the combined detector on cost, requests and tokens per request of every scope, and the
    model-mix detector on each org's premium share; merge flagged hours into runs; drop runs under the
    minimum dollar impact; fold runs that come within the re-alert cooldown of the scope's previous
    incident into it. Pure: no writes, so the evaluation replays it over history."""
    if not len(series):
        return []
    org_labels, team_labels = labels or ({}, {})
    min_impact = conf().anomaly_min_impact_usd
    # Hours before a scope's first request are not history (the tenant or model did not exist yet):
    # as zeros they would make the hour-of-week baseline of a three-week-old tenant mostly zero.
    active = np.maximum.accumulate(series.requests > 0, axis=1)
    metrics = {
        name: np.where(active, values, np.nan)
        for name, values in (
            ("cost", series.cost),
            ("requests", series.requests),
            ("tokens_per_request", series.tokens_per_request),
        )
    }
    detections = {name: d.combined(values, start=evaluate_from) for name, values in metrics.items()}
    cost_det = detections["cost"][0]
    expected_cost = np.where(np.isnan(cost_det.expected), series.cost, cost_det.expected)
    any_flag = np.zeros(series.cost.shape, dtype=bool)
    for det, _ in detections.values():
        any_flag |= det.flags
    cooldown = conf().anomaly_realert_cooldown_hours
    incidents: list[Incident] = []
    for i in range(len(series)):
        scope = _scope(series, i, org_labels, team_labels)
        excess = series.cost[i] - expected_cost[i]
        for group in _incident_groups(any_flag[i], excess, min_impact=min_impact, cooldown=cooldown):
            lo, hi, member = _group_extent(group)
            # Impact, expected and actual count the incident's anomalous runs, not the quiet hours between them.
            hour_impacts = np.where(member, series.cost[i, lo:hi] - expected_cost[i, lo:hi], 0.0)
            impact = float(hour_impacts.sum())
            expected = float(np.where(member, expected_cost[i, lo:hi], 0.0).sum())
            actual = float(np.where(member, series.cost[i, lo:hi], 0.0).sum())
            counts = {name: int(det.flags[i, lo:hi][member].sum()) for name, (det, _) in detections.items()}
            metric = max(counts, key=lambda name: (counts[name], name == "cost"))
            fired = sorted(
                {part for name, (_, parts) in detections.items() for part, p in parts.items() if p.flags[i, lo:hi][member].any()}
            )
            incidents.append(
                _incident(
                    "combined", metric, scope, series, i, lo, hi, expected, actual, impact, hour_impacts,
                    score=float(np.nanmax(detections[metric][0].score[i, lo:hi][member])) if counts[metric] else 0.0,
                    details={"flagged_hours": counts, "detectors": fired, "runs": len(group),
                             **_metric_details(series, detections, i, lo, hi, member)},
                    spans=group,
                )
            )  # fmt: skip
    share = series.premium_share
    org_rows = [i for i, kind in enumerate(series.scope_type) if kind == SCOPE_ORG]
    if org_rows:
        mix_det = d.mix(share[org_rows], start=evaluate_from)
        for row, i in enumerate(org_rows):
            scope = _scope(series, i, org_labels, team_labels)
            excess = (np.nan_to_num(share[i]) - np.nan_to_num(mix_det.expected[row])) * series.cost[i]
            for group in _incident_groups(mix_det.flags[row], excess, min_impact=min_impact, cooldown=cooldown):
                lo, hi, member = _group_extent(group)
                base_share = np.nan_to_num(mix_det.expected[row, lo:hi])
                hour_impacts = np.where(member, (np.nan_to_num(share[i, lo:hi]) - base_share) * series.cost[i, lo:hi], 0.0)
                cost = np.where(member, series.cost[i, lo:hi], 0.0)
                incidents.append(
                    _incident(
                        "mix", "premium_share", scope, series, i, lo, hi, float(np.mean(base_share[member])),
                        float(np.nanmean(share[i, lo:hi][member])), float(hour_impacts.sum()), hour_impacts,
                        score=float(np.nanmax(mix_det.score[row, lo:hi][member])),
                        details={"premium_cost_usd": round(float(np.where(member, series.premium_cost[i, lo:hi], 0.0).sum()), 6),
                                 "cost_usd": round(float(cost.sum()), 6), "runs": len(group)},
                        expected_cost=float((cost - hour_impacts).sum()),
                        spans=group,
                    )
                )  # fmt: skip
    return [incident for incident in incidents if incident.impact_usd >= min_impact]


def _incident_groups(flags: np.ndarray, excess: np.ndarray, *, min_impact: Decimal, cooldown: int) -> list[list[tuple[int, int]]]:
    """Runs of flagged hours (merged across MERGE_GAP_HOURS) whose excess cost reaches the minimum impact,
    grouped by the re-alert cooldown. Runs are filtered before grouping, so the cooldown only folds runs
    that would each have been an incident; it never makes one out of several tiny ones."""
    runs = [(lo, hi) for lo, hi in d.merge_runs(d.runs(flags), gap=MERGE_GAP_HOURS) if _usd(excess[lo:hi].sum()) >= min_impact]
    return d.group_runs(runs, cooldown=cooldown)


def _group_extent(group: list[tuple[int, int]]) -> tuple[int, int, np.ndarray]:
    """[lo, hi) of an incident made of several runs, and the mask of its anomalous runs' hours within it."""
    lo, hi = group[0][0], group[-1][1]
    member = np.zeros(hi - lo, dtype=bool)
    for a, b in group:
        member[a - lo : b - lo] = True
    return lo, hi, member


def _scope(series: HourlySeries, i: int, org_labels: dict[int, str], team_labels: dict[int, str]) -> dict:
    kind = series.scope_type[i]
    ident: int | str | None
    if kind == SCOPE_ORG:
        ident = series.org_id[i]
        label = f"org {ident}" if ident is None else org_labels.get(ident, f"org {ident}")
    elif kind == SCOPE_TEAM:
        ident = series.team_id[i]
        label = f"team {ident}" if ident is None else team_labels.get(ident, f"team {ident}")
    else:
        ident = series.model[i]
        label = ident
    return {
        "scope_type": kind,
        "org_id": series.org_id[i],
        "team_id": series.team_id[i],
        "model": series.model[i],
        "label": label,
        "key": f"{kind}:{ident}",
    }


def _metric_details(series: HourlySeries, detections: dict, i: int, lo: int, hi: int, member: np.ndarray) -> dict:
    out = {}
    for name, values in (("requests", series.requests), ("tokens_per_request", series.tokens_per_request)):
        expected, actual = detections[name][0].expected[i, lo:hi][member], values[i, lo:hi][member]
        out[name] = {
            "expected": round(float(np.nanmean(expected)), 3) if not np.all(np.isnan(expected)) else None,
            "actual": round(float(np.nanmean(actual)), 3) if not np.all(np.isnan(actual)) else None,
        }
    return out


def _incident(
    detector: str,
    metric: str,
    scope: dict,
    series: HourlySeries,
    i: int,
    lo: int,
    hi: int,
    expected: float,
    actual: float,
    impact: float,
    hour_impacts: np.ndarray,
    *,
    score: float,
    details: dict,
    expected_cost: float | None = None,
    spans: list[tuple[int, int]] | None = None,
) -> Incident:
    base = expected if expected_cost is None else expected_cost
    impact_pct = min(MAX_IMPACT_PCT, impact / base * 100) if base > 1e-9 else (MAX_IMPACT_PCT if impact > 0 else 0.0)
    impact_usd = _usd(impact)
    return Incident(
        detector=detector,
        metric=metric,
        scope_type=scope["scope_type"],
        org_id=scope["org_id"],
        team_id=scope["team_id"],
        model=scope["model"],
        scope_label=scope["label"],
        series_key=f"{scope['key']}:{detector}",
        start=lo,
        end=hi,
        window_start=series.hour_at(lo),
        window_end=series.hour_at(hi),
        expected=expected,
        actual=actual,
        impact_usd=impact_usd,
        impact_pct=float(impact_pct),
        score=score if np.isfinite(score) else 0.0,
        severity=severity_for(impact_usd=impact_usd, impact_pct=float(impact_pct)),
        hour_impacts=[float(v) for v in hour_impacts],
        details=details,
        spans=list(spans or [(lo, hi)]),
    )


def anomaly_scan(*, now: dt.datetime | None = None) -> ScanResult:
    """Read the look-back window in one query, detect, and upsert the incidents that touch the last
    `ANOMALY_SCAN_HORIZON_HOURS` complete hours; notify each new incident and each escalation once.

    Safe to run twice, even at once: writers serialise on an advisory lock, incidents are found again
    by series and overlapping window (or by their unique dedupe key), and notifications are claimed
    with a conditional UPDATE on `notified_severity`.
    """
    started = time.monotonic()
    now = now or clock.now()
    end = now.replace(minute=0, second=0, microsecond=0)
    lookback = conf().anomaly_lookback_hours
    horizon = conf().anomaly_scan_horizon_hours
    series = hourly_series(start=end - dt.timedelta(hours=lookback), end=end)
    result = ScanResult(hours=series.hours, scopes=len(series))
    labels = scope_labels(
        org_ids={o for o in series.org_id if o is not None}, team_ids={t for t in series.team_id if t is not None}
    )
    # Detect a little before the horizon too, so a run that started earlier is seen whole.
    evaluate_from = max(0, series.hours - horizon - 48)
    incidents = [
        incident for incident in anomalies_detect(series=series, evaluate_from=evaluate_from, labels=labels)
        if incident.end > series.hours - horizon
    ]  # fmt: skip
    result.incidents = len(incidents)
    to_notify: list[int] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SCAN_LOCK_ID])
        for incident in incidents:
            anomaly, created = anomaly_upsert(incident=incident)
            result.created += int(created)
            result.updated += int(not created)
            to_notify.append(anomaly.id)
        for anomaly_id in to_notify:
            result.notified += int(anomaly_notify(anomaly_id=anomaly_id))
    result.seconds = time.monotonic() - started
    return result


@dataclass
class BackfillResult:
    hours: int = 0
    scopes: int = 0
    created: int = 0
    updated: int = 0
    by_severity: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        severities = ", ".join(f"{n} {s}" for s, n in sorted(self.by_severity.items(), key=lambda kv: -SEVERITY_RANK[Severity(kv[0])]))
        return f"{self.scopes} scopes × {self.hours} h: {self.created} new, {self.updated} updated incidents ({severities or 'none'})"


def anomalies_backfill(*, start: dt.datetime, end: dt.datetime) -> BackfillResult:
    """Record every incident of the complete hours in [start, end) — what the hourly scans would have written had
    they run all along (the detectors are causal) — without notifying: history does not page. Open incidents still
    show in the `finops_anomalies_open` gauge, so Prometheus and Alertmanager see them. Safe to run twice."""
    start = start.replace(minute=0, second=0, microsecond=0)
    end = end.replace(minute=0, second=0, microsecond=0)
    series = hourly_series(start=start, end=end)
    result = BackfillResult(hours=series.hours, scopes=len(series))
    labels = scope_labels(
        org_ids={o for o in series.org_id if o is not None}, team_ids={t for t in series.team_id if t is not None}
    )
    incidents = anomalies_detect(series=series, evaluate_from=0, labels=labels)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SCAN_LOCK_ID])
        for incident in incidents:
            anomaly, created = anomaly_upsert(incident=incident)
            if not anomaly.notified_severity:
                Anomaly.objects.filter(id=anomaly.id).update(notified_severity=anomaly.severity)
            result.created += int(created)
            result.updated += int(not created)
            result.by_severity[anomaly.severity] = result.by_severity.get(anomaly.severity, 0) + 1
    return result


def anomalies_seed_triage(*, before: dt.datetime, now: dt.datetime | None = None) -> int:
    """The demo's triage: resolve the open incidents that ended before `before`, each with a note. One that overlaps
    an incident `seed_demo` injected (same org, team or model) is a true positive whose note names the cause; the
    others are closed as noise (false positive). Returns how many were resolved."""
    from apps.ledger.selectors import seed_incidents_overlapping

    now = now or clock.now()
    resolved = 0
    for anomaly in Anomaly.objects.filter(status=Anomaly.Status.OPEN, window_end__lt=before).order_by("window_start"):
        causes = [
            s for s in seed_incidents_overlapping(start=anomaly.window_start, end=anomaly.window_end)
            if (anomaly.scope_type == "org" and s.org_id == anomaly.org_id)
            or (anomaly.scope_type == "team" and s.team_id == anomaly.team_id)
            or (anomaly.scope_type == "model" and s.model == anomaly.model)
        ]  # fmt: skip
        if causes:
            cause = causes[0]
            note = (
                f"Cause: {cause.kind.replace('_', ' ')} ({cause.org.slug}{' / ' + cause.team.slug if cause.team else ''}, "
                f"{cause.model}, {cause.start:%Y-%m-%d %H:%M}–{cause.end:%H:%M} UTC). {cause.description} "
                "Confirmed with the runbook's queries and fixed at the source; resolved in the demo seed's triage."
            )
            feedback = Anomaly.Feedback.TRUE_POSITIVE
        else:
            note = "No cause found: a short excursion of normal traffic. Closed as noise in the demo seed's triage."
            feedback = Anomaly.Feedback.FALSE_POSITIVE
        resolved += anomalies_resolve(anomaly_ids=[anomaly.id], note=note, now=now)
        anomalies_set_feedback(anomaly_ids=[anomaly.id], feedback=feedback)
    return resolved


def anomaly_dedupe_key(*, series_key: str, window_start: dt.datetime) -> str:
    return hashlib.sha256(f"{series_key}|{window_start.isoformat()}".encode()).hexdigest()


def anomaly_upsert(*, incident: Incident) -> tuple[Anomaly, bool]:
    """Write an incident: extend the incident of the same series that it overlaps, or that ended at most
    ANOMALY_REALERT_COOLDOWN_HOURS (at least MERGE_GAP_HOURS) before it began, else create it under its
    dedupe key. `anomalies_detect` already folds runs within the cooldown into one incident; this finds
    the row when a scan sees only the later runs. A resolved incident that is extended reopens, so the
    open-anomalies gauge (and the Prometheus alert on it) fires again."""
    gap = dt.timedelta(hours=MERGE_GAP_HOURS)
    cooldown = dt.timedelta(hours=max(MERGE_GAP_HOURS, conf().anomaly_realert_cooldown_hours))
    existing = (
        Anomaly.objects.select_for_update()
        .filter(
            series_key=incident.series_key,
            window_start__lte=incident.window_end + gap,
            window_end__gte=incident.window_start - cooldown,
        )
        .order_by("window_start")
        .first()
    )
    fields: dict[str, Any] = {
        "detector": incident.detector,
        "metric": incident.metric,
        "scope_type": incident.scope_type,
        "org_id": incident.org_id,
        "team_id": incident.team_id,
        "model": incident.model,
        "scope_label": incident.scope_label[:300],
        "series_key": incident.series_key,
        "window_start": incident.window_start,
        "window_end": incident.window_end,
        "expected": incident.expected,
        "actual": incident.actual,
        "impact_usd": incident.impact_usd,
        "impact_pct": incident.impact_pct,
        "score": incident.score,
        "severity": incident.severity,
        "details": incident.details,
    }
    if existing is None:
        key = anomaly_dedupe_key(series_key=incident.series_key, window_start=incident.window_start)
        return Anomaly.objects.update_or_create(dedupe_key=key, defaults=fields)
    grew = incident.window_end > existing.window_end
    if incident.window_start > existing.window_start:
        # A continuation seen without its beginning: keep what the earlier scans measured where larger.
        fields["window_start"] = existing.window_start
        fields["impact_usd"] = max(existing.impact_usd, incident.impact_usd)
        fields["impact_pct"] = max(existing.impact_pct, incident.impact_pct)
        fields["expected"], fields["actual"] = max(existing.expected, incident.expected), max(existing.actual, incident.actual)
        fields["score"] = max(existing.score, incident.score)
    fields["window_end"] = max(existing.window_end, incident.window_end)
    if SEVERITY_RANK[Severity(existing.severity)] > SEVERITY_RANK[Severity(fields["severity"])]:
        fields["severity"] = existing.severity  # never downgrade an incident that already paged
    if existing.status == Anomaly.Status.RESOLVED and grew:
        fields["status"] = Anomaly.Status.OPEN  # it came back after being closed
        fields["resolved_at"] = None
    for name, value in fields.items():
        setattr(existing, name, value)
    existing.save()
    return existing, False


def anomaly_notify(*, anomaly_id: int) -> bool:
    """Dispatch an alert if this severity has not been notified yet for the incident (claimed atomically)."""
    anomaly = Anomaly.objects.select_related("org").get(id=anomaly_id)
    if anomaly.status == Anomaly.Status.RESOLVED or anomaly.feedback in (
        Anomaly.Feedback.PLANNED,
        Anomaly.Feedback.FALSE_POSITIVE,
    ):
        return False
    rank = SEVERITY_RANK[Severity(anomaly.severity)]
    lower = [""] + [s for s, r in SEVERITY_RANK.items() if r < rank]
    if not Anomaly.objects.filter(id=anomaly.id, notified_severity__in=lower).update(notified_severity=anomaly.severity):
        return False
    alert_dispatch(
        severity=anomaly.severity,
        scope_type=anomaly.scope_type,
        org_id=anomaly.org_id,
        title=anomaly_title(anomaly),
        text=anomaly_text(anomaly),
        payload={
            "anomaly_id": anomaly.id,
            "detector": anomaly.detector,
            "metric": anomaly.metric,
            "scope": anomaly.scope_label,
            "window_start": anomaly.window_start.isoformat(),
            "window_end": anomaly.window_end.isoformat(),
            "expected": round(anomaly.expected, 4),
            "actual": round(anomaly.actual, 4),
            "impact_usd": str(quantize_usd(Decimal(anomaly.impact_usd), places=2)),
            "impact_pct": round(anomaly.impact_pct, 1),
            "url": f"{conf().alert_admin_base_url.rstrip('/')}/admin/anomalies/anomaly/{anomaly.id}/change/",
        },
    )
    return True


def anomaly_title(anomaly: Anomaly) -> str:
    what = {
        "cost": "spend",
        "requests": "requests",
        "tokens_per_request": "tokens per request",
        "premium_share": "premium-model share",
    }
    return (
        f"{anomaly.severity.upper()}: {anomaly.scope_type} {anomaly.scope_label} {what.get(anomaly.metric, anomaly.metric)} "
        f"anomaly, +${quantize_usd(Decimal(anomaly.impact_usd), places=2)} ({anomaly.impact_pct:+.0f}%)"
    )


def anomaly_text(anomaly: Anomaly) -> str:
    hours = int((anomaly.window_end - anomaly.window_start).total_seconds() // 3600)
    if anomaly.metric == "premium_share":
        measure = f"premium models took {anomaly.actual:.0%} of spend against {anomaly.expected:.0%} usually"
    else:
        measure = f"spend was ${anomaly.actual:,.2f} against ${anomaly.expected:,.2f} expected"
    return (
        f"{anomaly.scope_type.capitalize()} {anomaly.scope_label}: {measure} over {hours} h "
        f"({anomaly.window_start:%Y-%m-%d %H:%M}–{anomaly.window_end:%H:%M} UTC). "
        f"Estimated excess ${quantize_usd(Decimal(anomaly.impact_usd), places=2)} ({anomaly.impact_pct:+.0f}%), "
        f"detector {anomaly.detector} on {anomaly.metric}, score {anomaly.score:.1f}."
    )
