"""Writes of the cost model: the reference CSV (from the seed generator and the eval measurements), the chart, the README."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from apps.ledger.money import quantize_usd
from evals.costmodel.infra import InfraLine, Sizing, infra_lines, infra_prices, size_gateway
from evals.costmodel.model import (
    ACTUAL_MIX,
    ALL_LEVERS_REPLAY_CACHE,
    ALL_LEVERS_SEED_CACHE,
    AS_RECORDED,
    ONE,
    Lever,
    Reconciliation,
    ReferenceLoad,
    ScenarioCost,
    formulas_render,
    load_render,
    scenario_cost,
    scenarios,
    sensitivity,
    tokens_total,
)
from evals.costmodel.reference import reference_load_build
from evals.costmodel.selectors import (
    LedgerMeasurement,
    cache_levers_measured,
    embedding_lever,
    ledger_cache_levers,
    router_measure,
)
from finops import clock

COST_MODEL_DIR = Path(settings.BASE_DIR) / "docs" / "cost-model"
REFERENCE_CSV = COST_MODEL_DIR / "reference-load.csv"
FORMULAS_CSV = COST_MODEL_DIR / "cost-model-formulas.csv"


@dataclass
class Refresh:
    load: ReferenceLoad
    fallbacks: list[str]  # levers for which no measurement was found (the seed's rate stands in)


def reference_load_refresh(*, csv_path: Path = REFERENCE_CSV, measure_router: bool = True, progress: bool = False) -> Refresh:
    """Rebuild the reference CSV: load rows from the seed generator, list prices from the fixture, levers from `make eval`.

    Cache hit rates are measured on the seeded ledger when there is one (the benchmarks' reference month, else this
    project's database); the cache eval's workload replay is kept as its own labelled lever set."""
    measured: dict[str, Lever] = dict(ledger_cache_levers())
    replay = cache_levers_measured()
    if measure_router:
        router = router_measure(progress=progress)
        if router is not None:
            measured.update(router.levers())
    measured["embedding_model"] = embedding_lever()
    load = reference_load_build(measured=measured, replay=replay)
    fallbacks = [
        name
        for name in ("exact_hit_rate", "semantic_hit_rate", "routing_premium_share", "escalation_rate")
        if name not in measured and name not in replay
    ]
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text(load_render(load))
    return Refresh(load=load, fallbacks=fallbacks)


def cost_model_run(load: ReferenceLoad) -> list[ScenarioCost]:
    return [scenario_cost(load, scenario) for scenario in scenarios(load)]


def reconcile(load: ReferenceLoad, results: list[ScenarioCost], measurement: LedgerMeasurement) -> Reconciliation:
    seed = next(r for r in results if r.scenario.name == "seed configuration")
    return Reconciliation(
        predicted_total=seed.total,
        predicted_requests=load.requests,
        measured_rows=measurement.rows,
        measured_cost=measurement.cost,
        incident_rows=measurement.incident_rows,
        incident_cost=measurement.incident_cost,
    )


# --------------------------------------------------------------------------- output


def usd(value: Decimal) -> str:
    return f"${quantize_usd(value, places=2):,}"


def results_table(results: list[ScenarioCost]) -> str:
    """Each scenario against both baselines: always-premium routing ("no levers") and the load's actual mix."""
    base = results[0].total
    actual = next((r.total for r in results if r.scenario.name == ACTUAL_MIX), None)

    def delta(r: ScenarioCost, against: Decimal | None) -> str:
        return "—" if against is None or r.total == against else f"{100 * (r.total - against) / against:+.1f} %"

    lines = [
        "| scenario | monthly cost | vs no levers (always premium) | vs no levers (actual mix) | of which escalations | embeddings | lever setting |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario.name} | {usd(r.total)} | {delta(r, base)} | {delta(r, actual)} | {usd(r.escalations)} "
            f"| {usd(r.embeddings)} | {r.scenario.note} |"
        )
    return "\n".join(lines)


def sensitivity_table(load: ReferenceLoad, result: ScenarioCost) -> str:
    lines = [
        f"| input (±10 %) | {result.scenario.name}, input −10 % | input +10 % | swing | swing, share of the total |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in sensitivity(load, result.scenario):
        lines.append(
            f"| {row.input} | {usd(row.low)} | {usd(row.high)} | {usd(row.swing)} | {100 * row.swing / row.base:.1f} % |"
        )
    return "\n".join(lines)


def infra_estimate(load: ReferenceLoad, *, bench_md: Path | None = None) -> tuple[Sizing, list[InfraLine], dict] | None:
    """Size and price the infrastructure for the load from `make bench`'s CPU figures; None without them."""
    from evals.costmodel.selectors import BENCHMARKS_MD, bench_cpu_measured

    measured = bench_cpu_measured(path=bench_md or BENCHMARKS_MD)
    if {"cpu_ms_per_request", "embed_cpu_ms"} - set(measured):
        return None
    hours, prices = infra_prices()
    exact, _ = load.lever("exact_hit_rate")
    seed_exact = load.levers.get(("seed", "exact_hit_rate"))
    sizing = size_gateway(
        requests_month=load.requests, cpu_ms_per_request=measured["cpu_ms_per_request"][0],
        embed_cpu_ms=measured["embed_cpu_ms"][0],
        exact_hit_rate=min(exact.rate(), seed_exact.rate()) if seed_exact else exact.rate(),  # the lower rate: more embeddings
        hours_per_month=hours, vcpus=Decimal(prices["gateway_instance"]["vcpus"]),
    )  # fmt: skip
    return sizing, infra_lines(sizing), {k: v[1] for k, v in measured.items()}


def _infra_cells(lines: list[InfraLine]) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    hours, _ = infra_prices()
    return [(f"{line.item}: {line.sku}", line.quantity, line.unit_price, hours if line.unit == "hour" else ONE) for line in lines]


def formulas_text(load: ReferenceLoad, results: list[ScenarioCost]) -> str:
    infra = infra_estimate(load)
    return formulas_render(load, [r.scenario for r in results], _infra_cells(infra[1]) if infra else None)


def formulas_write(load: ReferenceLoad, results: list[ScenarioCost], path: Path = FORMULAS_CSV) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(formulas_text(load, results))
    return path


def infra_markdown(load: ReferenceLoad, results: list[ScenarioCost]) -> list[str]:
    infra = infra_estimate(load)
    if infra is None:
        return ["Not sized: `docs/benchmarks.md` lacks the gateway's or the embedding's CPU figures (`make bench`).", ""]
    sizing, lines, sources = infra
    total = sum((line.monthly for line in lines), Decimal(0))
    by_name = {r.scenario.name: r for r in results}
    remote = _remote_embedding_monthly(load, results)
    out = [
        f"Sized for the reference load's busiest hour: {sizing.requests_month:,.0f} requests a month is "
        f"{sizing.peak_rps / sizing.peak_factor:.2f} req/s on average and {sizing.peak_rps:.2f} req/s at the peak "
        f"(×{sizing.peak_factor}, the seed's busiest hour of the week). Each request costs the gateway "
        f"{sizing.cpu_ms_per_request} ms of CPU ({sources['cpu_ms_per_request']}), and each exact miss at most "
        f"{sizing.embed_cpu_ms} ms more for the local embedding, an upper bound: since issue #18 the full model runs "
        "only to confirm a candidate and, within the store budget, to store a miss "
        f"({sources['embed_cpu_ms']}; at the lower of the "
        f"replay's and the seed's exact hit rates, {100 * sizing.exact_hit_rate:.1f} %). Prices: "
        "`fixtures/infra_prices.json`, AWS on-demand list prices (us-east-1), copied by hand from the pages it names "
        "and not re-checked by any test.",
        "",
        "| line | quantity | unit price | monthly | basis |",
        "|---|---:|---:|---:|---|",
        *[
            f"| {line.sku} | {line.quantity} | ${line.unit_price} / {line.unit} | {usd(line.monthly)} | {line.basis} |"
            for line in lines
        ],
        f"| **infrastructure total** | | | **{usd(total)}** | |",
        "| embeddings, local MiniLM (the default) | | | $0.00 | CPU inside the gateway instances above |",
        f"| embeddings, remote `text-embedding-3-small` (the alternative backend) | | | {usd(remote)} | "
        "every exact miss at the measured hit rate, whole prompts (an upper bound); not in the total |",
        "",
        "All-in, LLM spend plus infrastructure:",
        "",
        "| scenario | LLM spend | infrastructure | all-in |",
        "|---|---:|---:|---:|",
    ]
    for name in ("no levers", ACTUAL_MIX, "all levers", ALL_LEVERS_SEED_CACHE, ALL_LEVERS_REPLAY_CACHE):
        if name in by_name:
            spend = by_name[name].total
            out.append(f"| {name} | {usd(spend)} | {usd(total)} | {usd(spend + total)} |")
    out += [
        "",
        "At this load the gateway is idle most of the hour: the instance count is set by redundancy, not CPU. What "
        "decides the hardware is latency under bursts, not the monthly volume: the 200-client run in "
        "`docs/benchmarks.md` § gateway queues for CPU on two cores (`docs/sla.yaml`).",
        "",
    ]
    return out


def chart_write(results: list[ScenarioCost], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.scenario.name for r in results]
    values = [float(quantize_usd(r.total, places=2)) for r in results]  # floats only to draw
    colors = ["#888888"] + ["#4c72b0"] * (len(results) - 2) + ["#55a868"] if len(results) > 2 else None
    if results and results[-1].scenario.name == "seed configuration" and len(results) > 2:
        colors = ["#888888"] + ["#4c72b0"] * (len(results) - 3) + ["#dd8452", "#55a868"]
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(results) + 1.4))
    bars = ax.barh(names[::-1], values[::-1], color=(colors or ["#4c72b0"] * len(results))[::-1])
    for bar, value in zip(bars, values[::-1], strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" ${value:,.0f}", va="center", fontsize=8)
    ax.set_xlabel("USD per month (list prices)")
    ax.set_title("Reference load (8 tenants, 1.5M requests/month): cost by lever", fontsize=10)
    ax.set_xlim(0, max(values) * 1.18 if values else 1)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reconcile_markdown(rec: Reconciliation, measurement: LedgerMeasurement, *, cache_measured: bool = False) -> str:
    verdict = "**within ±5 %**" if rec.within else "**outside ±5 %** (see below)"
    lines = [
        f"Ledger: {measurement.source}, {measurement.rows:,} rows"
        + (f" from {measurement.first:%Y-%m-%d} to {measurement.last:%Y-%m-%d}" if measurement.first and measurement.last else "")
        + ".",
        "",
        "| | requests | cost | per request |",
        "|---|---:|---:|---:|",
        f"| prediction, seed configuration, reference volume | {rec.predicted_requests:,.0f} | {usd(rec.predicted_total)} | ${rec.predicted_per_request:.6f} |",
        f"| measured, whole ledger | {rec.measured_rows:,} | {usd(rec.measured_cost)} | |",
        f"| measured, seeded incidents ({', '.join(i.kind for i in measurement.incidents) or 'none'}) | {rec.incident_rows:,} | {usd(rec.incident_cost)} | |",
        f"| measured, without the incidents | {rec.baseline_rows:,} | {usd(rec.baseline_cost)} | ${rec.measured_per_request:.6f} |",
        f"| prediction at that volume | {rec.baseline_rows:,} | {usd(rec.predicted_at_volume)} | |",
        "",
        f"Gap without the incidents, at the measured volume: **{100 * rec.gap:+.2f} %**, {verdict}. "
        f"Against the whole ledger at the reference volume the gap is {100 * rec.raw_gap:+.2f} %: the incidents "
        f"({usd(rec.incident_cost)}) are unplanned spend by design, and the seed's weekday weights make the month "
        f"{rec.baseline_rows:,} ordinary requests rather than {rec.predicted_requests:,.0f}.",
    ]
    if measurement.rows:
        from demo.seed import EXACT_HIT_RATE, SEMANTIC_HIT_RATE

        lines += [
            "",
            f"Cache hit shares measured on this ledger: exact {100 * measurement.hit_share('exact'):.1f} %, semantic "
            f"{100 * measurement.hit_share('semantic'):.1f} % of its requests, against the rates the seed generates with "
            f"({100 * EXACT_HIT_RATE:.1f} % and {100 * SEMANTIC_HIT_RATE:.1f} % of ordinary requests; this share counts every "
            "row, the seeded incidents' and failures' included), and far from the workload replay's."
            + (
                " These shares are the cost model's cache levers (`--refresh` measures them here)."
                if cache_measured
                else f" The scenario `{ALL_LEVERS_SEED_CACHE}` prices the seed's rates."
            ),
        ]
    return "\n".join(lines)


