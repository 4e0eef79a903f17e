"""The monthly cost of a reference load, with and without finops' levers. Pure arithmetic, Decimal throughout.

The input is one CSV (`docs/cost-model/reference-load.csv`) with four kinds of rows:

- `price`: list price per 1M tokens of a model, with the date it took effect (from fixtures/prices.json);
- `load`: requests per month of one tenant on one model, with mean prompt, provider-cached and completion tokens;
- `param`: properties of the load that are not levers (failed and rejected shares, the share of requests that
  pin a model, the routing ladder's cheap and premium models);
- `lever`: a lever's rate in a set (`measured`: from `make eval`; `seed`: the rates `seed_demo` generates with),
  with where it came from.

Cost of load row r (N requests on model m, mean tokens P prompt, K of them provider-cached, C completion) at model x:

    u(r, x)   = ((P − K)·input_x + K·cached_input_x + C·output_x) / 1e6     (cached_input_x = input_x without a discount)
    billed(r) = N · (1 − exact − semantic) · (1 − failed − rejected)
    cost(r)   = billed(r) · [pinned · u(r, m) + (1 − pinned) · routed(r)] + escalations(r) + embeddings(r)

    routed(r)      routing off: u(r, premium)            (what reports call the premium counterfactual)
                   as recorded: u(r, m)                  (the load's model column is already the routed mix)
                   measured p:  (1 − p)·u(r, cheap) + p·u(r, premium)
    escalations(r) with measured routing: billed(r)·(1 − pinned)·e·u(r, premium)   (the cheap answer was paid too)
                   as recorded: billed(r)·e·u₀(r, cheap) on premium-tier rows        (u₀: no cached tokens; the
                                cost `seed_demo` books on an escalated row besides the premium answer)
    embeddings(r)  N·(1 − exact)·P·embedding_price / 1e6  (every exact miss is embedded for the semantic lookup;
                   the whole prompt is counted, an upper bound: the cache embeds the last user message)
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from apps.ledger.money import TOKENS_PER_PRICE_UNIT, quantize_usd
from apps.ledger.pricing import token_charge

ZERO = Decimal(0)
ONE = Decimal(1)
AS_RECORDED = "as_recorded"
ACTUAL_MIX = "no levers, actual mix"
ALL_LEVERS_SEED_CACHE = "all levers, seed cache rates"
ALL_LEVERS_REPLAY_CACHE = "all levers, replay cache rates"

CSV_COLUMNS = [
    "kind", "name", "set", "tenant", "model", "provider", "tier", "requests_month", "prompt_tokens", "cached_tokens",
    "completion_tokens", "input_per_1m", "cached_input_per_1m", "output_per_1m", "effective_from", "value", "source",
]  # fmt: skip
# Which rate a lever takes, first found: measured (cache rates on the seeded ledger, routing rates by the router
# evaluation), the cache eval's workload replay (many verbatim repeats: it flatters the cache), the seed's configuration.
LEVER_SETS = ("measured", "replay", "seed")
LEVER_LABELS = {"measured": "measured", "replay": "workload replay", "seed": "seed configuration, not measured"}
LEVER_NAMES = ("exact_hit_rate", "semantic_hit_rate", "routing_premium_share", "escalation_rate", "embedding_model")
PARAM_NAMES = ("failed_rate", "rejected_rate", "pinned_share", "cheap_model", "premium_model")


class CostModelError(ValueError):
    pass


@dataclass(frozen=True)
class PriceRow:
    model: str
    provider: str
    input_per_1m: Decimal
    cached_input_per_1m: Decimal | None
    output_per_1m: Decimal
    effective_from: dt.date | None
    source: str = ""

    @property
    def cached_or_input(self) -> Decimal:
        return self.cached_input_per_1m if self.cached_input_per_1m is not None else self.input_per_1m


@dataclass(frozen=True)
class LoadRow:
    tenant: str
    model: str
    tier: str
    requests: Decimal
    prompt_tokens: Decimal
    cached_tokens: Decimal
    completion_tokens: Decimal


@dataclass(frozen=True)
class Lever:
    value: str
    source: str

    def rate(self) -> Decimal:
        return Decimal(self.value)


@dataclass
class ReferenceLoad:
    prices: dict[str, PriceRow]
    rows: list[LoadRow]
    params: dict[str, str]
    levers: dict[tuple[str, str], Lever] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # param/lever name → source text

    @property
    def requests(self) -> Decimal:
        return sum((r.requests for r in self.rows), ZERO)

    def param(self, name: str) -> str:
        try:
            return self.params[name]
        except KeyError:
            raise CostModelError(f"the CSV has no param row '{name}'") from None

    def rate(self, name: str) -> Decimal:
        return Decimal(self.param(name))

    def price(self, model: str) -> PriceRow:
        try:
            return self.prices[model]
        except KeyError:
            raise CostModelError(f"model '{model}' has no price row in the CSV") from None

    def lever(self, name: str) -> tuple[Lever, str]:
        """The measured lever, else the replay's, else the seed configuration's (the second value says which set)."""
        for lever_set in LEVER_SETS:
            lever = self.levers.get((lever_set, name))
            if lever is not None and lever.value != "":
                return lever, lever_set
        raise CostModelError(f"no lever row '{name}' in the CSV")


@dataclass(frozen=True)
class Scenario:
    name: str
    exact: Decimal = ZERO
    semantic: Decimal = ZERO
    routing: Decimal | str | None = None  # None: off (router-chosen traffic at premium); AS_RECORDED; or the premium share p
    escalation: Decimal = ZERO
    embedding_model: str | None = None
    note: str = ""


@dataclass(frozen=True)
class ScenarioCost:
    scenario: Scenario
    total: Decimal  # USD per month, unrounded
    upstream: Decimal
    escalations: Decimal
    embeddings: Decimal
    billed_requests: Decimal
    by_tenant: dict[str, Decimal]

    def usd(self, places: int = 2) -> Decimal:
        return quantize_usd(self.total, places=places)


# --------------------------------------------------------------------------- arithmetic


def unit_cost(row: LoadRow, price: PriceRow, *, cached: bool = True) -> Decimal:
    """Cost of one request of `row` at `price`, in USD (unrounded)."""
    micro = token_charge(
        prompt=row.prompt_tokens, cached=row.cached_tokens if cached else ZERO, cache_write=ZERO,
        completion=row.completion_tokens, input_rate=price.input_per_1m, cached_rate=price.cached_or_input,
        write_rate=price.input_per_1m, output_rate=price.output_per_1m,
    )  # fmt: skip
    return micro / TOKENS_PER_PRICE_UNIT


def scenario_cost(load: ReferenceLoad, scenario: Scenario) -> ScenarioCost:
    failed, rejected, pinned = load.rate("failed_rate"), load.rate("rejected_rate"), load.rate("pinned_share")
    cheap, premium = load.price(load.param("cheap_model")), load.price(load.param("premium_model"))
    embed_price = load.price(scenario.embedding_model).input_per_1m if scenario.embedding_model else ZERO
    if scenario.exact + scenario.semantic > ONE:
        raise CostModelError(f"{scenario.name}: exact + semantic hit rates exceed 1")
    served_share = (ONE - scenario.exact - scenario.semantic) * (ONE - failed - rejected)
    upstream = escalations = embeddings = billed_total = ZERO
    by_tenant: dict[str, Decimal] = {}
    for row in load.rows:
        own = unit_cost(row, load.price(row.model))
        billed = row.requests * served_share
        if scenario.routing is None:
            routed = unit_cost(row, premium)
        elif scenario.routing == AS_RECORDED:
            routed = own
        else:
            p = Decimal(scenario.routing)
            routed = (ONE - p) * unit_cost(row, cheap) + p * unit_cost(row, premium)
        row_upstream = billed * (pinned * own + (ONE - pinned) * routed)
        row_escalations = ZERO
        if scenario.escalation:
            if scenario.routing == AS_RECORDED:
                if row.tier == "premium":
                    row_escalations = billed * scenario.escalation * unit_cost(row, cheap, cached=False)
            elif scenario.routing is not None:
                row_escalations = billed * (ONE - pinned) * scenario.escalation * unit_cost(row, premium)
        row_embeddings = row.requests * (ONE - scenario.exact) * row.prompt_tokens * embed_price / TOKENS_PER_PRICE_UNIT
        upstream += row_upstream
        escalations += row_escalations
        embeddings += row_embeddings
        billed_total += billed
        by_tenant[row.tenant] = by_tenant.get(row.tenant, ZERO) + row_upstream + row_escalations + row_embeddings
    return ScenarioCost(
        scenario=scenario,
        total=upstream + escalations + embeddings,
        upstream=upstream,
        escalations=escalations,
        embeddings=embeddings,
        billed_requests=billed_total,
        by_tenant=by_tenant,
    )


def _pct(rate: Decimal) -> str:
    return f"{rate * 100:.1f} %"


def scenarios(load: ReferenceLoad) -> list[Scenario]:
    """No levers, each lever alone, all of them, and the seed configuration (the one the ledger can confirm)."""
    exact, exact_set = load.lever("exact_hit_rate")
    semantic, semantic_set = load.lever("semantic_hit_rate")
    routing, routing_set = load.lever("routing_premium_share")
    escalation, escalation_set = load.lever("escalation_rate")
    embedding, _ = load.lever("embedding_model")
    labels = LEVER_LABELS
    p: Decimal | str = AS_RECORDED if routing.value == AS_RECORDED else routing.rate()
    routing_text = "as recorded" if isinstance(p, str) else f"premium {_pct(p)}, cheap {_pct(ONE - p)}"
    base = Scenario("no levers", note="no cache; router-chosen traffic at the premium model")
    actual = Scenario(ACTUAL_MIX, routing=AS_RECORDED, note="no cache; every request at the model the load records")
    out = [
        base,
        actual,
        replace(base, name="exact cache", exact=exact.rate(), note=f"{_pct(exact.rate())} hits ({labels[exact_set]})"),
        replace(
            base, name="semantic cache", semantic=semantic.rate(), embedding_model=embedding.value,
            note=f"{_pct(semantic.rate())} hits ({labels[semantic_set]}), embeddings by {embedding.value}",
        ),
        replace(base, name="routing mix", routing=p, note=f"{routing_text} ({labels[routing_set]})"),
        replace(
            base, name="routing + confidence escalations", routing=p, escalation=escalation.rate(),
            note=f"{_pct(escalation.rate())} re-asked one tier up ({labels[escalation_set]})",
        ),
        Scenario(
            "all levers", exact=exact.rate(), semantic=semantic.rate(), routing=p, escalation=escalation.rate(),
            embedding_model=embedding.value, note="every lever above at once",
        ),
    ]  # fmt: skip
    replay_exact, replay_semantic = load.levers.get(("replay", "exact_hit_rate")), load.levers.get(("replay", "semantic_hit_rate"))
    seed_exact, seed_semantic = load.levers.get(("seed", "exact_hit_rate")), load.levers.get(("seed", "semantic_hit_rate"))
    if replay_exact is not None and replay_semantic is not None and exact_set == "measured":
        out.append(
            replace(
                out[-1], name=ALL_LEVERS_REPLAY_CACHE, exact=replay_exact.rate(), semantic=replay_semantic.rate(),
                note=f"as all levers, with the cache eval's workload replay rates ({_pct(replay_exact.rate())} exact, "
                f"{_pct(replay_semantic.rate())} semantic: a replay with many verbatim repeats) instead of the ledger's",
            )
        )  # fmt: skip
    elif seed_exact is not None and seed_semantic is not None and exact_set == "replay":
        out.append(
            replace(
                out[-1], name=ALL_LEVERS_SEED_CACHE, exact=seed_exact.rate(), semantic=seed_semantic.rate(),
                note=f"as all levers, with seed_demo's cache rates ({_pct(seed_exact.rate())} exact, "
                f"{_pct(seed_semantic.rate())} semantic: what the seeded ledger runs at) instead of the replay's",
            )
        )  # fmt: skip
    seed = seed_scenario(load)
    if seed is not None:
        out.append(seed)
    return out


# --------------------------------------------------------------------------- sensitivity


@dataclass(frozen=True)
class Sensitivity:
    input: str
    low: Decimal  # the scenario's total with the input 10 % lower
    high: Decimal  # … 10 % higher
    base: Decimal

    @property
    def swing(self) -> Decimal:
        return abs(self.high - self.low)


def _scaled_prices(load: ReferenceLoad, model: str, factor: Decimal) -> ReferenceLoad:
    price = load.price(model)
    scaled = replace(
        price,
        input_per_1m=price.input_per_1m * factor,
        cached_input_per_1m=None if price.cached_input_per_1m is None else price.cached_input_per_1m * factor,
        output_per_1m=price.output_per_1m * factor,
    )
    return replace(load, prices={**load.prices, model: scaled})


def _scaled_rows(load: ReferenceLoad, factor: Decimal, *fields: str) -> ReferenceLoad:
    rows = [replace(r, **{f: getattr(r, f) * factor for f in fields}) for r in load.rows]
    return replace(load, rows=rows)


def sensitivity(load: ReferenceLoad, scenario: Scenario, *, step: Decimal = Decimal("0.1")) -> list[Sensitivity]:
    """The scenario's total with each input moved by ±step (relative), largest swing first: which input moves
    the total most. Rates are clamped to 0..1."""

    def rate(value: Decimal, factor: Decimal) -> Decimal:
        return min(ONE, max(ZERO, value * factor))

    cases: list[tuple[str, Callable[[Decimal], tuple[ReferenceLoad, Scenario]]]] = [
        ("requests per month", lambda f: (_scaled_rows(load, f, "requests"), scenario)),
        ("prompt tokens per request", lambda f: (_scaled_rows(load, f, "prompt_tokens", "cached_tokens"), scenario)),
        ("completion tokens per request", lambda f: (_scaled_rows(load, f, "completion_tokens"), scenario)),
        (f"{load.param('premium_model')} list prices", lambda f: (_scaled_prices(load, load.param("premium_model"), f), scenario)),
        (f"{load.param('cheap_model')} list prices", lambda f: (_scaled_prices(load, load.param("cheap_model"), f), scenario)),
        ("exact-cache hit rate", lambda f: (load, replace(scenario, exact=rate(scenario.exact, f)))),
        ("semantic-cache hit rate", lambda f: (load, replace(scenario, semantic=rate(scenario.semantic, f)))),
        ("escalation rate", lambda f: (load, replace(scenario, escalation=rate(scenario.escalation, f)))),
    ]
    share = scenario.routing
    if isinstance(share, Decimal):
        cases.append(("routing premium share", lambda f: (load, replace(scenario, routing=rate(share, f)))))
    base = scenario_cost(load, scenario).total
    out = []
    for name, vary in cases:
        low, high = (scenario_cost(*vary(ONE + sign * step)).total for sign in (-1, 1))
        out.append(Sensitivity(input=name, low=low, high=high, base=base))
    return sorted(out, key=lambda s: (-s.swing, s.input))


def seed_scenario(load: ReferenceLoad) -> Scenario | None:
    """The rates seed_demo generates with: what the seeded ledger must show (the reconcile's prediction)."""
    try:
        get = {name: load.levers[("seed", name)] for name in LEVER_NAMES}
    except KeyError:
        return None
    routing = get["routing_premium_share"].value
    return Scenario(
        "seed configuration",
        exact=get["exact_hit_rate"].rate(),
        semantic=get["semantic_hit_rate"].rate(),
        routing=AS_RECORDED if routing == AS_RECORDED else Decimal(routing),
        escalation=get["escalation_rate"].rate(),
        embedding_model=get["embedding_model"].value or None,
        note="seed_demo's rates; the ledger reconcile compares against this one",
    )


# --------------------------------------------------------------------------- CSV


def _dec(value: str, *, what: str) -> Decimal:
    try:
        return Decimal(value)
    except ArithmeticError:
        raise CostModelError(f"{what}: '{value}' is not a number") from None


def load_read(path: Path | str) -> ReferenceLoad:
    return load_parse(Path(path).read_text())


def load_parse(text: str) -> ReferenceLoad:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"kind", "name", "model", "value"} - set(reader.fieldnames or [])
    if missing:
        raise CostModelError(f"CSV lacks the columns {sorted(missing)}")
    load = ReferenceLoad(prices={}, rows=[], params={})
    for n, rec in enumerate(reader, start=2):
        rec = {k: (v or "").strip() for k, v in rec.items() if k}
        kind = rec["kind"]
        where = f"line {n}"
        if kind == "price":
            cached = rec.get("cached_input_per_1m", "")
            eff = rec.get("effective_from", "")
            load.prices[rec["model"]] = PriceRow(
                model=rec["model"],
                provider=rec.get("provider", ""),
                input_per_1m=_dec(rec["input_per_1m"], what=where),
                cached_input_per_1m=_dec(cached, what=where) if cached else None,
                output_per_1m=_dec(rec["output_per_1m"], what=where),
                effective_from=dt.date.fromisoformat(eff) if eff else None,
                source=rec.get("source", ""),
            )
        elif kind == "load":
            load.rows.append(
                LoadRow(
                    tenant=rec["tenant"],
                    model=rec["model"],
                    tier=rec.get("tier", ""),
                    requests=_dec(rec["requests_month"], what=where),
                    prompt_tokens=_dec(rec["prompt_tokens"], what=where),
                    cached_tokens=_dec(rec.get("cached_tokens") or "0", what=where),
                    completion_tokens=_dec(rec["completion_tokens"], what=where),
                )
            )
        elif kind == "param":
            load.params[rec["name"]] = rec["value"]
            load.notes[rec["name"]] = rec.get("source", "")
        elif kind == "lever":
            lever_set = rec.get("set") or "measured"
            if lever_set not in LEVER_SETS:
                raise CostModelError(f"{where}: lever set '{lever_set}' is not one of {LEVER_SETS}")
            load.levers[(lever_set, rec["name"])] = Lever(value=rec["value"], source=rec.get("source", ""))
        elif kind:
            raise CostModelError(f"{where}: unknown row kind '{kind}'")
    for row in load.rows:
        load.price(row.model)
        if row.cached_tokens > row.prompt_tokens:
            raise CostModelError(f"{row.tenant}/{row.model}: more cached than prompt tokens")
    return load


