"""Loaders for the RouteLLM evaluation data (real recorded answers + correctness labels).

Two sources:

* ``fixtures/routellm/eval50.jsonl`` -- 50 GSM8K prompts vendored into the repo so
  tests and the replay upstream work on a fresh clone (see that folder's README).
* the full sets (GSM8K, 40 MMLU subjects, MT-Bench): vendored, compressed, in
  ``fixtures/routellm/full.jsonl.gz`` (+ ``mt_bench_answers.json.gz``), written by
  ``bench/vendor_eval_data.py`` from the RouteLLM ``evals`` export; :func:`load_full`
  prefers them, so a clone without ``../shared`` evaluates on the full sets.  An
  explicit folder (or ``$FINOPS_ROUTELLM_DIR``) reads that export instead.

Every record uses one shape so routing evaluations do not care about the source::

    {"id", "source", "prompt", "weak_score", "strong_score",
     "weak_response", "strong_response"}

Scores are in 0..1: correctness labels become 0.0/1.0, MT-Bench GPT-4 judge
scores (1..10) become score/10.  Prompts RouteLLM marks as contaminated (they
leaked into its router training data) are always excluded, as RouteLLM does.

This module only uses the standard library so it can be imported without Django.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "EVAL50_PATH",
    "STRONG_MODEL",
    "WEAK_MODEL",
    "build_eval50",
    "find_shared_dir",
    "load_contaminated",
    "load_eval50",
    "full_available",
    "load_full",
    "load_mt_bench_answers",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
EVAL50_PATH = REPO_ROOT / "fixtures" / "routellm" / "eval50.jsonl"
VENDORED_FULL_PATH = REPO_ROOT / "fixtures" / "routellm" / "full.jsonl.gz"
VENDORED_MT_ANSWERS_PATH = REPO_ROOT / "fixtures" / "routellm" / "mt_bench_answers.json.gz"

# Column/model names exactly as they appear in the RouteLLM export.
WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL = "gpt-4-1106-preview"

# Overrides the shared-data lookup (points at the ``routellm`` folder itself).
SHARED_DIR_ENV = "FINOPS_ROUTELLM_DIR"
_DEFAULT_RELATIVE = Path("..") / "shared" / "data" / "routellm"

EVAL50_SEED = 20240501
EVAL50_SIZE = 50
EVAL50_NEEDS_STRONG = 17  # ~1/3, deliberately above the data's 29% so the gap is measurable


def _norm(text: str) -> str:
    """Whitespace-normalised prompt, the key used for contamination and replay matching."""
    return " ".join(text.split())


def _as_bool(value: str) -> bool:
    return value.strip().lower() == "true"


def find_shared_dir(shared_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Locate the RouteLLM export, or ``None`` if it is not available.

    Resolution order: explicit argument (absolute, else relative to the CWD, else
    relative to the repo root), ``$FINOPS_ROUTELLM_DIR``, then
    ``<repo>/../shared/data/routellm`` and the same path above any ancestor of the
    repo (so git worktrees nested deeper still find it).
    """
    candidates: list[Path] = []
    if shared_dir is not None:
        path = Path(shared_dir).expanduser()
        if path.is_absolute():
            candidates.append(path)
        else:
            candidates += [Path.cwd() / path, REPO_ROOT / path]
    else:
        env = os.environ.get(SHARED_DIR_ENV)
        if env:
            candidates.append(Path(env).expanduser())
        candidates.append(REPO_ROOT / _DEFAULT_RELATIVE)
        candidates += [parent / "shared" / "data" / "routellm" for parent in REPO_ROOT.parents]
    for candidate in candidates:
        if (candidate / "gsm8k_responses.csv").is_file():
            return candidate.resolve()
    return None


def load_contaminated(shared_dir: Path, prefix: str) -> set[str]:
    """Normalised ``eval_prompt`` values of ``<prefix>_contaminated_prompts.jsonl``."""
    path = shared_dir / f"{prefix}_contaminated_prompts.jsonl"
    if not path.is_file():
        return set()
    with path.open(encoding="utf-8") as fh:
        return {_norm(json.loads(line)["eval_prompt"]) for line in fh if line.strip()}


