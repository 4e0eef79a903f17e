"""FinOps FOCUS v1.2 rows for LLM usage. Pure: ledger aggregates in, CSV-ready dicts out.

Grain: one row per UTC day × team × model × price row × endpoint × meter. The endpoint (chat completions, responses,
messages, embeddings) is the provider API that was bought: it names ServiceName ("openai Embeddings API") and
ends ChargeDescription, and is the x_Endpoint column. The issue's "one row per day × team
× model" is split by meter (input, cached input, output tokens; escalations) because FOCUS prices a
SKU meter, and each meter has its own unit price; a price change mid-day adds rows rather than
blending two prices into one.

Money: per meter, cost = tokens × the meter's price per 1M tokens / 1M, exact in Decimal (at most 12
decimal places). The ledger rounded each request's cost to 10 places (half-even), so the meters of a
group can differ from the ledger's sum by at most 0.5e-10 per request; that rounding residual is
folded into the group's largest meter so the group's rows add up to the ledger exactly. A larger
difference is not rounding: it is emitted as its own `Adjustment` row with the reason, never hidden.
Escalations (a cheap answer re-asked one tier up: `escalation_cost_usd`) are a `Usage` row with
SkuMeter "Escalation", counted in requests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from apps.ledger.money import COST_DECIMAL_PLACES, TOKENS_PER_PRICE_UNIT, ZERO

FOCUS_VERSION = "1.2"

# The mandatory columns of FOCUS v1.2 (the FinOps Open Cost & Usage Specification), in the order the spec lists them.
MANDATORY_COLUMNS = [
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
]
# Conditional / recommended FOCUS columns we can fill, then our own x_ dimensions.
OPTIONAL_COLUMNS = [
    "ChargeFrequency",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedUnitPrice",
    "ListUnitPrice",
    "PricingCategory",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
]
EXTENSION_COLUMNS = ["x_Team", "x_Model", "x_Endpoint", "x_Requests", "x_CacheSavings"]
FOCUS_COLUMNS = MANDATORY_COLUMNS + OPTIONAL_COLUMNS + EXTENSION_COLUMNS
DECIMAL_COLUMNS = ["BilledCost", "ContractedCost", "EffectiveCost", "ListCost", "PricingQuantity", "x_CacheSavings"]

CURRENCY = "USD"
SERVICE_CATEGORY = "AI and Machine Learning"
SERVICE_SUBCATEGORY = "Generative AI"
PRICING_UNIT_TOKENS = "1M Tokens"
METER_INPUT = "Input Tokens"
METER_CACHED = "Cached Input Tokens"
METER_OUTPUT = "Output Tokens"
METER_ESCALATION = "Escalation"
# The ledger's endpoint → the API it bought (ServiceName, ChargeDescription). "chat" is the /chat form of chat completions.
ENDPOINT_SERVICES = {
    "chat_completions": "Chat Completions",
    "chat": "Chat Completions",
    "responses": "Responses",
    "messages": "Messages",
    "embeddings": "Embeddings",
}
# Each request's cost was rounded once to COST_DECIMAL_PLACES, half-even: at most half a unit off.
ROUNDING_PER_REQUEST = Decimal(1).scaleb(-COST_DECIMAL_PLACES) / 2


@dataclass(frozen=True)
class PriceRow:
    id: int
    input_per_1m: Decimal
    cached_input_per_1m: Decimal | None
    output_per_1m: Decimal


@dataclass
class UsageGroup:
    """One day × team × model × price row of the ledger (sums over its requests)."""

    day: dt.date
    org_slug: str
    org_name: str
    team_slug: str
    team_name: str
    model: str
    provider: str
    price: PriceRow | None
    requests: int
    billed_requests: int  # requests with a cost (the others are cache hits, rejects, failures)
    input_tokens: int  # uncached prompt tokens of billed requests
    cached_tokens: int
    output_tokens: int
    cost: Decimal  # ledger cost_usd, escalations included
    escalation_cost: Decimal
    escalations: int
    saved: Decimal  # cache savings (saved_usd)
    endpoint: str = "chat_completions"  # the ledger's endpoint (llm_requests.endpoint)


def iso(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def money(value: Decimal) -> str:
    """Full precision, no exponent: the CSV must add up to the ledger to the last digit."""
    return format(value, "f")


def quantity(value: Decimal | int) -> str:
    return format(Decimal(value), "f")


def usage_rows(group: UsageGroup, *, billing_start: dt.date, billing_end: dt.date) -> list[dict[str, str]]:
    """The FOCUS rows of one group; their BilledCost adds up to `group.cost` exactly."""
    service = ENDPOINT_SERVICES.get(group.endpoint, group.endpoint.replace("_", " ").title() or "Chat Completions")
    base = {
        "BillingAccountId": group.org_slug,
        "BillingAccountName": group.org_name,
        "BillingCurrency": CURRENCY,
        "BillingPeriodStart": iso(billing_start),
        "BillingPeriodEnd": iso(billing_end),
        "ChargeClass": "",
        "ChargePeriodStart": iso(group.day),
        "ChargePeriodEnd": iso(group.day + dt.timedelta(days=1)),
        "ChargeFrequency": "Usage-Based",
        "InvoiceIssuerName": group.provider or "unknown",
        "ProviderName": group.provider or "unknown",
        "PublisherName": group.provider or "unknown",
        "ServiceCategory": SERVICE_CATEGORY,
        "ServiceSubcategory": SERVICE_SUBCATEGORY,
        "ServiceName": f"{group.provider or 'unknown'} {service} API",
        "SkuId": group.model,
        "SkuPriceId": f"model_prices:{group.price.id}" if group.price else "",
        "SubAccountId": f"{group.org_slug}/{group.team_slug}" if group.team_slug else "",
        "SubAccountName": group.team_name,
        "x_Team": group.team_slug,
        "x_Model": group.model,
        "x_Endpoint": group.endpoint,
    }
    rows: list[dict[str, str]] = []
    meters: list[tuple[str, int, Decimal, Decimal]] = []  # meter, tokens, unit price per 1M, cost
    base_cost = group.cost - group.escalation_cost
    residual = base_cost
    if group.price is not None:
        price = group.price
        cached_rate = price.input_per_1m if price.cached_input_per_1m is None else price.cached_input_per_1m
        for meter, tokens, rate in (
            (METER_INPUT, group.input_tokens, price.input_per_1m),
            (METER_CACHED, group.cached_tokens, cached_rate),
            (METER_OUTPUT, group.output_tokens, price.output_per_1m),
        ):
            if tokens:
                meters.append((meter, tokens, rate, tokens * rate / TOKENS_PER_PRICE_UNIT))
        residual = base_cost - sum((cost for *_, cost in meters), ZERO)
        if meters and abs(residual) <= group.billed_requests * ROUNDING_PER_REQUEST:
            largest = max(range(len(meters)), key=lambda i: meters[i][3])
            meter, tokens, rate, cost = meters[largest]
            meters[largest] = (meter, tokens, rate, cost + residual)
            residual = ZERO

    for meter, tokens, rate, cost in meters:
        rows.append(
            {
                **base,
                "ChargeCategory": "Usage",
                "ChargeDescription": f"{group.model} {meter.lower()} ({service} API)",
                "SkuMeter": meter,
                "ConsumedQuantity": quantity(tokens),
                "ConsumedUnit": "Tokens",
                "PricingQuantity": quantity(Decimal(tokens) / TOKENS_PER_PRICE_UNIT),
                "PricingUnit": PRICING_UNIT_TOKENS,
                "PricingCategory": "Standard",
                "ListUnitPrice": quantity(rate),
                "ContractedUnitPrice": quantity(rate),
                **_costs(cost),
            }
        )
    if group.escalation_cost or group.escalations:
        rows.append(
            {
                **base,
                "ChargeCategory": "Usage",
                "ChargeDescription": f"Escalations: first answers re-asked one tier up, answered by {group.model}",
                "SkuMeter": METER_ESCALATION,
                "SkuPriceId": "",  # the first answer's model and price are not on the ledger row
                "ConsumedQuantity": quantity(group.escalations),
                "ConsumedUnit": "Requests",
                "PricingQuantity": quantity(group.escalations),
                "PricingUnit": "Requests",
                "PricingCategory": "Standard",
                **_costs(group.escalation_cost),
            }
        )
    if residual:
        reason = (
            "no price row recorded on the requests"
            if group.price is None
            else f"ledger cost not explained by tokens × price row {group.price.id} (e.g. tokens of two calls on one row)"
        )
        rows.append({**base, "ChargeCategory": "Adjustment", "ChargeDescription": f"{group.model}: {reason}", **_costs(residual)})
    if not rows and group.saved:
        # Only cache hits that day: a zero-cost row carries the savings so they are not lost.
        rows.append(
            {
                **base,
                "ChargeCategory": "Usage",
                "ChargeDescription": f"{group.model} answered from the cache ({service} API)",
                "SkuMeter": METER_INPUT,
                "ConsumedQuantity": "0",
                "ConsumedUnit": "Tokens",
                "PricingQuantity": "0",
                "PricingUnit": PRICING_UNIT_TOKENS,
                "PricingCategory": "Standard",
                **_costs(ZERO),
            }
        )
    for i, row in enumerate(rows):
        # Group-level figures go on the group's first row only, so that summing a column never double-counts.
        row["x_Requests"] = str(group.requests) if i == 0 else "0"
        row["x_CacheSavings"] = money(group.saved) if i == 0 else "0"
        for column in FOCUS_COLUMNS:
            row.setdefault(column, "")
    return rows


def _costs(cost: Decimal) -> dict[str, str]:
    # No negotiated discounts or commitments: list = contracted = effective = billed.
    text = money(cost)
    return {"BilledCost": text, "EffectiveCost": text, "ListCost": text, "ContractedCost": text}
