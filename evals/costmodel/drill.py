"""The cost-incident drill (`make drill`): inject a runaway agent loop into the seeded ledger, run the hourly
anomaly scan, and walk the runbook's diagnosis queries, printing what the on-call would see.

Everything happens in one transaction that is rolled back at the end, so the drill leaves nothing behind and
sends nothing: alert deliveries are queued only on commit. With `keep=True` it commits instead — the rows,
the anomalies and their notifications become real, marked so that the next drill removes them first
(`drill_cleanup`): injected rows carry `prompt_hash = MARKER`, anomalies `details.drill = true`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from apps.ledger.money import ZERO, quantize_usd
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force
from finops import clock

MARKER = "drill:runaway_loop"
RUNBOOK_SQL = Path(settings.BASE_DIR) / "docs" / "runbook" / "sql"
DIAGNOSIS = (
    "01_spend_by_org_last_hours.sql",
    "02_top_keys_last_hours.sql",
    "03_model_mix_last_hours.sql",
    "05_budget_status.sql",
)
# An agent that re-sends its whole, growing conversation: prompts ramp up and restart every 50 calls.
CONVERSATION_TURNS = 50
PROMPT_START, PROMPT_STEP, COMPLETION_TOKENS = 20_000, 2_000, 600

Write = Callable[[str], None]


class DrillError(RuntimeError):
    pass


@dataclass
class Injected:
    org_slug: str
    team_slug: str
    member: str
    key_prefix: str
    model: str
    start: dt.datetime
    end: dt.datetime
    rows: int
    cost: Decimal


def drill_cleanup() -> tuple[int, int]:
    """Remove what a kept drill left: its ledger rows (and the summaries built on them) and its anomalies."""
    from apps.anomalies.models import Anomaly
    from apps.ledger.models import LLMRequest
    from apps.ledger.services import cost_rollup
    from apps.reports.services import route_rollup

    days = sorted({d.date() for d in LLMRequest.objects.filter(prompt_hash=MARKER).values_list("received_at", flat=True)})
    rows, _ = LLMRequest.objects.filter(prompt_hash=MARKER).delete()
    anomalies, _ = Anomaly.objects.filter(details__drill=True).delete()
    if days:
        cost_rollup(since=days[0], until=days[-1])
        route_rollup(since=days[0], until=days[-1])
    return rows, anomalies


def drill_inject(*, org_slug: str, model: str, hours: int, per_hour: int, now: dt.datetime) -> Injected:
    """A runaway loop on one key over the last `hours` complete hours before `now`."""
    from apps.ledger.models import LLMRequest
    from apps.tenancy.models import ApiKey, Organization

    org = Organization.objects.filter(slug=org_slug).first()
    if org is None:
        raise DrillError(f"organization '{org_slug}' does not exist: run `make seed` first")
    key = ApiKey.objects.filter(org=org, revoked_at__isnull=True).select_related("member", "team").order_by("id").first()
    if key is None:
        raise DrillError(f"organization '{org_slug}' has no active API key: run `make seed` first")
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(hours=hours)
    price = price_in_force(model=model, on=start.date())
    n = hours * per_hour
    span_us = int((end - start).total_seconds() * 1_000_000)
    rows, total = [], ZERO
    for i in range(n):
        prompt = PROMPT_START + (i % CONVERSATION_TURNS) * PROMPT_STEP
        cost = cost_compute(price=price, prompt_tokens=prompt, completion_tokens=COMPLETION_TOKENS)
        total += cost
        rows.append(
            LLMRequest(
                request_id=uuid.uuid4(), endpoint="chat_completions",
                received_at=start + dt.timedelta(microseconds=(i * span_us) // n),
                org=org, team=key.team, member=key.member, api_key=key, api_key_prefix=key.prefix,
                status="served", http_status=200, requested_model=model, model=model, provider=price.provider,
                tier="premium", price_id=price.id, prompt_tokens=prompt, completion_tokens=COMPLETION_TOKENS,
                cost_usd=cost, cache_status="miss", route_strategy="pinned",
                route_reason="drill: injected runaway agent loop (manage.py drill)", attempts=1, budget_state="ok",
                reserved_usd=cost, upstream_ms=3000.0, overhead_ms=1.0, prompt_hash=MARKER,
            )
        )  # fmt: skip
    LLMRequest.objects.bulk_create(rows, batch_size=1000)
    return Injected(
        org_slug=org.slug, team_slug=key.team.slug, member=key.member.username, key_prefix=key.prefix, model=model,
        start=start, end=end, rows=n, cost=total,
    )  # fmt: skip


def table(columns: Sequence[str], rows: Sequence[Sequence], *, limit: int = 8) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows[:limit]]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    if not rows:
        lines.append("  (no rows)")
    return "\n".join(lines)


def run_sql_file(name: str) -> tuple[str, list[str], list[tuple]]:
    path = RUNBOOK_SQL / name
    text = path.read_text()
    title = " ".join(line[3:].strip() for line in text.splitlines() if line.startswith("-- "))
    with connection.cursor() as cur:
        cur.execute(text)  # no parameters: psycopg sends it as is, % included
        return title, [c.name for c in cur.description], cur.fetchall()


def _rule_view(write: Write) -> list[str]:
    """What Prometheus would scrape now, and which of deploy/prometheus/rules/finops.yml's anomaly alerts that fires."""
    from apps.anomalies.collectors import anomalies_open

    open_by_severity: dict[str, float] = {}
    for family in anomalies_open():
        for sample in family.samples:
            open_by_severity[sample.labels["severity"]] = open_by_severity.get(sample.labels["severity"], 0) + sample.value
    write("  finops_anomalies_open: " + ", ".join(f"{s}={int(v)}" for s, v in sorted(open_by_severity.items())))
    firing = []
    if open_by_severity.get("critical", 0) > 0:
        firing.append("FinopsAnomalyCritical")
    if open_by_severity.get("warning", 0) > 0:
        firing.append("FinopsAnomalyWarning (after 15 minutes)")
    return firing


