"""Writes of the cost model: the reference CSV (from the seed generator and the eval measurements), the chart, the README."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from apps.ledger.money import quantize_usd
from evals.costmodel.model import (
    AS_RECORDED,
    Lever,
    Reconciliation,
    ReferenceLoad,
    ScenarioCost,
    load_render,
    scenario_cost,
    scenarios,
    tokens_total,
)
from evals.costmodel.reference import reference_load_build
from evals.costmodel.selectors import LedgerMeasurement, cache_levers_measured, embedding_lever, router_measure
from finops import clock

COST_MODEL_DIR = Path(settings.BASE_DIR) / "docs" / "cost-model"
REFERENCE_CSV = COST_MODEL_DIR / "reference-load.csv"


@dataclass
class Refresh:
    load: ReferenceLoad
    fallbacks: list[str]  # levers for which no measurement was found (the seed's rate stands in)


def reference_load_refresh(*, csv_path: Path = REFERENCE_CSV, measure_router: bool = True, progress: bool = False) -> Refresh:
    """Rebuild the reference CSV: load rows from the seed generator, list prices from the fixture, levers from `make eval`."""
    measured: dict[str, Lever] = {}
    measured.update(cache_levers_measured())
    if measure_router:
        router = router_measure(progress=progress)
        if router is not None:
            measured.update(router.levers())
    measured["embedding_model"] = embedding_lever()
    load = reference_load_build(measured=measured)
    fallbacks = [
        name
        for name in ("exact_hit_rate", "semantic_hit_rate", "routing_premium_share", "escalation_rate")
        if name not in measured
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
    base = results[0].total
    lines = [
        "| scenario | monthly cost | vs no levers | of which escalations | embeddings | lever setting |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        delta = "—" if r is results[0] else f"{100 * (r.total - base) / base:+.1f} %"
        lines.append(
            f"| {r.scenario.name} | {usd(r.total)} | {delta} | {usd(r.escalations)} | {usd(r.embeddings)} | {r.scenario.note} |"
        )
    return "\n".join(lines)


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


def reconcile_markdown(rec: Reconciliation, measurement: LedgerMeasurement) -> str:
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
    return "\n".join(lines)


def readme_write(
    *, load: ReferenceLoad, results: list[ScenarioCost], path: Path, chart: Path | None, csv_path: Path,
    reconciliation: tuple[Reconciliation, LedgerMeasurement] | None = None, fallbacks: list[str] | None = None,
) -> Path:  # fmt: skip
    prompt, completion = tokens_total(load.rows)
    by_name = {r.scenario.name: r for r in results}
    base, all_levers = by_name["no levers"], by_name["all levers"]
    levers = []
    for name in ("exact_hit_rate", "semantic_hit_rate", "routing_premium_share", "escalation_rate", "embedding_model"):
        lever, lever_set = load.lever(name)
        value = (
            lever.value if lever.value in (AS_RECORDED,) or not _is_number(lever.value) else f"{100 * Decimal(lever.value):.2f} %"
        )
        label = "measured" if lever_set == "measured" else "**seed configuration (no measurement found)**"
        levers.append(f"| {name} | {value} | {label} | {lever.source} |")
    tenants = sorted(all_levers.by_tenant, key=lambda t: -base.by_tenant[t])
    tenant_lines = [f"| {t} | {usd(base.by_tenant[t])} | {usd(all_levers.by_tenant[t])} |" for t in tenants]
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
        f"({100 * (all_levers.total - base.total) / base.total:+.1f} %).",
        "",
        results_table(results),
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
        "The cache hit rates come from the eval's replayed workload (Zipf-popular intents, many verbatim repeats); a "
        "deployment's own rates depend on how often its users repeat themselves; `docs/sql/06_cache_savings.sql` shows them.",
        "",
        "## Per tenant",
        "",
        "| tenant | no levers | all levers |",
        "|---|---:|---:|",
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
        out += [reconcile_markdown(*reconciliation), ""]
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
    seed = {name: load.levers.get(("seed", name)) for name in ("exact_hit_rate", "semantic_hit_rate", "escalation_rate")}
    if not all(seed.values()):
        return "- **Seed configuration:** not in the CSV."
    exact, semantic, escalation = (
        100 * Decimal(seed[n].value) for n in ("exact_hit_rate", "semantic_hit_rate", "escalation_rate")
    )
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
