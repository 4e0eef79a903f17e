"""The evaluation sets of the semantic tier: GPTCache paraphrase pairs (vendored; lexical twins dropped), the
hand-written chat pairs, and generated hard negatives (one number, named entity or negation changed)."""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from apps.cache.guard import COMMON_WORDS, NEGATIONS

ROOT = Path(settings.BASE_DIR)
VENDORED_FULL_GPTCACHE = ROOT / "fixtures" / "gptcache" / "mock_data.json.gz"  # bench/vendor_eval_data.py
SHARED_GPTCACHE = ROOT.parent / "shared" / "data" / "gptcache" / "mock_data.json"
VENDORED_GPTCACHE = ROOT / "fixtures" / "gptcache" / "pairs200.jsonl"  # the 200-pair subset (tests)
CHAT_PAIRS = ROOT / "apps" / "cache" / "fixtures" / "chat_pairs.jsonl"


@dataclass
class Pair:
    origin: str
    similar: str
    hard_negatives: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)
    source: str = ""


# --- data -----------------------------------------------------------------------------------


def load_pairs(
    path: Path | None = None, *, limit: int | None = None, include_chat: bool = True, duplicate_jaccard: float = 0.5
) -> tuple[list[Pair], str]:
    """GPTCache pairs (the full 999, vendored compressed, else ../shared/data, else the 200-pair subset) + our chat pairs.

    GPTCache's origins repeat the same documentation fact in different words (about a quarter of the
    999). A paraphrase served the answer of such a twin got the right answer, but would count as a
    wrong hit; so an origin sharing at least `duplicate_jaccard` of its content words with an earlier
    one is dropped (a lexical rule, independent of the embedding and the guard under test).
    """
    if path is None:
        path = default_pairs_path()
    raw = [Pair(origin=o, similar=s, source="gptcache") for o, s in _read_pairs(path)]
    if limit:
        raw = raw[:limit]
    pairs = _drop_lexical_twins(raw, duplicate_jaccard) if duplicate_jaccard < 1 else raw
    label = f"{path.name.removesuffix('.gz')} ({len(pairs)} GPTCache pairs after dropping {len(raw) - len(pairs)} lexical twins"
    if include_chat and CHAT_PAIRS.exists():
        chat = [
            Pair(
                origin=row["origin"],
                similar=row["similar"],
                hard_negatives=[(h["kind"], h["text"]) for h in row.get("hard_negatives", [])],
                source="chat",
            )
            for row in map(json.loads, CHAT_PAIRS.read_text().splitlines())
            if row
        ]
        pairs += chat
        label += f" + {len(chat)} hand-written chat pairs"
    return _dedupe(pairs), label + ")"


def default_pairs_path() -> Path:
    for path in (VENDORED_FULL_GPTCACHE, SHARED_GPTCACHE):
        if path.exists():
            return path
    return VENDORED_GPTCACHE


def pairs_are_full(path: Path | None, *, limit: int | None = None) -> bool:
    """Whether a sweep over these pairs gives the headline figures (all 999 GPTCache pairs), not a subset's."""
    path = path or default_pairs_path()
    return not limit and path.name.removesuffix(".gz") == "mock_data.json"


def _read_pairs(path: Path) -> Iterable[tuple[str, str]]:
    if path.suffix == ".gz":
        text, inner = gzip.decompress(path.read_bytes()).decode("utf-8"), Path(path.stem)
    else:
        text, inner = path.read_text(encoding="utf-8"), path
    rows = json.loads(text) if inner.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
    for row in rows:
        if row.get("origin") and row.get("similar"):
            yield row["origin"].strip(), row["similar"].strip()


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9_]+", text.lower()) if len(w) > 2 and w not in COMMON_WORDS}


def _drop_lexical_twins(pairs: list[Pair], jaccard: float) -> list[Pair]:
    kept: list[Pair] = []
    kept_words: list[set[str]] = []
    for pair in pairs:
        words = _content_words(pair.origin)
        if any(len(words & other) / max(1, len(words | other)) >= jaccard for other in kept_words):
            continue
        kept.append(pair)
        kept_words.append(words)
    return kept


def _dedupe(pairs: list[Pair]) -> list[Pair]:
    seen: set[str] = set()
    unique = []
    for pair in pairs:
        if pair.origin in seen:
            continue
        seen.add(pair.origin)
        unique.append(pair)
    return unique


SWAP_ENTITIES = (
    "Tokyo Nairobi Lisbon Oslo Toronto Mumbai Kubernetes Excel Photoshop Shakespeare Mozart Tesla Oracle Bluetooth "
    "Amazon Netflix Spotify Ethereum Linux Windows Android Java Rust Haskell Fortran Monday Friday January October "
    "Europe Africa Brazil Canada Germany Japan Mars Jupiter NASA UNESCO FIFA Olympics Wikipedia Slack Zoom Stripe"
).split()
_AUX_RE = re.compile(r"\b(is|are|was|were|can|could|does|do|did|will|would|should|has|have|must|may)(?=\s)(?!\s+not\b)", re.I)
_NEG_RE = re.compile(r"\s+not\b|n't\b", re.I)
_NUM_RE = re.compile(r"\d+(?:\.\d+)?")


def generate_hard_negatives(pairs: list[Pair], *, seed: int = 7) -> None:
    """Add a number swap, an entity swap and a negation flip of each origin where one applies.

    Each changes the question while keeping almost every word: the closest a wrong hit can get.
    """
    rng = random.Random(seed)
    # Swapped-in names come from outside the corpus: a name taken from another cached prompt could make
    # the "negative" a legitimate paraphrase of that prompt.
    corpus = " ".join(p.origin + " " + p.similar for p in pairs).lower()
    entity_pool = [e for e in SWAP_ENTITIES if e.lower() not in corpus]
    for pair in pairs:
        existing = {kind for kind, _ in pair.hard_negatives}
        text = pair.origin
        if "number" not in existing and (m := _NUM_RE.search(text)):
            value = m.group(0)
            new = str(int(value) + rng.randint(1, 9)) if value.isdigit() else f"{float(value) * 2:g}"
            pair.hard_negatives.append(("number", text[: m.start()] + new + text[m.end() :]))
        if "entity" not in existing:
            mine = _entities(text)
            if mine and entity_pool:
                target = rng.choice(mine)
                options = [e for e in entity_pool if e.lower() not in text.lower()]
                if options:
                    replacement = rng.choice(options)
                    pair.hard_negatives.append(("entity", re.sub(rf"\b{re.escape(target)}\b", replacement, text, count=1)))
        if "negation" not in existing:
            if _NEG_RE.search(text):
                pair.hard_negatives.append(("negation", _NEG_RE.sub("", text, count=1)))
            elif m := _AUX_RE.search(text):
                pair.hard_negatives.append(("negation", text[: m.end()] + " not" + text[m.end() :]))


def _entities(text: str) -> list[str]:
    """Capitalised words that do not start a sentence and are not common words: the swappable names."""
    words = re.findall(r"(?<![.!?]\s)(?<!^)\b([A-Z][A-Za-z0-9]+)\b", text)
    return [w for w in words if w.lower() not in COMMON_WORDS and w.lower() not in NEGATIONS]
