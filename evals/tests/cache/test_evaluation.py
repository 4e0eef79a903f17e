"""eval_cache: the metrics on a tiny hand-checked set, and the command on the vendored GPTCache fixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.core.management import call_command

from evals.cache.evaluation import threshold_sweep
from evals.cache.pairs import Pair, generate_hard_negatives, load_pairs
from evals.cache.replay import replay_workload

# Unit vectors with hand-picked cosines: three cached origins on three axes, the 4th axis absorbs the rest.
ORIGINS = {"What is 2+2?": 0, "What is the capital of France?": 1, "How do I bake bread?": 2}


def vec(**cosines: float) -> np.ndarray:
    v = np.zeros(4, dtype=np.float32)
    for axis, value in cosines.items():
        v[int(axis[1])] = value
    v[3] = math.sqrt(max(0.0, 1 - float(np.sum(v[:3] ** 2))))
    return v


VECTORS = {
    "What is 2+2?": vec(a0=1.0),
    "What is the capital of France?": vec(a1=1.0),
    "How do I bake bread?": vec(a2=1.0),
    "What's 2 + 2?": vec(a0=0.95),  # its own origin at 0.95
    "Which city is the capital of France?": vec(a1=0.91),  # its own origin at 0.91
    "Bread baking steps?": vec(a0=0.93, a2=0.30),  # nearer to the WRONG origin (2+2) than to its own
    "What is 2+3?": vec(a0=0.97),  # hard negative of 2+2
    "What is the capital of Germany?": vec(a1=0.94),  # hard negative of France
}


def fake_embed(texts: list[str]) -> np.ndarray:
    return np.vstack([VECTORS[t] for t in texts])


def tiny_pairs() -> list[Pair]:
    return [
        Pair("What is 2+2?", "What's 2 + 2?", [("number", "What is 2+3?")]),
        Pair(
            "What is the capital of France?",
            "Which city is the capital of France?",
            [("entity", "What is the capital of Germany?")],
        ),
        Pair("How do I bake bread?", "Bread baking steps?", []),
    ]


def test_the_sweep_counts_hits_by_hand():
    result = threshold_sweep(tiny_pairs(), thresholds=[0.90, 0.92], embed=fake_embed, progress=False)

    bare = result.row(0.92, False)
    # s0 → own origin (correct); s1 0.91 < 0.92 (miss); s2 → 2+2 at 0.93 (wrong);
    # easy: s2 without its origin → 2+2 (hit); hard: 2+3 at 0.97 and Germany at 0.94 (both hit).
    assert (bare.correct, bare.wrong_positive, bare.easy_hits, bare.hard_hits) == (1, 1, 1, 2)
    assert bare.precision == pytest.approx(1 / 3)
    assert bare.recall == pytest.approx(1 / 3)
    assert bare.hit_rate == pytest.approx(5 / 8)
    assert bare.hard_false_rate == 1.0
    assert bare.hard_hits_by_kind == {"number": 1, "entity": 1}

    guarded = result.row(0.92, True)
    # The guard refuses 2+2 for "Bread baking steps?" (numbers), 2+3 (number) and Germany (entity).
    assert (guarded.correct, guarded.wrong_positive, guarded.easy_hits, guarded.hard_hits) == (1, 0, 0, 0)
    assert guarded.precision == 1.0
    assert guarded.hit_rate == pytest.approx(1 / 8)

    lower = result.row(0.90, True)
    assert (lower.correct, lower.recall) == (2, pytest.approx(2 / 3))


def test_generated_hard_negatives_change_one_number_entity_or_negation():
    pairs = [Pair("Is the Hub free for 3 users?", "Is the Hub free for three users?")]
    generate_hard_negatives(pairs)
    kinds = {kind: text for kind, text in pairs[0].hard_negatives}
    assert set(kinds) == {"number", "entity", "negation"}
    assert "3" not in kinds["number"] and kinds["number"].startswith("Is the Hub free for ")
    assert "Hub" not in kinds["entity"]
    assert kinds["negation"] == "Is not the Hub free for 3 users?"


def test_eval_cache_runs_on_the_vendored_fixture_and_writes_the_runbook(tmp_path, embedder, settings):
    runbook = tmp_path / "runbook.md"
    call_command(
        "eval_cache",
        pairs=settings.BASE_DIR / "fixtures" / "gptcache" / "pairs200.jsonl",
        limit=30,
        replay=0,
        runbook=runbook,
    )
    text = runbook.read_text()
    assert "cosine similarity" in text.lower()
    assert text.count("| 0.92 |") == 2 and text.count("| 0.80 |") == 2 and text.count("| 0.97 |") == 2
    assert "How to roll back" in text
    assert "embeddings: all-minilm-l6-v2 (onnx-int8 runtime)" in text  # the figures hold for this runtime only
    pairs, label = load_pairs(settings.BASE_DIR / "fixtures" / "gptcache" / "pairs200.jsonl", limit=30)
    assert "pairs200.jsonl" in label and len(pairs) > 30  # + the hand-written chat pairs


@pytest.mark.django_db(transaction=True)
def test_the_workload_replay_saves_money_without_a_wrong_answer(embedder, redis_client, settings):
    pairs, _ = load_pairs(settings.BASE_DIR / "fixtures" / "gptcache" / "pairs200.jsonl", limit=20)
    generate_hard_negatives(pairs)
    result = replay_workload(pairs, requests=120, progress=False)
    assert result.requests == 120
    assert result.exact_hits > 0 and result.semantic_hits > 0
    assert result.wrong_answers == 0
    assert result.saved > 0
    assert result.cost_with_cache + result.saved == result.cost_without_cache
