"""The semantic tier's two stages and its store budget (docs/adr/001-dual-tier-cache.md).

A miss must cost little. So a lookup first embeds the prompt with the static embedding (a tokenisation and a
table gather: tens of microseconds for a short prompt, about a millisecond for 2,000 characters) and asks
pgvector for cached prompts at or above FINOPS_CACHE_SEMANTIC_STATIC_THRESHOLD in that space. Only when one
is found, and the guard does not already tell the two prompts apart, does the full model embed the prompt;
the hit is then decided exactly as before: the full model's cosine at the org's threshold, and the guard.

Storing a missed prompt needs its full-model vector (later lookups confirm against it). That embedding runs
after the response, and within a CPU budget: at most FINOPS_CACHE_SEMANTIC_STORE_CPU_SHARE of one core per
process, as a token bucket, on a thread of its own at a low OS priority (FINOPS_CACHE_SEMANTIC_STORE_NICE), so
the scheduler gives the cores to requests first; at most FINOPS_CACHE_SEMANTIC_STORE_QUEUE misses wait for it. A
process busier than that stops adding semantic entries (metric outcome "shed") instead of spending its cores on
them; the exact tier still stores every answer.
"""

from __future__ import annotations

import time

import numpy as np

from apps.cache import metrics
from apps.cache.guard import Signature, guard_mismatch
from apps.cache.selectors import StaticCandidate
from apps.embeddings.embeddings import semantic_fits
from apps.embeddings.static import static_embedder
from finops.conf import conf

BURST_S = 1.0  # the bucket holds this many seconds of embedding: a quiet process stores a burst at once


class StoreBudget:
    """Token bucket of embedding seconds, refilled at `share` seconds per second (share >= 1: unlimited)."""

    def __init__(self) -> None:
        self._tokens = BURST_S
        self._at = time.monotonic()
        self.unlimited = False  # offline evaluation: a replay stores at many times a real request rate

    def _share(self) -> float:
        return float("inf") if self.unlimited else conf().cache_semantic_store_cpu_share

    def _refill(self, share: float) -> None:
        now = time.monotonic()
        self._tokens = min(BURST_S, self._tokens + (now - self._at) * share)
        self._at = now

    def allows(self) -> bool:
        share = self._share()
        if share >= 1:
            return True
        self._refill(share)
        return self._tokens > 0

    def spend(self, seconds: float) -> None:
        share = self._share()
        if share >= 1:
            return
        self._refill(share)
        self._tokens -= seconds

    def reset(self) -> None:
        self._tokens, self._at = BURST_S, time.monotonic()


store_budget = StoreBudget()


def static_vector(text: str) -> tuple[np.ndarray | None, bool]:
    """Stage 1's vector of `text`, and whether the full model could confirm a hit on it (fits its window).

    (None, False) when the static table is not loaded yet (the load is started by the embeddings warm-up).
    """
    if not static_embedder.ready:
        return None, False
    vector, pieces = static_embedder.embed(text)
    return vector, vector is not None and semantic_fits(text, pieces)


def guard_survivors(candidates: list[StaticCandidate], signature: Signature) -> list[StaticCandidate]:
    """The stage-1 candidates the guard does not already refuse (counted like the decision's rejections)."""
    kept = []
    for candidate in candidates:
        stored = Signature.from_json(candidate.guard)
        reason = "unreadable" if stored is None else guard_mismatch(signature, stored)
        if reason is None:
            kept.append(candidate)
        else:
            metrics.CACHE_GUARD_REJECTIONS.labels(reason=reason).inc()
    return kept
