"""A static (distilled) embedding of all-MiniLM-L6-v2: the semantic tier's first stage, microseconds per prompt.

Built once, offline, from the shipped weights (model2vec-style, no download): every word piece of the model's
vocabulary goes through the full model alone (``[CLS] piece [SEP]``, mean-pooled like a sentence), the 30,522
vectors are centred and projected on their 256 principal axes, and each row is weighted by how rare its piece is
(SIF, model2vec's Zipf weighting: a / (a + p(piece)) with p from the piece's frequency rank, a = 1e-4; BERT's
WordPiece vocabulary lists its whole words in corpus-frequency order after the single characters, so the rank is
the position). A prompt's static vector is then the mean of its word pieces' rows, normalised: one tokenisation
and one table gather, no model, any length.

Without the weighting every English prompt shares the direction of its function words ("the", "what", "?"): on
the gateway bench's questions, 99 % of lookups found a cached prompt at static cosine >= 0.7 and went on to the
guard and the full model. Weighted, a static cosine of 0.7 keeps 99.3 % of the vendored paraphrase pairs that the
full model puts at 0.90 or more, and about a third of those lookups find a candidate (docs/adr/001).

It is coarse — word order and context are gone — so it never decides a hit alone. It finds the cached prompts
that *could* be paraphrases (static cosine >= FINOPS_CACHE_SEMANTIC_STATIC_THRESHOLD), and only then does the
full model embed the prompt to confirm at the org's threshold (apps.cache.lookup). On the vendored
paraphrase pairs this two-stage pipeline serves the same hits as the full model alone (docs/adr/001).

The table is kept in ``.finops/models`` (FINOPS_CACHE_MODEL_DIR) under a name that fingerprints the weights
and the recipe, like the ONNX export; built at first use (about a minute of one core) or ahead of time with
``python -m apps.embeddings.static``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from apps.embeddings import STATIC_DIM
from apps.embeddings.onnx_export import model_dir, source_dir

logger = logging.getLogger(__name__)

RECIPE_VERSION = 2  # bump when the recipe changes: the fingerprint (and so the file name) follows
SIF_A = 1e-4  # model2vec's default SIF coefficient
FIRST_WORD_ID = 1996  # bert-base-uncased: [PAD], [unused*], [UNK]/[CLS]/[SEP]/[MASK], then single characters, then words
_BATCH = 2048


def fingerprint() -> str:
    weights = source_dir() / "model.safetensors"
    parts = {
        "weights": [weights.stat().st_size, (source_dir() / "config.json").read_text()],
        "recipe": RECIPE_VERSION,
        "dim": STATIC_DIM,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def table_path() -> Path:
    return model_dir() / f"all-minilm-l6-v2-static{STATIC_DIM}-{fingerprint()}.npy"


def build_table() -> np.ndarray:
    """The (vocabulary × STATIC_DIM) float32 table from the shipped weights (torch, one core, about a minute)."""
    import torch
    from transformers import AutoModel

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a background build must not take the cores the gateway serves on
    try:
        model = AutoModel.from_pretrained(str(source_dir()))
        model.eval()
        vocab = int(model.config.vocab_size)
        cls_id, sep_id = _special_ids()
        out = np.zeros((vocab, model.config.hidden_size), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, vocab, _BATCH):
                ids = torch.arange(start, min(vocab, start + _BATCH))
                n = len(ids)
                inputs = torch.stack([torch.full((n,), cls_id), ids, torch.full((n,), sep_id)], dim=1)
                hidden = model(
                    input_ids=inputs, attention_mask=torch.ones_like(inputs), token_type_ids=torch.zeros_like(inputs)
                ).last_hidden_state
                out[start : start + n] = hidden.mean(dim=1).numpy()  # the sentence embedding of the piece alone
    finally:
        torch.set_num_threads(threads)
    out -= out.mean(axis=0)
    _, _, axes = np.linalg.svd(out, full_matrices=False)
    return (out @ axes[:STATIC_DIM].T * sif_weights(vocab)[:, None]).astype(np.float32)


def sif_weights(vocab: int) -> np.ndarray:
    """a / (a + p) per piece, p the Zipf probability of its frequency rank (rank = position among the words; the
    single characters count as very frequent, the special and unused pieces as rare)."""
    ids = np.arange(vocab)
    rank = np.where(ids >= FIRST_WORD_ID, ids - FIRST_WORD_ID + 1, np.where(ids >= 999, 5, vocab)).astype(np.float64)
    p = 1.0 / (rank * np.log(vocab))
    return SIF_A / (SIF_A + p)


def _special_ids() -> tuple[int, int]:
    vocab = (source_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return vocab.index("[CLS]"), vocab.index("[SEP]")


def ensure_table() -> Path:
    path = table_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("semantic cache: building the static embedding %s (once)", path.name)
    table = build_table()
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".build-", suffix=".npy", delete=False) as tmp:
        np.save(tmp, table)
    os.replace(tmp.name, path)  # atomic: concurrent builders each publish a complete file
    for stale in path.parent.glob("all-minilm-l6-v2-static*.npy"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


class StaticEmbedder:
    """Loads the table once per process (memory-mapped) and embeds prompts with it."""

    def __init__(self) -> None:
        self._table: np.ndarray | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._word_ids: dict[str, list[int]] = {}

    @property
    def ready(self) -> bool:
        return self._table is not None

    def load(self) -> None:
        if self._table is not None:
            return
        with self._lock:
            if self._table is not None:
                return
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(source_dir() / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            table = np.load(ensure_table(), mmap_mode="r")
            self._tokenizer = tokenizer
            self._table = np.ascontiguousarray(table)

    def embed(self, text: str) -> tuple[np.ndarray | None, int]:
        """(unit vector, word pieces incl. [CLS]/[SEP]); the vector is None for a text without any piece."""
        self.load()
        table = self._table
        if table is None:  # load() either sets it or raises
            raise RuntimeError("the static embedding table is not loaded")
        ids = self.piece_ids(text)
        if not ids:
            return None, 2
        vector = table[ids].mean(axis=0)
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            return None, len(ids) + 2
        return (vector / norm).astype(np.float32), len(ids) + 2

    def piece_ids(self, text: str) -> list[int]:
        """The word-piece ids of `text`, as the model's tokenizer gives them (without [CLS]/[SEP]).

        ASCII text takes a fast path: BERT's uncased pre-tokenisation of ASCII is lowercasing, then runs of letters
        and digits and single punctuation marks, so each word's pieces can be memoised;
        a prompt then costs a regex and dict lookups instead of a call into the tokenizer (a third of the static
        stage's time). Other text goes through the tokenizer (accents, CJK, and control characters, which BERT deletes
        rather than splits on). `test_static_embedding` checks both agree.
        """
        if not text.isascii() or _CONTROL_RE.search(text):
            return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
        memo = self._word_ids
        ids: list[int] = []
        for word in _ASCII_WORD_RE.findall(text.lower()):
            pieces = memo.get(word)
            if pieces is None:
                pieces = self._tokenizer.encode(word, add_special_tokens=False).ids
                if len(memo) >= WORD_MEMO_MAX:
                    memo.clear()
                memo[word] = pieces
            ids.extend(pieces)
        return ids


# BERT's pre-tokeniser on lowercased ASCII: runs of letters and digits, and every other printable character alone
# (all ASCII punctuation and symbols count as punctuation to BERT); space, tab and line breaks separate.
_ASCII_WORD_RE = re.compile(r"[a-z0-9]+|[!-/:-@\[-`{-~]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
WORD_MEMO_MAX = 200_000  # distinct words memoised per process (a few tens of MB at most), then started again

static_embedder = StaticEmbedder()


def main() -> int:
    """Build the table ahead of time (`make`-time, like the ONNX export)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
    django.setup()
    path = ensure_table()
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