def load_render(load: ReferenceLoad) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for name, value in load.params.items():
        writer.writerow({"kind": "param", "name": name, "value": value, "source": load.notes.get(name, "")})
    for (lever_set, name), lever in load.levers.items():
        writer.writerow({"kind": "lever", "name": name, "set": lever_set, "value": lever.value, "source": lever.source})
    for price in load.prices.values():
        writer.writerow(
            {
                "kind": "price", "model": price.model, "provider": price.provider, "input_per_1m": price.input_per_1m,
                "cached_input_per_1m": "" if price.cached_input_per_1m is None else price.cached_input_per_1m,
                "output_per_1m": price.output_per_1m,
                "effective_from": price.effective_from.isoformat() if price.effective_from else "", "source": price.source,
            }
        )  # fmt: skip
    for row in load.rows:
        writer.writerow(
            {
                "kind": "load", "tenant": row.tenant, "model": row.model, "provider": load.prices[row.model].provider,
                "tier": row.tier, "requests_month": row.requests, "prompt_tokens": row.prompt_tokens,
                "cached_tokens": row.cached_tokens, "completion_tokens": row.completion_tokens,
            }
        )  # fmt: skip
    return out.getvalue()


def tokens_total(rows: Iterable[LoadRow]) -> tuple[Decimal, Decimal]:
    prompt = sum((r.requests * r.prompt_tokens for r in rows), ZERO)
    completion = sum((r.requests * r.completion_tokens for r in rows), ZERO)
    return prompt, completion


