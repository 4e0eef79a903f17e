"""The semantic tier's two stages, its length policy and its store budget, against real Postgres+pgvector, Redis
and the local model (apps.cache.semantic, docs/adr/001)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from apps.cache import metrics
from apps.cache.guard import choose_hit, guard_signature
from apps.cache.models import CacheSettings, SemanticCacheEntry
from apps.cache.selectors import cache_policy_forget
from apps.cache.semantic import BURST_S, store_budget
from apps.cache.tests.conftest import chat_pairs, completion, make_ctx
from apps.gateway.stages import cache_lookup_exact, cache_lookup_semantic, cache_store

pytestmark = pytest.mark.django_db(transaction=True)

PAIRS200 = Path(__file__).resolve().parents[3] / "fixtures" / "gptcache" / "pairs200.jsonl"


def _sample() -> tuple[list[str], list[str]]:
    """Cached prompts and queries: 40 vendored GPTCache pairs and the hand-written chat pairs with their hard negatives."""
    rows = [json.loads(line) for line in PAIRS200.read_text().splitlines() if line.strip()][:40]
    origins = [r["origin"] for r in rows]
    queries = [r["similar"] for r in rows]
    for row in chat_pairs():
        origins.append(row["origin"])
        queries.append(row["similar"])
        queries += [h["text"] for h in row.get("hard_negatives", [])]
    origins = list(dict.fromkeys(origins))
    return origins, [q for q in dict.fromkeys(queries) if q not in set(origins)]


def test_the_static_stage_and_the_confirmation_serve_the_same_hits_as_the_full_model(cache_env, run, embedder, unlimited_store):
    tenant = cache_env()
    origins, queries = _sample()
    for i, text in enumerate(origins):  # stored without a lookup: both vectors come from the store
        run(cache_store(make_ctx(tenant, text), completion(f"answer {i}")))
    assert SemanticCacheEntry.objects.filter(org=tenant.org, static_embedding__isnull=False).count() == len(origins)

    confirms_before = metrics.CACHE_SEMANTIC_CONFIRMS._value.get()
    served = []
    for text in queries:
        hit = run(cache_lookup_semantic(make_ctx(tenant, text)))
        served.append(None if hit is None else int(hit["choices"][0]["message"]["content"].removeprefix("answer ")))
    confirms = metrics.CACHE_SEMANTIC_CONFIRMS._value.get() - confirms_before

    # The full model alone, as before the static stage: top 5 by the full cosine, the threshold and the guard.
    full_origins = np.vstack(embedder.encode(origins, check_length=False))
    signatures = [guard_signature(t) for t in origins]
    expected = []
    for text in queries:
        (vector,) = embedder.encode([text], check_length=False)
        sims = full_origins @ vector
        top = [int(j) for j in np.argsort(-sims)[:5]]
        decision = choose_hit([(float(sims[j]), signatures[j]) for j in top], guard_signature(text), threshold=0.92)
        expected.append(None if decision.index is None else top[decision.index])

    assert served == expected
    assert sum(s is not None for s in served) >= 10  # the sample has paraphrases the tier serves
    assert confirms < len(queries)  # and misses the full model never saw


def test_a_prompt_over_the_org_max_length_skips_the_semantic_tier(cache_env, run, unlimited_store):
    tenant = cache_env()
    CacheSettings.objects.create(org=tenant.org, semantic_max_chars=60)
    short, long = "How do I reset my password?", "How do I reset my password on the admin page of the billing portal today?"
    assert len(short) <= 60 < len(long)
    for text in (short, long):
        ctx = make_ctx(tenant, text)
        assert run(cache_lookup_exact(ctx)) is None and run(cache_lookup_semantic(ctx)) is None
        run(cache_store(ctx, completion("Click 'Forgot password'.")))
    # Both answers are in the exact tier; only the short prompt has a semantic entry.
    assert SemanticCacheEntry.objects.filter(org=tenant.org).count() == 1
    ctx = make_ctx(tenant, "How do I reset my password on the admin page of the billing portal, today?")
    assert run(cache_lookup_exact(ctx)) is None and run(cache_lookup_semantic(ctx)) is None
    assert ctx.cache is not None and not ctx.cache.semantic  # decided by the plan: no embedding, no lookup
    assert ctx.cache.static_vector is None


def test_the_default_max_length_and_the_model_window_bound_the_semantic_tier(cache_env, run, settings, unlimited_store):
    tenant = cache_env()
    settings.FINOPS = {**settings.FINOPS, "CACHE_SEMANTIC_MAX_CHARS": 500}
    over_setting = "Explain how to reset a password. " * 20  # 660 characters
    ctx = make_ctx(tenant, over_setting)
    run(cache_lookup_exact(ctx))
    assert run(cache_lookup_semantic(ctx)) is None
    assert ctx.cache is not None and not ctx.cache.semantic and ctx.cache.static_vector is None

    # Under the character limit but over the model's 256 word pieces: the full model could never confirm it.
    settings.FINOPS = {**settings.FINOPS, "CACHE_SEMANTIC_MAX_CHARS": 2000}
    cache_policy_forget()  # the default policy is memoised per process like an org's (CACHE_SETTINGS_CACHE_S)
    over_window = " ".join(f"x{i}" for i in range(300))
    assert len(over_window) <= 2000
    ctx = make_ctx(tenant, over_window)
    run(cache_lookup_exact(ctx))
    assert run(cache_lookup_semantic(ctx)) is None
    assert ctx.cache is not None and ctx.cache.semantic_looked_up and not ctx.cache.semantic  # tokenised, then stopped
    run(cache_store(ctx, completion("noted")))
    assert SemanticCacheEntry.objects.filter(org=tenant.org).count() == 0
    assert run(cache_lookup_exact(make_ctx(tenant, over_window))) is not None  # the exact tier still serves it


def test_a_process_over_its_store_budget_sheds_semantic_entries_but_keeps_exact_ones(cache_env, run, settings):
    tenant = cache_env()
    settings.FINOPS = {**settings.FINOPS, "CACHE_SEMANTIC_STORE_CPU_SHARE": 0.0001}
    store_budget.reset()
    store_budget.spend(BURST_S + 1.0)  # as if the last stores took more than a burst of embedding
    shed_before = metrics.CACHE_STORES.labels(tier="semantic", outcome="shed")._value.get()
    try:
        ctx = make_ctx(tenant, "How do I reset my password?")
        run(cache_lookup_exact(ctx))
        run(cache_lookup_semantic(ctx))
        run(cache_store(ctx, completion("Click 'Forgot password'.")))
    finally:
        store_budget.reset()
    assert metrics.CACHE_STORES.labels(tier="semantic", outcome="shed")._value.get() == shed_before + 1
    assert SemanticCacheEntry.objects.filter(org=tenant.org).count() == 0
    assert run(cache_lookup_exact(make_ctx(tenant, "How do I reset my password?"))) is not None


def test_store_embeddings_run_on_a_low_priority_thread_and_a_full_queue_sheds(cache_env, run, settings):
    """The full-model embedding of a store runs where no request waits: its own thread, niced (Linux: per thread),
    so the scheduler serves requests first; past FINOPS_CACHE_SEMANTIC_STORE_QUEUE waiting, the entry is shed."""
    import os

    from apps.embeddings import embeddings

    nice = embeddings._store_executor.submit(lambda: os.getpriority(os.PRIO_PROCESS, 0)).result()
    assert nice == settings.FINOPS.get("CACHE_SEMANTIC_STORE_NICE", 19) == 19
    assert os.getpriority(os.PRIO_PROCESS, 0) == 0  # the request path keeps its priority

    tenant = cache_env()
    store_budget.reset()
    settings.FINOPS = {**settings.FINOPS, "CACHE_SEMANTIC_STORE_QUEUE": 0}  # as if the queue were full
    shed_before = metrics.CACHE_STORES.labels(tier="semantic", outcome="shed")._value.get()
    ctx = make_ctx(tenant, "How do I change my email address?")
    run(cache_lookup_exact(ctx))
    run(cache_lookup_semantic(ctx))
    run(cache_store(ctx, completion("Settings, then Account.")))
    assert metrics.CACHE_STORES.labels(tier="semantic", outcome="shed")._value.get() == shed_before + 1
    assert SemanticCacheEntry.objects.filter(org=tenant.org).count() == 0

    settings.FINOPS = {**settings.FINOPS, "CACHE_SEMANTIC_STORE_QUEUE": 32}
    ctx = make_ctx(tenant, "How do I delete my account?")
    run(cache_lookup_exact(ctx))
    run(cache_lookup_semantic(ctx))
    run(cache_store(ctx, completion("Settings, then Delete.")))
    assert SemanticCacheEntry.objects.filter(org=tenant.org).count() == 1  # stored through the niced thread


def test_vectors_travel_in_pgvectors_binary_format_both_ways(run):
    """The hot-path pool's codec (apps.cache.selectors.vector_connection_init): what Postgres receives is the vector
    sent (its norm and a distance computed server-side), and what it returns decodes to the same floats."""
    from finops.asyncdb import close_pools, query_bounded

    vector = np.random.default_rng(7).standard_normal(384).astype(np.float32)

    async def roundtrip():
        try:
            row = await query_bounded(
                "fetchrow",
                "SELECT $1::vector AS back, vector_norm($1::vector) AS norm, $1::vector <=> $2::vector AS distance",
                vector,
                "[" + ",".join(str(float(x)) for x in vector) + "]",  # a text literal still encodes
            )
        finally:
            await close_pools()
        return row

    row = run(roundtrip())
    assert np.array_equal(row["back"], vector)
    assert row["norm"] == pytest.approx(float(np.linalg.norm(vector)), rel=1e-6)
    assert row["distance"] == pytest.approx(0.0, abs=1e-6)


def test_the_static_stage_tokenises_exactly_like_the_model():
    """The static stage's ASCII fast path (memoised words) gives the model tokenizer's word pieces, on every vendored
    prompt and on the edge cases of BERT's pre-tokenisation: punctuation, symbols, long words, control characters."""
    import gzip

    from apps.embeddings.static import static_embedder

    static_embedder.load()
    texts = [json.loads(line)["origin"] for line in PAIRS200.read_text().splitlines() if line.strip()]
    texts += [row["similar"] for row in chat_pairs()]
    long_prompts = PAIRS200.parents[1] / "prompts" / "long_prompts.jsonl.gz"
    with gzip.open(long_prompts, "rt") as lines:
        texts += [json.loads(line)["prompt"] for line in lines if line.strip()]
    texts += [
        "Hello\x07World\tfoo\r\nbar\x0bbaz\x7fqux",  # BERT deletes control characters: "helloworld"
        "x^2 + y_1 = {z}; ~`|\\ @#$%&*()[]<>?!",
        "GPT-4o vs. o1: 3.14% — no",  # not ASCII: the tokenizer itself
        "don't can't U.S.A. e-mail@x.com #tag $5",
        "a" * 150 + " b",  # longer than WordPiece's 100 characters: [UNK]
        "Café naïve résumé",
        "",
        "   ",
    ]
    assert len(texts) > 500
    for text in texts:
        assert static_embedder.piece_ids(text) == static_embedder._tokenizer.encode(text, add_special_tokens=False).ids, text