def anomaly_alerts(*, anomalies: Sequence, now: dt.datetime, drill: bool = False, minutes: int = 10) -> list[dict]:
    """Alertmanager v2 alerts for the warning and critical incidents, named and labelled as the FinopsAnomaly* rules
    of deploy/prometheus/rules/finops.yml would fire them (plus org and scope), ending `minutes` after `now`."""
    from apps.anomalies.services import anomaly_title

    return [
        {
            "labels": {
                "alertname": "FinopsAnomalyCritical" if a.severity == "critical" else "FinopsAnomalyWarning",
                "severity": a.severity, "org": a.org.slug if a.org_id else "", "scope": a.scope_label, "metric": a.metric,
                **({"drill": "true"} if drill else {}),
            },
            "annotations": {
                "summary": f"{'[drill] ' if drill else ''}{anomaly_title(a)}",
                "runbook_url": f"./docs/runbook/FinopsAnomaly{a.severity.capitalize()}.md",
            },
            "startsAt": now.isoformat(), "endsAt": (now + dt.timedelta(minutes=minutes)).isoformat(),
        }
        for a in anomalies
        if a.severity in ("critical", "warning")
    ]  # fmt: skip


def drill_page(
    *, write: Write, anomalies: Sequence, alertmanager_url: str, receiver_url: str, wait_s: float = 30.0
) -> list[dict]:
    """Page through the running Alertmanager (`make run`): post the drill's critical and warning incidents as the
    FinopsAnomaly* alerts Prometheus would send (plus `drill="true"`), then show what the receiver got.

    The drill's rows are rolled back before Prometheus could scrape them, so the drill posts the alerts itself,
    with the rule's name and severity: Alertmanager's routes and the receivers are what is exercised. Returns the
    notifications the receiver showed for them (empty when none arrived within `wait_s`).
    """
    import json
    import time
    import urllib.request

    from finops.monitoring import alertmanager_post

    # Alertmanager judges startsAt/endsAt against its own clock: the page is sent now, whatever day the data is.
    sent_at = clock.wall_now()
    alerts = anomaly_alerts(anomalies=anomalies, now=sent_at, drill=True)
    if not alerts:
        write("  nothing of warning or critical severity to page")
        return []
    from finops.monitoring import alertmanager_alerts

    earlier = [a for a in alertmanager_alerts(url=alertmanager_url) if a["labels"].get("drill") == "true"]
    alertmanager_post(url=alertmanager_url, alerts=alerts)
    write(f"  posted {len(alerts)} alert(s) to Alertmanager {alertmanager_url}/api/v2/alerts (drill=\"true\", ends in 10 min)")
    if earlier:
        # Same alertname and org: the same notification group as the previous drill's, which has paged already.
        write(
            "  a previous drill's alerts are still active: Alertmanager groups these with them and re-notifies only after"
            f" group_interval (5 min) — the page is on the receiver's page already: {receiver_url or alertmanager_url}/"
        )
        return []
    if not receiver_url:
        return []
    write(f"  waiting up to {wait_s:.0f} s for Alertmanager's group_wait and the receiver ({receiver_url}/) …")
    deadline = time.monotonic() + wait_s
    received: list[dict] = []
    settle_until = None  # once the first page is in, a moment for the other receivers' notifications
    while time.monotonic() < min(deadline, settle_until or deadline):
        time.sleep(1)
        try:
            with urllib.request.urlopen(f"{receiver_url}/alerts.json", timeout=2) as response:  # noqa: S310 (our loopback receiver)
                items = json.loads(response.read())
        except OSError:
            continue
        received = [i for i in items if i["labels"].get("drill") == "true" and i["starts_at"][:19] >= sent_at.isoformat()[:19]]
        if received and settle_until is None:
            settle_until = time.monotonic() + 3
    for item in sorted(received, key=lambda i: (i["severity"], i["receiver"])):
        tag = "PAGED" if item["severity"] == "critical" else "notified"
        write(f"  {tag}: {item['receiver']} ← {item['alertname']} {item['severity']} ({item['summary'][:90]})")
    if received:
        write(
            "  (deploy/alertmanager routes cost pages to finance-channel too, after that route's longer group_wait;"
            f" everything received is on the receiver's page, by severity: {receiver_url}/)"
        )
    else:
        write("  the receiver showed nothing yet: see Alertmanager's UI and .finops/logs/alertmanager.log")
    return received