# --------------------------------------------------------------------------- reconcile


@dataclass(frozen=True)
class Reconciliation:
    """The seed-configuration prediction against a measured ledger, per request and at the measured volume."""

    predicted_total: Decimal  # at the load's volume
    predicted_requests: Decimal
    measured_rows: int
    measured_cost: Decimal
    incident_rows: int
    incident_cost: Decimal
    tolerance: Decimal = Decimal("0.05")

    @property
    def baseline_rows(self) -> int:
        return self.measured_rows - self.incident_rows

    @property
    def baseline_cost(self) -> Decimal:
        return self.measured_cost - self.incident_cost

    @property
    def predicted_per_request(self) -> Decimal:
        return self.predicted_total / self.predicted_requests

    @property
    def measured_per_request(self) -> Decimal:
        return self.baseline_cost / Decimal(self.baseline_rows) if self.baseline_rows else ZERO

    @property
    def predicted_at_volume(self) -> Decimal:
        return self.predicted_per_request * Decimal(self.baseline_rows)

    @property
    def gap(self) -> Decimal:
        """(measured − predicted) / predicted, incidents excluded, at the measured volume."""
        return (self.baseline_cost - self.predicted_at_volume) / self.predicted_at_volume if self.predicted_at_volume else ZERO

    @property
    def raw_gap(self) -> Decimal:
        """(whole ledger − prediction at the load's volume) / prediction: volume and incidents included."""
        return (self.measured_cost - self.predicted_total) / self.predicted_total if self.predicted_total else ZERO

    @property
    def within(self) -> bool:
        return abs(self.gap) <= self.tolerance


