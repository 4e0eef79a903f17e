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
(`apps.routing.services.router_eval_learned_scores`: cross-validation folds, or the served index minus
the evaluated prompts).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
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


# --------------------------------------------------------------------------- metrics (pure)


def pgr(quality: float, weak: float, strong: float) -> float:
    gap = strong - weak
    return (quality - weak) / gap if gap else 0.0


def apgr(points: Sequence[tuple[float, float]], weak: float, strong: float) -> float:
    """Area under PGR(share) for share in [0, 1]; `points` are (share, quality) of a threshold sweep.

    The sweep must contain the two ends (0 → all cheap, 1 → all premium), as a full sweep does.
    """
    xs, ys = _curve_xy(points, weak, strong)
    return float(np.trapezoid(ys, xs))


def apgr_by_cost(points: Sequence[tuple[float, float]], weak: float, strong: float) -> float:
    """APGR against cost normalised so always-cheap = 0 and always-premium = 1 (x = cost share).

    A cascade's curve can run past 1 (both calls on every prompt); the area is taken over [0, 1].
    """
    xs, ys = _curve_xy(points, weak, strong)
    if xs[-1] < 1.0:
        xs, ys = np.append(xs, 1.0), np.append(ys, ys[-1])
    grid_x = np.union1d(xs[xs <= 1.0], [0.0, 1.0])
    grid_y = np.interp(grid_x, xs, ys)
    return float(np.trapezoid(grid_y, grid_x))


def cpt(points: Sequence[tuple[float, float]], weak: float, strong: float, target: float) -> float | None:
    """The smallest share at which PGR reaches `target` along the curve (linear between points), else None."""
    xs, ys = _curve_xy(points, weak, strong)
    for i, y in enumerate(ys):
        if y >= target - 1e-12:
            if i == 0:
                return float(xs[0])
            x0, y0 = xs[i - 1], ys[i - 1]
            return float(x0 + (target - y0) * (xs[i] - x0) / (y - y0)) if y != y0 else float(xs[i])
    return None


def _curve_xy(points: Sequence[tuple[float, float]], weak: float, strong: float) -> tuple[np.ndarray, np.ndarray]:
    ordered = sorted(points, key=lambda p: (p[0], p[1]))
    xs = np.array([p[0] for p in ordered], dtype=float)
    ys = np.array([pgr(p[1], weak, strong) for p in ordered], dtype=float)
    return xs, ys


def sweep(
    weak_score: np.ndarray,
    strong_score: np.ndarray,
    weak_cost: np.ndarray,
    strong_cost: np.ndarray,
    score: np.ndarray,
    direct: np.ndarray | None = None,
) -> list[tuple[float, float, float]]:
    """(share, quality, cost) for every threshold θ of "premium iff score ≥ θ", from θ = +∞ down to min(score).

    `direct` (same scale as `score`, never above it): a prompt with direct ≥ θ goes straight to premium;
    other premium prompts are cascades that paid a cheap call first. None = every premium call is direct.
    Costs are floats in micro-dollars here only for the sweep's arithmetic; reported costs are Decimal.
    """
    n = len(score)
    if direct is None:
        direct = score
    order = np.argsort(-score, kind="stable")
    s_sorted = score[order]
    gain = (strong_score - weak_score)[order]
    cum_gain = np.concatenate([[0.0], np.cumsum(gain)])
    cum_strong_cost = np.concatenate([[0.0], np.cumsum(strong_cost[order])])
    d_order = np.argsort(-direct, kind="stable")
    d_sorted = direct[d_order]
    cum_direct_weak_cost = np.concatenate([[0.0], np.cumsum(weak_cost[d_order])])
    base_quality = float(weak_score.sum())
    total_weak_cost = float(weak_cost.sum())

    thresholds = np.unique(s_sorted)[::-1]
    points = [(0.0, base_quality / n, total_weak_cost)]
    for theta in thresholds:
        k = int(np.searchsorted(-s_sorted, -theta, side="right"))  # prompts with score ≥ θ
        kd = int(np.searchsorted(-d_sorted, -theta, side="right"))  # prompts sent direct
        quality = (base_quality + cum_gain[k]) / n
        cost = total_weak_cost - cum_direct_weak_cost[kd] + cum_strong_cost[k]
        points.append((k / n, quality, cost))
    return points


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


