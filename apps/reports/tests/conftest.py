"""Report test data: ledger rows priced by the real cost function, budgets and anomalies via their models."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.ledger.models import LLMRequest
from apps.ledger.money import ZERO
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force
from apps.ledger.services import cost_rollup
from apps.reports.periods import current_month
from apps.reports.services import finance_group_reporting_ensure, route_rollup

_seconds = itertools.count(1)


@dataclass
class Ledger:
    """Adds llm_requests rows the way the gateway would record them, then rolls up on demand."""

    rows: list[LLMRequest] = field(default_factory=list)

    def add(
        self,
        tenant,
        *,
        model: str = "gpt-4o-mini",
        at: dt.datetime,
        prompt: int = 1000,
        completion: int = 200,
        cached: int = 0,
        status: str = "served",
        cache_status: str = "miss",
        route_strategy: str = "complexity",
        tier: str = "cheap",
        escalation_cost: Decimal = ZERO,
        cost: Decimal | None = None,
        price=True,
    ) -> LLMRequest:
        row_price = price_in_force(model=model, on=at.date())
        full = cost_compute(price=row_price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
        hit = status == "cached"
        billed = status in ("served", "disconnected")
        row = LLMRequest(
            endpoint="chat_completions",
            received_at=at + dt.timedelta(microseconds=next(_seconds)),
            org=tenant.org,
            team=tenant.team,
            member=tenant.member,
            api_key=tenant.api_key,
            api_key_prefix=tenant.api_key.prefix,
            status=status,
            http_status=200 if status != "failed" else 502,
            model=model,
            requested_model=model,
            provider=row_price.provider,
            tier=tier,
            price_id=row_price.id if price else None,
            prompt_tokens=prompt,
            completion_tokens=completion if not hit else completion,
            cached_tokens=cached,
            cost_usd=cost if cost is not None else (full + escalation_cost if billed else ZERO),
            saved_usd=full if hit else ZERO,
            cache_status="exact" if hit else cache_status,
            route_strategy="" if hit else route_strategy,  # hits are answered before the route stage
            requested_tier=tier,
            escalated=escalation_cost > 0,
            escalation_cost_usd=escalation_cost,
            attempts=2 if escalation_cost > 0 else 1,
        )
        row.save()
        self.rows.append(row)
        return row

    def rollup(self, *, since: dt.date, until: dt.date) -> None:
        cost_rollup(since=since, until=until)
        route_rollup(since=since, until=until)


@pytest.fixture
def ledger(db, prices) -> Ledger:
    return Ledger()


@pytest.fixture
def closed_month():
    """The previous calendar month: every day of it is in the past."""
    return current_month().previous


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


@pytest.fixture
def today() -> dt.date:
    return timezone.now().date()


@pytest.fixture
def two_orgs(make_tenant):
    """Two orgs with a team and a key each; `acme2` is a second member (and key) of Acme's team."""
    acme = make_tenant(org="Acme", team="Search", user="alice")
    globex = make_tenant(org="Globex", team="Risk", user="gina")
    return acme, globex


@pytest.fixture
def finance_user(django_user_model):
    user = django_user_model.objects.create_user("fiona", password="pw-fiona-123", is_staff=True)
    user.groups.add(finance_group_reporting_ensure())
    return user


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", password="pw-root-123")


def make_anomaly(
    *, org, team=None, severity: str = "warning", status: str = "open", impact: str = "12.50", hours_ago: int = 3, label=None
):
    from apps.anomalies.models import Anomaly

    start = timezone.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=hours_ago)
    key = f"{org.slug if org else 'model'}-{team.slug if team else ''}-{severity}-{start:%Y%m%d%H}-{next(_seconds)}"
    return Anomaly.objects.create(
        detector="spike",
        metric="cost",
        scope_type="team" if team else ("org" if org else "model"),
        org=org,
        team=team,
        scope_label=label or (f"{org.slug}/{team.slug}" if team else org.slug if org else "gpt-4o"),
        series_key=key,
        dedupe_key=key,
        window_start=start,
        window_end=start + dt.timedelta(hours=2),
        expected=5.0,
        actual=17.5,
        impact_usd=Decimal(impact),
        impact_pct=250.0,
        score=6.0,
        severity=severity,
        status=status,
    )


def make_budget(*, tenant, scope: str = "org", cap: str = "100.00", spent: str = "0", period: str = "monthly"):
    from apps.budgets.models import Budget, BudgetCounter
    from apps.budgets.selectors import period_start
    from apps.budgets.services import budget_create

    budget = budget_create(
        budget=Budget(
            scope=scope,
            org=tenant.org,
            team=tenant.team if scope in ("team", "user") else None,
            member=tenant.member if scope == "user" else None,
            period=period,
            cap_usd=Decimal(cap),
        )
    )
    if Decimal(spent):
        BudgetCounter.objects.create(
            budget=budget, period_start=period_start(period, timezone.now()), spent_usd=Decimal(spent), updated_at=timezone.now()
        )
    return budget