# --------------------------------------------------------------------------- spreadsheet


def _col(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA."""
    name = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        name = chr(65 + rem) + name
    return name


def formulas_render(
    load: ReferenceLoad, chosen: list[Scenario], infra: list[tuple[str, Decimal, Decimal, Decimal]] | None = None
) -> str:
    """The cost model as a spreadsheet (CSV whose cells hold formulas): every cost line and total is a formula
    over the inputs in the same sheet, so a spreadsheet recomputes it without Python. The layout and each
    formula follow `scenario_cost` term by term; `evals/tests/costmodel/test_cost_model.py` recomputes it."""
    rows: list[list[str]] = [
        ["finops cost model: inputs (values) and costs (formulas, USD per month); written by manage.py cost_model"],
        [],
        ["parameter", "value"],
    ]
    param_cell = {}
    for name in ("failed_rate", "rejected_rate", "pinned_share"):
        rows.append([name, str(load.rate(name))])
        param_cell[name] = f"$B${len(rows)}"
    rows += [[], ["model", "input_per_1m", "cached_input_per_1m (input when no discount)", "output_per_1m"]]
    price_row = {}
    for price in load.prices.values():
        rows.append([price.model, str(price.input_per_1m), str(price.cached_or_input), str(price.output_per_1m)])
        price_row[price.model] = len(rows)
    rows += [[], ["scenario", "exact_hit_rate", "semantic_hit_rate", "routing_premium_share", "escalation_rate",
                  "embedding_price_per_1m", "routing"]]  # fmt: skip
    scen_row = {}
    for sc in chosen:
        share = str(sc.routing) if isinstance(sc.routing, Decimal) else ""
        routing = "premium" if sc.routing is None else "as recorded" if sc.routing == AS_RECORDED else "share"
        embed = load.price(sc.embedding_model).input_per_1m if sc.embedding_model else ZERO
        rows.append([sc.name, str(sc.exact), str(sc.semantic), share, str(sc.escalation), str(embed), routing])
        scen_row[sc.name] = len(rows)
    cheap, premium = load.param("cheap_model"), load.param("premium_model")
    head = ["tenant", "model", "tier", "requests_month", "prompt_tokens", "cached_tokens", "completion_tokens",
            "u_own", "u_cheap", "u_premium", "u_cheap_uncached"]  # fmt: skip
    first_cost_col = len(head)
    rows += [[], head + [f"cost: {sc.name}" for sc in chosen]]
    first_load = len(rows) + 1
    p, f, r = param_cell["pinned_share"], param_cell["failed_rate"], param_cell["rejected_rate"]

    def unit(n: int, model: str, cached: bool = True) -> str:
        pr = price_row[model]
        if not cached:
            return f"=(E{n}*$B${pr}+G{n}*$D${pr})/1000000"
        return f"=((E{n}-F{n})*$B${pr}+F{n}*$C${pr}+G{n}*$D${pr})/1000000"

    for row in load.rows:
        n = len(rows) + 1
        line = [row.tenant, row.model, row.tier, str(row.requests), str(row.prompt_tokens), str(row.cached_tokens),
                str(row.completion_tokens), unit(n, row.model), unit(n, cheap), unit(n, premium), unit(n, cheap, False)]  # fmt: skip
        for sc in chosen:
            s = scen_row[sc.name]
            billed = f"D{n}*(1-$B${s}-$C${s})*(1-{f}-{r})"
            routed = f"J{n}" if sc.routing is None else f"H{n}" if sc.routing == AS_RECORDED else f"((1-$D${s})*I{n}+$D${s}*J{n})"
            terms = [f"{billed}*({p}*H{n}+(1-{p})*{routed})"]
            if sc.escalation:
                if sc.routing == AS_RECORDED and row.tier == "premium":
                    terms.append(f"{billed}*$E${s}*K{n}")
                elif sc.routing is not None and sc.routing != AS_RECORDED:
                    terms.append(f"{billed}*(1-{p})*$E${s}*J{n}")
            terms.append(f"D{n}*(1-$B${s})*E{n}*$F${s}/1000000")
            line.append("=" + "+".join(terms))
        rows.append(line)
    last_load = len(rows)
    rows.append([])
    rows.append(["total"] + [""] * (first_cost_col - 1) + [
        f"=SUM({_col(first_cost_col + i)}{first_load}:{_col(first_cost_col + i)}{last_load})" for i in range(len(chosen))
    ])  # fmt: skip
    for tenant in dict.fromkeys(r.tenant for r in load.rows):
        numbers = [first_load + i for i, r in enumerate(load.rows) if r.tenant == tenant]
        rows.append([f"tenant: {tenant}"] + [""] * (first_cost_col - 1) + [
            "=SUM(" + ",".join(f"{_col(first_cost_col + i)}{k}" for k in numbers) + ")" for i in range(len(chosen))
        ])  # fmt: skip
    if infra:
        # Infrastructure: quantity × unit price × hours (or GB-months); all-in = a scenario's LLM spend + these lines.
        rows += [[], ["infrastructure", "quantity", "unit_price_usd", "hours_or_months", "monthly_usd"]]
        first_infra = len(rows) + 1
        for label, quantity, unit_price, multiplier in infra:
            n = len(rows) + 1
            rows.append([label, str(quantity), str(unit_price), str(multiplier), f"=B{n}*C{n}*D{n}"])
        rows.append(["infrastructure total", "", "", "", f"=SUM(E{first_infra}:E{len(rows)})"])
        infra_total = f"$E${len(rows)}"
        total_row = next(i for i, row in enumerate(rows, 1) if row and row[0] == "total")
        rows.append(["all-in (LLM spend + infrastructure)"] + [""] * (first_cost_col - 1) + [
            f"={_col(first_cost_col + i)}{total_row}+{infra_total}" for i in range(len(chosen))
        ])  # fmt: skip
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()