def learned_attach(items: list[EvalItem], scores: Sequence[LearnedScore], *, config: RouterConfig) -> None:
    """Give each item its (held-out) learned score and let the full chain use it where the served chain would."""
    for item, score in zip(items, scores, strict=True):
        item.learned, item.learned_gain = score.score, score.gain
        if item.plan is not None and learned_wanted(item.plan):
            item.plan = learned_apply(config, item.plan, score)
            item.chain_strategy, item.chain_tier = item.plan.strategy, item.plan.tier


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
    from apps.routing.datasets import STRONG_MODEL, WEAK_MODEL

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
        ln_premium = [i.learned >= theta_l for i in items]
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
        ln_risk = np.array([escalation_risk(i.learned, i.uncertainty) for i in items])
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


# --------------------------------------------------------------------------- report


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{round(x, 9) + 0.0:.{digits}f}"  # no "-0.00" from float noise


def report_table(report: SourceReport) -> str:
    lines = [
        "| policy | premium calls | cost (USD) | cost vs premium | quality | vs premium | PGR | APGR | APGR (cost) | CPT(50 %) | CPT(80 %) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.results:
        lines.append(
            f"| {r.name} | {_pct(r.share)} | {r.cost:.4f} | {_pct(float(r.cost / report.strong_cost) if report.strong_cost else None)} "
            f"| {r.quality:.3f} | {_pct(r.quality / report.strong_quality if report.strong_quality else None)} | {_f(r.pgr, 2)} "
            f"| {_f(r.apgr)} | {_f(r.apgr_cost)} | {_pct(r.cpt50)} | {_pct(r.cpt80)} |"
        )
    return "\n".join(lines)


# Experiment rows of `eval_router --learned`: the learned strategy scored by an index built from the other sets only.
OOD_PREFIX = "other sets' index: "
SWEPT = ("keyword", "complexity", "confidence", "complexity+confidence", "learned", "learned+confidence", "full chain")


def best_policy(report: SourceReport) -> PolicyResult:
    return max((r for r in report.results if r.name in SWEPT and r.apgr is not None), key=lambda r: r.apgr or 0.0)


def plot_write(reports: list[SourceReport], path: Path, extra: dict[str, list[PolicyResult]] | None = None) -> None:
    """Quality against premium share for every swept policy, one panel per set; dots mark the configured operating points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "keyword": ":",
        "complexity": "--",
        "confidence": "-.",
        "complexity+confidence": "-",
        "full chain": "-",
        "random (matched cost)": ":",
        "perfect": "-",
        "learned": (0, (1, 1)),
        "learned+confidence": "-",
        OOD_PREFIX + "learned+confidence": (0, (5, 2)),
    }
    colors = {
        "keyword": "tab:brown",
        "complexity": "tab:blue",
        "confidence": "tab:purple",
        "complexity+confidence": "tab:green",
        "full chain": "tab:red",
        "random (matched cost)": "grey",
        "perfect": "black",
        "learned": "tab:olive",
        "learned+confidence": "tab:olive",
        OOD_PREFIX + "learned+confidence": "tab:pink",
    }
    cols = 2 if len(reports) > 1 else 1
    rows = math.ceil(len(reports) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(reports) :]:
        ax.set_visible(False)
    for ax, report in zip(axes.flat, reports, strict=False):
        results = report.results + [r for r in (extra or {}).get(report.source, []) if r.name in styles]
        for r in results:
            if r.curve and r.name in styles:
                curve = sorted(r.curve, key=lambda p: (p.share, p.quality))
                label = r.name + (" (experiment)" if r.name.startswith(OOD_PREFIX) else "")
                ax.plot(
                    [p.share * 100 for p in curve],
                    [p.quality for p in curve],
                    linestyle=styles[r.name],
                    color=colors[r.name],
                    label=label,
                    linewidth=2.0 if r.name in ("full chain", "learned+confidence") else 1.3,
                )
            if r.name in ("full chain", "complexity+confidence", "complexity", "confidence", "learned", "learned+confidence"):
                ax.plot([r.share * 100], [r.quality], "o", color=colors[r.name], markersize=5)
        ax.axhline(report.weak_quality, color="tab:orange", linewidth=0.8, linestyle="--", label="always cheap")
        ax.axhline(report.strong_quality, color="tab:cyan", linewidth=0.8, linestyle="--", label="always premium")
        ax.axhline(0.95 * report.strong_quality, color="tab:cyan", linewidth=0.6, linestyle=":", label="95 % of premium")
        apgrs = ", ".join(f"{r.name} {r.apgr:.2f}" for r in results if r.name in ("full chain", "learned+confidence") and r.apgr)
        ax.set_title(f"{SOURCE_LABELS.get(report.source, report.source)} (n={report.n}); APGR {apgrs}", fontsize=9)
        ax.set_xlabel("premium calls (%)")
        ax.set_ylabel("quality (mean score)")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(
        "Routing policies on recorded Mixtral-8x7B (cheap) / GPT-4-1106 (premium) answers; dots: configured thresholds",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.07 if rows > 1 else 0.12, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def signal_table(items: list[EvalItem]) -> str:
    """How often each confidence signal fired on the cheap answers, and how often it was right to (cheap answer worse)."""
    with_text = [i for i in items if i.weak_response is not None]
    if not with_text:
        return ""
    worse = [i for i in with_text if i.weak_score < i.strong_score]
    wrong = [i for i in with_text if i.weak_score < 1.0]
    names = sorted({name for i in with_text for name in i.signals})
    lines = ["| signal | fired | cheap answer worse than premium | cheap answer not perfect |", "|---|---|---|---|"]
    for name in names + ["(any)"]:
        fired = [i for i in with_text if (name in i.signals if name != "(any)" else i.signals)]
        if not fired:
            continue
        worse_n = sum(1 for i in fired if i.weak_score < i.strong_score)
        wrong_n = sum(1 for i in fired if i.weak_score < 1.0)
        lines.append(
            f"| {name} | {len(fired)} ({_pct(len(fired) / len(with_text))}) | {_pct(worse_n / len(fired))} "
            f"| {_pct(wrong_n / len(fired))} |"
        )
    lines.append(
        f"\n{len(with_text)} cheap answers with text; {len(worse)} are worse than the premium answer, {len(wrong)} not perfect."
    )
    return "\n".join(lines)


def _reach_95(result: PolicyResult, report: SourceReport) -> str:
    if result.share_for_95 is None:
        return "95 % of premium quality is out of its reach"
    cost = (
        f", {_pct(float(result.cost_for_95 / report.strong_cost))} of the premium cost" if result.cost_for_95 is not None else ""
    )
    return f"95 % of premium quality at {_pct(result.share_for_95)} premium calls{cost}"


LEARNED_THRESHOLDS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def learned_threshold_table(items: list[EvalItem], *, config: RouterConfig, policy: PolicySpec) -> str:
    """The full chain at other learned thresholds (the served decisions, with only the threshold changed)."""
    if not any(i.chain_strategy == "learned" for i in items):
        return ""
    cheap, premium = eval_tiers(config, policy)
    n = len(items)
    weak_q = sum(i.weak_score for i in items) / n
    strong_q = sum(i.strong_score for i in items) / n
    weak_cost = sum((i.weak_cost for i in items), ZERO)
    strong_cost = sum((i.strong_cost for i in items), ZERO)
    lines = [
        "| learned threshold | premium calls | cost vs premium | quality vs premium | PGR | random at that cost | lead over random (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for theta in sorted({*LEARNED_THRESHOLDS, policy.learned_threshold}):
        swept = replace(policy, learned_threshold=theta)
        direct, premium_answer = [], []
        for i in items:
            d = (i.learned >= theta) if i.chain_strategy == "learned" and i.learned is not None else i.chain_tier == premium.name
            up = (not d) and escalation_decide(
                policy=swept, strategy=i.chain_strategy, complexity=i.complexity, uncertainty=i.uncertainty, learned=i.learned
            )[0]
            direct.append(d)
            premium_answer.append(d or up)
        res = _point_result("", "", items, premium_answer, [not d for d in direct], weak_q, strong_q)
        span = strong_cost - weak_cost
        p = min(max(float((res.cost - weak_cost) / span) if span else 0.0, 0.0), 1.0)
        rnd_q = weak_q + p * (strong_q - weak_q)
        mark = " (configured)" if theta == policy.learned_threshold else ""
        lines.append(
            f"| {theta:.2f}{mark} | {_pct(res.share)} | {_pct(float(res.cost / strong_cost))} | {_pct(res.quality / strong_q)} "
            f"| {res.pgr:.2f} | {_pct(rnd_q / strong_q)} | {100 * (res.quality - rnd_q) / strong_q:+.1f} |"
        )
    return "\n".join(lines)


def chain_text(policy: PolicySpec, items: list[EvalItem], theta_c: float) -> str:
    if any(i.chain_strategy == "learned" for i in items):
        return (
            f"keyword rules, then learned score ≥ {policy.learned_threshold:.2f} → premium, else cheap and escalation when "
            f"risk ≥ {escalation_threshold(policy, 'learned'):.2f}"
        )
    return f"complexity ≥ {theta_c:.2f} → premium, escalation risk ≥ {policy.confidence_threshold:.2f}"


def markdown_report(
    reports: list[SourceReport],
    *,
    items: list[EvalItem],
    dataset: str,
    policy: PolicySpec,
    config: RouterConfig,
    weak_price: Price,
    strong_price: Price,
    plot_rel: str | None,
    extra: dict[str, list[PolicyResult]] | None = None,
    command: str = "",
    learned_note: str = "",
) -> str:
    """docs/router-eval.md. `learned_note`: how the learned scores were held out (empty: not evaluated)."""
    cheap, premium = eval_tiers(config, policy)
    theta_c = float(policy.complexity_thresholds.get(premium.name, premium.complexity_min))
    head = reports[0]
    best = best_policy(head)
    full = head.result("full chain")
    label = SOURCE_LABELS.get(head.source, head.source) if head.source else dataset
    out: list[str] = []
    out.append("# Router evaluation: routing policies on recorded answers of real models\n")
    out.append(
        f"_Written by `{command or 'manage.py eval_router'}`; do not edit by hand. Data: "
        + (
            "the full RouteLLM GSM8K + MMLU + MT-Bench sets"
            if dataset == "full"
            else "the vendored 50-prompt GSM8K fixture (`fixtures/routellm/eval50.jsonl`; run with `--full` for the full sets)"
        )
        + "._\n"
    )
    out.append("## Summary\n")
    goal = "meets" if (best.apgr or 0) >= 0.60 else "misses"
    out.append(
        f"- On {label} (n = {head.n}), the best served policy is **{best.name}** with **APGR {best.apgr:.3f}** "
        f"(random = 0.500, perfect = {head.result('perfect').apgr:.3f}): it {goal} the 0.60 goal. " + _reach_95(best, head) + "."
    )
    out.append(
        f"- The full chain of route `finops/{policy.name}` at its configured thresholds ({chain_text(policy, items, theta_c)}) "
        f"costs **{_pct(float(full.cost / head.strong_cost))} of always-premium** "
        f"(a {_pct(1 - float(full.cost / head.strong_cost))} cut) for **{_pct(full.quality / head.strong_quality)} of its quality** "
        f"(PGR {full.pgr:.2f}, {_pct(full.share)} premium calls, APGR {_f(full.apgr)}); random routing at the same cost gets "
        f"{_pct(head.result('random (matched cost)').quality / head.strong_quality)}."
    )
    for report in reports[1:]:
        b, f = best_policy(report), report.result("full chain")
        out.append(
            f"- {SOURCE_LABELS.get(report.source, report.source)} (n = {report.n}): best {b.name}, APGR {b.apgr:.3f} "
            f"({_reach_95(b, report)}); full chain at its thresholds: {_pct(float(f.cost / report.strong_cost))} of the "
            f"premium cost for {_pct(f.quality / report.strong_quality)} of premium quality "
            f"(random at that cost: {_pct(report.result('random (matched cost)').quality / report.strong_quality)})."
        )
    if learned_note:
        out.append(f"- Learned scores are held out: {learned_note}.")
    if extra:
        names = sorted({r.name for rows in extra.values() for r in rows})
        for name in names:
            per = [
                (source, next(r for r in rows if r.name == name))
                for source, rows in extra.items()
                if any(r.name == name for r in rows)
            ]
            listing = ", ".join(f"{SOURCE_LABELS.get(source, source)} {r.apgr:.3f}" for source, r in per)
            out.append(
                f"- Out of distribution (experiment): **{name.removeprefix(OOD_PREFIX)}** scored by an index built from the "
                f"*other* sets only — APGR {listing}."
            )
    out.append("")
    if plot_rel:
        out.append(f"![quality against premium share]({plot_rel})\n")

    out.append("## Setup\n")
    out.append(
        f"- **Pair:** cheap tier `{cheap.models[0].model}` (recorded answers of Mixtral-8x7B-Instruct), premium tier "
        f"`{premium.models[0].model}` (GPT-4-1106), the `{policy.ladder}` ladder of route `finops/{policy.name}`."
    )
    out.append(
        f"- **Prices** (ledger rows in force): cheap ${weak_price.input_per_1m} / ${weak_price.output_per_1m}, premium "
        f"${strong_price.input_per_1m} / ${strong_price.output_per_1m} per 1M input / output tokens."
    )
    out.append(
        "- **Cost** of an answer = prompt tokens × input price + answer tokens × output price, counted with "
        "`finops.tokens.count_tokens` on the recorded texts (GSM8K answers; MT-Bench turn-1 answers cut out of the "
        "judge prompts). MMLU has no answer text: RouteLLM generated it with `max_new_tokens=1`, so 1 output token. "
        "The few-shot prefixes RouteLLM prepended (8-shot GSM8K, 5-shot MMLU) are not in the data and not counted."
    )
    out.append(
        "- **Quality** = GSM8K / MMLU correctness labels (0/1) and MT-Bench GPT-4 judge scores / 10 (both turns averaged)."
    )
    out.append(
        "- **Confidence** offline = the signals computable from the cheap answer's text (format: GSM8K's asked-for "
        "`#### <answer>` line; truncation; wrong worked arithmetic; refusal; hedging; missing number). No logprobs are "
        "recorded, and MMLU has no text, so there the confidence strategy has nothing to read."
    )
    if learned_note:
        out.append(
            "- **Learned** = the served strategy (`apps.routing.learned`): the mean premium-minus-cheap score of the prompt's "
            "k nearest labelled prompts (cosine over the semantic cache's MiniLM embedding of the last user message, "
            "PCA-projected), as a percentile of the index's own leave-one-out scores (0..1); "
            f"score ≥ {policy.learned_threshold:.2f} → premium. Held out: {learned_note}."
        )
    out.append(
        "- **APGR** sweeps each policy's threshold over its whole range (RouteLLM's method); *APGR (cost)* integrates "
        "against normalised cost instead of premium share, which charges a cascade its cheap first call. CPT = premium "
        "share needed to recover 50 % / 80 % of the gap. The random row is the expected value at the full chain's cost."
    )
    out.append("")
    for report in reports:
        out.append(f"## {SOURCE_LABELS.get(report.source, report.source) if report.source else dataset} (n = {report.n})\n")
        out.append(
            f"Cheap quality {report.weak_quality:.3f}, premium {report.strong_quality:.3f}; always-cheap costs "
            f"${report.weak_cost:.4f}, always-premium ${report.strong_cost:.4f}.\n"
        )
        out.append(report_table(report))
        extra_rows = (extra or {}).get(report.source, [])
        if extra_rows:
            out.append("")
            out.append(
                "Experiment, out of distribution: the learned strategy scored by an index built from the other sets only.\n"
            )
            out.append(
                report_table(
                    SourceReport(
                        source=report.source,
                        n=report.n,
                        weak_quality=report.weak_quality,
                        strong_quality=report.strong_quality,
                        weak_cost=report.weak_cost,
                        strong_cost=report.strong_cost,
                        results=extra_rows,
                    )
                )
            )
        out.append("")
    thresholds = learned_threshold_table(items, config=config, policy=policy)
    if thresholds:
        out.append(f"## The learned threshold ({label}, n = {head.n})\n")
        out.append(
            "The full chain's decisions with only `learned_threshold` changed (escalation after a learned decision at "
            "max(confidence threshold, learned threshold)); random = random routing at the same cost.\n"
        )
        out.append(thresholds)
        out.append("")
    table = signal_table(items)
    if table:
        out.append("## Confidence signals on the cheap answers\n")
        out.append(table)
        out.append("")
    out.append("## Reading the numbers\n")
    out.append(
        "- **Why the heuristics stall on MMLU.** The prompts are short single-question multiple choice; length, code, "
        "math and reasoning cues barely separate the questions GPT-4 gets right and Mixtral does not (per-feature AUC "
        "0.49–0.54), and math cues even point the wrong way (GPT-4's recorded high-school-mathematics answers score 3 %). "
        "With no answer text the cascade has nothing to check. In production the cheap answer's token logprobs (the "
        "`logprob` signal) would be there for exactly this kind of one-token answer.\n"
        "- **Where they work.** On GSM8K the cheap answer betrays itself: a missing `####` line, a truncated "
        "derivation or a wrong worked calculation flags a wrong answer most of the time (table above), so the cascade "
        "recovers the gap well ahead of random. On MT-Bench, code / math / multi-step prompts are where GPT-4 wins.\n"
        "- **What the learned strategy adds, and its limit.** Prompts near each other in MiniLM space share outcomes: "
        "on MMLU the neighbours are mostly questions of the same subject, and the subjects where GPT-4 beats Mixtral "
        "are learnable from labelled examples, which no prompt-surface heuristic sees. That is in-distribution "
        "learning: the index holds prompts of the same benchmarks (other prompts, never the evaluated one). Scored by "
        "an index of the *other* benchmarks only (`eval_router --full --learned`), it does not transfer (the "
        "out-of-distribution rows); RouteLLM's published routers were trained on far more preference data (Chatbot "
        "Arena) than this index holds. For traffic unlike these benchmarks, the index should be rebuilt from the "
        "deployment's own labelled outcomes (`build_router_index --records labelled.jsonl`).\n"
        "- **Offline = served.** `apps/routing/tests/test_gateway_e2e.py` sends the 50 vendored prompts through the "
        "running gateway to the replay upstream (`mock_llm --replay`), with the served index minus those 50 prompts: "
        "every decision, the billed cost (X-Cost-USD, Decimal) and the quality equal this harness's full chain, prompt "
        "for prompt. `eval_router --live URL --api-key KEY` runs the same check against any gateway whose upstream is "
        "the replay mock."
    )
    out.append("")
    out.append("## Reproduce\n")
    out.append(
        "```sh\n.venv/bin/python manage.py eval_router            # the 50-prompt subset, written under its own heading (the tests run it)\n"
        ".venv/bin/python manage.py build_router_index   # the served index from the full sets vendored in fixtures/routellm (embeds ~8.7k prompts once)\n"
        ".venv/bin/python manage.py eval_router --full     # GSM8K + MMLU + MT-Bench, learned scores by 5-fold cross-validation\n"
        ".venv/bin/python manage.py eval_router --full --learned   # + the out-of-distribution experiment\n```\n"
    )
    return "\n".join(out)
