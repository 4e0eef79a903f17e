"""The router A/B harness: routing policies scored on recorded answers of real models (RouteLLM data).

Each record holds a prompt, what the cheap model (Mixtral-8x7B) and the premium model (GPT-4-1106)
answered, and how good each answer was (a correctness label, or the MT-Bench judge's score / 10).
A policy decides, per prompt, which answer the user would have got; its **quality** is the mean score
of those answers, its **cost** the token counts of those answers × the ledger's prices (a cascade
that asks the cheap model first and escalates pays both calls).

Metrics (RouteLLM's definitions, see ../shared/data/README.md):
- PGR (performance gap recovered) = (quality − cheap quality) / (premium quality − cheap quality).
- APGR: the policy's threshold is swept over its whole range, giving quality as a function of the
  share of premium calls; APGR is the area under PGR over that share in [0, 1] (trapezoids; tied
  scores are one step, i.e. a random order inside the tie). Random routing scores 0.5.
  `apgr_cost` does the same against normalised cost, which charges cascades their cheap first call.
- CPT(p): the share of premium calls at which the swept curve first recovers p of the gap.

The strategies are the hot path's own functions (`apps.routing.engine`, `apps.routing.features`):
`keyword_match`, `complexity_features` / `complexity_score`, `confidence_assess`, `escalation_decide`,
`route_plan` + `learned_apply` for the full chain's operating point, and `RouteIndex.score` for the
learned score, which comes from an index that does not contain the evaluated prompt
(`evals.router.harness.router_eval_learned_scores`: cross-validation folds, or the served index minus
the evaluated prompts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from apps.ledger.money import ZERO, quantize_usd
from apps.ledger.pricing import Price, cost_compute
from apps.routing.engine import (
    COMPLEXITY_WEIGHTS,
    LearnedScore,
    PolicySpec,
    PromptView,
    RoutePlan,
    RouterConfig,
    TierSpec,
    escalation_decide,
    escalation_threshold,
    keyword_match,
    learned_apply,
    learned_wanted,
    route_plan,
)
from apps.routing.features import answer_confidence, complexity_features, complexity_score, escalation_risk
from evals.router.metrics import apgr, apgr_by_cost, cpt, pgr, sweep
from finops.tokens import count_message_tokens, count_tokens

EVAL_ROUTE = "eval"
# RouteLLM generated GSM8K 8-shot, every example answer ending "#### <number>" (its generate_responses.py).
# The examples are not in the data; this instruction stands in for them, so the request (offline and
# live through the replay upstream) asks for the same format and the confidence check can hold the
# answer to it. The replay mock matches on the last user message, so it still finds the recording.
GSM8K_INSTRUCTION = "Solve the math word problem. Give the final answer on a last line of the form '#### <number>'."
# Completion tokens when the data has no answer text: RouteLLM generated MMLU with max_new_tokens=1.
COMPLETION_TOKENS_WITHOUT_TEXT = {"mmlu": 1}
DEFAULT_COMPLETION_TOKENS = 250
SOURCE_LABELS = {"all": "all sets pooled", "gsm8k": "GSM8K", "mmlu": "MMLU", "mt_bench": "MT-Bench"}


@dataclass(slots=True)
class EvalItem:
    id: str
    source: str
    prompt: str
    weak_score: float
    strong_score: float
    weak_response: str | None
    strong_response: str | None
    prompt_tokens: int = 0
    weak_tokens: int = 0
    strong_tokens: int = 0
    weak_cost: Decimal = ZERO
    strong_cost: Decimal = ZERO
    complexity: float = 0.0
    keyword_tier: str | None = None
    keyword_rule: int | None = None
    uncertainty: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)
    chain_strategy: str = ""  # what route_plan (+ learned_apply) decided for the full chain
    chain_tier: str = ""
    learned: float | None = None  # the learned score from an index without this prompt (None: not evaluated)
    learned_gain: float | None = None
    learned_abstained: str | None = None  # why the index abstained ("far", "disagree"); None: it decided
    plan: RoutePlan | None = field(default=None, repr=False)


@dataclass(slots=True)
class CurvePoint:
    share: float
    quality: float
    cost: Decimal


@dataclass(slots=True)
class PolicyResult:
    name: str
    description: str
    share: float  # premium calls / prompts at the configured operating point
    quality: float
    cost: Decimal
    cheap_calls: int
    premium_calls: int
    pgr: float
    curve: list[CurvePoint] = field(default_factory=list)
    apgr: float | None = None
    apgr_cost: float | None = None
    cpt50: float | None = None
    cpt80: float | None = None
    share_for_95: float | None = None  # smallest premium share reaching 95 % of premium quality
    cost_for_95: Decimal | None = None


@dataclass(slots=True)
class SourceReport:
    source: str
    n: int
    weak_quality: float
    strong_quality: float
    weak_cost: Decimal
    strong_cost: Decimal
    results: list[PolicyResult]

    def result(self, name: str) -> PolicyResult:
        return next(r for r in self.results if r.name == name)


# --------------------------------------------------------------------------- preparing the records


def eval_tiers(config: RouterConfig, policy: PolicySpec) -> tuple[TierSpec, TierSpec]:
    """The cheapest and the most expensive usable tier of the eval ladder (the pair being compared)."""
    usable = [t for t in config.tiers(policy.ladder) if t.models]
    if len(usable) < 2:
        raise ValueError(f"ladder '{policy.ladder}' needs at least two tiers with priced models to compare")
    return usable[0], usable[-1]


def items_prepare(
    records: Iterable[dict[str, Any]],
    *,
    config: RouterConfig,
    policy: PolicySpec,
    weak_price: Price,
    strong_price: Price,
    mt_bench_answers: dict[str, dict[str, str]] | None = None,
    progress: Callable[[Iterable[Any]], Iterable[Any]] = lambda it: it,
) -> list[EvalItem]:
    """Token counts, costs, and the strategies' inputs (keyword match, complexity, answer confidence) per record."""
    cheap, premium = eval_tiers(config, policy)
    tiers = config.tiers(policy.ladder)
    weights = policy.complexity_weights or COMPLEXITY_WEIGHTS
    raw = list(records)
    averages = _average_completion_tokens(raw, mt_bench_answers or {})
    items: list[EvalItem] = []
    for rec in progress(raw):
        weak_text, strong_text = rec.get("weak_response"), rec.get("strong_response")
        if rec["source"] == "mt_bench" and mt_bench_answers and not weak_text:
            answers = mt_bench_answers.get(rec["id"], {})
            weak_text, strong_text = answers.get("weak"), answers.get("strong")
        messages = eval_messages(rec)
        prompt_tokens = count_message_tokens(messages)
        weak_tokens = count_tokens(weak_text) if weak_text else averages[rec["source"]]["weak"]
        strong_tokens = count_tokens(strong_text) if strong_text else averages[rec["source"]]["strong"]
        item = EvalItem(
            id=rec["id"],
            source=rec["source"],
            prompt=rec["prompt"],
            weak_score=float(rec["weak_score"]),
            strong_score=float(rec["strong_score"]),
            weak_response=weak_text,
            strong_response=strong_text,
            prompt_tokens=prompt_tokens,
            weak_tokens=weak_tokens,
            strong_tokens=strong_tokens,
            weak_cost=cost_compute(price=weak_price, prompt_tokens=prompt_tokens, completion_tokens=weak_tokens),
            strong_cost=cost_compute(price=strong_price, prompt_tokens=prompt_tokens, completion_tokens=strong_tokens),
        )
        item.complexity = complexity_score(complexity_features(messages), weights)
        rule = keyword_match(config.rules, org_id=policy.org_id, tiers=tiers, view=PromptView.of(messages))
        if rule is not None:
            item.keyword_tier, item.keyword_rule = rule.tier, rule.id
        if weak_text is not None:
            conf = answer_confidence(messages, answer=weak_text, logprob_floor=policy.logprob_floor)
            item.uncertainty, item.signals = conf.uncertainty, conf.signals
        plan = route_plan(
            config, messages=messages, requested_model=f"finops/{policy.name}" if policy.name else "auto", org_id=policy.org_id
        )
        item.plan, item.chain_strategy, item.chain_tier = plan, plan.strategy, plan.tier
        if plan.tier not in (cheap.name, premium.name):
            raise ValueError(f"eval ladder must have two tiers; route_plan chose {plan.tier}")
        items.append(item)
    return items


