"""Offline evaluation of the semantic tier: a threshold sweep on paraphrase pairs, and a workload replay.

Sweep. Every pair's `origin` is a cached prompt; the queries are
- positives: each `similar` (a paraphrase); a hit on its own origin is correct, on another origin wrong;
- easy negatives: each `similar` again, with its own origin left out of the cache, so any hit is wrong;
- hard negatives: an origin with one number, named entity or negation changed (generated here, plus the
  hand-written ones of apps/cache/fixtures/chat_pairs.jsonl); any hit is a wrong answer.
Nearest neighbours are exact (numpy), the top-k and the decision rule are production's (`choose_hit`),
so the figures measure the threshold and the guard, not the ANN index.

Replay. A stream of requests with Zipf-distributed repeats, paraphrases, hard negatives and one-off
prompts goes through the real pipeline hooks (Redis, Postgres, the local embedding model) for a
dedicated org; it reports the hit rate of each tier, the dollars saved and any wrong answer served.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from apps.cache.guard import Signature, choose_hit, guard_mismatch, guard_signature
from evals.cache.pairs import ROOT, Pair
from finops import clock

RUNBOOK = ROOT / "docs" / "cache-threshold-runbook.md"
DEFAULT_THRESHOLDS = [round(0.80 + 0.01 * i, 2) for i in range(18)]  # 0.80 … 0.97
TOP_K = 5

# --- sweep ----------------------------------------------------------------------------------


@dataclass
class Query:
    kind: str  # positive | easy | hard:<kind>
    pair_index: int
    text: str


@dataclass
class SweepRow:
    threshold: float
    guard: bool
    positives: int
    correct: int
    wrong_positive: int
    easy: int
    easy_hits: int
    hard: int
    hard_hits: int
    hard_hits_by_kind: dict[str, int]

    @property
    def served(self) -> int:
        return self.correct + self.wrong_positive + self.easy_hits

    @property
    def precision(self) -> float:
        return self.correct / self.served if self.served else 1.0

    @property
    def recall(self) -> float:
        return self.correct / self.positives if self.positives else 0.0

    @property
    def hit_rate(self) -> float:
        total = self.positives + self.easy + self.hard
        return (self.served + self.hard_hits) / total if total else 0.0

    @property
    def hard_false_rate(self) -> float:
        return self.hard_hits / self.hard if self.hard else 0.0

    @property
    def precision_with_hard(self) -> float:
        served = self.served + self.hard_hits
        return self.correct / served if served else 1.0


@dataclass
class SweepResult:
    label: str
    rows: list[SweepRow]
    pairs: int
    hard_by_kind: dict[str, int]
    seconds: float
    examples: list[tuple[str, float, str, str]]  # (kind, similarity, query, cached) hard negatives above 0.92
    embedder: str = ""  # which embedding produced the vectors, e.g. "all-minilm-l6-v2 (onnx-int8 runtime)"
    # Production's two stages (apps.cache.semantic): candidates are the top-k by the static embedding at or above
    # `static_threshold`, their full-model similarity decides. None: candidates by the full model (one stage).
    static_threshold: float | None = None
    full_model_rows: list[SweepRow] = field(default_factory=list)  # the same sweep with one full-model stage
    confirm_share: dict[str, float] = field(default_factory=dict)  # per query kind: share that ran the full model

    def full_model_row(self, threshold: float, guard: bool) -> SweepRow | None:
        return next((r for r in self.full_model_rows if abs(r.threshold - threshold) < 1e-9 and r.guard == guard), None)

    def row(self, threshold: float, guard: bool) -> SweepRow:
        return next(r for r in self.rows if abs(r.threshold - threshold) < 1e-9 and r.guard == guard)


Embed = Callable[[list[str]], np.ndarray]


def local_embed(texts: list[str], *, progress: bool = True) -> np.ndarray:
    from apps.embeddings.embeddings import local_embedder

    local_embedder.load()
    local_embedder.use_all_cores()  # offline batch work
    out: list[np.ndarray] = []
    chunk = 256  # each chunk is sorted by length before batching, so padding stays small
    for start in tqdm(range(0, len(texts), chunk), desc="embedding", unit="chunk", disable=not progress):
        for vector in local_embedder.encode(texts[start : start + chunk], batch_size=64, check_length=False):
            if vector is None:  # only a text over MAX_LOCAL_CHARS: the eval sets have none
                raise ValueError("a text is too long to embed locally (over embeddings.MAX_LOCAL_CHARS)")
            out.append(vector)
    return np.vstack(out).astype(np.float32) if out else np.zeros((0, 384), dtype=np.float32)


def static_embed(texts: list[str]) -> np.ndarray:
    """The static first stage's vectors (apps.embeddings.static); an empty text's is zero (it never matches)."""
    from apps.embeddings import STATIC_DIM
    from apps.embeddings.static import static_embedder

    out = np.zeros((len(texts), STATIC_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        vector, _ = static_embedder.embed(text)
        if vector is not None:
            out[i] = vector
    return out


def threshold_sweep(
    pairs: list[Pair],
    *,
    thresholds: list[float] = DEFAULT_THRESHOLDS,
    embed: Embed | None = None,
    label: str = "",
    progress: bool = True,
    static: Embed | None = None,
    static_threshold: float | None = None,
) -> SweepResult:
    """The sweep of the semantic tier as production runs it: with `static` (and `static_threshold`), two stages
    (the static embedding proposes, the full model `embed` confirms); without, the full model alone."""
    started = time.monotonic()
    embedder = ""
    if embed is None:
        from apps.embeddings.embeddings import LOCAL_MODEL_NAME, local_embedder

        def embed(texts: list[str]) -> np.ndarray:
            return local_embed(texts, progress=progress)

        local_embedder.load()
        embedder = f"{LOCAL_MODEL_NAME} ({local_embedder.runtime} runtime)"
    queries: list[Query] = []
    for i, pair in enumerate(pairs):
        queries.append(Query("positive", i, pair.similar))
        queries.append(Query("easy", i, pair.similar))
        for kind, text in pair.hard_negatives:
            queries.append(Query(f"hard:{kind}", i, text))
    texts = sorted({p.origin for p in pairs} | {q.text for q in queries})
    index = {t: n for n, t in enumerate(texts)}
    vectors = embed(texts)
    origins = vectors[[index[p.origin] for p in pairs]]
    origin_sigs = [guard_signature(p.origin) for p in pairs]
    sig_cache: dict[str, Signature] = {}

    static_vectors = static(texts) if static is not None else None
    static_origins = static_vectors[[index[p.origin] for p in pairs]] if static_vectors is not None else None

    # Top-k candidates per query, once; the sweep only replays the decision on them.
    prepared: list[tuple[Query, Signature, list[tuple[float, int]]]] = []
    one_stage: list[tuple[Query, Signature, list[tuple[float, int]]]] = []
    confirms: Counter[str] = Counter()
    for q in tqdm(queries, desc="nearest neighbours", unit="query", disable=not progress):
        sims = origins @ vectors[index[q.text]]
        if q.kind == "easy":
            sims = sims.copy()
            sims[q.pair_index] = -2.0  # its own origin is not cached
        top = np.argsort(-sims)[:TOP_K]
        sig = sig_cache.get(q.text) or sig_cache.setdefault(q.text, guard_signature(q.text))
        one_stage.append((q, sig, [(float(sims[j]), int(j)) for j in top]))
        if static_origins is None or static_vectors is None:
            continue
        near = static_origins @ static_vectors[index[q.text]]
        if q.kind == "easy":
            near = near.copy()
            near[q.pair_index] = -2.0
        # Stage 1 as production: top-k by the static cosine, at or above the static threshold, not refused by the guard.
        proposed = [int(j) for j in np.argsort(-near)[:TOP_K] if near[j] >= (static_threshold or 0.0)]
        # Production drops the proposals the guard refuses before confirming (the same outcome as the guard in
        # `choose_hit`, which the guard-off rows skip), and runs the full model only if one is left.
        if any(guard_mismatch(sig, origin_sigs[j]) is None for j in proposed):
            confirms[q.kind.split(":")[0]] += 1
        prepared.append((q, sig, sorted(((float(sims[j]), j) for j in proposed), key=lambda c: -c[0])))
    if static_origins is None:
        prepared = one_stage

    # The nearest hard negative of each kind: what the guard has to stop.
    nearest: dict[str, tuple[str, float, str, str]] = {}
    for q, _, cands in one_stage:
        if q.kind.startswith("hard:") and cands and cands[0][0] >= 0.92:
            kind = q.kind[5:]
            if (
                kind not in nearest
                or cands[0][0] > nearest[kind][1]
                or (cands[0][0] == nearest[kind][1] and len(q.text) < len(nearest[kind][2]))
            ):
                nearest[kind] = (kind, cands[0][0], q.text, pairs[cands[0][1]].origin)
    examples = sorted(nearest.values(), key=lambda e: -e[1])

    hard_by_kind = Counter(q.kind[5:] for q in queries if q.kind.startswith("hard:"))
    rows = _decide_all(prepared, pairs, origin_sigs, thresholds, hard_by_kind, progress=progress)
    full_rows = _decide_all(one_stage, pairs, origin_sigs, thresholds, hard_by_kind, progress=False) if static else []
    kinds = Counter(q.kind.split(":")[0] for q in queries)
    return SweepResult(
        label=label,
        rows=rows,
        pairs=len(pairs),
        hard_by_kind=dict(hard_by_kind),
        seconds=time.monotonic() - started,
        examples=examples,
        embedder=embedder,
        static_threshold=static_threshold if static is not None else None,
        full_model_rows=full_rows,
        confirm_share={k: confirms[k] / n for k, n in kinds.items()} if static is not None else {},
    )


def _decide_all(
    prepared: list[tuple[Query, Signature, list[tuple[float, int]]]],
    pairs: list[Pair],
    origin_sigs: list[Signature],
    thresholds: list[float],
    hard_by_kind: Counter[str],
    *,
    progress: bool,
) -> list[SweepRow]:
    rows = []
    for threshold in tqdm(thresholds, desc="threshold sweep", unit="threshold", disable=not progress):
        for use_guard in (False, True):
            correct = wrong = easy_hits = hard_hits = 0
            by_kind: Counter[str] = Counter()
            for q, sig, cands in prepared:
                decision = choose_hit([(s, origin_sigs[j]) for s, j in cands], sig, threshold=threshold, use_guard=use_guard)
                if decision.index is None:
                    continue
                hit_pair = cands[decision.index][1]
                if q.kind == "positive":
                    if hit_pair == q.pair_index:
                        correct += 1
                    else:
                        wrong += 1
                elif q.kind == "easy":
                    easy_hits += 1
                else:
                    hard_hits += 1
                    by_kind[q.kind[5:]] += 1
            rows.append(
                SweepRow(
                    threshold=threshold,
                    guard=use_guard,
                    positives=len(pairs),
                    correct=correct,
                    wrong_positive=wrong,
                    easy=len(pairs),
                    easy_hits=easy_hits,
                    hard=sum(hard_by_kind.values()),
                    hard_hits=hard_hits,
                    hard_hits_by_kind=dict(by_kind),
                )
            )
    return rows


def sweep_table(result: SweepResult, *, thresholds: Iterable[float] | None = None) -> str:
    wanted = set(thresholds) if thresholds is not None else None
    lines = [
        "| threshold (cosine similarity) | guard | precision | recall | hit rate | wrong paraphrase hits | easy-negative hits "
        "| hard-negative false hits | precision incl. hard negatives |",
        "|---:|:---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        if wanted is not None and not any(abs(row.threshold - t) < 1e-9 for t in wanted):
            continue
        lines.append(
            f"| {row.threshold:.2f} | {'on' if row.guard else 'off'} | {row.precision:.3f} | {row.recall:.3f} | "
            f"{row.hit_rate:.3f} | {row.wrong_positive} | {row.easy_hits}/{row.easy} | "
            f"{row.hard_hits}/{row.hard} ({row.hard_false_rate:.1%}) | {row.precision_with_hard:.3f} |"
        )
    return "\n".join(lines)


# --- runbook --------------------------------------------------------------------------------


def _cell(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _around_difference(a: str, b: str, *, before: int = 6, width: int = 18) -> tuple[str, str]:
    """Both texts cut to the words around their first difference, so a long pair shows what changed."""
    wa, wb = a.split(), b.split()
    first = next((i for i, (x, y) in enumerate(zip(wa, wb, strict=False)) if x != y), min(len(wa), len(wb)))
    start = max(0, first - before)

    def cut(words: list[str]) -> str:
        text = " ".join(words[start : start + width])
        return _cell(("… " if start else "") + text + (" …" if start + width < len(words) else ""))

    return cut(wa), cut(wb)


def _two_stage_markdown(result: SweepResult, default_threshold: float) -> str:
    """How the sweep above was run (production's two stages), against the full model alone."""
    alone = result.full_model_row(default_threshold, True)
    if result.static_threshold is None or alone is None:
        return ""
    on = result.row(default_threshold, True)
    share = result.confirm_share
    return f"""## Two stages: the static embedding proposes, the full model confirms

The sweep above runs the semantic tier as production does (`apps/cache/semantic.py`, ADR-001): a static
embedding distilled from the same MiniLM (`apps/embeddings/static.py`) proposes the top {TOP_K} cached prompts at
or above a static cosine of {result.static_threshold} (`FINOPS_CACHE_SEMANTIC_STATIC_THRESHOLD`); candidates the guard
already refuses are dropped; only if one is left does the full model embed the prompt, and the hit is decided on
the full model's cosine at the threshold, with the guard, as before.

| pipeline, at {default_threshold} with the guard | precision | recall | wrong paraphrase hits | easy-negative hits | hard-negative false hits |
|---|---:|---:|---:|---:|---:|
| two stages (production) | {on.precision:.3f} | {on.recall:.3f} | {on.wrong_positive} | {on.easy_hits}/{on.easy} | {on.hard_hits}/{on.hard} |
| full model alone | {alone.precision:.3f} | {alone.recall:.3f} | {alone.wrong_positive} | {alone.easy_hits}/{alone.easy} | {alone.hard_hits}/{alone.hard} |

The full model ran for {share.get("positive", 0):.1%} of the paraphrase queries, {share.get("easy", 0):.1%} of the easy negatives
and {share.get("hard", 0):.1%} of the hard negatives; every other query was decided a miss by the static stage and the guard
alone. (GPTCache's questions are about the same few libraries, so many share the words the static stage sees; on
unrelated traffic the full model runs far less often: `docs/benchmarks.md`, semantic tier.)
"""


def runbook_markdown(result: SweepResult, *, default_threshold: float = 0.92) -> str:
    on = result.row(default_threshold, True)
    off = result.row(default_threshold, False)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(result.hard_by_kind.items()))
    embedded_by = f"; embeddings: {result.embedder}" if result.embedder else ""
    per_kind_off = ", ".join(f"{k} {n}" for k, n in sorted(off.hard_hits_by_kind.items())) or "none"
    best_recall = max(
        (r for r in result.rows if r.guard and r.precision >= 0.98 and r.hard_hits == 0), key=lambda r: r.recall, default=None
    )
    examples = (
        "\n".join(
            f"| {kind} | {sim:.3f} | {' | '.join(_around_difference(query, cached))} |"
            for kind, sim, query, cached in result.examples
        )
        or "| – | – | – | – |"
    )
    return f"""# Semantic cache: choosing the threshold

_Generated by `manage.py eval_cache` on {clock.now():%Y-%m-%d %H:%M} UTC from {result.label};
{result.pairs} paraphrase pairs, {result.pairs} easy negatives, {sum(result.hard_by_kind.values())} hard negatives ({kinds}){embedded_by}.
Re-run it after changing the embedding model, its runtime or the guard: the numbers below are only true for this combination._

## What the threshold is

The threshold is a **cosine similarity** between the embedding of the new prompt and the embedding of a
cached prompt: 1.0 means identical, 0 unrelated. A cached answer is served when the similarity is
**at or above** the threshold **and** the guard finds no difference in numbers, named entities,
negation, antonyms ("before"/"after"), math operators or direction ("from A to B"). It is not a distance:
a *higher* threshold means *fewer* hits and fewer wrong answers. Default: **{default_threshold}**.

Lookups never leave the org, the requested model or route class, the system prompt and earlier turns,
or the output-changing parameters (temperature, max_tokens, tools, …): those are filters, not scores.

## What each setting costs

Measured on the set above. *Precision*: the share of answers served to paraphrase and easy-negative
queries that answered the question asked (GPTCache repeats some documentation facts in different words;
origins sharing half their content words with an earlier one were dropped so that a hit on such a twin is
not scored as wrong, and the few twins left still count as wrong). *Recall*: the share of paraphrases
served from cache. *Hard-negative false hits*: answers served to a question that differs from a cached
one by one number, name, negation, antonym or direction; *precision incl. hard negatives* counts those too.

{sweep_table(result)}

At the default {default_threshold} with the guard: precision **{on.precision:.3f}**, recall **{on.recall:.3f}**,
**{on.hard_hits}** hard-negative false hits out of {on.hard}. Without the guard at the same threshold:
precision {off.precision:.3f} and **{off.hard_hits}** false hits ({per_kind_off}): embeddings alone cannot tell
"2+2" from "2+3". Recall is modest by design: GPTCache's paraphrases are loose rewrites, and a
missed paraphrase costs one upstream call while a wrong hit costs a wrong answer.
{f"The most permissive threshold that still keeps precision ≥ 0.98 and no hard-negative hit on this set is {best_recall.threshold:.2f} (recall {best_recall.recall:.3f})." if best_recall else ""}

{_two_stage_markdown(result, default_threshold)}
Closest hard negatives (similarity to the cached prompt; the guard is what stops these):

| kind | similarity | query | cached prompt |
|---|---:|---|---|
{examples}

## How to choose

1. Start at the default {default_threshold}. Only lower it for an org or route whose prompts are short, templated and
   low-stakes (FAQ bots, classification with a fixed label set); never below the lowest row above whose
   precision you would accept as a wrong-answer rate for *that* traffic.
2. Raise it (0.95+) for routes where a wrong answer is expensive (code, medical, legal, finance, anything
   with account-specific numbers), or switch the semantic tier off there and keep the exact tier.
3. Check the effect a day later: hit rate per tier is on `/metrics` (`finops_cache_lookups_total{{tier,outcome}}`),
   savings in `finops_cache_saved_usd_total` and in `cost_daily_summary.saved_usd`; guard refusals by reason in
   `finops_cache_guard_rejections_total`. A rising refusal count at a lower threshold means the embedding is
   proposing wrong answers that only the guard is catching.

## How to change it

- Per org: admin → Cache → Cache settings → the org → *threshold*, *semantic enabled*, *TTL*.
- Per route or model class (the `model` the client sends, e.g. `auto`): the *route overrides* inline on the same page.
- The longest prompt (last user turn) the semantic tier considers: *semantic max chars* on the same page, default
  `FINOPS_CACHE_SEMANTIC_MAX_CHARS`; longer prompts are served by the exact tier only.
- Global default (orgs without a settings row): `FINOPS_CACHE_THRESHOLD` (and `FINOPS_CACHE_TTL_S`,
  `FINOPS_CACHE_MAX_TEMPERATURE`) in the environment, then restart the workers.
- Changes apply within `FINOPS_CACHE_SETTINGS_CACHE_S` (15 s) on every worker; no restart needed for per-org edits.
- Per request: `Cache-Control: no-cache` (do not serve from cache), `no-store` (do not keep this answer),
  `max-age=N` (accept only answers younger than N s; store this one for N s).

## How to roll back

- A threshold change: set the previous value back; it applies within 15 s. Answers already served stay served.
- Wrong answers already cached (e.g. after lowering the threshold too far, or a bad upstream answer):
  admin → Cache settings → select the org → *Invalidate all cached answers* (both tiers), or from the
  semantic entries list *Invalidate the selected entries' org + model class*; from a shell:
  `manage.py cache_invalidate <org-slug> [--model auto]`.
- Emergency: untick *enabled* for the org (both tiers off), or `FINOPS_CACHE_ENABLED=0` for all orgs without
  a settings row. Requests then go upstream and cost what they cost; nothing else changes.

## Limits worth knowing

- The guard compares surface features. A swapped common noun ("adult" → "teenager", "light" → "sound") is
  invisible to it; only the threshold protects those. The hand-written chat pairs include such cases.
- Prompts longer than the embedding model's 256 word pieces are not matched by meaning at all (the exact tier
  still serves verbatim repeats), so two long prompts differing at the end never share an answer.
- A process under load stops adding semantic entries (each needs a full-model embedding after the response)
  once it has spent `FINOPS_CACHE_SEMANTIC_STORE_CPU_SHARE` of a core on them (metric
  `finops_cache_stores_total{{tier="semantic",outcome="shed"}}`); the exact tier still stores every answer.
- Requests with an explicit temperature above `max_temperature` (default 0.7) or with tools are not cached
  unless the org opts in; tool requests are then matched exactly, never by meaning.
- The HNSW index (pgvector 0.6) filters after the graph search: an org whose scope is a small share of a
  large table is searched exactly through the scope index instead (the planner picks it), which is correct
  but slower at tens of thousands of entries per scope.
"""
