"""The learned strategy's index: labelled prompts in MiniLM space, read by a k-nearest-neighbour vote.

Each exemplar is a prompt with its **premium-win score**, gain = premium answer's score − cheap answer's
score (RouteLLM's recorded Mixtral-8x7B / GPT-4-1106 answers: correctness 0/1, MT-Bench judge / 10), so
gain > 0 where the premium model was needed and ≤ 0 where the cheap one was good enough.

A prompt is embedded with the semantic cache's model (`apps.embeddings.embeddings`, all-MiniLM-L6-v2, unit
vectors; the router reuses the cache's vector when the cache already embedded the prompt). Its score:

1. project onto the index's principal axes (PCA fitted on the exemplars, no labels; 384 → 128 dims keeps
   the kNN's ranking and cuts the vendored file to a third), renormalise;
2. the mean gain of the `k` exemplars with the highest cosine similarity (k = 100 by default);
3. that mean gain's percentile among the exemplars' own leave-one-out mean gains (`calibration`):
   **score 0..1** = the share of the index's prompts that look less in need of the premium model.
   A threshold of 0.75 therefore sends roughly the hardest quarter of benchmark-like traffic up.

**Abstention.** Topic neighbourhood does not transfer: on subjects or benchmarks the index has never seen,
its vote is noise (issue #20). So the strategy abstains, and the complexity score decides instead, when
- the prompt is far from the exemplars *for its neighbourhood*: the similarity of its nearest exemplar,
  divided by the mean nearest-other-exemplar similarity of its k neighbours (a local-outlier ratio, so dense
  and sparse regions are judged alike), is below `far_bar`, the `FAR_QUANTILE` quantile of the same ratio
  over the exemplars themselves (leave-one-out). In distribution that abstains on about a quarter of the
  prompts by construction; on unseen MMLU subject groups on 55-95 %;
- or the neighbours disagree: their mean gain is within `MIN_AGREEMENT` standard errors of the index's
  typical (median leave-one-out) mean gain, i.e. the vote cannot tell this prompt from an average one.
Both bars are label-free or fixed in advance and calibrated on the index's own exemplars, never on held-out
slices (docs/router-eval.md, leave-out tables; the trade-off is in docs/adr/010-learned-router-index.md).

The index is plain numpy in each worker's memory: exact brute-force cosine over ~8.7k × 128 int8-stored
vectors takes well under a millisecond, and the hot path makes no query (docs/adr/010-learned-router-index.md).
`manage.py build_router_index` builds the vendored file from ../shared/data/routellm; the evaluation
builds its own per-fold indexes with the same `RouteIndex.build`, so no evaluated prompt is in the index
that scores it (`evals.router.harness.router_eval_learned_scores`; the builder is `evals.router.index`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from apps.routing.engine import LearnedScore
from finops import clock
from finops.conf import conf
from finops.tokens import message_text

logger = logging.getLogger(__name__)

FORMAT = 1
DEFAULT_K = 100
FAR_QUANTILE = 0.25  # abstain below the exemplars' own 25 % quantile of the nearest-neighbour outlier ratio
MIN_AGREEMENT = 2.0  # abstain when the neighbours' mean gain is within 2 standard errors of the typical one
DEFAULT_DIMS = 128
# LOO calibration and per-fold builds compare rows in chunks: (chunk × n) float32 similarities at a time.
CHUNK = 512


def prompt_key(text: str) -> int:
    """A 64-bit key of the whitespace-normalised prompt: how the index names its exemplars and excludes them."""
    digest = hashlib.sha256(" ".join(text.split()).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def route_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text the learned strategy embeds: the last user message (what the semantic cache embeds too)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content")).strip()
    return ""


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return (rows / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _quantize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes with one float32 scale per row (cosine error < 1e-4 on unit rows)."""
    scale = (np.abs(rows).max(axis=1) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def _dequantize(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return _unit(codes.astype(np.float32) * scale[:, None])


def _mean_top_k(sims: np.ndarray, gains: np.ndarray, k: int) -> np.ndarray:
    """Per row of `sims`, the mean gain of the k most similar columns (order-independent sum, so deterministic)."""
    k = min(k, sims.shape[1])
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.sort(gains[nearest], axis=1).sum(axis=1, dtype=np.float64) / k


def _outlier_ratio(top1: np.ndarray, neighbours_top1: np.ndarray) -> np.ndarray:
    """A prompt's nearest-exemplar similarity over the mean nearest-other-exemplar similarity of its neighbours
    (a local-outlier factor on similarities): about 1 inside the exemplars' own density, lower when far."""
    local = np.maximum(neighbours_top1.astype(np.float64).mean(axis=-1), 1e-6)
    return np.asarray(top1, dtype=np.float64).reshape(-1) / local


class RouteIndex:
    """Exemplars (projected, unit, int8-stored vectors), their gains and keys, k, and the score calibration."""

    def __init__(
        self,
        *,
        projection: np.ndarray | None,
        codes: np.ndarray,
        scale: np.ndarray,
        gains: np.ndarray,
        keys: np.ndarray,
        k: int,
        calibration: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
        own_top1: np.ndarray | None = None,
        far_bar: float | None = None,
    ) -> None:
        self.projection = None if projection is None else projection.astype(np.float32)
        self.codes = codes.astype(np.int8)
        self.scale = scale.astype(np.float32)
        self.vectors = _dequantize(self.codes, self.scale)
        self.gains = gains.astype(np.float32)
        self.keys = keys.astype(np.uint64)
        self.k = int(k)
        self.meta = dict(meta or {})
        if calibration is None or own_top1 is None or far_bar is None:
            loo, top1, ratio = self._loo()
            calibration = loo if calibration is None else calibration
            if own_top1 is None or far_bar is None:
                own_top1, far_bar = top1, float(np.quantile(ratio, FAR_QUANTILE))
        self.calibration = np.sort(np.asarray(calibration, dtype=np.float64))
        # Each exemplar's similarity to its nearest other exemplar, and the outlier ratio below which the index abstains.
        self.own_top1 = np.asarray(own_top1, dtype=np.float32)
        self.far_bar = float(far_bar)
        self.typical_gain = float(np.median(self.calibration))

    def __len__(self) -> int:
        return len(self.gains)

    @property
    def dims(self) -> int:
        return int(self.vectors.shape[1])

    # ---------------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        gains: Sequence[float] | np.ndarray,
        keys: Sequence[int] | np.ndarray,
        *,
        k: int = DEFAULT_K,
        dims: int | None = DEFAULT_DIMS,
        meta: dict[str, Any] | None = None,
    ) -> RouteIndex:
        """An index over `vectors` (MiniLM unit rows) labelled with `gains`; `dims=None` keeps all 384 dimensions."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(gains) or len(x) != len(keys) or len(x) < 2:
            raise ValueError("an index needs at least two exemplars, one gain and one key per vector")
        projection = None
        dims = min(dims, len(x)) if dims else None  # PCA has at most one axis per exemplar
        if dims and dims < x.shape[1]:
            centred = x - x.mean(axis=0)
            _, _, axes = np.linalg.svd(centred, full_matrices=False)
            # Stored as float16; build with the rounded matrix so a loaded index scores exactly as the built one.
            projection = axes[:dims].T.astype(np.float16).astype(np.float32)
            x = x @ projection
        codes, scale = _quantize(_unit(x))
        return cls(
            projection=projection,
            codes=codes,
            scale=scale,
            gains=np.asarray(gains, dtype=np.float32),
            keys=np.asarray(keys, dtype=np.uint64),
            k=k,
            meta={"format": FORMAT, "built_at": clock.now().isoformat(timespec="seconds"), **(meta or {})},
        )

    def loo_gains(self, progress: Callable[[Iterable[Any]], Iterable[Any]] = lambda it: it) -> np.ndarray:
        """Every exemplar's mean gain from its k nearest *other* prompts (its own duplicates excluded too)."""
        return self._loo(progress)[0]

    def _loo(
        self, progress: Callable[[Iterable[Any]], Iterable[Any]] = lambda it: it
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Leave-one-out mean gains, nearest-other-exemplar similarities and outlier ratios of the exemplars."""
        n = len(self)
        k = max(1, min(self.k, n - 1))
        out = np.empty(n, dtype=np.float64)
        top1 = np.empty(n, dtype=np.float32)
        nearest = np.empty((n, k), dtype=np.int32)
        for start in progress(range(0, n, CHUNK)):
            rows = slice(start, min(start + CHUNK, n))
            sims = self.vectors[rows] @ self.vectors.T
            sims[self.keys[rows][:, None] == self.keys[None, :]] = -np.inf
            out[rows] = _mean_top_k(sims, self.gains, k)
            nearest[rows] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top1[rows] = np.max(sims, axis=1)
        return out, top1, _outlier_ratio(top1, top1[nearest])

    def excluding(self, keys: Iterable[int]) -> RouteIndex:
        """The same index without the exemplars of these prompt keys, recalibrated on what is left (held-out scoring)."""
        drop = np.isin(self.keys, np.fromiter((int(k) for k in keys), dtype=np.uint64))
        keep = ~drop
        return RouteIndex(
            projection=self.projection,
            codes=self.codes[keep],
            scale=self.scale[keep],
            gains=self.gains[keep],
            keys=self.keys[keep],
            k=self.k,
            meta={**self.meta, "excluded": int(drop.sum())},
        )

    def abstains(self, vector: np.ndarray) -> str | None:
        """Why the index should not decide for this prompt ("far", "disagree"), or None when its vote counts."""
        far, disagree = self.abstention_tests(vector)
        return "far" if far else ("disagree" if disagree else None)

    def abstention_tests(self, vector: np.ndarray) -> tuple[bool, bool]:
        """Both abstention tests of one prompt: (far from the exemplars, neighbours' vote indecisive)."""
        sims = self._sims(vector)
        k = min(self.k, sims.shape[1])
        nearest = np.argpartition(-sims, k - 1, axis=1)[0, :k]
        ratio = _outlier_ratio(sims[0, nearest].max(keepdims=True), self.own_top1[nearest][None, :])
        gains = self.gains[nearest].astype(np.float64)
        spread = float(gains.std(ddof=1)) / np.sqrt(k) if k > 1 else 0.0
        disagree = abs(float(gains.mean()) - self.typical_gain) < MIN_AGREEMENT * max(spread, 1e-9)
        return bool(float(ratio[0]) < self.far_bar), bool(disagree)

    def _sims(self, vector: np.ndarray) -> np.ndarray:
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if self.projection is not None:
            query = query @ self.projection
        return _unit(query) @ self.vectors.T

    # ---------------------------------------------------------------- scoring

    def percentile(self, gain: float) -> float:
        """Mid-rank of `gain` among the calibration gains: 0..1."""
        lo = int(np.searchsorted(self.calibration, gain, side="left"))
        hi = int(np.searchsorted(self.calibration, gain, side="right"))
        return (lo + hi) / (2 * len(self.calibration))

    def score(self, vector: np.ndarray) -> LearnedScore:
        """The learned score of one prompt vector (a MiniLM unit vector of 384 floats).

        One vector at a time, on purpose: the gateway scores one request, the evaluation loops over
        prompts with this same call, so both do the same floating-point work and decide alike.
        """
        sims = self._sims(vector)
        gain = float(_mean_top_k(sims, self.gains, self.k)[0])
        return LearnedScore(score=round(self.percentile(gain), 6), gain=round(gain, 6), nearest=round(float(sims.max()), 6))

    # ---------------------------------------------------------------- storage

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "codes": self.codes,
            "scale": self.scale,
            "gains": self.gains.astype(np.float16) if self._gains_fit_float16() else self.gains,
            "keys": self.keys,
            "k": np.array(self.k),
            "calibration": self.calibration.astype(np.float64),  # exact: a loaded index decides as the built one
            "own_top1": self.own_top1.astype(np.float32),
            "far_bar": np.array(self.far_bar, dtype=np.float64),
            "meta": np.array(json.dumps(self.meta, sort_keys=True)),
        }
        if self.projection is not None:
            arrays["projection"] = self.projection.astype(np.float16)
        with path.open("wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first keyword as a bool

    def _gains_fit_float16(self) -> bool:
        return bool(np.array_equal(self.gains.astype(np.float16).astype(np.float32), self.gains))

    @classmethod
    def load(cls, path: Path) -> RouteIndex:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: router index format {meta.get('format')!r}, expected {FORMAT}")
            return cls(
                projection=data["projection"].astype(np.float32) if "projection" in data else None,
                codes=data["codes"],
                scale=data["scale"],
                gains=data["gains"].astype(np.float32),
                keys=data["keys"],
                k=int(data["k"]),
                calibration=data["calibration"].astype(np.float64),
                meta=meta,
                # Files written before this abstention rule: its statistics are computed once here (leave-one-out, ~1 s).
                own_top1=data["own_top1"] if "own_top1" in data else None,
                far_bar=float(data["far_bar"]) if "far_bar" in data else None,
            )


def held_out_indexes(
    vectors: np.ndarray,
    gains: Sequence[float] | np.ndarray,
    keys: Sequence[int] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    *,
    k: int = DEFAULT_K,
    dims: int | None = DEFAULT_DIMS,
) -> Iterator[tuple[np.ndarray, RouteIndex]]:
    """For each group: the rows of that group, and an index built (`RouteIndex.build`) from the *other* groups only.

    Groups = `fold_of(key)` gives k-fold cross-validation in which a duplicated prompt never straddles two
    folds; groups = the benchmark of each prompt gives the out-of-distribution test.
    """
    x = np.asarray(vectors, dtype=np.float32)
    g = np.asarray(gains, dtype=np.float32)
    key_arr = np.asarray(keys, dtype=np.uint64)
    group_arr = np.asarray(groups)
    for group in sorted(set(group_arr.tolist())):
        test = np.flatnonzero(group_arr == group)
        train = group_arr != group
        yield test, RouteIndex.build(x[train], g[train], key_arr[train], k=k, dims=dims)


def held_out_scores(
    vectors: np.ndarray,
    gains: Sequence[float] | np.ndarray,
    keys: Sequence[int] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    *,
    k: int = DEFAULT_K,
    dims: int | None = DEFAULT_DIMS,
    progress: Callable[[Iterable[Any]], Iterable[Any]] = lambda it: it,
) -> list[LearnedScore]:
    """Each prompt's score from the index of `held_out_indexes` that does not contain its group."""
    x = np.asarray(vectors, dtype=np.float32)
    out: list[LearnedScore | None] = [None] * len(x)
    folds = held_out_indexes(x, gains, keys, groups, k=k, dims=dims)
    for test, index in progress(folds):
        for i in test:
            out[i] = index.score(x[i])
    return [s for s in out if s is not None]


def fold_of(key: int, folds: int) -> int:
    return int(key) % folds


# --------------------------------------------------------------------------- the served index (one per process)

_served: dict[str, Any] = {"loaded": False, "path": None, "index": None}
_served_lock = threading.Lock()


def index_path() -> Path | None:
    configured = conf().router_index_path
    return Path(configured) if configured else None


def served_index_ready() -> bool:
    """Whether `served_index()` answers from memory (no file to read) for the configured path."""
    return bool(_served["loaded"]) and _served["path"] == index_path()


def served_index() -> RouteIndex | None:
    """The index the gateway routes with (FINOPS_ROUTER_INDEX_PATH), loaded once; None when absent or unreadable."""
    if served_index_ready():
        return _served["index"]
    with _served_lock:
        path = index_path()
        if not (_served["loaded"] and _served["path"] == path):
            index = None
            if path is not None:
                try:
                    index = RouteIndex.load(path)
                    logger.info("router: learned index %s (%d exemplars, k=%d)", path, len(index), index.k)
                except (OSError, ValueError, KeyError) as exc:
                    logger.warning(
                        "router: no learned index at %s (%s); the learned strategy falls back to complexity", path, exc
                    )
            _served.update(loaded=True, path=path, index=index)
        return _served["index"]


def served_index_forget() -> None:
    with _served_lock:
        _served.update(loaded=False, path=None, index=None)


# --------------------------------------------------------------------------- embedding many prompts (build, evaluation)


def prompts_embed(
    texts: Sequence[str], *, batch_size: int = 64, progress: bool = False, cache_file: Path | None = None
) -> np.ndarray:
    """MiniLM unit vectors of `texts` with the semantic cache's embedder, as the router embeds one prompt
    (the text's first 256 word pieces). `cache_file` keeps vectors by prompt key across runs, because
    embedding the ~8.7k RouteLLM prompts takes minutes of CPU.
    """
    from apps.embeddings.embeddings import MAX_LOCAL_CHARS, local_embedder

    keys = np.array([prompt_key(t) for t in texts], dtype=np.uint64)
    known: dict[int, np.ndarray] = {}
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as data:
            known = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
    first_of: dict[int, int] = {}
    for i, key in enumerate(keys.tolist()):
        first_of.setdefault(key, i)
    missing = [i for key, i in first_of.items() if key not in known]
    if missing:
        local_embedder.load()
        batches = [missing[i : i + batch_size] for i in range(0, len(missing), batch_size)]
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="embedding prompts (MiniLM)", unit="batch")
        for batch in batches:
            encoded = local_embedder.encode(
                [texts[i].strip()[:MAX_LOCAL_CHARS] for i in batch], batch_size=batch_size, check_length=False
            )
            for i, vector in zip(batch, encoded, strict=True):
                if vector is None:  # check_length=False truncates instead: every text has its vector
                    raise RuntimeError(f"the local embedding model gave no vector for prompt {i}")
                known[int(keys[i])] = vector
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            with cache_file.open("wb") as fh:
                np.savez(fh, keys=np.array(list(known), dtype=np.uint64), vectors=np.stack(list(known.values())))
    return np.stack([known[int(key)] for key in keys]).astype(np.float32)