def learned_attach(
    items: list[EvalItem],
    scores: Sequence[LearnedScore],
    *,
    config: RouterConfig,
    abstained: Sequence[str | None] | None = None,
) -> None:
    """Give each item its (held-out) learned score and let the full chain use it where the served chain would:
    not where the index abstains (`RouteIndex.abstains`), which leaves the decision to complexity, as served.
    The learned rows still show the index's own vote on every prompt."""
    for n, (item, score) in enumerate(zip(items, scores, strict=True)):
        item.learned, item.learned_gain = score.score, score.gain
        item.learned_abstained = abstained[n] if abstained is not None else None
        if item.plan is not None and learned_wanted(item.plan) and item.learned_abstained is None:
            item.plan = learned_apply(config, item.plan, score)
            item.chain_strategy, item.chain_tier = item.plan.strategy, item.plan.tier


def _learned(item: Any) -> float:
    """An item's learned score; NaN (compares False, like a missing score) when it has none."""
    return float("nan") if item.learned is None else float(item.learned)


def eval_messages(rec: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation a record is asked as: the benchmark's format instruction (GSM8K), then the prompt."""
    user = {"role": "user", "content": rec["prompt"]}
    return [{"role": "system", "content": GSM8K_INSTRUCTION}, user] if rec["source"] == "gsm8k" else [user]


def _average_completion_tokens(records: list[dict[str, Any]], mt_answers: dict[str, dict[str, str]]) -> dict[str, dict[str, int]]:
    """Per-source mean answer length, for records whose answers are not in the data (documented fallback)."""
    sums: dict[str, dict[str, list[int]]] = {}
    for rec in records:
        weak, strong = rec.get("weak_response"), rec.get("strong_response")
        if rec["source"] == "mt_bench" and not weak:
            weak, strong = mt_answers.get(rec["id"], {}).get("weak"), mt_answers.get(rec["id"], {}).get("strong")
        bucket = sums.setdefault(rec["source"], {"weak": [], "strong": []})
        if weak:
            bucket["weak"].append(count_tokens(weak))
        if strong:
            bucket["strong"].append(count_tokens(strong))
    out: dict[str, dict[str, int]] = {}
    for source in {r["source"] for r in records}:
        fixed = COMPLETION_TOKENS_WITHOUT_TEXT.get(source)
        bucket = sums.get(source, {"weak": [], "strong": []})
        out[source] = {
            side: (fixed or (round(sum(v) / len(v)) if v else DEFAULT_COMPLETION_TOKENS)) for side, v in bucket.items()
        }
    return out


def mt_bench_answers_load(shared_dir: Path) -> dict[str, dict[str, str]]:
    """Turn-1 answers of both models, cut out of the MT-Bench judge prompts ("[The Start of Assistant's Answer]")."""
    from evals.router.datasets import STRONG_MODEL, WEAK_MODEL

    path = shared_dir / "mt_bench_judgements.jsonl"
    if not path.is_file():
        return {}
    answers: dict[str, dict[str, str]] = {}
    pattern = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.S)
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            judge = row.get("judge") or []
            if len(judge) < 2 or judge[1] not in ("single-v1", "single-math-v1"):
                continue
            found = pattern.search(row.get("user_prompt", ""))
            if not found:
                continue
            side = "weak" if row["model"] == WEAK_MODEL else "strong" if row["model"] == STRONG_MODEL else None
            if side:
                answers.setdefault(f"mt_bench-{row['question_id']}", {})[side] = found.group(1)
    return answers


