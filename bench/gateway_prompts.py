"""The prompts of the gateway benchmark: unique, semantically distinct, of realistic length, from vendored public sets.

    .venv/bin/python bench/gateway_prompts.py          # counts and lengths of both sets (no files written)

Every request of a cache-miss run must miss both cache tiers of finops as shipped: no prompt may repeat (exact
tier) and none may be a paraphrase of another (semantic tier). So the prompts are real, distinct questions, never
a template with a counter in it (those embed to near-identical vectors):

- **short** (the 1-client, 64-connection and 200-client runs): the GSM8K, MMLU and MT-Bench prompts of
  `fixtures/routellm/full.jsonl.gz` (RouteLLM, Apache-2.0) and the `origin` sentences of
  `fixtures/gptcache/mock_data.json.gz` (GPTCache, MIT; their paraphrases are left out), up to 600 characters,
  one of each reworded twin (same words cut to 5 letters, in any order), shuffled with a fixed seed. When a run needs more, two prompts of different sources are joined by a blank line
  (a question and a follow-up), so the list never repeats a text.
- **long** (the 2,000-character run): `fixtures/prompts/long_prompts.jsonl.gz` (consecutive MMLU questions of one
  subject, cut at 2,000 characters) when the checkout has it, then more prompts built the same way from the MMLU
  records it did not use, then bundles of questions from mixed subjects (a fixed shuffle per pass) when a run
  needs more still.

Each list is written as one JSON string literal per line (`bench/chat.lua` splices it into the request body).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUTELLM = ROOT / "fixtures" / "routellm" / "full.jsonl.gz"
GPTCACHE = ROOT / "fixtures" / "gptcache" / "mock_data.json.gz"
LONG_FIXTURE = ROOT / "fixtures" / "prompts" / "long_prompts.jsonl.gz"
SHORT_MAX_CHARS = 600
LONG_CHARS = 2000
SEED = 20261202

if str(ROOT) not in sys.path:  # run as a script: the repository's packages
    sys.path.insert(0, str(ROOT))
from evals.cache.long_prompts import cut_at_whitespace  # noqa: E402


def _routellm() -> list[dict]:
    with gzip.open(ROUTELLM, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _unique(texts: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for text in texts:
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _gist(text: str) -> tuple[str, ...]:
    """The words of a text, cut to 5 letters and sorted: equal for reworded twins ("electric" / "electrical
    circuit") and for the same words in another order ("doubles the momentum ... its kinetic energy" against
    "doubles the kinetic energy ... its momentum"). MMLU holds such pairs; the semantic tier would (rightly or
    wrongly) answer the second from the first, and a miss run must not contain them."""
    return tuple(sorted(word[:5] for word in re.findall(r"[a-z0-9]+", text.lower())))


def _distinct(texts: Iterable[str]) -> list[str]:
    seen: set[tuple[str, ...]] = set()
    out = []
    for text in texts:
        gist = _gist(text)
        if gist not in seen:
            seen.add(gist)
            out.append(text)
    return out


def short_prompts(count: int) -> list[str]:
    """`count` distinct prompts of at most 600 characters (single questions first, then two-question prompts)."""
    records = _routellm()
    texts = [r["prompt"].strip() for r in records]
    with gzip.open(GPTCACHE, "rt", encoding="utf-8") as fh:
        texts += [pair["origin"].strip() for pair in json.load(fh)]
    singles = _distinct(t for t in texts if 0 < len(t) <= SHORT_MAX_CHARS)
    random.Random(SEED).shuffle(singles)
    out = singles[:count]
    small = [t for t in singles if len(t) <= (SHORT_MAX_CHARS - 2) // 2]
    step = 1
    while len(out) < count and step < len(small):  # follow-ups: prompt i, then prompt i + 7919 * step (mod n)
        shift = (step * 7919) % len(small)
        if shift:
            out += [f"{a}\n\n{small[(i + shift) % len(small)]}" for i, a in enumerate(small)][: count - len(out)]
        step += 1
    return out


def _bundles(records: list[dict], *, target: int) -> list[str]:
    """Consecutive records joined by a blank line until `target` characters, cut back to a whitespace."""
    out, parts = [], []
    for rec in records:
        parts.append(rec["prompt"].strip())
        if len("\n\n".join(parts)) >= target:
            out.append(cut_at_whitespace("\n\n".join(parts), target))
            parts = []
    return out


def long_prompts(count: int) -> tuple[list[str], str]:
    """`count` distinct prompts of ~2,000 characters, and where the first of them come from."""
    records = [r for r in _routellm() if r["source"] == "mmlu"]
    out: list[str] = []
    used: set[str] = set()
    if LONG_FIXTURE.exists():
        with gzip.open(LONG_FIXTURE, "rt", encoding="utf-8") as fh:
            vendored = [json.loads(line) for line in fh if line.strip()]
        out += [p["prompt"] for p in vendored]
        used = {source for p in vendored for source in p.get("sources", [])}
        origin = f"`fixtures/prompts/long_prompts.jsonl.gz` ({len(vendored)} prompts), then"
    else:
        origin = ""
    by_subject: dict[str, list[dict]] = {}
    for rec in records:
        if rec["id"] not in used:
            by_subject.setdefault(rec["id"].rsplit("-", 1)[0], []).append(rec)
    for subject in sorted(by_subject):  # one subject per prompt, like the vendored file
        out += [text for text in _bundles(by_subject[subject], target=LONG_CHARS) if len(text) >= LONG_CHARS - 100]
    origin += " the MMLU records of `fixtures/routellm/full.jsonl.gz` (one subject per prompt, then mixed subjects)"
    origin = origin.strip()
    passes = 0
    while len(out) < count and passes < 50:
        mixed = list(records)
        random.Random(SEED + passes).shuffle(mixed)
        out += _bundles(mixed, target=LONG_CHARS)
        passes += 1
    return _unique(out)[:count], origin


def write_lines(prompts: list[str], path: Path) -> Path:
    """One JSON string literal per line, ASCII only, for bench/chat.lua."""
    path.write_text("".join(json.dumps(p, ensure_ascii=True) + "\n" for p in prompts), encoding="ascii")
    return path


def main() -> int:
    short = short_prompts(40_000)
    long, origin = long_prompts(6_000)
    singles = sum("\n\n" not in p for p in short)
    print(f"short: {len(short)} prompts ({singles} single questions), median {sorted(map(len, short))[len(short) // 2]} chars")
    print(f"long: {len(long)} prompts, median {sorted(map(len, long))[len(long) // 2]} chars; {origin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
