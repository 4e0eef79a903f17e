"""The learned strategy: a kNN index over labelled prompts in MiniLM space (real embeddings, real Postgres)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from prometheus_client import REGISTRY

from apps.cache.keys import request_key
from apps.cache.lookup import CacheRequest, CacheState
from apps.embeddings.embeddings import embed_for_routing
from apps.routing import learned
from apps.routing.engine import LearnedScore, PolicySpec, escalation_decide, learned_apply, route_plan
from apps.routing.models import RoutePolicy
from apps.routing.tests.factories import config, model, tier
from apps.routing.tests.test_pipeline import ctx_for, reprime, select
from evals.router.datasets import full_available

# Premium-win labels: +1 where the strong model was needed, -1 where the cheap one did as well or better.
HARD = [
    "Prove that there are infinitely many prime numbers, giving a rigorous argument.",
    "Prove by induction that the sum of the first n odd numbers equals n squared.",
    "Prove that the square root of 3 is irrational.",
    "Find all real solutions of x^4 - 5x^2 + 4 = 0 and justify every step.",
    "Derive the closed form of the sum of k^3 for k from 1 to n and prove it.",
]
EASY = [
    "Hi there!",
    "Hello, how are you?",
    "Say thank you politely.",
    "Good morning!",
    "Hey, nice to meet you.",
]
HARD_QUERY = "Prove that the square root of 2 is irrational."
EASY_QUERY = "Hello! How is your day going?"


def embed(text: str) -> np.ndarray:
    return asyncio.run(embed_for_routing(text))


@pytest.fixture(scope="module")
def tiny_index() -> learned.RouteIndex:
    texts = HARD + EASY
    vectors = np.stack([embed(t) for t in texts])
    gains = [1.0] * len(HARD) + [-1.0] * len(EASY)
    return learned.RouteIndex.build(vectors, gains, [learned.prompt_key(t) for t in texts], k=3, dims=None)


@pytest.fixture
def tiny_index_file(tiny_index, tmp_path: Path, settings) -> Path:
    path = tmp_path / "tiny-index.npz"
    tiny_index.save(path)
    settings.FINOPS = {**settings.FINOPS, "ROUTER_INDEX_PATH": str(path)}
    learned.served_index_forget()
    yield path
    learned.served_index_forget()


def two_tiers():
    return config(
        tiers=(
            tier("cheap", 0, 0.0, model("small", "cheap", 0)),
            tier("premium", 2, 0.3, model("big", "premium", 2, inp="10", out="30")),
        ),
        policies=(PolicySpec(id=1, use_learned=True, learned_threshold=0.5),),
    )


def test_a_hard_prompt_scores_high_and_an_easy_one_low(tiny_index) -> None:
    hard, easy = tiny_index.score(embed(HARD_QUERY)), tiny_index.score(embed(EASY_QUERY))
    assert hard.gain == 1.0 and easy.gain == -1.0  # all three neighbours agree with the query's kind
    assert hard.score > 0.5 > easy.score
    assert 0.0 <= easy.score and hard.score <= 1.0


def test_learned_apply_sends_the_hard_prompt_to_the_top_tier_and_the_easy_one_to_the_lowest(tiny_index) -> None:
    cfg = two_tiers()
    for text, expected in ((HARD_QUERY, "premium"), (EASY_QUERY, "cheap")):
        plan = route_plan(cfg, messages=[{"role": "user", "content": text}], requested_model="auto", org_id=None)
        assert plan.strategy == "complexity"  # what decides without an index
        decided = learned_apply(cfg, plan, tiny_index.score(embed(text)))
        assert (decided.strategy, decided.tier) == ("learned", expected)
        assert decided.reason.startswith("learned=") and f"→ {expected}" in decided.reason
        assert decided.chain[0][0] == expected


def test_an_escalation_after_a_learned_decision_needs_the_learned_threshold() -> None:
    policy = PolicySpec(use_learned=True, learned_threshold=0.8, confidence_threshold=0.6)
    # risk = 1 - (1 - 0.7) * (1 - 0.1) = 0.73: enough for the confidence threshold, not for the learned one.
    assert escalation_decide(policy=policy, strategy="learned", complexity=0.0, uncertainty=0.1, learned=0.7) == (False, 0.73)
    assert escalation_decide(policy=policy, strategy="learned", complexity=0.0, uncertainty=0.5, learned=0.7)[0] is True
    assert escalation_decide(policy=policy, strategy="complexity", complexity=0.7, uncertainty=0.1, learned=None)[0] is True


def test_save_load_round_trip_scores_identically(tiny_index, tmp_path: Path) -> None:
    path = tmp_path / "index.npz"
    tiny_index.save(path)
    loaded = learned.RouteIndex.load(path)
    assert len(loaded) == len(tiny_index) and loaded.k == 3
    assert np.array_equal(loaded.calibration, tiny_index.calibration)
    vector = embed(HARD_QUERY)
    assert loaded.score(vector) == tiny_index.score(vector)


def test_excluding_drops_the_prompts_and_recalibrates(tiny_index) -> None:
    dropped = {learned.prompt_key(t) for t in HARD[:2]}
    smaller = tiny_index.excluding(dropped)
    assert len(smaller) == len(tiny_index) - 2
    assert not dropped & set(smaller.keys.tolist())
    assert len(smaller.calibration) == len(smaller)


def test_the_index_abstains_far_from_its_exemplars_and_decides_near_them(tiny_index) -> None:
    assert tiny_index.abstains(embed(HARD_QUERY)) is None
    assert tiny_index.abstains(embed(EASY_QUERY)) is None
    # Nothing like it among the exemplars: its nearest one is far less similar than the neighbours' own nearest ones.
    assert tiny_index.abstains(embed("List the ingredients of a classic Neapolitan pizza dough.")) == "far"


def test_the_index_abstains_when_its_neighbours_disagree() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((200, 384)).astype(np.float32)
    mixed = np.where(rng.random(200) < 0.5, 1.0, -1.0)  # labels unrelated to the vectors: no vote is decisive
    keys = [learned.prompt_key(f"prompt {i}") for i in range(200)]
    index = learned.RouteIndex.build(vectors, mixed, keys, k=50, dims=None)
    reasons = [index.abstains(v) for v in vectors[:40]]
    assert reasons.count("disagree") >= 35
    # The same vectors with a clear vote (gain = the sign of one coordinate) decide.
    clear = learned.RouteIndex.build(vectors, np.sign(vectors[:, 0]) * 1.0, keys, k=5, dims=None)
    assert clear.abstains(vectors[0] * 3 + np.eye(384, dtype=np.float32)[0] * 40) is None


def test_the_far_bar_survives_save_and_load_and_is_computed_for_older_files(tiny_index, tmp_path: Path) -> None:
    path = tmp_path / "index.npz"
    tiny_index.save(path)
    loaded = learned.RouteIndex.load(path)
    assert loaded.far_bar == tiny_index.far_bar and np.array_equal(loaded.own_top1, tiny_index.own_top1)
    with np.load(path) as data:
        older = {name: data[name] for name in data.files if name not in ("own_top1", "far_bar")}
    np.savez(tmp_path / "older.npz", **older)
    recomputed = learned.RouteIndex.load(tmp_path / "older.npz")
    assert recomputed.far_bar == pytest.approx(tiny_index.far_bar, abs=1e-6)
    assert np.allclose(recomputed.own_top1, tiny_index.own_top1, atol=1e-6)


def test_held_out_indexes_never_contain_the_rows_they_score() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((60, 384)).astype(np.float32)
    keys = [learned.prompt_key(f"prompt {i % 40}") for i in range(60)]  # 20 duplicated prompts
    groups = [learned.fold_of(k, 5) for k in keys]
    folds = list(learned.held_out_indexes(vectors, rng.standard_normal(60), keys, groups, k=5, dims=16))
    assert sorted(np.concatenate([test for test, _ in folds]).tolist()) == list(range(60))
    for test, index in folds:
        assert not {keys[i] for i in test} & set(index.keys.tolist())  # duplicates land in the same fold
        assert len(index) == 60 - len(test)


@pytest.mark.django_db
def test_the_eval_route_routes_by_the_served_learned_strategy(prices, make_tenant, tiny_index_file, settings) -> None:
    from apps.routing.services import routing_defaults_ensure

    routing_defaults_ensure()
    RoutePolicy.objects.filter(org=None, name="eval").update(learned_threshold=0.5)
    reprime()
    tenant = make_tenant()
    hard = ctx_for(tenant, "finops/eval", HARD_QUERY)
    route = select(hard)
    assert (route.strategy, route.tier, route.model) == ("learned", "premium", "gpt-4-1106-preview")
    assert route.reason.startswith("learned=") and "≥0.50 → premium" in route.reason
    row = hard.ledger_row()
    assert (row["route_strategy"], row["requested_tier"], row["model"]) == ("learned", "premium", "gpt-4-1106-preview")
    easy = select(ctx_for(tenant, "finops/eval", EASY_QUERY))
    assert (easy.strategy, easy.tier, easy.model) == ("learned", "cheap", "mixtral-8x7b-instruct")
    assert "<0.50 → cheap" in easy.reason

    # The default route does not use the learned index unless its policy says so.
    assert select(ctx_for(tenant, "auto", HARD_QUERY)).strategy != "learned"

    # No index: the complexity score decides, as before.
    settings.FINOPS = {**settings.FINOPS, "ROUTER_INDEX_PATH": str(tiny_index_file.with_name("missing.npz"))}
    assert select(ctx_for(tenant, "finops/eval", HARD_QUERY)).strategy == "complexity"


@pytest.mark.django_db
def test_the_router_reuses_the_semantic_cache_vector_of_the_same_prompt(prices, make_tenant, tiny_index_file) -> None:
    from apps.routing.services import routing_defaults_ensure

    routing_defaults_ensure()
    RoutePolicy.objects.filter(org=None, name="eval").update(learned_threshold=0.5)
    reprime()
    tenant = make_tenant()

    def with_cache_vector(text: str, vector: np.ndarray):
        ctx = ctx_for(tenant, "finops/eval", text)
        key = request_key(org_id=tenant.org.id, model_class="finops/eval", messages=ctx.messages, body=ctx.body)
        request = CacheRequest(
            caller=ctx.caller, request_id=ctx.request_id, requested_model="finops/eval", messages=ctx.messages, body=ctx.body
        )
        ctx.cache = CacheState(
            request=request, org_id=tenant.org.id, model_class="finops/eval", policy=None, key=key, lookup=True,
            store=True, semantic=True, ttl_s=60, max_age_s=None, vector=vector,
        )  # fmt: skip
        return ctx

    def shared() -> float:
        return REGISTRY.get_sample_value("finops_route_learned_scores_total", {"outcome": "cache_vector"}) or 0.0

    before = shared()
    # The cache's vector is the one scored (a hard prompt's vector under an easy prompt's text would be a bug, so
    # the test plants one on purpose: the text matches, the vector is reused as is).
    assert select(with_cache_vector(EASY_QUERY, embed(HARD_QUERY))).tier == "premium"
    assert shared() == before + 1
    # A vector of another text is not reused: the router embeds the request's own prompt.
    ctx = with_cache_vector(EASY_QUERY, embed(HARD_QUERY))
    ctx.cache.key = request_key(
        org_id=tenant.org.id, model_class="finops/eval", messages=[{"role": "user", "content": HARD_QUERY}], body={}
    )
    assert select(ctx).tier == "cheap"
    assert shared() == before + 1


def test_the_vendored_index_is_the_documented_one() -> None:
    index = learned.RouteIndex.load(Path(learned.__file__).resolve().parents[2] / "fixtures" / "routellm" / "router-index.npz")
    assert (len(index), index.k, index.dims) == (8658, 100, 128)
    assert index.meta["prompts"] == {"gsm8k": 1307, "mmlu": 7279, "mt_bench": 72}
    assert len(index.calibration) == len(index) and np.all(np.diff(index.calibration) >= 0)
    assert isinstance(index.score(np.ones(384, dtype=np.float32) / np.sqrt(384)), LearnedScore)


@pytest.mark.skipif(not full_available(), reason="needs the RouteLLM full sets (fixtures/routellm/full.jsonl.gz)")
def test_build_router_index_command_writes_a_loadable_index(tmp_path: Path) -> None:
    out = tmp_path / "index.npz"
    with open(tmp_path / "o", "w") as stdout:
        call_command(
            "build_router_index",
            "--limit",
            "40",
            "--k",
            "5",
            "--dims",
            "16",
            "--output",
            str(out),
            "--no-progress",
            stdout=stdout,
        )
    index = learned.RouteIndex.load(out)
    assert (len(index), index.k, index.dims) == (40, 5, 16)
    assert "wrote" in (tmp_path / "o").read_text()


def test_build_router_index_from_labelled_prompts(tmp_path: Path) -> None:
    """An operator's own outcomes: one JSON object per line; no RouteLLM data needed."""
    labelled = tmp_path / "labelled.jsonl"
    rows = [{"prompt": t, "weak_score": 0.0, "strong_score": 1.0} for t in HARD] + [
        {"prompt": t, "weak_score": 1.0, "strong_score": 1.0, "source": "chat"} for t in EASY
    ]
    labelled.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "own.npz"
    with open(tmp_path / "o", "w") as stdout:
        call_command(
            "build_router_index", "--records", str(labelled), "--k", "3", "--dims", "0", "--output", str(out),
            "--no-progress", stdout=stdout,
        )  # fmt: skip
    index = learned.RouteIndex.load(out)
    assert (len(index), index.k, index.dims) == (10, 3, 384)
    assert index.meta["prompts"] == {"custom": 5, "chat": 5} and "labelled.jsonl" in index.meta["source"]
    assert index.score(embed(HARD_QUERY)).gain == 1.0 and index.score(embed(EASY_QUERY)).gain == 0.0

    labelled.write_text('{"prompt": "only one", "weak_score": 1, "strong_score": 0}\n')
    with pytest.raises(CommandError, match="at least two"):
        call_command("build_router_index", "--records", str(labelled), "--output", str(out), "--no-progress")
