"""The router A/B harness (manage.py eval_router): every policy on recorded answers, held-out learned scores, the
out-of-distribution experiment, the docs it writes, and the replay through a running gateway."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import numpy as np

from apps.ledger.pricing import Price, PriceBook
from apps.ledger.selectors import price_in_force
from apps.routing import learned
from apps.routing.engine import LearnedScore, PolicySpec, RouterConfig
from apps.routing.selectors import router_config_load
from evals.router.evaluation import (
    EVAL_ROUTE,
    SOURCE_LABELS,
    EvalItem,
    PolicyResult,
    SourceReport,
    attach_curve,
    eval_messages,
    eval_tiers,
    evaluate,
    items_prepare,
    learned_attach,
    mt_bench_answers_load,
)
from evals.router.index import embedding_cache_file
from evals.router.metrics import sweep
from evals.router.report import OOD_PREFIX, best_policy, chain_text, markdown_report, plot_write
from finops import clock
from finops.conf import conf
from finops.errors import UnpricedModel

PRICES_FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "prices.json"


# --------------------------------------------------------------------------- the A/B harness (manage.py eval_router)


@dataclass(slots=True)
class RouterEvalRun:
    dataset: str  # "eval50" | "full"
    route: str
    policy: PolicySpec
    config: RouterConfig
    weak_price: Price
    strong_price: Price
    items: list[EvalItem]
    reports: list[SourceReport]
    extra_results: dict[str, list[PolicyResult]] = field(default_factory=dict)
    learned_note: str = ""  # how the learned scores were held out; empty when they were not evaluated
    learned_index: learned.RouteIndex | None = None  # the index that scored the prompts (custom / eval50 sets)
    limited: bool = False  # only the first --limit records were evaluated: a subset even of the full sets
    leave_out_markdown: str = ""  # the leave-out protocols (evals.router.heldout), with --learned
    leave_out: list = field(default_factory=list)  # their evals.router.heldout.Protocol results


def eval_price(*, model: str, on: dt.date | None = None) -> Price:
    """The ledger's price in force; the vendored fixtures/prices.json row when the database has none (documented fallback)."""
    on = on or clock.today()
    try:
        return price_in_force(model=model, on=on)
    except UnpricedModel:
        price = PriceBook.from_fixture(json.loads(PRICES_FIXTURE.read_text())["prices"]).price_for(model, on)
        if price is None:
            raise
        return price


def router_eval_run(
    *,
    records: list[dict] | None = None,
    full: bool = False,
    shared_dir: str | None = None,
    route: str = EVAL_ROUTE,
    limit: int | None = None,
    progress: bool = True,
    with_learned: bool = True,
) -> RouterEvalRun:
    """Run every policy of the A/B table on the recorded answers and return the reports (writes nothing).

    `with_learned`: score the prompts with a held-out learned index (`router_eval_learned_scores`), which the
    full chain uses when the route has `use_learned`, as the gateway does. Off, the learned rows are absent
    and the full chain is what the gateway serves without an index.
    """
    from evals.router.datasets import find_shared_dir, load_eval50, load_full, load_mt_bench_answers

    dataset = "custom" if records is not None else ("full" if full else "eval50")
    mt_answers: dict[str, dict[str, str]] = {}
    if records is None:
        if full:
            records = load_full(shared_dir)
            if records is None:
                raise FileNotFoundError("RouteLLM data not found (../shared/data/routellm or $FINOPS_ROUTELLM_DIR); drop --full")
            loaded = load_mt_bench_answers(shared_dir)
            if loaded is None:
                found = find_shared_dir(shared_dir)
                loaded = mt_bench_answers_load(found) if found else {}
            mt_answers = loaded
        else:
            records = load_eval50()
    limited = bool(limit and limit < len(records))
    if limit:
        records = records[:limit]
    config = router_config_load()
    policy = config.policy_for(org_id=None, name=route)
    if policy is None:
        raise LookupError(f"route policy '{route}' does not exist (seeded by the routing migrations)")
    cheap, premium = eval_tiers(config, policy)
    weak_price = eval_price(model=cheap.models[0].model)
    strong_price = eval_price(model=premium.models[0].model)

    def bar(iterable):
        if not progress:
            return iterable
        from tqdm import tqdm

        return tqdm(iterable, desc="routing recorded prompts", unit="prompt")

    items = items_prepare(
        records,
        config=config,
        policy=policy,
        weak_price=weak_price,
        strong_price=strong_price,
        mt_bench_answers=mt_answers,
        progress=bar,
    )
    note, index = "", None
    if with_learned:
        held_out = router_eval_learned_scores(items, full=dataset == "full", progress=progress)
        if held_out is not None:
            scores, note, index, abstained = held_out
            learned_attach(items, scores, config=config, abstained=abstained)
    reports = evaluate(items, config=config, policy=policy)
    return RouterEvalRun(
        limited=limited,
        dataset=dataset,
        route=route,
        policy=policy,
        config=config,
        weak_price=weak_price,
        strong_price=strong_price,
        items=items,
        reports=reports,
        learned_note=note,
        learned_index=index,
    )


