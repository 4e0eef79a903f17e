"""Per-process cache metrics. Labels are bounded: tier, outcome, reason (a fixed set each)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

# outcome: hit | miss | bypass | error
CACHE_LOOKUPS = Counter("finops_cache_lookups_total", "Cache lookups by tier and outcome.", ["tier", "outcome"])
CACHE_SAVED_USD = Counter("finops_cache_saved_usd_total", "Upstream cost avoided by cache hits, USD.", ["tier"])
CACHE_STORES = Counter("finops_cache_stores_total", "Answers written to the cache, by tier and outcome.", ["tier", "outcome"])
# reason: number | operator | negation | entity | polarity | order | unreadable
# The semantic tier's second stage: full-model embeddings run because the static stage found a candidate.
CACHE_SEMANTIC_CONFIRMS = Counter("finops_cache_semantic_confirms_total", "Full-model embeddings run to confirm a candidate.")
# source: process (this process's static index, apps.cache.static_index) | postgres (pgvector: no copy of the org yet,
# Redis unknown, or the org over the index's cap)
CACHE_STATIC_STAGE = Counter(
    "finops_cache_static_stage_total", "Semantic lookups' first stage, by where it was answered.", ["source"]
)
CACHE_GUARD_REJECTIONS = Counter(
    "finops_cache_guard_rejections_total", "Semantic candidates above the threshold that the guard refused.", ["reason"]
)
CACHE_LOOKUP_SECONDS = Histogram(
    "finops_cache_lookup_seconds",
    "Cache lookup latency by tier (semantic includes the embedding).",
    ["tier"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0),
)
CACHE_INVALIDATED = Counter("finops_cache_invalidated_total", "Cache entries deleted by invalidation.", ["tier"])
CACHE_PURGED = Counter("finops_cache_purged_total", "Expired semantic entries deleted by the purge job.")


def semantic_entries_collector() -> Iterable[Metric]:
    """Size of the semantic cache, from the planner's estimate (no COUNT(*) over a large table at scrape time)."""
    from django.db import connection

    family = GaugeMetricFamily("finops_cache_semantic_entries", "Semantic cache entries (estimate, includes expired).")
    with connection.cursor() as cur:
        cur.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE relname = 'semantic_cache_entries'")
        row = cur.fetchone()
    family.add_metric([], float(row[0]) if row else 0.0)
    yield family
