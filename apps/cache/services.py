"""Writes of the dual-tier cache: exact entries in Redis, semantic entries in Postgres, invalidation, expiry.

Redis layout (all keys under `finops:cache:`):
- `x:{org}:{sha256}`          the cached answer (JSON), with the entry's TTL
- `xi:{org}:{model_class}`    set of the org's exact keys for one model/route class
- `xm:{org}`                  set of the org's `xi:` index keys
- `orgs`                      set of org ids that have exact entries (for the expiry sweep)
The index sets let an admin invalidate one org (or one org's model) without SCANning Redis.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from redis.exceptions import RedisError

from apps.cache.metrics import CACHE_INVALIDATED, CACHE_PURGED
from apps.cache.selectors import cache_policy_forget
from apps.cache.static_index import static_index_forget_sync, static_index_publish
from finops.asyncdb import get_pool, query_bounded
from finops.asyncredis import redis_script
from finops.conf import conf

logger = logging.getLogger(__name__)

PREFIX = "finops:cache:"
ORGS_KEY = PREFIX + "orgs"


def exact_key(org_id: int, digest: str) -> str:
    return f"{PREFIX}x:{org_id}:{digest}"


def exact_index_key(org_id: int, model_class: str) -> str:
    return f"{PREFIX}xi:{org_id}:{model_class}"


def exact_models_key(org_id: int) -> str:
    return f"{PREFIX}xm:{org_id}"


# --- exact tier (async, hot path) ---------------------------------------------------------------


async def exact_entry_store(
    *,
    redis,
    org_id: int,
    model_class: str,
    digest: str,
    response: dict[str, Any],
    answer_model: str,
    ttl_s: int,
    paraphrase: bool = False,
) -> None:
    """`paraphrase`: the answer was cached for another wording (a promoted semantic hit)."""
    key = exact_key(org_id, digest)
    index = exact_index_key(org_id, model_class)
    models_key = exact_models_key(org_id)
    entry = {"o": org_id, "m": answer_model, "t": time.time(), "r": response}
    if paraphrase:
        entry["p"] = 1
    value = json.dumps(entry, separators=(",", ":"))
    index_ttl = max(ttl_s, conf().cache_max_ttl_s)
    # One command, not a six-command pipeline: redis-py builds and parses each pipelined command in Python, which
    # cost more CPU than the whole exact lookup (measured with cProfile on a worker, issue #18).
    await redis_script(redis, _EXACT_STORE_LUA, [key, index, models_key, ORGS_KEY], [value, ttl_s, index_ttl, org_id])


# The entry, then the index sets that let an admin invalidate an org without SCAN (see the module docstring).
_EXACT_STORE_LUA = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4])
return 1
"""


# --- semantic tier (async, hot path) ------------------------------------------------------------

_UPSERT_SQL = """
INSERT INTO semantic_cache_entries
    (org_id, model_class, system_prompt_hash, params_hash, prompt_hash, embedding, prompt_text, guard, response,
     answer_model, created_at, expires_at, hits, static_embedding)
VALUES ($1, $2, $3, $4, $5, $6::vector, $7, $8::jsonb, $9::jsonb, $10, now(), now() + make_interval(secs => $11), 0,
        $12::vector)
ON CONFLICT (org_id, model_class, system_prompt_hash, params_hash, prompt_hash) DO UPDATE
SET embedding = EXCLUDED.embedding, static_embedding = EXCLUDED.static_embedding, prompt_text = EXCLUDED.prompt_text, guard = EXCLUDED.guard,
    response = EXCLUDED.response, answer_model = EXCLUDED.answer_model,
    created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
RETURNING id, extract(epoch FROM created_at)::float8 AS created, extract(epoch FROM expires_at)::float8 AS expires
"""


async def semantic_entry_store(
    *,
    org_id: int,
    model_class: str,
    context_hash: str,
    params_hash: str,
    prompt_hash: str,
    vector: np.ndarray,
    prompt_text: str | None,
    guard: dict[str, Any],
    response: dict[str, Any],
    answer_model: str,
    ttl_s: int,
    static_vector: np.ndarray | None = None,
    publish: bool = True,
) -> None:
    """Insert or refresh an entry, then tell every process's static index about it (apps.cache.static_index);
    `publish=False` while Redis is known down (the copies find the entry at their next reload). Without
    `static_vector` (the first stage's) lookups never find it."""
    pool = await get_pool()
    guard_json = json.dumps(guard, separators=(",", ":"))
    row = await pool.fetchrow(
        _UPSERT_SQL,
        org_id,
        model_class,
        context_hash,
        params_hash,
        prompt_hash,
        vector,
        prompt_text,
        guard_json,
        json.dumps(response, separators=(",", ":")),
        answer_model[:128],
        float(ttl_s),
        static_vector,
    )
    if static_vector is None or not publish:
        return
    try:
        await static_index_publish(
            org_id=org_id,
            entry_id=row["id"],
            scope=(model_class, context_hash, params_hash),
            vector=static_vector,
            guard=guard_json,
            created=row["created"],
            expires=row["expires"],
        )
    except (RedisError, OSError, TimeoutError) as exc:  # the row is stored; other processes find it at their reload
        logger.warning("cache: semantic entry %s stored but not published to the static indexes: %s", row["id"], exc)