def readme_write(
    *, load: ReferenceLoad, results: list[ScenarioCost], path: Path, chart: Path | None, csv_path: Path,
    reconciliation: tuple[Reconciliation, LedgerMeasurement] | None = None, fallbacks: list[str] | None = None,
) -> Path:  # fmt: skip
    prompt, completion = tokens_total(load.rows)
    by_name = {r.scenario.name: r for r in results}
    base, all_levers = by_name["no levers"], by_name["all levers"]
    actual, seed_cache = by_name.get(ACTUAL_MIX), by_name.get(ALL_LEVERS_SEED_CACHE)
    replay_cache = by_name.get(ALL_LEVERS_REPLAY_CACHE)
    cache_set = load.lever("exact_hit_rate")[1]
    levers = []
    for name in ("exact_hit_rate", "semantic_hit_rate", "routing_premium_share", "escalation_rate", "embedding_model"):
        lever, lever_set = load.lever(name)
        value = (
            lever.value if lever.value in (AS_RECORDED,) or not _is_number(lever.value) else f"{100 * Decimal(lever.value):.2f} %"
        )
        label = {"measured": "measured", "replay": "workload replay (no seeded ledger found)"}.get(
            lever_set, "**seed configuration (no measurement found)**"
        )
        levers.append(f"| {name} | {value} | {label} | {lever.source} |")
    tenants = sorted(all_levers.by_tenant, key=lambda t: -base.by_tenant[t])
    tenant_lines = [
        f"| {t} | {usd(base.by_tenant[t])} | {usd(actual.by_tenant[t]) if actual else '—'} | {usd(all_levers.by_tenant[t])} |"
        for t in tenants
    ]
    price_lines = [
        f"| {p.model} | {p.provider} | {p.input_per_1m} | {p.cached_input_per_1m if p.cached_input_per_1m is not None else '—'} "
        f"| {p.output_per_1m} | {p.effective_from or ''} |"
        for p in load.prices.values()
    ]
    rel_csv = _rel(csv_path, path.parent)
    out = [
        "# Cost model: the 8-tenant reference load",
        "",
        f"_Written by `manage.py cost_model{' --reconcile' if reconciliation else ''}` on {clock.now():%Y-%m-%d %H:%M} UTC "
        "from "
        f"[`{rel_csv}`]({rel_csv}); do not edit by hand. `manage.py cost_model --refresh` rebuilds the CSV from the seed "
        "generator, the price fixture and the `make eval` measurements (`make eval` runs both)._",
        "",
        f"**Load:** {load.requests:,.0f} requests/month over {len({r.tenant for r in load.rows})} tenants and "
        f"{len({r.model for r in load.rows})} models; {prompt / load.requests:,.0f} prompt and {completion / load.requests:,.0f} "
        "completion tokens per request on average. Tenant shares, model mix and token means are `demo/seed.py`'s "
        "(`ORGS`, `MODEL_MIX`, the log-normal spreads), so the model and the seeded ledger describe the same workload.",
        "",
        f"**Result:** {usd(base.total)}/month with no lever, {usd(all_levers.total)}/month with all of them "
        f"({100 * (all_levers.total - base.total) / base.total:+.1f} %) — against a baseline that sends every "
        "router-chosen request to the premium model."
        + (
            f" The honest baseline is the load's actual model mix with no lever, {usd(actual.total)}/month: against it "
            f"all levers save {100 * (actual.total - all_levers.total) / actual.total:.1f} %."
            if actual is not None else ""
        )
        + (
            f" With the seeded ledger's cache rates instead of the replay's, all levers cost {usd(seed_cache.total)}/month "
            f"({100 * (seed_cache.total - actual.total) / actual.total:+.1f} % against the actual mix)."
            if seed_cache is not None and actual is not None else ""
        )
        + (
            f" The cache rates are the seeded ledger's; with the workload replay's (many verbatim repeats) all levers "
            f"would cost {usd(replay_cache.total)}/month ({100 * (replay_cache.total - actual.total) / actual.total:+.1f} % "
            "against the actual mix): a labelled scenario, not the headline."
            if replay_cache is not None and actual is not None else ""
        ),
        "",
        results_table(results),
        "",
        f"Every line above is recomputed without Python by [`{FORMULAS_CSV.name}`]({FORMULAS_CSV.name}): the inputs as "
        "values, each cost line and total as a spreadsheet formula (open it in any spreadsheet; "
        "`evals/tests/costmodel/test_cost_model.py` evaluates its formulas and checks every total and tenant line "
        "against this table to the cent).",
        "",
    ]
    if chart is not None:
        out += [f"![monthly cost by lever]({_rel(chart, path.parent)})", ""]
    out += [
        "## Levers",
        "",
        "| lever | value | kind | source |",
        "|---|---|---|---|",
        *levers,
        "",
    ]
    if fallbacks:
        out += [
            f"Not measured when this was written: {', '.join(fallbacks)}; the seed configuration's rate stands in, and "
            "the table says so. Run `make eval` and then `manage.py cost_model --refresh`.",
            "",
        ]
    out += [
        "How each lever is applied (all rates are shares of requests; see `evals/costmodel/model.py` for the formula):",
        "",
        f"- **No levers:** no cache; the {100 * (1 - load.rate('pinned_share')):.0f} % of requests the router chooses for "
        f"(`pinned_share` = {load.param('pinned_share')} name their model) are priced at `{load.param('premium_model')}`, "
        "the premium counterfactual apps.reports uses for routing savings. Failed and rejected requests "
        f"({load.param('failed_rate')} and {load.param('rejected_rate')}) are not billed in any scenario.",
        "- **Exact / semantic cache:** hits cost nothing upstream. Every exact miss is embedded for the semantic lookup; "
        "with the local MiniLM (the default) that is CPU time, not money." + _remote_embedding_text(load, results),
        f"- **Routing mix:** router-chosen requests go to `{load.param('cheap_model')}` or `{load.param('premium_model')}` "
        "in the shares the full chain (keyword → learned → confidence) produced on the recorded RouteLLM answers, at the "
        "reference load's own tokens. The evaluation pair has two tiers, so the mid tier gets no share here.",
        "- **Confidence escalations:** the share of router-chosen requests whose cheap answer was re-asked at premium; "
        "both calls are paid. It adds cost: it is the price of the quality the router keeps.",
        _seed_text(load),
        "",
        (
            "The cache hit rates are measured on the seeded ledger (every row's `cache_status`). The cache eval's "
            "replayed workload (Zipf-popular intents, many verbatim repeats) flatters the cache; the scenario "
            f"`{ALL_LEVERS_REPLAY_CACHE}` shows all levers at its rates."
            if cache_set == "measured"
            else "No seeded ledger was found, so the cache hit rates come from the eval's replayed workload "
            "(Zipf-popular intents, many verbatim repeats), which flatters the cache: the seeded ledger runs at the "
            f"seed's rates, and the scenario `{ALL_LEVERS_SEED_CACHE}` shows all levers at those. `make seed`, then "
            "`manage.py cost_model --refresh`, measures them on the ledger."
        )
        + " A deployment's own rates depend on how often its users repeat themselves; "
        "`docs/sql/06_cache_savings.sql` shows them.",
        "",
        "## Infrastructure",
        "",
        *infra_markdown(load, results),
        "## Sensitivity: which input moves the total most",
        "",
        "Each input moved by ±10 % (rates relative, clamped to 0..1), everything else as in the scenario; largest swing first.",
        "",
        sensitivity_table(load, all_levers),
        "",
        "## Per tenant",
        "",
        "| tenant | no levers (always premium) | no levers (actual mix) | all levers |",
        "|---|---:|---:|---:|",
        *tenant_lines,
        "",
        "## List prices used",
        "",
        "From `fixtures/prices.json` (the price table's source), the row in force when the CSV was built; USD per 1M tokens.",
        "",
        "| model | provider | input | cached input | output | effective from |",
        "|---|---|---:|---:|---:|---|",
        *price_lines,
        "",
        "## Reconcile against the measured ledger",
        "",
    ]
    if reconciliation is not None:
        cache_measured = load.lever("exact_hit_rate")[1] == "measured"
        out += [reconcile_markdown(*reconciliation, cache_measured=cache_measured), ""]
    else:
        out += ["Not run this time: `manage.py cost_model --reconcile`.", ""]
    out += [
        "What the reconcile does not check: the levers' measured rates (they come from the evaluations, not from the "
        "seed, which uses its own configured rates), and prices (the seed prices every row with the same fixture).",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
    return path


def _remote_embedding_monthly(load: ReferenceLoad, results: list[ScenarioCost]) -> Decimal:
    from evals.costmodel.model import Scenario

    model = load.params.get("remote_embedding_model")
    if not model:
        return Decimal(0)
    exact = next(r for r in results if r.scenario.name == "exact cache").scenario.exact
    return scenario_cost(load, Scenario("remote embeddings", exact=exact, embedding_model=model)).embeddings


def _remote_embedding_text(load: ReferenceLoad, results: list[ScenarioCost]) -> str:
    from evals.costmodel.model import Scenario

    model = load.params.get("remote_embedding_model")
    if not model:
        return ""
    exact = next(r for r in results if r.scenario.name == "exact cache").scenario.exact
    cost = scenario_cost(load, Scenario("remote embeddings", exact=exact, embedding_model=model)).embeddings
    return (
        f" Remote embeddings (`{model}`, ${load.price(model).input_per_1m}/1M tokens) would add {usd(cost)} a month at the "
        "measured exact hit rate (whole prompts counted: an upper bound)."
    )


def _seed_text(load: ReferenceLoad) -> str:
    names = ("exact_hit_rate", "semantic_hit_rate", "escalation_rate")
    seed = {name: lever for name in names if (lever := load.levers.get(("seed", name))) is not None}
    if len(seed) < len(names):
        return "- **Seed configuration:** not in the CSV."
    exact, semantic, escalation = (100 * Decimal(seed[n].value) for n in names)
    return (
        f"- **Seed configuration:** the rates `seed_demo` generates with ({exact:g} % exact, {semantic:g} % semantic, the model "
        f"mix as recorded, {escalation:g} % of billed premium-tier requests carrying an escalation). It is the prediction the "
        "reconcile checks."
    )


def _is_number(value: str) -> bool:
    try:
        Decimal(value)
    except ArithmeticError:
        return False
    return True


def _rel(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target, start)