# --------------------------------------------------------------------------- policies


def _arrays(items: list[EvalItem]) -> dict[str, np.ndarray]:
    return {
        "w": np.array([i.weak_score for i in items], dtype=float),
        "s": np.array([i.strong_score for i in items], dtype=float),
        "wc": np.array([float(i.weak_cost) for i in items], dtype=float),
        "sc": np.array([float(i.strong_cost) for i in items], dtype=float),
        "c": np.array([i.complexity for i in items], dtype=float),
        "u": np.array([i.uncertainty for i in items], dtype=float),
        "l": np.array([np.nan if i.learned is None else i.learned for i in items], dtype=float),
    }


def _point_result(
    name: str,
    description: str,
    items: list[EvalItem],
    premium: list[bool],
    cheap_called: list[bool],
    weak_q: float,
    strong_q: float,
) -> PolicyResult:
    n = len(items)
    quality = sum(i.strong_score if p else i.weak_score for i, p in zip(items, premium, strict=True)) / n
    cost = sum(
        (
            (i.strong_cost if p else ZERO) + (i.weak_cost if c else ZERO)
            for i, p, c in zip(items, premium, cheap_called, strict=True)
        ),
        ZERO,
    )
    premium_calls = sum(premium)
    return PolicyResult(
        name=name,
        description=description,
        share=premium_calls / n,
        quality=quality,
        cost=quantize_usd(cost),
        cheap_calls=sum(cheap_called),
        premium_calls=premium_calls,
        pgr=pgr(quality, weak_q, strong_q),
    )