def _read_csv(path: Path) -> list[dict[str, str]]:
    # newline="" because GSM8K responses contain embedded newlines inside quoted fields.
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _load_gsm8k(shared_dir: Path) -> list[dict[str, Any]]:
    contaminated = load_contaminated(shared_dir, "gsm8k")
    records = []
    for idx, row in enumerate(_read_csv(shared_dir / "gsm8k_responses.csv")):
        if _norm(row["prompt"]) in contaminated:
            continue
        records.append(
            {
                "id": f"gsm8k-{idx}",
                "source": "gsm8k",
                "prompt": row["prompt"],
                "weak_score": float(_as_bool(row[WEAK_MODEL])),
                "strong_score": float(_as_bool(row[STRONG_MODEL])),
                "weak_response": row[f"{WEAK_MODEL}_response"],
                "strong_response": row[f"{STRONG_MODEL}_response"],
            }
        )
    return records


def _load_mmlu(shared_dir: Path) -> list[dict[str, Any]]:
    contaminated = load_contaminated(shared_dir, "mmlu")
    records = []
    for path in sorted((shared_dir / "mmlu_responses").glob("mmlu_*.csv")):
        subject = path.stem.removeprefix("mmlu_")
        for idx, row in enumerate(_read_csv(path)):
            if _norm(row["prompt"]) in contaminated:
                continue
            records.append(
                {
                    "id": f"mmlu-{subject}-{idx}",
                    "source": "mmlu",
                    "prompt": row["prompt"],
                    "weak_score": float(_as_bool(row[WEAK_MODEL])),
                    "strong_score": float(_as_bool(row[STRONG_MODEL])),
                    "weak_response": None,
                    "strong_response": None,
                }
            )
    return records


