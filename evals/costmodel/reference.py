"""The 8-tenant reference load, derived from the seed generator so that the model and the seeded ledger agree.

`seed_demo --per-day 50000 --days 30` draws, per request: a tenant by `ORGS` share, a model by `MODEL_MIX`
share, prompt tokens ⌊max(8, mean·LogNormal(0, 0.6))⌋ and completion tokens ⌊max(1, mean·LogNormal(0, 0.5))⌋,
provider-cached tokens ⌊prompt·U(0.3, 0.8)⌋ on `CACHED_PROMPT_RATE` of the requests to models with a cached-input
discount, cache hits at `EXACT_HIT_RATE` / `SEMANTIC_HIT_RATE`, failures and rejections (not billed), and
escalations on `ESCALATION_RATE` of the billed premium-tier requests. The expected token counts below are the
means of those draws: E[LogNormal(0, σ)] = exp(σ²/2), and ⌊x⌋ takes 0.5 off on average.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from apps.ledger.pricing import PriceBook
from demo import seed
from evals.costmodel.model import AS_RECORDED, Lever, LoadRow, PriceRow, ReferenceLoad
from finops import clock

PRICES_FIXTURE = Path(settings.BASE_DIR) / "fixtures" / "prices.json"
REFERENCE_PER_DAY = 50_000
REFERENCE_DAYS = 30
# The spreads and shares that seed.py writes inline (demo/seed.py: _with_tokens, rows_to_copy_lines);
# tests/test_reference.py draws from the generator itself and checks these against it.
PROMPT_SIGMA = 0.6
COMPLETION_SIGMA = 0.5
CACHED_FRACTION_MEAN = Decimal("0.55")  # U(0.3, 0.8)
PINNED_SHARE = Decimal("0.15")  # route_pick < 0.15 → "pinned"
FLOOR_BIAS = Decimal("0.5")
SEED_SOURCE = "demo/seed.py"


def lognormal_mean(mean_tokens: float, sigma: float) -> Decimal:
    return Decimal(str(round(mean_tokens * math.exp(sigma * sigma / 2), 4))) - FLOOR_BIAS


def prices_from_fixture(*, models: list[str], on: dt.date, path: Path = PRICES_FIXTURE) -> dict[str, PriceRow]:
    """The list price in force on `on` for each model, as fixtures/prices.json (the price table's source) states it."""
    rows = json.loads(path.read_text())["prices"]
    book = PriceBook.from_fixture(rows)  # the ledger's one price-in-force rule
    sources = {(r["model"], r["effective_from"]): r.get("source", "") for r in rows}
    out: dict[str, PriceRow] = {}
    for model in models:
        window = book.window_for(model, on)
        if window is None:
            raise LookupError(f"{model} has no price in force on {on} in {path.name}")
        price = window.price
        out[model] = PriceRow(
            model=model,
            provider=price.provider,
            input_per_1m=price.input_per_1m,
            cached_input_per_1m=price.cached_input_per_1m,
            output_per_1m=price.output_per_1m,
            effective_from=window.effective_from,
            source=sources.get((model, window.effective_from.isoformat()), ""),
        )
    return out


def ladder_models() -> tuple[str, str]:
    """The cheap model and the premium counterfactual of the `default` routing ladder (apps/routing/defaults.py):
    the cheapest premium model by list price, as apps.reports' premium_reference_model picks it."""
    from apps.routing.defaults import TIERS

    default = [t for t in TIERS if t[0] == "default"]
    cheap = min(default, key=lambda t: t[2])[4][0][0]
    top_rank = max(t[2] for t in default)
    premium_models = [m for t in default if t[2] == top_rank for m, _ in t[4]]
    prices = prices_from_fixture(models=premium_models, on=clock.today())
    premium = min(premium_models, key=lambda m: prices[m].input_per_1m + prices[m].output_per_1m)
    return cheap, premium


def seed_levers() -> dict[tuple[str, str], Lever]:
    src = f"{SEED_SOURCE} (seed_demo's configuration, not a measurement)"
    return {
        ("seed", "exact_hit_rate"): Lever(str(seed.EXACT_HIT_RATE), f"{src}: EXACT_HIT_RATE"),
        ("seed", "semantic_hit_rate"): Lever(str(seed.SEMANTIC_HIT_RATE), f"{src}: SEMANTIC_HIT_RATE"),
        ("seed", "routing_premium_share"): Lever(AS_RECORDED, f"{src}: the load's model column is the seeded mix (MODEL_MIX)"),
        ("seed", "escalation_rate"): Lever(
            str(seed.ESCALATION_RATE),
            f"{src}: ESCALATION_RATE of billed premium-tier requests, the cheap answer booked as escalation cost",
        ),
        ("seed", "embedding_model"): Lever("all-minilm-l6-v2", f"{src}: the seed books no embedding rows (local model, $0)"),
    }


def reference_load_build(
    *, per_day: int = REFERENCE_PER_DAY, days: int = REFERENCE_DAYS, on: dt.date | None = None,
    measured: dict[str, Lever] | None = None, replay: dict[str, Lever] | None = None,
) -> ReferenceLoad:  # fmt: skip
    """The reference load from the seed generator's constants and the fixture's list prices in force on `on`."""
    on = on or clock.today()
    cheap, premium = ladder_models()
    models = [m[0] for m in seed.MODEL_MIX]
    from apps.embeddings.embeddings import LOCAL_MODEL_NAME, REMOTE_DEFAULT_MODEL

    prices = prices_from_fixture(
        models=list(dict.fromkeys([*models, cheap, premium, LOCAL_MODEL_NAME, REMOTE_DEFAULT_MODEL])), on=on
    )
    month = Decimal(per_day * days)
    org_total = Decimal(str(sum(share for _, share, _ in seed.ORGS)))
    model_total = Decimal(str(sum(m[2] for m in seed.MODEL_MIX)))
    rows: list[LoadRow] = []
    for org_name, org_share, _teams in seed.ORGS:
        for model, tier, model_share, prompt_mean, completion_mean, _ms in seed.MODEL_MIX:
            prompt = lognormal_mean(prompt_mean, PROMPT_SIGMA)
            price = prices[model]
            discounted = price.cached_input_per_1m is not None and price.cached_input_per_1m < price.input_per_1m
            cached = (
                (Decimal(str(seed.CACHED_PROMPT_RATE)) * (CACHED_FRACTION_MEAN * prompt - FLOOR_BIAS))
                if discounted
                else Decimal(0)
            )
            rows.append(
                LoadRow(
                    tenant=org_name,
                    model=model,
                    tier=tier,
                    requests=month * Decimal(str(org_share)) / org_total * Decimal(str(model_share)) / model_total,
                    prompt_tokens=prompt,
                    cached_tokens=cached.quantize(Decimal("0.0001")),
                    completion_tokens=lognormal_mean(completion_mean, COMPLETION_SIGMA),
                )
            )
    params = {
        "failed_rate": str(seed.FAILED_RATE),
        "rejected_rate": str(seed.REJECTED_RATE),
        "pinned_share": str(PINNED_SHARE),
        "cheap_model": cheap,
        "premium_model": premium,
        "remote_embedding_model": REMOTE_DEFAULT_MODEL,
        "requests_per_day": str(per_day),
        "days": str(days),
    }
    notes = {
        "failed_rate": f"{SEED_SOURCE}: FAILED_RATE (not billed)",
        "rejected_rate": f"{SEED_SOURCE}: REJECTED_RATE (not billed)",
        "pinned_share": f"{SEED_SOURCE}: route_strategy 'pinned' share; the rest is router-chosen",
        "cheap_model": "apps/routing/defaults.py: cheap tier of the default ladder",
        "premium_model": "apps/routing/defaults.py: cheapest premium model of the default ladder (reports' premium counterfactual)",
        "remote_embedding_model": "apps/embeddings/embeddings.py: the model FINOPS_CACHE_EMBEDDING_BACKEND=openai uses (README's what-if)",
        "requests_per_day": "the reference load: 50k requests/day",
        "days": "one month",
    }
    levers = dict(seed_levers())
    for name, lever in (replay or {}).items():
        levers[("replay", name)] = lever
    for name, lever in (measured or {}).items():
        levers[("measured", name)] = lever
    return ReferenceLoad(prices=prices, rows=rows, params=params, levers=levers, notes=notes)
