"""Held-out evaluation of the semantic tier: threshold and guard chosen on one half of the pairs, reported on the other.

The sweep of `evaluation.threshold_sweep` picks and reports on the same pairs, which flatters the pick. Here the
vendored pairs (GPTCache's, the hand-written chat pairs, their generated hard negatives) and the argument-swap
set (`fixtures/cache_swaps`, `evals/cache/heldout_swaps.py`) are split in two halves by a hash of the cached
prompt. On the *tuning* half every threshold is tried with and without the guard; the setting kept is the one
with the highest recall whose precision (hard negatives counted as wrong answers) is at least PICK_PRECISION
with no swap served (ties: the higher threshold). That one setting is then reported on the *held-out* half,
and on the whole swap set. A swap is asked of a cache holding its own origin next to the half's prompts, and
any hit is a wrong answer. (Swaps asked of a cache of *every* swap origin are reported too: a few templates
ask the same relation in other words, "how does A affect B" / "what is the impact of B on A", which the guard
does not see; `heldout_markdown` lists them.)

Acceptance (issue #20): on the held-out half precision >= 0.97 with recall >= 0.45, and 0 hits on the swap set.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apps.cache.guard import Signature, choose_hit, guard_signature
from evals.cache.evaluation import DEFAULT_THRESHOLDS, TOP_K, Pair
from evals.cache.heldout_swaps import load_swaps

PICK_PRECISION = 0.98  # on the tuning half; a margin over the 0.97 the held-out half must reach
ACCEPT_PRECISION = 0.97
ACCEPT_RECALL = 0.45
SECTION = re.compile(r"<!-- heldout -->.*?<!-- /heldout -->\n?", re.S)


def half_of(text: str) -> int:
    """0 (tuning) or 1 (held out): a stable hash of the cached prompt, independent of order and of the embedding."""
    return hashlib.sha256(text.encode()).digest()[0] & 1


@dataclass
class HalfScore:
    positives: int = 0
    correct: int = 0
    wrong: int = 0  # served to a paraphrase, but another prompt's answer
    easy: int = 0
    easy_hits: int = 0
    hard: int = 0
    hard_hits: int = 0
    swaps: int = 0
    swap_hits: int = 0
    hard_hits_by_kind: Counter = field(default_factory=Counter)

    @property
    def served(self) -> int:
        return self.correct + self.wrong + self.easy_hits + self.hard_hits

    @property
    def precision(self) -> float:
        """Right answers over every answer served, hard negatives included (swap hits are counted apart)."""
        return self.correct / self.served if self.served else 1.0

    @property
    def recall(self) -> float:
        return self.correct / self.positives if self.positives else 0.0


@dataclass(frozen=True)
class Setting:
    threshold: float
    guard: bool

    def __str__(self) -> str:
        return f"threshold {self.threshold:.2f}, guard {'on' if self.guard else 'off'}"


@dataclass
class HeldOutCacheReport:
    picked: Setting
    tuning: HalfScore
    held_out: HalfScore
    swaps_all: HalfScore  # every swap pair, its origin cached next to the held-out half's prompts
    default: HalfScore  # the held-out half at the production default (threshold 0.92, guard on)
    sizes: dict[str, int]
    embedder: str = ""
    cross_template: list[tuple[float, str, str]] = field(default_factory=list)  # (similarity, swapped, served)

    @property
    def passes(self) -> bool:
        return (
            self.held_out.precision >= ACCEPT_PRECISION
            and self.held_out.recall >= ACCEPT_RECALL
            and self.swaps_all.swap_hits == 0
        )


@dataclass
class _Query:
    kind: str  # positive | easy | hard:<kind> | swap
    text: str
    own: int | None  # index of its own cached prompt in the half's cache (positives, easy)


def _half(pairs: list[Pair], which: int) -> tuple[list[str], list[_Query]]:
    """The cached prompts and the queries of one half of the pairs."""
    cache: list[str] = []
    queries: list[_Query] = []
    for pair in pairs:
        if half_of(pair.origin) != which:
            continue
        cache.append(pair.origin)
        queries.append(_Query("positive", pair.similar, len(cache) - 1))
        queries.append(_Query("easy", pair.similar, len(cache) - 1))
        queries += [_Query(f"hard:{kind}", text, None) for kind, text in pair.hard_negatives]
    return cache, queries


def _swap_hits(
    base: list[str], swaps: list[dict[str, str]], vectors: dict[str, np.ndarray], settings: list[Setting]
) -> dict[Setting, list[tuple[float, str, str]]]:
    """Each swap asked of `base` + its own origin: the (similarity, swapped, served prompt) of every hit."""
    matrix = np.vstack([vectors[t] for t in base]) if base else np.zeros((0, 384), dtype=np.float32)
    out: dict[Setting, list[tuple[float, str, str]]] = {s: [] for s in settings}
    for swap in swaps:
        cache = base + [swap["origin"]]
        sims = np.concatenate([matrix @ vectors[swap["swapped"]], [float(vectors[swap["origin"]] @ vectors[swap["swapped"]])]])
        top = np.argsort(-sims)[:TOP_K]
        query = guard_signature(swap["swapped"])
        cands = [(float(sims[j]), guard_signature(cache[j])) for j in top]
        for setting in settings:
            decision = choose_hit(cands, query, threshold=setting.threshold, use_guard=setting.guard)
            if decision.index is not None:
                out[setting].append((cands[decision.index][0], swap["swapped"], cache[top[decision.index]]))
    return out


def _score(
    cache: list[str],
    queries: list[_Query],
    vectors: dict[str, np.ndarray],
    settings: list[Setting],
) -> dict[Setting, HalfScore]:
    """Exact top-k neighbours once, then production's decision rule (`choose_hit`) per setting."""
    if not cache:
        return {s: HalfScore() for s in settings}
    matrix = np.vstack([vectors[t] for t in cache])
    sigs: dict[str, Signature] = {}

    def sig(text: str) -> Signature:
        if text not in sigs:
            sigs[text] = guard_signature(text)
        return sigs[text]

    prepared = []
    for q in queries:
        sims = matrix @ vectors[q.text]
        if q.kind == "easy" and q.own is not None:
            sims = sims.copy()
            sims[q.own] = -2.0  # its own prompt is not cached
        top = np.argsort(-sims)[:TOP_K]
        prepared.append((q, [(float(sims[j]), int(j)) for j in top]))
    out: dict[Setting, HalfScore] = {}
    for setting in settings:
        score = HalfScore()
        for q, cands in prepared:
            if q.kind == "positive":
                score.positives += 1
            elif q.kind == "easy":
                score.easy += 1
            else:
                score.hard += 1
            decision = choose_hit(
                [(s, sig(cache[j])) for s, j in cands], sig(q.text), threshold=setting.threshold, use_guard=setting.guard
            )
            if decision.index is None:
                continue
            hit = cands[decision.index][1]
            if q.kind == "positive":
                if hit == q.own:
                    score.correct += 1
                else:
                    score.wrong += 1
            elif q.kind == "easy":
                score.easy_hits += 1
            else:
                score.hard_hits += 1
                score.hard_hits_by_kind[q.kind[5:]] += 1
        out[setting] = score
    return out