def _load_mt_bench(shared_dir: Path) -> list[dict[str, Any]]:
    """One record per MT-Bench question, prompted with turn 1.

    The judge scored each model on both turns ("single-*-v1" judges turn 1,
    "*-multi-turn" judges turn 2).  Like RouteLLM's MT-Bench benchmark we average
    the two turns per model, then divide by 10.  A question is dropped if either
    of its turns is contaminated.
    """
    contaminated = load_contaminated(shared_dir, "mt_bench")
    scores: dict[tuple[int, str], list[float]] = {}
    with (shared_dir / "mt_bench_judgements.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            score = float(row["score"])
            if score < 0:  # FastChat writes -1 when the judge output could not be parsed
                continue
            scores.setdefault((int(row["question_id"]), row["model"]), []).append(score)

    records = []
    with (shared_dir / "mt_bench_question.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            q = json.loads(line)
            turns: list[str] = q["turns"]
            if any(_norm(t) in contaminated for t in turns):
                continue
            qid = int(q["question_id"])
            weak = scores.get((qid, WEAK_MODEL))
            strong = scores.get((qid, STRONG_MODEL))
            if not weak or not strong:
                continue
            records.append(
                {
                    "id": f"mt_bench-{qid}",
                    "source": "mt_bench",
                    "prompt": turns[0],
                    "weak_score": sum(weak) / len(weak) / 10.0,
                    "strong_score": sum(strong) / len(strong) / 10.0,
                    "weak_response": None,
                    "strong_response": None,
                }
            )
    return records


def _vendored_preferred(shared_dir: str | os.PathLike[str] | None) -> bool:
    return shared_dir is None and not os.environ.get(SHARED_DIR_ENV) and VENDORED_FULL_PATH.is_file()


def full_available(shared_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether :func:`load_full` has the full sets: vendored in fixtures/, or the export it is pointed at."""
    return _vendored_preferred(shared_dir) or find_shared_dir(shared_dir) is not None


def load_full(shared_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]] | None:
    """All RouteLLM eval records (GSM8K + MMLU + MT-Bench), or ``None`` if the data is absent.

    By default the vendored copy (``fixtures/routellm/full.jsonl.gz``, the same records in the same order);
    ``shared_dir`` (the ``routellm`` folder) or ``$FINOPS_ROUTELLM_DIR`` reads an export instead, and without
    the vendored file ``../shared/data/routellm`` next to the repo root (see :func:`find_shared_dir`).
    """
    if _vendored_preferred(shared_dir):
        with gzip.open(VENDORED_FULL_PATH, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    resolved = find_shared_dir(shared_dir)
    if resolved is None:
        return None
    return _load_gsm8k(resolved) + _load_mmlu(resolved) + _load_mt_bench(resolved)


def load_mt_bench_answers(shared_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, str]] | None:
    """The vendored turn-1 MT-Bench answers ({record id: {"weak", "strong"}}) when :func:`load_full` reads the
    vendored sets; ``None`` otherwise (the caller cuts them out of the export's judge prompts)."""
    if not _vendored_preferred(shared_dir) or not VENDORED_MT_ANSWERS_PATH.is_file():
        return None
    with gzip.open(VENDORED_MT_ANSWERS_PATH, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def load_eval50(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The vendored 50-prompt GSM8K fixture.

    Besides the stored keys (``id, source, prompt, weak_correct, strong_correct,
    weak_response, strong_response``) each record gets ``weak_score`` /
    ``strong_score`` (0.0/1.0) so it can be fed to the same evaluation code as
    :func:`load_full` records.
    """
    records = []
    with Path(path or EVAL50_PATH).open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            rec["weak_score"] = float(rec["weak_correct"])
            rec["strong_score"] = float(rec["strong_correct"])
            records.append(rec)
    return records


def _largest_remainder(total: int, weights: dict[str, int]) -> dict[str, int]:
    """Split ``total`` across keys proportionally to ``weights`` with integer counts."""
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    leftovers = sorted(weights, key=lambda k: (exact[k] - counts[k], k), reverse=True)
    for k in leftovers[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def build_eval50(
    shared_dir: str | os.PathLike[str] | None = None,
    *,
    size: int = EVAL50_SIZE,
    needs_strong: int = EVAL50_NEEDS_STRONG,
    seed: int = EVAL50_SEED,
) -> list[dict[str, Any]]:
    """Deterministically re-derive the eval50 fixture from the shared GSM8K export.

    ``needs_strong`` prompts have Mixtral wrong and GPT-4 right; the remaining
    slots are split over the other three outcome classes (both right, both
    wrong, only Mixtral right) in proportion to their frequency in the data, so
    an oracle router still has to learn that GPT-4 is occasionally worse.
    """
    resolved = find_shared_dir(shared_dir)
    if resolved is None:
        raise FileNotFoundError("RouteLLM shared data not found; set $FINOPS_ROUTELLM_DIR")
    by_class: dict[str, list[dict[str, Any]]] = {}
    for rec in _load_gsm8k(resolved):
        key = {
            (0.0, 1.0): "needs_strong",
            (1.0, 1.0): "both_right",
            (0.0, 0.0): "both_wrong",
            (1.0, 0.0): "weak_only",
        }[(rec["weak_score"], rec["strong_score"])]
        by_class.setdefault(key, []).append(rec)

    quotas = {"needs_strong": needs_strong}
    rest = {k: len(v) for k, v in by_class.items() if k != "needs_strong"}
    quotas.update(_largest_remainder(size - needs_strong, rest))

    rng = random.Random(seed)
    chosen: list[dict[str, Any]] = []
    for key in sorted(quotas):
        chosen += rng.sample(by_class[key], quotas[key])
    chosen.sort(key=lambda r: int(r["id"].split("-")[1]))
    return [
        {
            "id": r["id"],
            "source": "gsm8k",
            "prompt": r["prompt"],
            "weak_correct": bool(r["weak_score"]),
            "strong_correct": bool(r["strong_score"]),
            "weak_response": r["weak_response"],
            "strong_response": r["strong_response"],
        }
        for r in chosen
    ]


def _write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate fixtures/routellm/eval50.jsonl")
    parser.add_argument("command", choices=["build-eval50", "stats"])
    parser.add_argument("--shared-dir", default=None)
    args = parser.parse_args()
    if args.command == "build-eval50":
        _write_jsonl(build_eval50(args.shared_dir), EVAL50_PATH)
        sys.stdout.write(f"wrote {EVAL50_PATH}\n")
    else:
        full = load_full(args.shared_dir)
        if full is None:
            raise SystemExit("shared data not found")
        from collections import Counter

        sys.stdout.write(f"{Counter(r['source'] for r in full)}\n")
