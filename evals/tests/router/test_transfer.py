"""The leave-out protocols' transfer experiments (evals.router.transfer): the format model and the subject-mean oracle."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evals.router import transfer
from evals.router.heldout import MMLU_GROUPS, leave_out_evaluate


@dataclass
class Item:
    id: str
    source: str
    prompt: str
    weak_score: float
    strong_score: float
    complexity: float


def _question(n: int, *, negated: bool) -> str:
    stem = f"Which of these is {'NOT ' if negated else ''}a property of sample {n}?"
    return stem + "\nA. one\nB. two\nC. three\nD. four\nAnswer:"


def _items() -> list[Item]:
    """MMLU prompts over two subjects per group, plus GSM8K and MT-Bench ones; the premium tier gains exactly on the
    negated questions (a cue of form, present in every slice)."""
    rng = np.random.default_rng(7)
    items = []
    for subjects in MMLU_GROUPS.values():
        for subject in subjects.split()[:2]:
            for n in range(30):
                negated = bool(rng.random() < 0.3)
                items.append(Item(f"mmlu-{subject}-{n}", "mmlu", _question(n, negated=negated),
                                  0.0 if negated else 1.0, 1.0, float(rng.random())))  # fmt: skip
    for source in ("gsm8k", "mt_bench"):
        for n in range(40):
            negated = bool(rng.random() < 0.3)
            items.append(Item(f"{source}-{n}", source, _question(n, negated=negated), 0.0 if negated else 1.0, 1.0,
                              float(rng.random())))  # fmt: skip
    return items


def test_the_subject_mean_oracle_scores_each_prompt_by_its_own_subjects_mean_gain() -> None:
    ids = ["mmlu-anatomy-1", "mmlu-anatomy-2", "mmlu-virology-1", "mmlu-virology-2", "mmlu-virology-3"]
    gains = np.array([1.0, 0.0, 1.0, 1.0, -1.0])
    assert transfer.subject_mean_scores(ids, gains).tolist() == [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3]
    assert transfer.subject_of("mmlu-high_school_us_history-12") == "mmlu-high_school_us_history"


def test_the_ridge_is_fitted_on_the_training_rows_only() -> None:
    x = np.array([[0.0], [1.0], [0.0], [1.0], [0.0], [1.0]])
    gains = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])  # the last two rows say the opposite: they are the test rows
    scores = transfer.ridge_scores(x, gains, np.arange(4), np.array([4, 5]))
    assert scores[1] > scores[0]  # learned from the training rows, not from the test rows' labels


def test_leave_out_protocols_report_the_format_model_and_the_oracle() -> None:
    items = _items()
    vectors = np.random.default_rng(3).normal(size=(len(items), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    protocols = leave_out_evaluate(items, vectors, k=5, dims=None)
    by_name = {p.name: p for p in protocols}
    assert not by_name["5-fold cross-validation (for comparison)"].transfer  # leave-out protocols only
    subjects = by_name["leave one MMLU subject group out"].transfer
    benchmarks = by_name["leave one benchmark out"].transfer
    assert [r.slice for r in subjects] == [*MMLU_GROUPS, "pooled over the slices"]
    assert [r.slice for r in benchmarks] == ["gsm8k", "mmlu", "mt_bench", "pooled over the slices"]
    # The planted cue is one of form, so the model fitted on the other slices ranks every slice near-perfectly
    # (a perfect router's APGR here is 1 - negated share / 2, about 0.85; random is 0.5) ...
    for row in subjects + benchmarks:
        assert row.format_model > 0.8, row
    # ... while the oracle only exists where there are subjects, and a subject's mean is the same for all its prompts.
    assert all(r.oracle is not None for r in subjects) and all(r.oracle is None for r in benchmarks)
    assert all(r.oracle < r.format_model for r in subjects)  # type: ignore[operator]
    md = "\n".join(transfer.transfer_markdown(subjects + benchmarks))
    assert "### What transfers to unseen slices" in md
    assert f"| leave one benchmark out | mmlu | {sum(i.source == 'mmlu' for i in items)} |" in md