def _pick(scores: dict[Setting, HalfScore]) -> Setting:
    ok = [s for s, r in scores.items() if r.precision >= PICK_PRECISION and r.swap_hits == 0]
    if not ok:  # nothing precise enough: the strictest setting
        return max(scores, key=lambda s: (s.guard, s.threshold))
    return max(ok, key=lambda s: (round(scores[s].recall, 9), s.guard, s.threshold))


def heldout_evaluate(
    pairs: list[Pair],
    *,
    embed: Callable[[list[str]], np.ndarray],
    swaps: list[dict[str, str]] | None = None,
    thresholds: list[float] = DEFAULT_THRESHOLDS,
    embedder: str = "",
) -> HeldOutCacheReport:
    """`pairs` with their hard negatives already generated (`evals.cache.pairs.generate_hard_negatives`)."""
    swaps = load_swaps() if swaps is None else swaps
    halves = [_half(pairs, 0), _half(pairs, 1)]
    swap_halves = [[w for w in swaps if half_of(w["origin"]) == k] for k in (0, 1)]
    texts = sorted(
        {t for cache, queries in halves for t in cache + [q.text for q in queries]}
        | {w[k] for w in swaps for k in ("origin", "swapped")}
    )
    matrix = embed(texts)
    vectors = {t: matrix[i] for i, t in enumerate(texts)}
    settings = [Setting(t, g) for t in thresholds for g in (False, True)]
    tuning = _score(*halves[0], vectors, settings)
    for setting, hits in _swap_hits(halves[0][0], swap_halves[0], vectors, settings).items():
        tuning[setting].swaps, tuning[setting].swap_hits = len(swap_halves[0]), len(hits)
    picked = _pick(tuning)
    default = Setting(0.92, True)
    held = _score(*halves[1], vectors, [picked, default])
    for setting, hits in _swap_hits(halves[1][0], swap_halves[1], vectors, [picked, default]).items():
        held[setting].swaps, held[setting].swap_hits = len(swap_halves[1]), len(hits)
    # Every swap pair, asked of the held-out half's prompts + its own origin: 0 hits required.
    swaps_all = HalfScore(swaps=len(swaps))
    swaps_all.swap_hits = len(_swap_hits(halves[1][0], swaps, vectors, [picked])[picked])
    # Informational: every swap asked of a cache of every swap origin (other templates included).
    origins = sorted({w["origin"] for w in swaps})
    cross_hits: list[tuple[float, str, str]] = []
    omatrix = np.vstack([vectors[t] for t in origins])
    for w in swaps:
        sims = omatrix @ vectors[w["swapped"]]
        top = np.argsort(-sims)[:TOP_K]
        cands = [(float(sims[j]), guard_signature(origins[j])) for j in top]
        decision = choose_hit(cands, guard_signature(w["swapped"]), threshold=picked.threshold, use_guard=picked.guard)
        if decision.index is not None:
            cross_hits.append((cands[decision.index][0], w["swapped"], origins[top[decision.index]]))
    sizes = {
        "tuning pairs": sum(1 for p in pairs if half_of(p.origin) == 0),
        "held-out pairs": sum(1 for p in pairs if half_of(p.origin) == 1),
        "tuning hard negatives": sum(len(p.hard_negatives) for p in pairs if half_of(p.origin) == 0),
        "held-out hard negatives": sum(len(p.hard_negatives) for p in pairs if half_of(p.origin) == 1),
        "swap pairs": len(swaps),
    }
    return HeldOutCacheReport(
        picked=picked,
        tuning=tuning[picked],
        held_out=held[picked],
        swaps_all=swaps_all,
        default=held[default],
        sizes=sizes,
        embedder=embedder,
        cross_template=sorted(cross_hits, reverse=True),
    )


