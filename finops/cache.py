"""Invalidation of what is cached from the rollup tables (cost_daily_summary, route_daily_summary).

Readers put a *generation* in their cache keys; every rollup replaces it after its transaction commits, so the
next read misses and recomputes, and old entries expire on their TTL. A generation is never reused (a
timestamp, not a counter), so a Redis that lost the key cannot bring back an old entry. In the core so that the
ledger (which writes the rollups) and the reports (which read them) both use it without importing each other.
"""

from __future__ import annotations

import time

from django.core.cache import cache
from django.db import transaction

ROLLUP_GENERATION_KEY = "rollup:generation"


def rollup_generation() -> str:
    generation = cache.get(ROLLUP_GENERATION_KEY)
    if generation is None:
        cache.add(ROLLUP_GENERATION_KEY, time.time_ns(), timeout=None)
        generation = cache.get(ROLLUP_GENERATION_KEY)
    return str(generation)


def rollup_generation_bump() -> None:
    """Call after writing a rollup table: entries keyed by the current generation are no longer read."""
    transaction.on_commit(lambda: cache.set(ROLLUP_GENERATION_KEY, time.time_ns(), timeout=None))
