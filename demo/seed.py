"""The deterministic demo workload: 8 tenants, 30 days of requests, labelled cost incidents.

Rows are generated column-wise with numpy (seeded) and streamed into Postgres with COPY, so the
1.5M-row reference month (`--per-day 50000 --days 30`) loads in well under a minute. Costs are
computed in integers (micro-dollars per 1M tokens × tokens = 1e-12 USD) and rounded half-even to
NUMERIC(20,10), which is exactly what `apps.ledger.pricing.cost_compute` returns for the same
tokens and price row; a test checks that on sampled rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
from django.db import DatabaseError, connection, transaction

from apps.ledger.models import CostDailySummary, LLMRequest, SeedIncident
from apps.ledger.money import COST_DECIMAL_PLACES
from apps.ledger.pricing import token_charge
from apps.tenancy.models import Organization
from apps.tenancy.services import api_key_create, member_get_or_create, org_get_or_create, team_get_or_create
from finops import clock

logger = logging.getLogger(__name__)

ORGS: list[tuple[str, float, list[str]]] = [
    # name, share of traffic, teams
    ("Acme Retail", 0.22, ["Search", "Support Bot", "Catalog"]),
    ("Globex Bank", 0.18, ["Risk", "Contact Center"]),
    ("Initech", 0.14, ["Platform", "Analytics", "Sales Ops"]),
    ("Umbrella Health", 0.12, ["Clinical Notes", "Billing"]),
    ("Stark Labs", 0.11, ["Research", "Agents"]),
    ("Wayne Media", 0.09, ["Newsroom", "Ads"]),
    ("Hooli", 0.08, ["Growth", "Mail"]),
    ("Soylent Foods", 0.06, ["Supply Chain", "Marketing"]),
]
USERS_PER_TEAM = 3

# model, tier, share of requests, mean prompt tokens, mean completion tokens, upstream ms
MODEL_MIX: list[tuple[str, str, float, int, int, float]] = [
    ("gpt-4o-mini", "cheap", 0.38, 700, 220, 650),
    ("gemini-2.0-flash", "cheap", 0.12, 650, 200, 550),
    ("llama-3.1-8b-instruct-turbo", "cheap", 0.06, 500, 180, 400),
    ("claude-3-5-haiku-20241022", "mid", 0.10, 900, 260, 900),
    ("gpt-4.1-mini", "mid", 0.09, 900, 260, 800),
    ("deepseek-chat", "mid", 0.05, 1000, 300, 1400),
    ("gpt-4o", "premium", 0.11, 1200, 350, 1600),
    ("claude-sonnet-4-20250514", "premium", 0.07, 1400, 400, 2100),
    ("gemini-2.5-pro", "premium", 0.02, 1500, 500, 2600),
]
PREMIUM_SWITCH_MODEL = "claude-opus-4-20250514"

# Share of requests per hour of day (UTC): business-hours peak, quiet nights.
HOUR_WEIGHTS = np.array(
    [0.25, 0.2, 0.18, 0.18, 0.2, 0.3, 0.5, 0.8, 1.1, 1.4, 1.6, 1.7, 1.6, 1.7, 1.8, 1.7, 1.5, 1.3, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3]
)
WEEKDAY_FACTOR = np.array([1.0, 1.05, 1.05, 1.0, 0.9, 0.35, 0.3])  # Monday .. Sunday

EXACT_HIT_RATE = 0.08
SEMANTIC_HIT_RATE = 0.04
FAILED_RATE = 0.01
REJECTED_RATE = 0.005
ESCALATION_RATE = 0.03
CACHED_PROMPT_RATE = 0.3  # requests whose prompt prefix was in the provider's prompt cache

COPY_COLUMNS = [
    "request_id", "endpoint", "received_at", "recorded_at", "org_id", "team_id", "member_id", "api_key_id",
    "api_key_prefix", "status", "http_status", "error_code", "stream", "requested_model", "model", "provider",
    "tier", "price_id", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "saved_usd",
    "cache_status", "similarity", "requested_tier", "route_strategy", "route_reason", "escalated",
    "escalation_cost_usd", "fallback_from", "attempts", "budget_state", "reserved_usd", "upstream_ms",
    "overhead_ms", "prompt_hash",
]  # fmt: skip


@dataclass
class SeedTenancy:
    member_ids: np.ndarray  # every seeded member
    member_org: np.ndarray
    member_team: np.ndarray
    member_key: np.ndarray
    member_key_prefix: list[str]
    org_ids: list[int]
    org_members: dict[int, np.ndarray] = field(default_factory=dict)
    demo_secret: str = ""


@dataclass
class PriceTable:
    models: list[str]
    price_ids: np.ndarray
    providers: list[str]
    input_u: np.ndarray  # micro-dollars per 1M tokens, as integers
    cached_u: np.ndarray
    output_u: np.ndarray


@dataclass
class Batch:
    """Column arrays for a set of rows (one incident or the baseline)."""

    ts: np.ndarray  # int64 microseconds since epoch
    member_idx: np.ndarray
    model_idx: np.ndarray
    prompt: np.ndarray
    completion: np.ndarray
    cache_kind: np.ndarray  # 0 miss, 1 exact, 2 semantic
    status_kind: np.ndarray  # 0 served, 1 failed, 2 rejected


@dataclass
class SeedResult:
    rows: int
    incidents: int
    summary_rows: int
    demo_secret: str
    seconds: float


def _micro(value: Decimal | None) -> int:
    return int((value or Decimal(0)) * 1_000_000)


def seed_tenancy(*, with_demo_key: bool = True) -> SeedTenancy:
    member_ids: list[int] = []
    member_org: list[int] = []
    member_team: list[int] = []
    member_key: list[int] = []
    prefixes: list[str] = []
    org_ids: list[int] = []
    org_members: dict[int, list[int]] = {}
    demo_secret = ""
    for org_name, _, teams in ORGS:
        org = org_get_or_create(name=org_name)
        org_ids.append(org.id)
        for team_name in teams:
            team = team_get_or_create(org=org, name=team_name)
            for n in range(USERS_PER_TEAM):
                username = f"{team.slug}-{n + 1}"
                member = member_get_or_create(team=team, username=username, email=f"{username}@{org.slug}.example")
                key = member.api_keys.filter(revoked_at__isnull=True).first()
                if key is None:
                    key = api_key_create(member=member, name="seed").api_key
                org_members.setdefault(org.id, []).append(len(member_ids))
                member_ids.append(member.id)
                member_org.append(org.id)
                member_team.append(team.id)
                member_key.append(key.id)
                prefixes.append(key.prefix)
    if with_demo_key:
        org = Organization.objects.get(slug="acme-retail")
        team = team_get_or_create(org=org, name="Search")
        demo = member_get_or_create(team=team, username="demo", email="demo@acme-retail.example")
        demo_secret = api_key_create(member=demo, name="make run demo key").secret
    return SeedTenancy(
        member_ids=np.array(member_ids),
        member_org=np.array(member_org),
        member_team=np.array(member_team),
        member_key=np.array(member_key),
        member_key_prefix=prefixes,
        org_ids=org_ids,
        org_members={k: np.array(v) for k, v in org_members.items()},
        demo_secret=demo_secret,
    )


def price_table(*, models: list[str], on: dt.date) -> PriceTable:
    from apps.ledger.selectors import price_in_force

    rows = [price_in_force(model=m, on=on) for m in models]
    return PriceTable(
        models=models,
        price_ids=np.array([r.id for r in rows]),
        providers=[r.provider for r in rows],
        input_u=np.array([_micro(r.input_per_1m) for r in rows], dtype=np.int64),
        cached_u=np.array([_micro(r.cached_input_per_1m if r.cached_input_per_1m is not None else r.input_per_1m) for r in rows], dtype=np.int64),
        output_u=np.array([_micro(r.output_per_1m) for r in rows], dtype=np.int64),
    )


def _round_half_even_div(values: np.ndarray, divisor: int) -> np.ndarray:
    quotient, remainder = np.divmod(values, divisor)
    half = divisor // 2
    bump = (remainder > half) | ((remainder == half) & (quotient % 2 == 1))
    return quotient + bump


def costs_1e10(prices: PriceTable, model_idx: np.ndarray, prompt: np.ndarray, cached: np.ndarray, completion: np.ndarray) -> np.ndarray:
    """Cost in units of 1e-10 USD, rounded half-even exactly as quantize_usd does."""
    e12 = token_charge(
        prompt=prompt, cached=cached, cache_write=0, completion=completion, input_rate=prices.input_u[model_idx],
        cached_rate=prices.cached_u[model_idx], write_rate=prices.input_u[model_idx], output_rate=prices.output_u[model_idx],
    )  # fmt: skip
    return _round_half_even_div(e12, 100)


def _fmt_money(units: np.ndarray) -> list[str]:
    scale = 10**COST_DECIMAL_PLACES
    whole, frac = np.divmod(units, scale)
    return [f"{w}.{f:010d}" for w, f in zip(whole.tolist(), frac.tolist(), strict=True)]


def _day_hour_timestamps(rng: np.random.Generator, *, start: dt.date, days: int, per_day: int) -> np.ndarray:
    stamps = []
    hour_p = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
    for d in range(days):
        day = start + dt.timedelta(days=d)
        n = int(round(per_day * WEEKDAY_FACTOR[day.weekday()] / WEEKDAY_FACTOR.mean()))
        counts = rng.multinomial(n, hour_p)
        base = int(dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC).timestamp()) * 1_000_000
        hours = np.repeat(np.arange(24), counts)
        stamps.append(base + hours * 3_600_000_000 + rng.integers(0, 3_600_000_000, size=n))
    return np.concatenate(stamps) if stamps else np.array([], dtype=np.int64)


def baseline_batch(rng: np.random.Generator, tenancy: SeedTenancy, *, start: dt.date, days: int, per_day: int) -> Batch:
    ts = _day_hour_timestamps(rng, start=start, days=days, per_day=per_day)
    n = len(ts)
    org_share = np.array([share for _, share, _ in ORGS])
    org_pick = rng.choice(len(ORGS), size=n, p=org_share / org_share.sum())
    member_idx = np.empty(n, dtype=np.int64)
    for i, org_id in enumerate(tenancy.org_ids):
        mask = org_pick == i
        members = tenancy.org_members[org_id]
        member_idx[mask] = members[rng.integers(0, len(members), size=int(mask.sum()))]
    model_share = np.array([m[2] for m in MODEL_MIX])
    model_idx = rng.choice(len(MODEL_MIX), size=n, p=model_share / model_share.sum())
    return _with_tokens(rng, ts, member_idx, model_idx, cache_hit_rate=(EXACT_HIT_RATE, SEMANTIC_HIT_RATE))


def _with_tokens(rng, ts, member_idx, model_idx, *, cache_hit_rate, prompt_scale: float = 1.0) -> Batch:
    n = len(ts)
    mean_prompt = np.array([m[3] for m in MODEL_MIX + [(PREMIUM_SWITCH_MODEL, "premium", 0, 1400, 450, 3000)]])[model_idx]
    mean_completion = np.array([m[4] for m in MODEL_MIX + [(PREMIUM_SWITCH_MODEL, "premium", 0, 1400, 450, 3000)]])[model_idx]
    prompt = np.maximum(8, (rng.lognormal(0, 0.6, size=n) * mean_prompt * prompt_scale)).astype(np.int64)
    completion = np.maximum(1, (rng.lognormal(0, 0.5, size=n) * mean_completion)).astype(np.int64)
    u = rng.random(n)
    exact, semantic = cache_hit_rate
    cache_kind = np.where(u < exact, 1, np.where(u < exact + semantic, 2, 0))
    v = rng.random(n)
    status_kind = np.where(v < FAILED_RATE, 1, np.where(v < FAILED_RATE + REJECTED_RATE, 2, 0))
    status_kind[cache_kind > 0] = 0
    return Batch(ts=ts, member_idx=member_idx, model_idx=model_idx, prompt=prompt, completion=completion, cache_kind=cache_kind, status_kind=status_kind)


def _concat(batches: list[Batch]) -> Batch:
    return Batch(**{f: np.concatenate([getattr(b, f) for b in batches]) for f in Batch.__dataclass_fields__})


def incident_batches(
    rng, tenancy: SeedTenancy, *, start: dt.date, days: int, per_day: int, incident_scale: float = 1.0
) -> tuple[list[Batch], list[dict]]:
    """Four labelled incidents, scaled with the workload so they stand out at any --per-day, times `incident_scale`
    (more requests in the same window: a bigger incident of the same shape)."""
    scale = max(per_day / 400, 0.25) * incident_scale
    model_names = [m[0] for m in MODEL_MIX] + [PREMIUM_SWITCH_MODEL]
    batches: list[Batch] = []
    labels: list[dict] = []

    def when(day_offset: int, hour: int) -> int:
        day = start + dt.timedelta(days=min(max(day_offset, 0), days - 1))
        return int(dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC).timestamp()) * 1_000_000

    def window(t0: int, hours: int, n: int) -> np.ndarray:
        return np.sort(t0 + rng.integers(0, hours * 3_600_000_000, size=n))

    def add(kind: str, t0: int, hours: int, member_pos: int, model: str, n: int, desc: str, *, prompt_scale=1.0, cache=(0.0, 0.0)):
        ts = window(t0, hours, n)
        batch = _with_tokens(
            rng, ts, np.full(n, member_pos), np.full(n, model_names.index(model)), cache_hit_rate=cache, prompt_scale=prompt_scale
        )
        batch.status_kind[:] = 0
        batches.append(batch)
        labels.append(
            {
                "kind": kind,
                "org_id": int(tenancy.member_org[member_pos]),
                "team_id": int(tenancy.member_team[member_pos]),
                "member_id": int(tenancy.member_ids[member_pos]),
                "model": model,
                "start": dt.datetime.fromtimestamp(t0 / 1e6, tz=dt.UTC),
                "end": dt.datetime.fromtimestamp((t0 + hours * 3_600_000_000) / 1e6, tz=dt.UTC),
                "extra_requests": n,
                "description": desc,
            }
        )

    globex = tenancy.org_members[tenancy.org_ids[1]]
    umbrella = tenancy.org_members[tenancy.org_ids[3]]
    initech = tenancy.org_members[tenancy.org_ids[2]]
    acme = tenancy.org_members[tenancy.org_ids[0]]
    add(
        "runaway_loop", when(days - 21, 13), 5, int(globex[0]), "gpt-4o", int(160 * scale),
        "An agent loop re-sends a growing conversation to gpt-4o for five hours.", prompt_scale=5.0,
    )
    add(
        "leaked_key", when(days - 14, 1), 4, int(umbrella[1]), "claude-sonnet-4-20250514", int(120 * scale),
        "A key leaked to a public repo is used overnight from an unknown client.",
    )
    add(
        "premium_switch", when(days - 9, 9), 8, int(initech[0]), PREMIUM_SWITCH_MODEL, int(90 * scale),
        "A team switches its default model to claude-opus-4 for a working day.",
    )
    # Cache outage: the FAQ traffic that Acme's search team serves from the cache (~40 requests an hour at
    # this scale, none of which reach the ledger as billed rows while the cache is up) reaches gpt-4o and is
    # paid for six hours. Sized from that traffic, not to clear the detector: at 70 requests (its first
    # size) the outage cost about $0.10 an hour, under the scan's $0.25 minimum impact for two hours on
    # some weekdays, so whether it was "caught" depended on the date the demo was seeded.
    add(
        "cache_outage", when(days - 4, 10), 6, int(acme[0]), "gpt-4o", int(240 * scale),
        "The exact/semantic cache is down; the search team's FAQ traffic reaches gpt-4o and is billed.", cache=(0.0, 0.0),
    )
    return batches, labels


def rows_to_copy_lines(batch: Batch, tenancy: SeedTenancy, prices: PriceTable, rng) -> Callable[[int, int], str]:
    """Return a function rendering rows [lo, hi) of the (time-sorted) batch as COPY text."""
    n = len(batch.ts)
    cached = np.where(
        (prices.cached_u[batch.model_idx] < prices.input_u[batch.model_idx]) & (rng.random(n) < CACHED_PROMPT_RATE),
        (batch.prompt * rng.uniform(0.3, 0.8, size=n)).astype(np.int64),
        0,
    )
    full_cost = costs_1e10(prices, batch.model_idx, batch.prompt, cached, batch.completion)
    is_hit = batch.cache_kind > 0
    failed = batch.status_kind == 1
    rejected = batch.status_kind == 2
    billed = ~is_hit & ~failed & ~rejected
    # Escalations: a cheap answer was re-asked at premium; its cost is kept on the row.
    escalated = billed & (rng.random(n) < ESCALATION_RATE) & (np.array([MODEL_MIX[i][1] if i < len(MODEL_MIX) else "premium" for i in range(len(prices.models))])[batch.model_idx] == "premium")
    cheap_idx = prices.models.index("gpt-4o-mini")
    escalation_cost = np.where(escalated, costs_1e10(prices, np.full(n, cheap_idx), batch.prompt, np.zeros(n, dtype=np.int64), batch.completion), 0)
    cost = np.where(billed, full_cost + escalation_cost, 0)
    saved = np.where(is_hit, full_cost, 0)
    zero_tokens = failed | rejected
    prompt = np.where(zero_tokens & rejected, 0, batch.prompt)
    completion = np.where(zero_tokens, 0, batch.completion)
    cached = np.where(zero_tokens | is_hit, 0, cached)

    tier_of_model = [MODEL_MIX[i][1] if i < len(MODEL_MIX) else "premium" for i in range(len(prices.models))]
    upstream_base = np.array([MODEL_MIX[i][5] if i < len(MODEL_MIX) else 3000.0 for i in range(len(prices.models))])
    upstream_ms = np.round(upstream_base[batch.model_idx] * rng.lognormal(0, 0.35, size=n), 1)
    overhead_ms = np.round(rng.gamma(2.0, 0.6, size=n), 2)
    similarity = np.round(rng.uniform(0.92, 0.995, size=n), 4)
    route_pick = rng.random(n)
    recorded_delta = (upstream_ms * 1000).astype(np.int64) + 2000

    status_s = np.where(is_hit, "cached", np.where(failed, "failed", np.where(rejected, "rejected", "served")))
    http_s = np.where(failed, "502", np.where(rejected, "429", "200"))
    err_s = np.where(failed, "upstream_error", np.where(rejected, "budget_exceeded", ""))
    cache_s = np.where(batch.cache_kind == 1, "exact", np.where(batch.cache_kind == 2, "semantic", "miss"))
    strategy_s = np.where(route_pick < 0.15, "pinned", np.where(route_pick < 0.35, "keyword", "complexity"))
    strategy_s = np.where(escalated, "confidence", strategy_s)
    tier_s = np.array(tier_of_model)[batch.model_idx]
    reason_s = np.where(
        strategy_s == "keyword", "rule:seed-keyword",
        np.where(strategy_s == "pinned", "client named the model",
                 np.where(strategy_s == "confidence", "low confidence on gpt-4o-mini answer", np.char.add("complexity tier ", tier_s))),
    )  # fmt: skip
    endpoint_s = np.where(rng.random(n) < 0.8, "chat_completions", "chat")
    stream_s = np.where(rng.random(n) < 0.35, "t", "f")
    attempts_s = np.where(is_hit, "0", np.where(escalated, "2", "1"))
    budget_s = np.where(rejected, "blocked", "ok")
    escalated_s = np.where(escalated, "t", "f")
    model_names = np.array(prices.models)[batch.model_idx]
    provider_s = np.array(prices.providers)[batch.model_idx]
    prefix_s = np.array(tenancy.member_key_prefix)[batch.member_idx]
    org_id = tenancy.member_org[batch.member_idx]
    team_id = tenancy.member_team[batch.member_idx]
    member_id = tenancy.member_ids[batch.member_idx]
    key_id = tenancy.member_key[batch.member_idx]
    price_id = prices.price_ids[batch.model_idx]
    recorded_ts = batch.ts + recorded_delta
    # Postgres reads 32 hex digits as a uuid. Ids (and the synthetic prompt hashes) come from the seeded generator.
    id_bytes = rng.integers(0, 256, size=(n, 24), dtype=np.uint8)

    def render(lo: int, hi: int) -> str:
        """COPY text for rows [lo, hi). String conversion happens here, chunk by chunk, so Python
        formats the next chunk while Postgres ingests the previous one."""
        m = hi - lo
        sl = slice(lo, hi)
        id_hex = id_bytes[sl].tobytes().hex()
        request_ids = [id_hex[k * 48 : k * 48 + 32] for k in range(m)]
        prompt_hashes = [id_hex[k * 48 + 32 : k * 48 + 48] for k in range(m)]
        cost_s = _fmt_money(cost[sl])
        # Timestamps as ISO text in UTC (numpy datetime64 is timezone-naive: append the offset).
        received_s = np.char.add(np.datetime_as_string(batch.ts[sl].astype("datetime64[us]"), unit="us"), "+00")
        recorded_s = np.char.add(np.datetime_as_string(recorded_ts[sl].astype("datetime64[us]"), unit="us"), "+00")
        similarity_s = np.where(batch.cache_kind[sl] == 2, similarity[sl].astype(str), "\\N")
        upstream_s = np.where(is_hit[sl], "\\N", upstream_ms[sl].astype(str))
        empty = [""] * m
        models = model_names[sl].tolist()
        tiers = tier_s[sl].tolist()
        columns = [
            request_ids, endpoint_s[sl].tolist(), received_s.tolist(), recorded_s.tolist(),
            org_id[sl].astype(str).tolist(), team_id[sl].astype(str).tolist(), member_id[sl].astype(str).tolist(),
            key_id[sl].astype(str).tolist(), prefix_s[sl].tolist(), status_s[sl].tolist(), http_s[sl].tolist(),
            err_s[sl].tolist(), stream_s[sl].tolist(), models, models, provider_s[sl].tolist(), tiers,
            price_id[sl].astype(str).tolist(), prompt[sl].astype(str).tolist(), completion[sl].astype(str).tolist(),
            cached[sl].astype(str).tolist(), cost_s, _fmt_money(saved[sl]), cache_s[sl].tolist(), similarity_s.tolist(),
            tiers, strategy_s[sl].tolist(), reason_s[sl].tolist(), escalated_s[sl].tolist(),
            _fmt_money(escalation_cost[sl]), empty, attempts_s[sl].tolist(), budget_s[sl].tolist(),
            [c if b else "0" for c, b in zip(cost_s, billed[sl].tolist(), strict=True)],
            upstream_s.tolist(), overhead_ms[sl].astype(str).tolist(), prompt_hashes,
        ]  # fmt: skip
        return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"

    return render


def seed_demo(
    *,
    per_day: int = 400,
    days: int = 30,
    seed: int = 42,
    end: dt.date | None = None,
    chunk: int = 50_000,
    reset: bool = False,
    progress: Callable[[int], None] | None = None,
    incident_scale: float = 1.0,
) -> SeedResult:
    """Create the reference tenancy and `days` days of requests ending yesterday (UTC), then roll up.

    `incident_scale` multiplies the labelled incidents' request counts. 1 is the workload the anomaly evaluation
    is stated on; `make seed` uses more, so that the demo's incidents cost enough to reach the warning and
    critical bars (at 400 requests a day, all four stay under the $10 warning bar otherwise).
    """
    import time

    started = time.monotonic()
    rng = np.random.default_rng(seed)
    end = end or clock.today()
    start = end - dt.timedelta(days=days)
    with transaction.atomic():
        tenancy = seed_tenancy()
    models = [m[0] for m in MODEL_MIX] + [PREMIUM_SWITCH_MODEL]
    prices = price_table(models=models, on=start)

    base = baseline_batch(rng, tenancy, start=start, days=days, per_day=per_day)
    extra, labels = incident_batches(rng, tenancy, start=start, days=days, per_day=per_day, incident_scale=incident_scale)
    batch = _concat([base, *extra])
    order = np.argsort(batch.ts, kind="stable")  # time order keeps the BRIN index tight
    batch = Batch(**{f: getattr(batch, f)[order] for f in Batch.__dataclass_fields__})
    render = rows_to_copy_lines(batch, tenancy, prices, rng)
    total = len(batch.ts)

    columns = ", ".join(COPY_COLUMNS)
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Truncating in the same transaction lets COPY write frozen rows: the first read then has
            # no hint bits to set on 1.5M fresh rows (which otherwise triples the first rollup's time).
            freeze = reset or not LLMRequest.objects.exists()
            if freeze:
                try:
                    with transaction.atomic():
                        cursor.execute("TRUNCATE llm_requests, cost_daily_summary, seed_incidents")
                except DatabaseError:  # e.g. rows inserted earlier in an enclosing transaction
                    freeze = False
                    for table in ("llm_requests", "cost_daily_summary", "seed_incidents"):
                        cursor.execute(f"DELETE FROM {table}")
            options = " WITH (FREEZE)" if freeze else ""
            # Every id below comes from rows we just read, so the 5 foreign-key checks per row (deferred
            # triggers, run at COMMIT) only cost time: skip them where the role may (superuser).
            try:
                with transaction.atomic():
                    cursor.execute("SET LOCAL session_replication_role = replica")
            except DatabaseError:
                pass
            # Into an empty table, building the secondary indexes once afterwards beats updating
            # them row by row. Definitions are read back from the catalog, so names stay Django's.
            rebuild: list[str] = []
            if freeze:
                cursor.execute(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                    "AND tablename = 'llm_requests' AND indexdef NOT LIKE 'CREATE UNIQUE%%'"
                )
                for name, definition in cursor.fetchall():
                    cursor.execute(f'DROP INDEX "{name}"')
                    rebuild.append(definition)
            with cursor.copy(f"COPY llm_requests ({columns}) FROM STDIN{options}") as copy:
                for lo in range(0, total, chunk):
                    hi = min(total, lo + chunk)
                    copy.write(render(lo, hi))
                    if progress:
                        progress(hi - lo)
            if rebuild:
                cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
                for definition in rebuild:
                    cursor.execute(definition)
        SeedIncident.objects.bulk_create(SeedIncident(**label) for label in labels)

    from apps.ledger.services import cost_rollup

    cost_rollup(since=start, until=end)
    seed_budgets(tenancy=tenancy)
    from apps.budgets.services import budget_reconcile

    budget_reconcile()  # counters of the current period catch up with the seeded ledger
    return SeedResult(
        rows=total,
        incidents=len(labels),
        summary_rows=CostDailySummary.objects.count(),
        demo_secret=tenancy.demo_secret,
        seconds=time.monotonic() - started,
    )


def seed_budgets(*, tenancy: SeedTenancy) -> int:
    """Monthly org caps, a daily cap on each org's first team and user, through the budgets service.

    Caps are set from the seeded spend so that the dashboards show a spread of utilisation.
    Idempotent: existing budgets of the same scope and period are left alone.
    """
    from apps.budgets.models import Budget
    from apps.budgets.services import budget_create
    from apps.tenancy.models import Member, Team

    monthly_caps = [Decimal("1500"), Decimal("1200"), Decimal("900"), Decimal("800"), Decimal("700"), Decimal("500"), Decimal("400"), Decimal("300")]
    created = 0
    for org_id, cap in zip(tenancy.org_ids, monthly_caps, strict=True):
        scale = cap / Decimal(1500)
        wanted = [
            Budget(scope="org", org_id=org_id, period="monthly", cap_usd=cap, action="alert_only"),
        ]
        team = Team.objects.filter(org_id=org_id).order_by("id").first()
        if team:
            wanted.append(Budget(scope="team", org_id=org_id, team=team, period="monthly", cap_usd=(cap / 2).quantize(Decimal("1")), action="downgrade"))
            member = Member.objects.filter(team=team).order_by("id").first()
            if member:
                wanted.append(
                    Budget(scope="user", org_id=org_id, team=team, member=member, period="daily",
                           cap_usd=max(Decimal("5"), (Decimal("25") * scale).quantize(Decimal("1"))), action="block")
                )  # fmt: skip
        for budget in wanted:
            exists = Budget.objects.filter(
                scope=budget.scope, org_id=budget.org_id, team=budget.team, member=budget.member, period=budget.period
            ).exists()
            if not exists:
                budget_create(budget=budget)
                created += 1
    return created


def seeded_already() -> bool:
    return LLMRequest.objects.exists()


__all__ = ["seed_demo", "seeded_already"]