async def semantic_entry_hit(*, entry_id: int) -> None:
    await query_bounded(
        "execute", "UPDATE semantic_cache_entries SET hits = hits + 1, last_hit_at = now() WHERE id = $1", entry_id
    )


# --- invalidation and expiry (sync: admin and beat) --------------------------------------------


@dataclass(frozen=True)
class InvalidationResult:
    semantic_deleted: int
    exact_deleted: int


def _sync_redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def cache_invalidate(*, org_id: int, model_class: str | None = None) -> InvalidationResult:
    """Delete every cached answer of an org (or of one of its model/route classes), both tiers.

    Semantic rows go in one DELETE; exact keys are found through the org's index sets, never
    by SCANning Redis. A Redis outage leaves the exact entries to expire by TTL (logged).
    """
    from apps.cache.models import SemanticCacheEntry

    rows = SemanticCacheEntry.objects.filter(org_id=org_id)
    if model_class is not None:
        rows = rows.filter(model_class=model_class)
    semantic_deleted, _ = rows.delete()

    exact_deleted = 0
    try:
        client = _sync_redis()
        static_index_forget_sync(client, org_id)  # every process's copy of the org's static vectors reloads
        models_key = exact_models_key(org_id)
        index_keys = (
            [exact_index_key(org_id, model_class)]
            if model_class is not None
            else [k.decode() for k in client.smembers(models_key)]
        )
        for index in index_keys:
            members = list(client.smembers(index))
            for start in range(0, len(members), 500):
                exact_deleted += client.delete(*members[start : start + 500])
            client.delete(index)
            client.srem(models_key, index)
        client.close()
    except Exception as exc:  # noqa: BLE001 - the exact tier expires by TTL anyway
        logger.error("cache invalidation: Redis unavailable, exact entries of org %s expire by TTL: %s", org_id, exc)
    cache_policy_forget(org_id)
    CACHE_INVALIDATED.labels(tier="semantic").inc(semantic_deleted)
    CACHE_INVALIDATED.labels(tier="exact").inc(exact_deleted)
    logger.info(
        "cache invalidated: org=%s model_class=%s semantic=%s exact=%s", org_id, model_class, semantic_deleted, exact_deleted
    )
    return InvalidationResult(semantic_deleted=semantic_deleted, exact_deleted=exact_deleted)


@dataclass(frozen=True)
class PurgeResult:
    semantic_deleted: int
    index_pruned: int


def cache_purge_expired(*, batch_size: int = 5000, max_batches: int = 200) -> PurgeResult:
    """Delete expired semantic rows in batches and prune dead keys from the exact-tier index sets.

    Safe to run twice or concurrently: each batch is an independent DELETE of rows already expired.
    Lookups filter on expires_at anyway, so a late purge costs disk, never a stale answer.
    """
    deleted = 0
    for _ in range(max_batches):
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute(
                """
                DELETE FROM semantic_cache_entries WHERE id IN (
                    SELECT id FROM semantic_cache_entries WHERE expires_at <= now() LIMIT %s FOR UPDATE SKIP LOCKED)
                """,
                [batch_size],
            )
            deleted += cur.rowcount
            if cur.rowcount < batch_size:
                break
    pruned = 0
    try:
        client = _sync_redis()
        for org in client.smembers(ORGS_KEY):
            org_id = org.decode()
            models_key = f"{PREFIX}xm:{org_id}"
            indexes = client.smembers(models_key)
            if not indexes:
                client.srem(ORGS_KEY, org)
                continue
            for index in indexes:
                for chunk in _chunks(list(client.sscan_iter(index, count=1000)), 500):
                    with client.pipeline(transaction=False) as pipe:
                        for member in chunk:
                            pipe.exists(member)
                        alive = pipe.execute()
                    dead = [m for m, ok in zip(chunk, alive, strict=True) if not ok]
                    if dead:
                        pruned += client.srem(index, *dead)
                if not client.exists(index):
                    client.srem(models_key, index)
        client.close()
    except Exception as exc:  # noqa: BLE001 - index pruning is housekeeping; retried next run
        logger.warning("cache purge: Redis index pruning skipped: %s", exc)
    CACHE_PURGED.inc(deleted)
    return PurgeResult(semantic_deleted=deleted, index_pruned=pruned)


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