# --------------------------------------------------------------------------- held-out learned scores

EVAL_FOLDS = 5


# The last held-out index: (the served index it came from, the excluded keys, the result). Holding the served
# index itself (not its id) keeps a reloaded index from ever matching a stale entry.
_held_out_memo: list[tuple[learned.RouteIndex, frozenset[int], learned.RouteIndex]] = []
_single_vectors: dict[tuple[str, int], np.ndarray] = {}


def _embed_one_by_one(texts: list[str]) -> np.ndarray:
    """Vectors computed exactly as the gateway computes one (one prompt per call), memoised per process."""
    runtime = conf().cache_local_runtime or "torch"
    out = []
    for text in texts:
        key = (runtime, learned.prompt_key(text))
        if key not in _single_vectors:
            _single_vectors[key] = learned.prompts_embed([text], batch_size=1)[0]
        out.append(_single_vectors[key])
    return np.stack(out)


def router_eval_learned_scores(
    items: list[EvalItem], *, full: bool, progress: bool = True
) -> tuple[list[LearnedScore], str, learned.RouteIndex | None, list[str | None]] | None:
    """Learned scores for the evaluated prompts from indexes that do not contain them; None without an index.

    - full sets: grouped k-fold cross-validation. Each fold's index is built by `RouteIndex.build` (PCA,
      int8 vectors, leave-one-out calibration) from the other folds' prompts only; the served index holds
      every prompt of the sets, so it never scores them here.
    - other sets (the vendored 50): the served index minus the evaluated prompts, recalibrated on the rest;
      the gateway end-to-end test routes with the same reduced index, so live and offline decide alike.
    """
    served = learned.served_index()
    k = served.k if served is not None else learned.DEFAULT_K
    dims = served.dims if served is not None and served.projection is not None else learned.DEFAULT_DIMS
    texts = [i.prompt for i in items]
    keys = [learned.prompt_key(t) for t in texts]
    if full:
        vectors = learned.prompts_embed(texts, progress=progress, cache_file=embedding_cache_file())
        gains = [i.strong_score - i.weak_score for i in items]
        bar = _bar(progress, "cross-validation folds", "fold", EVAL_FOLDS)
        fold_scores: list[LearnedScore | None] = [None] * len(items)
        abstained: list[str | None] = [None] * len(items)
        folds = learned.held_out_indexes(vectors, gains, keys, [learned.fold_of(key, EVAL_FOLDS) for key in keys], k=k, dims=dims)
        for test, fold_index in bar(folds):
            for i in test:
                fold_scores[i], abstained[i] = fold_index.score(vectors[i]), fold_index.abstains(vectors[i])
        scores = [s for s in fold_scores if s is not None]
        note = (
            f"grouped {EVAL_FOLDS}-fold cross-validation over the {len(items)} prompts (folds by prompt hash, so a "
            f"duplicated prompt never straddles two folds); each fold's index (PCA, int8 vectors, calibration) is built by "
            f"`RouteIndex.build` from the other folds only, k = {k}, {dims} dimensions; the served index holds all of "
            f"these prompts and never scores them here"
        )
        return scores, note, None, abstained
    if served is None:
        return None
    excluded = frozenset(keys)
    if _held_out_memo and _held_out_memo[0][0] is served and _held_out_memo[0][1] == excluded:
        index = _held_out_memo[0][2]
    else:
        index = served.excluding(excluded)
        _held_out_memo[:] = [(served, excluded, index)]
    vectors = _embed_one_by_one(texts)
    scores = [index.score(v) for v in vectors]
    abstained = [index.abstains(v) for v in vectors]
    note = (
        f"the served index ({len(served)} prompts, `{learned.index_path()}`) minus the {len(served) - len(index)} "
        f"exemplars of the evaluated prompts, recalibrated on the other {len(index)} (only its label-free PCA axes "
        f"were fitted with those prompts among the {len(served)})"
    )
    return scores, note, index, abstained