def attach_curve(
    result: PolicyResult,
    points: list[tuple[float, float, float]],
    weak_q: float,
    strong_q: float,
    weak_cost: float,
    strong_cost: float,
) -> None:
    result.curve = [CurvePoint(share=s, quality=q, cost=quantize_usd(Decimal(str(float(c))))) for s, q, c in points]
    share_quality = [(s, q) for s, q, _ in points]
    result.apgr = apgr(share_quality, weak_q, strong_q)
    span = strong_cost - weak_cost
    if span > 0:
        result.apgr_cost = apgr_by_cost([((c - weak_cost) / span, q) for _, q, c in points], weak_q, strong_q)
    result.cpt50 = cpt(share_quality, weak_q, strong_q, 0.5)
    result.cpt80 = cpt(share_quality, weak_q, strong_q, 0.8)
    target = 0.95 * strong_q
    reach = sorted((s, q, c) for s, q, c in points if q >= target - 1e-12)
    if reach:
        result.share_for_95 = reach[0][0]
        result.cost_for_95 = quantize_usd(Decimal(str(float(reach[0][2]))))


def policies_evaluate(items: list[EvalItem], *, config: RouterConfig, policy: PolicySpec) -> SourceReport:
    """Every policy of the A/B table on one set of items (one source, or all pooled)."""
    if not items:
        raise ValueError("no records to evaluate")
    cheap, premium = eval_tiers(config, policy)
    theta_c = float(policy.complexity_thresholds.get(premium.name, premium.complexity_min))
    theta_u = policy.confidence_threshold
    a = _arrays(items)
    n = len(items)
    weak_q, strong_q = float(a["w"].mean()), float(a["s"].mean())
    weak_cost_f, strong_cost_f = float(a["wc"].sum()), float(a["sc"].sum())
    weak_cost = quantize_usd(sum((i.weak_cost for i in items), ZERO))
    strong_cost = quantize_usd(sum((i.strong_cost for i in items), ZERO))
    results: list[PolicyResult] = []
    all_true, all_false = [True] * n, [False] * n

    results.append(
        _point_result("always-cheap", f"every prompt to {cheap.models[0].model}", items, all_false, all_true, weak_q, strong_q)
    )
    results.append(
        _point_result(
            "always-premium", f"every prompt to {premium.models[0].model}", items, all_true, all_false, weak_q, strong_q
        )
    )

    # Keyword rules alone: a rule for the top tier → premium; everything else cheap. Sweep: rule rank as the score.
    kw_score = np.array(
        [2.0 if i.keyword_tier == premium.name else (0.0 if i.keyword_tier == cheap.name else 1.0) for i in items]
    )
    kw_premium = [i.keyword_tier == premium.name for i in items]
    res = _point_result(
        "keyword", "admin keyword rules; no match → cheap", items, kw_premium, [not p for p in kw_premium], weak_q, strong_q
    )
    attach_curve(res, sweep(a["w"], a["s"], a["wc"], a["sc"], kw_score), weak_q, strong_q, weak_cost_f, strong_cost_f)
    results.append(res)

    # Complexity alone.
    cx_premium = [i.complexity >= theta_c for i in items]
    res = _point_result(
        "complexity", f"premium when complexity ≥ {theta_c:.2f}", items, cx_premium, [not p for p in cx_premium], weak_q, strong_q
    )
    attach_curve(res, sweep(a["w"], a["s"], a["wc"], a["sc"], a["c"]), weak_q, strong_q, weak_cost_f, strong_cost_f)
    results.append(res)

    # Confidence alone: cheap first for every prompt, escalate on the answer's uncertainty.
    cf_premium = [i.uncertainty >= theta_u for i in items]
    res = _point_result(
        "confidence", f"cheap first; escalate when uncertainty ≥ {theta_u:.2f}", items, cf_premium, all_true, weak_q, strong_q
    )
    attach_curve(
        res,
        sweep(a["w"], a["s"], a["wc"], a["sc"], a["u"], direct=np.full(n, -np.inf)),
        weak_q,
        strong_q,
        weak_cost_f,
        strong_cost_f,
    )
    results.append(res)

    # Complexity + confidence: direct premium when complexity ≥ θc, else cheap then escalate when risk ≥ θu.
    risk = np.array([escalation_risk(i.complexity, i.uncertainty) for i in items])
    cc_direct = [i.complexity >= theta_c for i in items]
    cc_premium = [
        d or escalation_decide(policy=policy, strategy="complexity", complexity=i.complexity, uncertainty=i.uncertainty)[0]
        for i, d in zip(items, cc_direct, strict=True)
    ]
    res = _point_result(
        "complexity+confidence",
        f"complexity ≥ {theta_c:.2f} → premium; else cheap, escalate when risk ≥ {theta_u:.2f}",
        items,
        cc_premium,
        [not d for d in cc_direct],
        weak_q,
        strong_q,
    )
    attach_curve(res, sweep(a["w"], a["s"], a["wc"], a["sc"], risk, direct=a["c"]), weak_q, strong_q, weak_cost_f, strong_cost_f)
    results.append(res)

    # Learned (served when the policy has use_learned): score ≥ θl → premium; + confidence: else cheap, then
    # escalate when noisy-or(score, uncertainty) reaches max(θu, θl) (escalation_threshold).
    has_learned = not np.isnan(a["l"]).any()
    theta_l = policy.learned_threshold
    theta_lu = escalation_threshold(policy, "learned")
    if has_learned:
        learned = [_learned(i) for i in items]  # every item has a score here (has_learned)
        ln_premium = [score >= theta_l for score in learned]
        res = _point_result(
            "learned",
            f"premium when learned score ≥ {theta_l:.2f}",
            items,
            ln_premium,
            [not p for p in ln_premium],
            weak_q,
            strong_q,
        )
        attach_curve(res, sweep(a["w"], a["s"], a["wc"], a["sc"], a["l"]), weak_q, strong_q, weak_cost_f, strong_cost_f)
        results.append(res)
        ln_risk = np.array([escalation_risk(score, i.uncertainty) for score, i in zip(learned, items, strict=True)])
        lc_premium = [
            d
            or escalation_decide(
                policy=policy, strategy="learned", complexity=None, uncertainty=i.uncertainty, learned=i.learned
            )[0]
            for i, d in zip(items, ln_premium, strict=True)
        ]
        res = _point_result(
            "learned+confidence",
            f"learned score ≥ {theta_l:.2f} → premium; else cheap, escalate when risk ≥ {theta_lu:.2f}",
            items,
            lc_premium,
            [not d for d in ln_premium],
            weak_q,
            strong_q,
        )
        attach_curve(
            res, sweep(a["w"], a["s"], a["wc"], a["sc"], ln_risk, direct=a["l"]), weak_q, strong_q, weak_cost_f, strong_cost_f
        )
        results.append(res)

    # Full chain: exactly route_plan (keyword → learned → complexity) then escalation_decide on the cheap answer.
    fc_direct, fc_premium = [], []
    for i in items:
        direct = i.chain_tier == premium.name
        escalate = False
        if not direct:
            escalate, _ = escalation_decide(
                policy=policy,
                strategy=i.chain_strategy,
                complexity=i.complexity,
                uncertainty=i.uncertainty,
                learned=i.learned,
            )
        fc_direct.append(direct)
        fc_premium.append(direct or escalate)
    # Sweep: one threshold for the prompt score (learned or complexity) and the escalation risk, as in the
    # single-strategy rows; a keyword rule's decision stays fixed.
    fc_score, fc_direct_score = [], []
    for i, r in zip(items, risk, strict=True):
        if i.keyword_tier == premium.name:
            fc_score.append(2.0)
            fc_direct_score.append(2.0)
        elif i.keyword_tier == cheap.name:
            fc_score.append(i.uncertainty)
            fc_direct_score.append(-np.inf)
        elif i.chain_strategy == "learned" and i.learned is not None:
            fc_score.append(escalation_risk(i.learned, i.uncertainty))
            fc_direct_score.append(i.learned)
        else:
            fc_score.append(r)
            fc_direct_score.append(i.complexity)
    chain_text = (
        "keyword → learned → confidence"
        if any(i.chain_strategy == "learned" for i in items)
        else ("keyword → complexity → confidence")
    )
    res = _point_result(
        "full chain",
        f"{chain_text} (route_plan + learned_apply + escalation_decide, as served)",
        items,
        fc_premium,
        [not d for d in fc_direct],
        weak_q,
        strong_q,
    )
    attach_curve(
        res,
        sweep(a["w"], a["s"], a["wc"], a["sc"], np.array(fc_score), direct=np.array(fc_direct_score)),
        weak_q,
        strong_q,
        weak_cost_f,
        strong_cost_f,
    )
    results.append(res)
    full = res

    # Random routing at the full chain's cost: expected values (no sampling noise).
    span = float(strong_cost - weak_cost)
    p = min(max((float(full.cost - weak_cost) / span) if span > 0 else 0.0, 0.0), 1.0)
    rnd = PolicyResult(
        name="random (matched cost)",
        description=f"premium with probability {p:.3f}, matching the full chain's cost (expected values)",
        share=p,
        quality=weak_q + p * (strong_q - weak_q),
        cost=quantize_usd(weak_cost + (strong_cost - weak_cost) * Decimal(str(p))),
        cheap_calls=round((1 - p) * n),
        premium_calls=round(p * n),
        pgr=p if strong_q != weak_q else 0.0,
    )
    attach_curve(rnd, [(0.0, weak_q, weak_cost_f), (1.0, strong_q, strong_cost_f)], weak_q, strong_q, weak_cost_f, strong_cost_f)
    results.append(rnd)

    # The perfect router: premium exactly where it scores higher (an upper bound, needs the answers' grades).
    gain = a["s"] - a["w"]
    res = _point_result(
        "perfect",
        "premium only where the premium answer scores higher (oracle)",
        items,
        [g > 0 for g in gain],
        [g <= 0 for g in gain],
        weak_q,
        strong_q,
    )
    attach_curve(res, sweep(a["w"], a["s"], a["wc"], a["sc"], gain), weak_q, strong_q, weak_cost_f, strong_cost_f)
    results.append(res)

    return SourceReport(
        source="",
        n=n,
        weak_quality=weak_q,
        strong_quality=strong_q,
        weak_cost=weak_cost,
        strong_cost=strong_cost,
        results=results,
    )


def evaluate(items: list[EvalItem], *, config: RouterConfig, policy: PolicySpec) -> list[SourceReport]:
    """One report per source present, plus the pooled one first when there are several sources."""
    sources = sorted({i.source for i in items})
    reports = []
    if len(sources) > 1:
        pooled = policies_evaluate(items, config=config, policy=policy)
        pooled.source = "all"
        reports.append(pooled)
    for source in sources:
        report = policies_evaluate([i for i in items if i.source == source], config=config, policy=policy)
        report.source = source
        reports.append(report)
    return reports
