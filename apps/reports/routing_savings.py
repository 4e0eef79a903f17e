"""Routing savings, read from `route_daily_summary`: what the router's choices cost against always sending the
request to the premium reference model (the top tier's cheapest model), priced with the ledger's SQL twins."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection

from apps.ledger.money import ZERO
from apps.ledger.selectors import prices_in_force
from apps.reports.selectors import scope_sql
from apps.tenancy.access import Scope
from finops import clock
from finops.conf import conf

# Strategies where the router chose the model. `pinned` and `tier` were the client's choice and
# `downgrade` the budget's, so none of those earn (or lose) routing savings.
ROUTED_STRATEGIES = ("keyword", "complexity", "default", "confidence")


def premium_reference_model(*, on: dt.date | None = None) -> str | None:
    """The model whose price is the counterfactual "everything at the premium tier".

    FINOPS["REPORTS_PREMIUM_MODEL"] when set; otherwise the cheapest enabled model (input + output
    list price) of the highest tier of the `default` routing ladder, so the savings are never overstated
    by picking the priciest premium model.
    """
    configured = conf().reports_premium_model
    if configured:
        return configured
    from apps.routing.models import TierModel

    rows = list(
        TierModel.objects.filter(enabled=True, tier__ladder="default").order_by("-tier__rank").values_list("model", "tier__rank")
    )
    if not rows:
        return None
    top = rows[0][1]
    candidates = [model for model, rank in rows if rank == top]
    if len(candidates) == 1:
        return candidates[0]
    prices = prices_in_force(on=on or clock.today(), models=candidates)
    priced = sorted(((p.input_per_1m + p.output_per_1m, m) for m, p in prices.items()), key=lambda pair: pair[0])
    return priced[0][1] if priced else candidates[0]


ROUTE_SQL = """
WITH agg AS (
    SELECT date, route_strategy, tier,
           sum(requests) AS requests, sum(answered) AS answered, sum(escalations) AS escalations,
           sum(cost_usd) AS cost_usd, sum(escalation_cost_usd) AS escalation_cost_usd,
           sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
           sum(cached_tokens) AS cached_tokens
    FROM route_daily_summary
    WHERE date >= %(start)s AND date < %(end)s {scope}
    GROUP BY 1, 2, 3
)
SELECT a.route_strategy, a.tier,
       sum(a.requests), sum(a.answered), sum(a.escalations), sum(a.cost_usd), sum(a.escalation_cost_usd),
       sum(finops_cost_usd(a.prompt_tokens, a.completion_tokens, a.cached_tokens,
                           p.input_per_1m, p.cached_input_per_1m, p.output_per_1m)),
       bool_or(p.id IS NULL AND a.answered > 0)
FROM agg a
LEFT JOIN LATERAL finops_price_in_force(%(premium)s, a.date) p ON true
GROUP BY 1, 2
"""


@dataclass
class RouteLine:
    strategy: str
    tier: str
    requests: int
    answered: int
    escalations: int
    cost: Decimal
    escalation_cost: Decimal
    premium_cost: Decimal | None  # the same answered tokens at the premium reference price

    @property
    def routed(self) -> bool:
        return self.strategy in ROUTED_STRATEGIES

    @property
    def savings(self) -> Decimal | None:
        return None if self.premium_cost is None else self.premium_cost - self.cost


@dataclass
class RoutingSavings:
    """Routing savings = Σ over router-chosen requests of (tokens × premium price − what they cost).

    "What they cost" is the ledger's cost_usd, which includes escalations (the cheap first answer that
    was re-asked one tier up), so a router that escalates too often earns less. Pinned, tier-named and
    budget-downgraded requests are listed but not credited to the router.
    """

    premium_model: str | None
    lines: list[RouteLine] = field(default_factory=list)
    unpriced: bool = False  # some days had no price in force for the premium model

    def _sum(self, attr: str, *, routed_only: bool = True):
        values = [getattr(line, attr) for line in self.lines if line.routed or not routed_only]
        return sum(values, ZERO if attr not in ("requests", "answered", "escalations") else 0)

    @property
    def routed_cost(self) -> Decimal:
        return self._sum("cost")

    @property
    def premium_cost(self) -> Decimal | None:
        if self.premium_model is None:
            return None
        return sum((line.premium_cost or ZERO for line in self.lines if line.routed), ZERO)

    @property
    def savings(self) -> Decimal | None:
        premium = self.premium_cost
        return None if premium is None else premium - self.routed_cost

    @property
    def escalation_cost(self) -> Decimal:
        return self._sum("escalation_cost", routed_only=False)

    @property
    def escalations(self) -> int:
        return self._sum("escalations", routed_only=False)

    @property
    def routed_requests(self) -> int:
        return self._sum("answered")

    def by_strategy(self) -> list[RouteLine]:
        merged: dict[str, RouteLine] = {}
        for line in self.lines:
            into = merged.get(line.strategy)
            if into is None:
                merged[line.strategy] = RouteLine(**{**line.__dict__, "tier": ""})
                continue
            into.requests += line.requests
            into.answered += line.answered
            into.escalations += line.escalations
            into.cost += line.cost
            into.escalation_cost += line.escalation_cost
            into.premium_cost = (
                None if into.premium_cost is None or line.premium_cost is None else into.premium_cost + line.premium_cost
            )
        return sorted(merged.values(), key=lambda line: -line.cost)

    def by_tier(self) -> list[tuple[str, Decimal, int]]:
        tiers: dict[str, list] = defaultdict(lambda: [ZERO, 0])
        for line in self.lines:
            tiers[line.tier or "(none)"][0] += line.cost
            tiers[line.tier or "(none)"][1] += line.answered
        return sorted(((tier, cost, n) for tier, (cost, n) in tiers.items()), key=lambda item: -item[1])


def routing_savings(*, scope: Scope, start: dt.date, end: dt.date, premium_model: str | None = None) -> RoutingSavings:
    """Routing figures for [start, end) in scope, from route_daily_summary (two small queries)."""
    premium_model = premium_model or premium_reference_model(on=start)
    params: dict = {"start": start, "end": end, "premium": premium_model or ""}
    sql = ROUTE_SQL.format(scope=scope_sql(scope, params))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    result = RoutingSavings(premium_model=premium_model)
    for strategy, tier, requests, answered, escalations, cost, escalation_cost, premium_cost, unpriced in rows:
        result.unpriced |= bool(unpriced)
        result.lines.append(
            RouteLine(
                strategy=strategy or "(none)",
                tier=tier,
                requests=int(requests),
                answered=int(answered),
                escalations=int(escalations),
                cost=cost or ZERO,
                escalation_cost=escalation_cost or ZERO,
                premium_cost=None if premium_model is None else (premium_cost or ZERO),
            )
        )
    return result