def drill_run(
    *, write: Write, keep: bool = False, org_slug: str = "globex-bank", model: str = "gpt-4o", hours: int = 3,
    per_hour: int = 250, now: dt.datetime | None = None, alertmanager_url: str = "", receiver_url: str = "",
) -> Injected:  # fmt: skip
    from apps.anomalies.models import Anomaly
    from apps.anomalies.services import anomaly_scan
    from apps.ledger.services import cost_rollup_hourly

    now = now or clock.now()
    with transaction.atomic():  # committed on its own: a rolled-back drill must not bring a kept one back
        removed_rows, removed_anomalies = drill_cleanup()
    if removed_rows or removed_anomalies:
        write(f"Removed a previous kept drill: {removed_rows} ledger rows, {removed_anomalies} anomalies.")
    with transaction.atomic():
        inj = drill_inject(org_slug=org_slug, model=model, hours=hours, per_hour=per_hour, now=now)
        write(
            f"\n== 1. Incident injected: a runaway agent loop\n"
            f"  key {inj.key_prefix} ({inj.org_slug} / {inj.team_slug} / {inj.member}) sent {inj.rows} requests to {inj.model} "
            f"between {inj.start:%H:%M} and {inj.end:%H:%M} UTC, prompts growing from {PROMPT_START:,} to "
            f"{PROMPT_START + (CONVERSATION_TURNS - 1) * PROMPT_STEP:,} tokens: ${quantize_usd(inj.cost, places=2)} at list price."
        )

        write("\n== 2. The hourly jobs run (ledger rollup at minute 5, anomaly scan at minute 12)")
        rolled = cost_rollup_hourly()
        scan = anomaly_scan(now=now)
        write(f"  cost_rollup_hourly: {rolled} summary rows written")
        write(
            f"  anomaly_scan: {scan.scopes} scopes × {scan.hours} h in {scan.seconds:.2f} s → {scan.incidents} incident(s) in the "
            f"horizon, {scan.created} new, {scan.updated} updated, {scan.notified} notification(s) "
            + ("dispatched to the alert routes" if keep else "queued for commit (rolled back: nothing is sent)")
        )
        found = list(
            Anomaly.objects.filter(window_end__gt=inj.start, window_start__lt=inj.end)
            .filter(Q(org__slug=inj.org_slug) | Q(model=inj.model))
            .order_by("-impact_usd")
        )
        for a in found:
            a.details = {**(a.details or {}), "drill": True}
            a.save(update_fields=["details"])
        write("\n== 3. What pages: the anomalies (admin → Anomalies, /admin/anomalies/anomaly/?status__exact=open)")
        write(
            table(
                ["severity", "scope", "detector/metric", "window (UTC)", "expected", "actual", "impact"],
                [
                    (
                        a.severity,
                        a.scope_label,
                        f"{a.detector}/{a.metric}",
                        f"{a.window_start:%H:%M}–{a.window_end:%H:%M}",
                        f"{a.expected:.2f}",
                        f"{a.actual:.2f}",
                        f"${quantize_usd(Decimal(a.impact_usd), places=2)} ({a.impact_pct:.0f} %)",
                    )
                    for a in found
                ],
            )  # fmt: skip
        )
        if not found:
            write("  NOTHING was detected: the drill failed — check the scan's thresholds (FINOPS_ANOMALY_*) and the seed.")
        firing = _rule_view(write)
        pages = ", ".join(firing) or "nothing"
        write(f"  Prometheus rules that fire: {pages} → runbook docs/runbook/FinopsAnomalyCritical.md")
        if alertmanager_url:
            write("\n== 3b. The page: Alertmanager routes it by severity to the receivers")
            drill_page(write=write, anomalies=found, alertmanager_url=alertmanager_url, receiver_url=receiver_url)
        else:
            write("  (Alertmanager is not running: under `make run` the drill also pages through it)")

        write("\n== 4. Diagnosis: the runbook's queries (docs/runbook/sql/, also `psql -f`)")
        for name in DIAGNOSIS:
            title, columns, rows = run_sql_file(name)
            write(f"\n-- {name}: {title}")
            write(table(columns, rows, limit=6))

        write(
            "\n== 5. Mitigation the on-call would choose (not applied by the drill)\n"
            f"  - stop the loop now: revoke key {inj.key_prefix} (admin → API keys → search '{inj.key_prefix}' → "
            "action 'Revoke selected keys'); it is refused (401) within FINOPS_API_KEY_CACHE_SECONDS\n"
            f"  - or cap it: a daily user budget for {inj.member} with action 'block' (admin → Budgets → Add), "
            "effective on the next request\n"
            f"  - or downgrade: set the {inj.org_slug} org budget's action to 'downgrade' so routed traffic moves to the cheapest tier\n"
            "  - then: acknowledge the anomaly, tell the team's owner, and mark it 'true positive' when resolved"
        )
        if keep:
            write(
                f"\nKept: {inj.rows} rows marked prompt_hash='{MARKER}' and {len(found)} anomalies marked details.drill=true; "
                "the next `make drill` removes them."
            )
        else:
            transaction.set_rollback(True)
            write(
                "\nRolled back: the drill left no rows, anomalies or notifications behind (use --keep to explore them in the admin)."
            )
    return inj
