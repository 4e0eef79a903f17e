"""What could transfer to unseen slices: two experiments beside the leave-out protocols (evals.router.heldout).

Issue #20 asks for features that transfer (answer-format cues, length) rather than topic neighbourhood alone. On
each leave-out slice these are scored, next to the complexity score and the served policy:

- **format model**: a ridge regression of the gain (premium score − cheap score) on label-free features of the
  prompt's form — the six complexity features, length, multiple-choice options (their number, length, spread and
  numbers), numbers in the question, negations ("NOT", "EXCEPT"), paired statements, "which of the following",
  a question mark, blanks, word length — fitted on every *other* slice, as the index is. Not served: it is here to
  show what form alone is worth on traffic it was not fitted on.
- **subject-mean oracle** (MMLU subject groups only): each prompt scored by its own MMLU subject's mean gain,
  taken from the held-out labels themselves. It cannot be served (it reads the answers it is scored on); it
  measures how much of the gain is a property of the subject rather than of the prompt, which is the part an
  unseen subject cannot be told from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from apps.routing.features import complexity_features

RIDGE_ALPHA = 10.0

_OPTION = re.compile(r"^[A-D]\. (.*)$", re.M)
_NUM = re.compile(r"\d+(?:\.\d+)?")
_NEGATION = re.compile(r"\b(?:NOT|EXCEPT|LEAST|FALSE|incorrect)\b")
_ALL_NONE = re.compile(r"\b(?:all|none|both) of the (?:above|following)\b", re.I)
_WORD = re.compile(r"[A-Za-z]+")
_SYMBOLS = "=+-*/^()<>%$"


def format_features(prompt: str) -> list[float]:
    """Label-free features of a prompt's form (see the module docstring); a fixed-length vector."""
    options = _OPTION.findall(prompt)
    stem = prompt.split("\nA. ", 1)[0] if options else prompt
    lengths = [len(o) for o in options] or [0]
    words = _WORD.findall(prompt)
    cx = complexity_features([{"role": "user", "content": prompt}])
    return [
        math.log1p(len(prompt)),
        math.log1p(len(stem)),
        math.log1p(prompt.count("\n")),
        float(bool(options)),
        math.log1p(float(np.mean(lengths))),
        math.log1p(max(lengths) - min(lengths)),
        sum(bool(_NUM.search(o)) for o in options) / 4 if options else 0.0,
        min(len(_NUM.findall(stem)), 10) / 10,
        float(bool(_NEGATION.search(stem))),
        float("Statement 1" in prompt),
        float("which of the following" in stem.lower()),
        float(stem.rstrip().endswith("?")),
        float(bool(_ALL_NONE.search(prompt))),
        float("_" in stem),
        min(sum(prompt.count(c) for c in _SYMBOLS), 20) / 20,
        sum(c.isdigit() for c in prompt) / max(len(prompt), 1),
        float(np.mean([len(w) for w in words])) if words else 0.0,
        float(np.mean([len(w) >= 10 for w in words])) if words else 0.0,
        *(cx[name] for name in sorted(cx)),
    ]


def ridge_scores(x: np.ndarray, gains: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Fit gain ~ standardised features on the `train` rows (closed-form ridge); predict the `test` rows."""
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0
    a = (x[train] - mean) / std
    y = gains[train] - gains[train].mean()
    w = np.linalg.solve(a.T @ a + RIDGE_ALPHA * np.eye(a.shape[1]), a.T @ y)
    return ((x[test] - mean) / std) @ w


def subject_of(item_id: str) -> str:
    """"mmlu-<subject>-<n>" → "<subject>"; other ids → their set's name."""
    return item_id.rsplit("-", 1)[0]


def subject_mean_scores(ids: Sequence[str], gains: np.ndarray) -> np.ndarray:
    """Each prompt's score = the mean gain of its own subject among these prompts (the oracle above)."""
    subjects = np.array([subject_of(i) for i in ids], dtype=object)
    out = np.empty(len(ids))
    for subject in set(subjects.tolist()):
        mask = subjects == subject
        out[mask] = gains[mask].mean()
    return out


@dataclass
class TransferRow:
    protocol: str
    slice: str
    n: int
    complexity: float
    served: float
    format_model: float
    oracle: float | None  # None: the slice has no MMLU subjects to average over


def features_matrix(items: Sequence[Any]) -> np.ndarray:
    return np.array([format_features(i.prompt) for i in items], dtype=np.float64)


def transfer_markdown(rows: list[TransferRow]) -> list[str]:
    if not rows:
        return []
    lines = [
        "### What transfers to unseen slices",
        "",
        "Two experiments on the same leave-out slices (`evals/router/transfer.py`). *Format model*: a ridge "
        "regression of the gain on label-free features of the prompt's form (the complexity features, length, "
        "the options' number, length and numbers, negations, paired statements, question marks), fitted on the "
        "other slices as the index is; not served. *Subject-mean oracle*: each MMLU prompt scored by its own "
        "subject's mean gain, read from the held-out labels; not servable, it measures how much of the gain "
        "belongs to the subject rather than to the prompt.",
        "",
        "| protocol | slice | prompts | complexity APGR | served APGR | format model APGR | format − complexity "
        "| subject-mean oracle APGR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        oracle = "—" if r.oracle is None else f"{r.oracle:.3f}"
        name = f"**{r.slice}**" if r.slice.startswith("pooled") else r.slice
        lines.append(
            f"| {r.protocol} | {name} | {r.n} | {r.complexity:.3f} | {r.served:.3f} | {r.format_model:.3f} | "
            f"{r.format_model - r.complexity:+.3f} | {oracle} |"
        )
    pooled = {r.protocol: r for r in rows if r.slice.startswith("pooled")}
    subj = next((r for p, r in pooled.items() if "subject" in p), None)
    below = [r for r in rows if not r.slice.startswith("pooled") and r.format_model < r.complexity - 0.01]
    lines += [
        "",
        "Form alone does not carry the gain to slices it was not fitted on: pooled, the format model reaches "
        + " and ".join(f"{r.format_model:.3f} ({p})" for p, r in pooled.items())
        + " against the 0.60 goal"
        + (
            ", and it falls below the complexity score on "
            + ", ".join(f"{r.slice} ({r.format_model - r.complexity:+.3f})" for r in below)
            + ", so serving it would break the per-slice rule."
            if below
            else "."
        )
        + (
            f" Knowing each subject's mean gain would reach {subj.oracle:.3f} pooled over the subject groups: "
            "the premium tier's advantage is mostly a property of the subject, which a subject never seen cannot "
            "supply. Only a signal from the cheap model itself on the prompt (its answer's log-probabilities, "
            "which the recorded MMLU answers do not include: RouteLLM kept one output token and no logprobs) "
            "could tell it, and the gateway reads it live when the cheap answer carries token logprobs (escalation on its confidence), "
            "but it cannot be scored on these sets."
            if subj is not None and subj.oracle is not None
            else ""
        ),
        "",
    ]
    return lines