def _bar(progress: bool, desc: str, unit: str, total: int):
    if not progress:
        return lambda it: it
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, unit=unit, total=total)


def _bench_markdown(run: RouterEvalRun, live: dict | None) -> str:
    premium = eval_tiers(run.config, run.policy)[1]
    theta_c = float(run.policy.complexity_thresholds.get(premium.name, premium.complexity_min))
    chain = chain_text(run.policy, run.items, theta_c)
    lines = [
        "## Router: cost cut of the full chain against always-premium (`manage.py eval_router`)",
        "",
        "Recorded Mixtral-8x7B (cheap) and GPT-4-1106 (premium) answers from RouteLLM, priced with the ledger's rows; the full "
        f"chain is route `finops/{run.policy.name}` at its configured thresholds ({chain}), the code the gateway runs. "
        "Learned scores are held out ("
        + ("5-fold cross-validation" if run.dataset == "full" else "the served index minus the evaluated prompts")
        + "). Details: [router-eval.md](router-eval.md).",
        "",
        "| set | prompts | full-chain cost vs always-premium | cost cut | quality vs premium | quality lost (points) | random at that cost "
        "| full-chain APGR | best APGR (policy) | best: premium calls for 95 % of premium quality | random APGR |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for report in run.reports:
        full = report.result("full chain")
        best = best_policy(report)
        ratio = float(full.cost / report.strong_cost) if report.strong_cost else 0.0
        rnd = report.result("random (matched cost)")
        lines.append(
            f"| {SOURCE_LABELS.get(report.source, report.source) if report.source else run.dataset} | {report.n} | {100 * ratio:.1f} % "
            f"| {100 * (1 - ratio):.1f} % | {100 * full.quality / report.strong_quality:.1f} % "
            f"| {100 * (report.strong_quality - full.quality):.1f} | {100 * rnd.quality / report.strong_quality:.1f} % "
            f"| {full.apgr:.3f} | {best.apgr:.3f} ({best.name}) "
            f"| {'—' if best.share_for_95 is None else f'{100 * best.share_for_95:.1f} %'} | 0.500 |"
        )
    lines += [
        "",
        "The gateway serves these decisions and costs: the end-to-end test sends the 50 vendored prompts through uvicorn + "
        "the replay upstream, routing with the served learned index minus those prompts, and matches this harness prompt "
        "for prompt (apps/routing/tests/test_gateway_e2e.py).",
    ]
    if live:
        lines += ["", f"End to end through the gateway and the replay mock ({live['n']} prompts): {live['summary']}"]
    return "\n".join(lines)


def router_eval_write(
    run: RouterEvalRun, *, doc_path: Path, plot_path: Path, bench: bool = False, live: dict | None = None
) -> list[Path]:
    """Write the markdown report and its plot (and the benchmarks section when asked); returns the paths written."""
    import os

    from evals.report import BENCHMARKS_MD, subset_heading, write_report, write_section

    # Only a run on the full sets writes the headline figures; any other run goes under its own heading (and plot).
    subset = None if run.dataset == "full" and not run.limited else f"{run.dataset} ({len(run.items)} prompts)"
    if subset is not None:
        plot_path = plot_path.with_name(f"{plot_path.stem}-subset{plot_path.suffix}")
    plot_write(run.reports, plot_path, run.extra_results)
    rel = os.path.relpath(plot_path, doc_path.parent)
    command = "manage.py eval_router" + (" --full" if run.dataset == "full" else "") + (" --learned" if run.extra_results else "")
    md = markdown_report(
        run.reports,
        items=run.items,
        dataset=run.dataset,
        policy=run.policy,
        config=run.config,
        weak_price=run.weak_price,
        strong_price=run.strong_price,
        plot_rel=rel,
        extra=run.extra_results,
        command=command,
        learned_note=run.learned_note,
    )
    if run.leave_out_markdown:
        md += "\n" + run.leave_out_markdown
    if live:
        md += f"\n## End to end through the gateway\n\n{live['markdown']}\n"
    write_report(doc_path, md, subset=subset)
    written = [doc_path, plot_path]
    if bench:
        bench_md = _bench_markdown(run, live)
        if subset is None:
            write_section("router-eval", bench_md)
        else:
            write_section("router-eval-subset", subset_heading(bench_md, subset))
        written.append(BENCHMARKS_MD)
    return written


# --------------------------------------------------------------------------- experiment: the learned index out of distribution


def router_eval_out_of_distribution(run: RouterEvalRun, *, progress: bool = True) -> None:
    """`eval_router --learned`: score each set's prompts with an index built from the *other* sets only.

    Adds the rows to `run.extra_results`; the served strategy's own rows (cross-validated) are in the reports.
    """
    items = run.items
    sources = sorted({i.source for i in items})
    if len(sources) < 2:
        return
    texts = [i.prompt for i in items]
    vectors = learned.prompts_embed(texts, progress=progress, cache_file=embedding_cache_file())
    served = learned.served_index()
    k = served.k if served is not None else learned.DEFAULT_K
    dims = served.dims if served is not None and served.projection is not None else learned.DEFAULT_DIMS
    scores = learned.held_out_scores(
        vectors,
        [i.strong_score - i.weak_score for i in items],
        [learned.prompt_key(t) for t in texts],
        [sources.index(i.source) for i in items],
        k=k,
        dims=dims,
        progress=_bar(progress, "out-of-distribution indexes", "set", len(sources)),
    )
    from evals.router.heldout import leave_out_evaluate, leave_out_markdown

    run.leave_out = leave_out_evaluate(items, vectors, k=k, dims=dims, progress=_bar(progress, "leave-out slices", "slice", 7))
    run.leave_out_markdown = leave_out_markdown(run.leave_out, k=k, dims=dims)
    by_id = {i.id: score for i, score in zip(items, scores, strict=True)}
    threshold = run.policy.learned_threshold
    for report in run.reports:
        subset = [i for i in items if report.source in ("all", i.source) or not report.source]
        w = np.array([i.weak_score for i in subset])
        s = np.array([i.strong_score for i in subset])
        wc = np.array([float(i.weak_cost) for i in subset])
        sc = np.array([float(i.strong_cost) for i in subset])
        p = np.array([by_id[i.id].score for i in subset])
        u = np.array([i.uncertainty for i in subset])
        risk = 1 - (1 - p) * (1 - u)
        rows = []
        for name, score, direct in (("learned", p, None), ("learned+confidence", risk, p)):
            points = sweep(w, s, wc, sc, score, direct=direct)
            res = PolicyResult(
                name=OOD_PREFIX + name,
                description="experiment: index of the other sets",
                share=0.0,
                quality=0.0,
                cost=Decimal(0),
                cheap_calls=0,
                premium_calls=0,
                pgr=0.0,
            )
            attach_curve(res, points, report.weak_quality, report.strong_quality, float(wc.sum()), float(sc.sum()))
            # Operating point: the configured learned threshold, as the served rows.
            premium = p >= threshold
            escalate = np.zeros_like(premium)
            if direct is not None:
                escalate = ~premium & (risk >= max(threshold, run.policy.confidence_threshold))
            went_premium = premium | escalate
            res.share = float(went_premium.mean())
            res.quality = float(np.where(went_premium, s, w).mean())
            cost = np.where(went_premium, sc, 0.0) + np.where(premium, 0.0, wc)
            res.cost = Decimal(str(round(float(cost.sum()), 10)))
            res.cheap_calls, res.premium_calls = int((~premium).sum()), int(went_premium.sum())
            gap = report.strong_quality - report.weak_quality
            res.pgr = (res.quality - report.weak_quality) / gap if gap else 0.0
            rows.append(res)
        run.extra_results[report.source] = rows


# --------------------------------------------------------------------------- end to end through a running gateway


def _norm_text(text: str | None) -> str:
    return " ".join((text or "").split())


def router_eval_live(run: RouterEvalRun, *, base_url: str, api_key: str, progress: bool = True) -> dict:
    """Send every prompt with answer texts through a gateway (upstream: the replay mock) as `finops/<route>`.

    Quality is read off which recorded answer came back; cost from the gateway's X-Cost-USD header.
    The decisions are compared with the offline full chain's, which runs the same functions.
    """
    from openai import OpenAI

    client = OpenAI(
        base_url=base_url.rstrip("/") + ("" if base_url.rstrip("/").endswith("/v1") else "/v1"),
        api_key=api_key,
        max_retries=0,
        timeout=60,
    )
    items = [i for i in run.items if i.weak_response and i.strong_response]
    if not items:
        raise ValueError("--live needs records with recorded answer texts (the eval50 fixture or GSM8K)")
    cheap, premium = eval_tiers(run.config, run.policy)
    from apps.routing.engine import escalation_decide

    offline = {}
    for i in items:
        direct = i.chain_tier == premium.name
        esc = (not direct) and escalation_decide(
            policy=run.policy,
            strategy=i.chain_strategy,
            complexity=i.complexity,
            uncertainty=i.uncertainty,
            learned=i.learned,
        )[0]
        offline[i.id] = direct or esc

    iterable = items
    if progress:
        from tqdm import tqdm

        iterable = tqdm(items, desc="live through the gateway", unit="prompt")
    total_cost = Decimal(0)
    quality = 0.0
    premium_answers = agree = unmatched = 0
    for i in iterable:
        raw = client.chat.completions.with_raw_response.create(
            model=f"finops/{run.route}",
            messages=cast(Any, eval_messages({"source": i.source, "prompt": i.prompt})),  # plain role/content dicts
        )
        completion = raw.parse()
        total_cost += Decimal(raw.headers.get("x-cost-usd") or "0")
        text = _norm_text(completion.choices[0].message.content)
        if text == _norm_text(i.strong_response):
            got_premium, score = True, i.strong_score
        elif text == _norm_text(i.weak_response):
            got_premium, score = False, i.weak_score
        else:
            unmatched += 1
            got_premium, score = completion.model == premium.models[0].model, i.weak_score
        premium_answers += got_premium
        quality += score
        agree += got_premium == offline[i.id]
    n = len(items)
    strong_cost = sum((i.strong_cost for i in items), Decimal(0))
    strong_q = sum(i.strong_score for i in items) / n
    summary = (
        f"{n} prompts, premium answers {100 * premium_answers / n:.1f} %, cost ${total_cost:.6f} = "
        f"{100 * float(total_cost / strong_cost):.1f} % of always-premium (offline estimate), quality {quality / n:.3f} "
        f"({100 * quality / n / strong_q:.1f} % of premium); {agree}/{n} decisions as offline; {unmatched} unmatched answers"
    )
    markdown = (
        f"`eval_router --live {base_url}` sent the {n} prompts as `finops/{run.route}` through the gateway to the replay "
        f"mock: {summary}."
    )
    return {
        "n": n,
        "cost": total_cost,
        "quality": quality / n,
        "premium_share": premium_answers / n,
        "agree": agree,
        "unmatched": unmatched,
        "summary": summary,
        "markdown": markdown,
    }
