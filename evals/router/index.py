"""Building the learned strategy's kNN index file (manage.py build_router_index) from labelled prompts."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings

from apps.routing import learned
from finops.conf import conf


def embedding_cache_file() -> Path:
    """Where the RouteLLM prompts' vectors are kept between runs (per local runtime: their vectors differ slightly)."""
    runtime = conf().cache_local_runtime or "torch"
    return Path(settings.BASE_DIR) / ".finops" / "cache" / f"router-minilm-{runtime}.npz"


ROUTELLM_SOURCE = "RouteLLM evals (lm-sys/RouteLLM, Apache-2.0): GSM8K, MMLU, MT-Bench; contaminated prompts excluded"


def router_index_build(
    *,
    records: list[dict],
    output: Path,
    k: int = learned.DEFAULT_K,
    dims: int | None = learned.DEFAULT_DIMS,
    source: str = ROUTELLM_SOURCE,
    progress: bool = True,
) -> learned.RouteIndex:
    """Embed the labelled records (prompt, weak_score, strong_score, source) and write the served index file."""
    from collections import Counter

    texts = [r["prompt"] for r in records]
    vectors = learned.prompts_embed(texts, progress=progress, cache_file=embedding_cache_file())
    gains = [float(r["strong_score"]) - float(r["weak_score"]) for r in records]
    from apps.embeddings.embeddings import local_embedder

    index = learned.RouteIndex.build(
        vectors,
        gains,
        [learned.prompt_key(t) for t in texts],
        k=k,
        dims=dims,
        meta={
            "source": source,
            "label": "premium-win score: gpt-4-1106-preview score minus Mixtral-8x7B-Instruct score (correctness 0/1, MT-Bench judge/10)",
            "embedding": "all-MiniLM-L6-v2 (apps.embeddings.embeddings), last user message, first 256 word pieces",
            "runtime": getattr(local_embedder, "runtime", "") or "torch",
            "prompts": dict(Counter(r["source"] for r in records)),
        },
    )
    index.save(output)
    learned.served_index_forget()
    return index


def labelled_prompts_read(*, path: Path) -> list[dict]:
    """Labelled prompts from a JSONL file; every line needs prompt, weak_score and strong_score."""
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            prompt = row["prompt"]
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"line {lineno}: prompt must be a non-empty string")
            weak, strong = float(row["weak_score"]), float(row["strong_score"])
            records.append(
                {"prompt": prompt, "weak_score": weak, "strong_score": strong, "source": str(row.get("source", "custom"))}
            )
    if len(records) < 2:
        raise ValueError("an index needs at least two labelled prompts")
    return records
