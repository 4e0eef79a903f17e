"""Tests for the RouteLLM dataset loaders (no Django needed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from evals.router.datasets import (
    VENDORED_FULL_PATH,
    build_eval50,
    find_shared_dir,
    full_available,
    load_contaminated,
    load_eval50,
    load_full,
    load_mt_bench_answers,
)

SHARED = find_shared_dir()
needs_shared = pytest.mark.skipif(
    SHARED is None,
    reason="RouteLLM shared data (../shared/data/routellm or $FINOPS_ROUTELLM_DIR) is absent; "
    "only the vendored fixtures/routellm/eval50.jsonl is tested",
)

EVAL50_KEYS = {"id", "source", "prompt", "weak_correct", "strong_correct", "weak_response", "strong_response"}
FULL_KEYS = {"id", "source", "prompt", "weak_score", "strong_score", "weak_response", "strong_response"}


def test_eval50_shape_and_balance() -> None:
    records = load_eval50()
    assert len(records) == 50
    assert len({r["id"] for r in records}) == 50
    assert len({r["prompt"] for r in records}) == 50
    for r in records:
        assert EVAL50_KEYS <= set(r)
        assert r["source"] == "gsm8k"
        assert isinstance(r["weak_correct"], bool) and isinstance(r["strong_correct"], bool)
        assert r["weak_response"] and r["strong_response"]
        assert r["weak_score"] == float(r["weak_correct"])
    outcomes = Counter((r["weak_correct"], r["strong_correct"]) for r in records)
    assert 16 <= outcomes[(False, True)] <= 17  # ~1/3 need the strong model
    assert outcomes[(True, True)] > outcomes[(False, False)]  # proportional to the data
    assert outcomes[(False, False)] >= 1


def test_load_full_returns_none_without_data(tmp_path: Path) -> None:
    assert load_full(tmp_path / "does-not-exist") is None
    assert load_full(tmp_path) is None  # exists but holds no RouteLLM export


@needs_shared
def test_eval50_excludes_contaminated_and_is_reproducible() -> None:
    assert SHARED is not None
    contaminated = load_contaminated(SHARED, "gsm8k")
    assert contaminated
    records = load_eval50()
    assert not any(" ".join(r["prompt"].split()) in contaminated for r in records)
    stored = [{k: r[k] for k in EVAL50_KEYS} for r in records]
    assert build_eval50(SHARED) == stored


def test_load_full_records() -> None:  # the vendored full sets: no ../shared needed
    records = load_full()
    assert records is not None
    by_source = Counter(r["source"] for r in records)
    assert set(by_source) == {"gsm8k", "mmlu", "mt_bench"}
    assert by_source["gsm8k"] == 1319 - 12  # minus contaminated prompts
    assert by_source["mt_bench"] == 80 - 8
    assert by_source["mmlu"] > 7000
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert FULL_KEYS <= set(r)
        assert 0.0 <= r["weak_score"] <= 1.0 and 0.0 <= r["strong_score"] <= 1.0
        if r["source"] == "gsm8k":
            assert r["weak_response"] and r["strong_response"]
        else:
            assert r["weak_response"] is None and r["strong_response"] is None

    gsm8k = [r for r in records if r["source"] == "gsm8k"]
    need_strong = sum(1 for r in gsm8k if r["weak_score"] == 0 and r["strong_score"] == 1) / len(gsm8k)
    assert need_strong == pytest.approx(0.29, abs=0.02)  # matches the shared data README
    strong_acc = sum(r["strong_score"] for r in gsm8k) / len(gsm8k)
    assert strong_acc == pytest.approx(0.857, abs=0.01)

    mt = [r for r in records if r["source"] == "mt_bench"]
    assert sum(r["strong_score"] for r in mt) > sum(r["weak_score"] for r in mt)


@needs_shared
def test_load_full_accepts_explicit_dir() -> None:
    assert SHARED is not None
    explicit = load_full(SHARED)
    assert explicit is not None and len(explicit) == len(load_full() or [])


def test_the_full_sets_are_vendored_and_preferred() -> None:
    assert VENDORED_FULL_PATH.is_file() and full_available()
    answers = load_mt_bench_answers()
    assert answers is not None and len(answers) == 80
    assert all(set(a) == {"weak", "strong"} for a in answers.values())


@needs_shared
def test_the_vendored_full_sets_equal_the_export_record_for_record() -> None:
    from evals.router.evaluation import mt_bench_answers_load

    assert SHARED is not None
    assert load_full() == load_full(SHARED)  # same records, same order, same scores: the same evaluation
    assert load_mt_bench_answers() == mt_bench_answers_load(SHARED)