def heldout_markdown(report: HeldOutCacheReport) -> str:
    def row(label: str, s: HalfScore) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.hard_hits_by_kind.items())) or "none"
        return (
            f"| {label} | {s.positives} | **{s.precision:.3f}** | **{s.recall:.3f}** | {s.correct} | {s.wrong} | "
            f"{s.easy_hits}/{s.easy} | {s.hard_hits}/{s.hard} ({kinds}) | {s.swap_hits}/{s.swaps} |"
        )

    verdict = "holds" if report.passes else "**does not hold**"
    cross_rows = (
        "\n".join(f"| {sim:.3f} | {asked} | {served} |" for sim, asked, served in report.cross_template[:12]) or "| – | – | – |"
    )
    sizes = ", ".join(f"{n} {k}" for k, n in report.sizes.items())
    return f"""<!-- heldout -->
## Held out: threshold and guard chosen on one half, reported on the other

_Generated by `manage.py eval_cache` (`evals/cache/heldout.py`){f"; embeddings: {report.embedder}" if report.embedder else ""}._

The sweep above picks and reports on the same pairs. Here the pairs and the argument-swap set
(`fixtures/cache_swaps`: "can a lawyer sue a doctor" / "can a doctor sue a lawyer", built by
`evals/cache/heldout_swaps.py`) are split in two by a hash of the cached prompt ({sizes}). A swap is asked
of a cache holding its own origin next to the half's prompts. Every threshold
from {min(DEFAULT_THRESHOLDS):.2f} to {max(DEFAULT_THRESHOLDS):.2f}, with and without the guard, is tried on
the tuning half; the setting kept has the highest recall with precision ≥ {PICK_PRECISION} and no swap
served. It is then scored once on the held-out half. *Precision* here counts every answer served: to
paraphrases, easy negatives and hard negatives (swaps are counted on their own).

Picked on the tuning half: **{report.picked}**.

| half | paraphrases | precision | recall | right answers | other prompt's answer | easy-negative hits | hard-negative hits | swap hits |
|---|---|---|---|---|---|---|---|---|
{row(f"tuning ({report.picked})", report.tuning)}
{row(f"held out ({report.picked})", report.held_out)}
{row("held out, the production default (threshold 0.92, guard on)", report.default)}
{row(f"every swap pair, each asked of the held-out prompts + its own origin ({report.picked})", report.swaps_all)}

Swaps asked of a cache of every swap origin (other templates' prompts included), at the picked setting:
{len(report.cross_template)} hits of {report.sizes["swap pairs"]}. These are not a swap's own origin: another template asks about the same two
things, and the guard, which compares how the two prompts place the same words, does not see that the relation
runs the other way when it is worded differently ("how does A affect B" / "what is the impact of B on A"). Only a
higher threshold stops these; a rule on word order alone refuses too many true paraphrases ("Is it safe to eat
raw eggs?" / "Are raw eggs safe to eat?"):

| similarity | asked | served the answer of |
|---|---|---|
{cross_rows}

The acceptance (held-out precision ≥ {ACCEPT_PRECISION} with recall ≥ {ACCEPT_RECALL}, and 0 hits on the swap set) {verdict}.
<!-- /heldout -->
"""


def write_heldout_section(path: Path, report: HeldOutCacheReport) -> None:
    """Insert (or replace) the held-out block at the end of the runbook, leaving the rest of it alone."""
    text = SECTION.sub("", path.read_text()).rstrip() if path.exists() else ""
    path.write_text((text + "\n\n" if text else "") + heldout_markdown(report))
