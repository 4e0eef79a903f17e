"""The vendored ~2,000-character prompts (``fixtures/prompts/long_prompts.jsonl.gz``): build, check, load.

    .venv/bin/python -m evals.cache.long_prompts            # (re)write the fixture from fixtures/routellm/full.jsonl.gz
    .venv/bin/python -m evals.cache.long_prompts --check    # exit 1 if the fixture differs from a rebuild

Real chat traffic sits at the long end (RAG context, pasted documents, long system prompts); the benchmarks of
the semantic tier and of the gateway need prompts of that length that are public, unique and reproducible.
Each prompt is consecutive MMLU questions of ONE subject (so it reads as one topical document: passages,
questions and their lettered options), taken from the RouteLLM export already vendored in
``fixtures/routellm/full.jsonl.gz`` (contaminated prompts excluded), joined by a blank line until the text
reaches 2,000 characters, then cut back to the last whitespace at or before 2,000. No record is used twice,
so every prompt is distinct. Attribution and licences: ``fixtures/prompts/README.md``.

Standard library only (no Django), like :mod:`evals.router.datasets`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_PATH = REPO_ROOT / "fixtures" / "routellm" / "full.jsonl.gz"
LONG_PROMPTS_PATH = REPO_ROOT / "fixtures" / "prompts" / "long_prompts.jsonl.gz"

TARGET_CHARS = 2000
COUNT = 300
SEPARATOR = "\n\n"


def cut_at_whitespace(text: str, limit: int) -> str:
    """``text`` cut back to the last whitespace at or before ``limit`` characters (no trailing whitespace)."""
    if len(text) <= limit:
        return text.rstrip()
    head = text[: limit + 1]
    cut = max(head.rfind(" "), head.rfind("\n"))
    return (head[:cut] if cut > limit // 2 else text[:limit]).rstrip()


def build(records: Iterable[dict[str, Any]], *, count: int = COUNT, target: int = TARGET_CHARS) -> list[dict[str, Any]]:
    """``count`` prompts of ``target - ~20 .. target`` characters, round-robin over the MMLU subjects.

    Deterministic: subjects in sorted order, records in the export's order within a subject.
    """
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        if rec["source"] != "mmlu":
            continue
        by_subject.setdefault(rec["id"].rsplit("-", 1)[0], []).append(rec)
    cursors = dict.fromkeys(by_subject, 0)
    out: list[dict[str, Any]] = []
    while len(out) < count:
        progressed = False
        for subject in sorted(by_subject):
            rows, i = by_subject[subject], cursors[subject]
            parts: list[str] = []
            ids: list[str] = []
            while i < len(rows) and len(SEPARATOR.join(parts)) < target:
                parts.append(rows[i]["prompt"].strip())
                ids.append(rows[i]["id"])
                i += 1
            cursors[subject] = i
            text = cut_at_whitespace(SEPARATOR.join(parts), target)
            if len(text) < target - 100:  # subject exhausted: a short tail is not a long prompt
                continue
            out.append({"id": f"long-{len(out):03d}", "subject": subject.removeprefix("mmlu-"), "sources": ids, "prompt": text})
            progressed = True
            if len(out) == count:
                break
        if not progressed:
            raise ValueError(f"only {len(out)} prompts of ~{target} characters in the source")
    return out


def _gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as fh:
        fh.write(data)
    return buf.getvalue()


def render(prompts: list[dict[str, Any]]) -> bytes:
    lines = "".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in prompts)
    return _gz(lines.encode())


def load_source(path: Path = SOURCE_PATH) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_long_prompts(path: Path = LONG_PROMPTS_PATH) -> list[dict[str, Any]]:
    """The vendored long prompts: ``[{"id", "subject", "sources", "prompt"}, ...]``."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare the fixture with a rebuild instead of writing")
    args = parser.parse_args(argv)
    data = render(build(load_source()))
    if args.check:
        same = LONG_PROMPTS_PATH.is_file() and LONG_PROMPTS_PATH.read_bytes() == data
        sys.stdout.write("long prompts: up to date\n" if same else f"long prompts: {LONG_PROMPTS_PATH} differs from a rebuild\n")
        return 0 if same else 1
    LONG_PROMPTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    LONG_PROMPTS_PATH.write_bytes(data)
    sys.stdout.write(f"wrote {LONG_PROMPTS_PATH.relative_to(REPO_ROOT)} ({len(data):,} bytes)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
