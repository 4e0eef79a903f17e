"""Reads of the cache: the effective policy of an org/route, prices, and nearest semantic entries.

The hot-path reads are async (asyncpg) and the slow-changing ones are memoised per process
for a few seconds: an admin change takes effect within FINOPS["CACHE_SETTINGS_CACHE_S"].
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from finops.asyncdb import query_bounded
from finops.conf import conf

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    enabled: bool
    semantic_enabled: bool
    threshold: float  # cosine similarity, 1 = identical
    ttl_s: int
    max_temperature: float
    allow_high_temperature: bool
    allow_tools: bool
    semantic_max_chars: int = 0  # longer last user turns skip the semantic tier; 0: FINOPS_CACHE_SEMANTIC_MAX_CHARS


def default_policy() -> CachePolicy:
    f = conf()
    return CachePolicy(
        enabled=f.cache_enabled,
        semantic_enabled=True,
        threshold=f.cache_threshold,
        ttl_s=f.cache_ttl_s,
        max_temperature=f.cache_max_temperature,
        allow_high_temperature=False,
        allow_tools=False,
        semantic_max_chars=f.cache_semantic_max_chars,
    )


_policies: dict[int, tuple[float, CachePolicy, dict[str, dict[str, Any]]]] = {}

_POLICY_SQL = """
SELECT s.enabled, s.semantic_enabled, s.threshold, s.ttl_s, s.max_temperature, s.allow_high_temperature, s.allow_tools,
       s.semantic_max_chars,
       coalesce((SELECT json_agg(json_build_object('model_class', o.model_class, 'enabled', o.enabled,
                                                   'threshold', o.threshold, 'ttl_s', o.ttl_s))
                 FROM cache_route_overrides o WHERE o.settings_id = s.id), '[]') AS overrides
FROM cache_settings s WHERE s.org_id = $1
"""


async def cache_policy_for(*, org_id: int, model_class: str) -> CachePolicy:
    """The org's policy with the per-route override for `model_class` applied."""
    now = time.monotonic()
    cached = _policies.get(org_id)
    if cached is None or cached[0] < now:
        row = await query_bounded("fetchrow", _POLICY_SQL, org_id)  # bounded: a hung database bypasses the cache
        overrides: dict[str, dict[str, Any]] = {}
        if row is None:
            policy = default_policy()
        else:
            policy = CachePolicy(
                enabled=row["enabled"],
                semantic_enabled=row["semantic_enabled"],
                threshold=row["threshold"],
                ttl_s=row["ttl_s"],
                max_temperature=row["max_temperature"],
                allow_high_temperature=row["allow_high_temperature"],
                allow_tools=row["allow_tools"],
                semantic_max_chars=row["semantic_max_chars"] or conf().cache_semantic_max_chars,
            )
            raw = row["overrides"]
            for item in json.loads(raw) if isinstance(raw, str) else raw:
                overrides[item["model_class"]] = item
        cached = (now + conf().cache_settings_cache_s, policy, overrides)
        _policies[org_id] = cached
    _, policy, overrides = cached
    override = overrides.get(model_class)
    if override is None:
        return policy
    return CachePolicy(
        enabled=policy.enabled and override["enabled"],
        semantic_enabled=policy.semantic_enabled,
        threshold=override["threshold"] if override["threshold"] is not None else policy.threshold,
        ttl_s=override["ttl_s"] if override["ttl_s"] is not None else policy.ttl_s,
        max_temperature=policy.max_temperature,
        allow_high_temperature=policy.allow_high_temperature,
        allow_tools=policy.allow_tools,
        semantic_max_chars=policy.semantic_max_chars,
    )


def cache_policy_forget(org_id: int | None = None) -> None:
    """Drop this process's memoised policy (all orgs when org_id is None)."""
    if org_id is None:
        _policies.clear()
    else:
        _policies.pop(org_id, None)


@dataclass(frozen=True, slots=True)
class Candidate:
    id: int
    similarity: float  # 1 - cosine distance
    guard: dict[str, Any]
    response: dict[str, Any]
    answer_model: str
    created_at: dt.datetime
    expires_at: dt.datetime


# The (org, model class, context, params) filter is what keeps tenants apart: never drop it.
# The planner scans a small scope exactly (scope index + top-N sort) and a large one with HNSW.
_NEAREST_SQL = """
SELECT id, 1 - (embedding <=> $1::vector) AS similarity, guard, response, answer_model, created_at, expires_at
FROM semantic_cache_entries
WHERE org_id = $2 AND model_class = $3 AND system_prompt_hash = $4 AND params_hash = $5 AND expires_at > now()
  AND created_at >= $7
ORDER BY embedding <=> $1::vector
LIMIT $6
"""


# pgvector's binary wire format: uint16 dimensions, uint16 unused, then big-endian float32s. The hot-path pool sends
# vectors in it (vector_connection_init): no formatting of hundreds of floats as text in the worker, and no
# parsing of them back in Postgres, per lookup and per store.
_VECTOR_HEADER = np.dtype(">u2")
_VECTOR_VALUES = np.dtype(">f4")


def vector_encode(vector: Any) -> bytes:
    if isinstance(vector, str):  # a text literal "[1,2,3]", as before the codec
        vector = np.array(json.loads(vector), dtype=np.float32)
    values = np.asarray(vector, dtype=_VECTOR_VALUES)
    return np.array([values.shape[0], 0], dtype=_VECTOR_HEADER).tobytes() + values.tobytes()


def vector_decode(data: bytes) -> np.ndarray:
    dimensions = int(np.frombuffer(data[:2], dtype=_VECTOR_HEADER)[0])
    return np.frombuffer(data[4 : 4 + 4 * dimensions], dtype=_VECTOR_VALUES).astype(np.float32)


async def vector_connection_init(conn: Any) -> None:
    """The binary codec for pgvector's `vector` on every hot-path connection (a database without the extension keeps
    the default text codec)."""
    try:
        await conn.set_type_codec(
            "vector", schema="public", encoder=vector_encode, decoder=vector_decode, format="binary"
        )
    except ValueError as exc:  # unknown type: the extension is not installed in this database
        logger.debug("pgvector codec not registered: %s", exc)


async def semantic_candidates(
    *,
    org_id: int,
    model_class: str,
    context_hash: str,
    params_hash: str,
    vector: np.ndarray,
    k: int,
    not_before: dt.datetime | None = None,
) -> list[Candidate]:
    """The k nearest live entries in the request's scope, nearest first."""
    # A slow vector search skips the tier without holding the database for down (trips=False).
    rows = await query_bounded(
        "fetch",
        _NEAREST_SQL,
        vector,
        org_id,
        model_class,
        context_hash,
        params_hash,
        k,
        not_before or dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        timeout_ms=conf().cache_semantic_timeout_ms,
        trips=False,
    )
    return [
        Candidate(
            id=r["id"],
            similarity=float(r["similarity"]),
            guard=_json(r["guard"]),
            response=_json(r["response"]),
            answer_model=r["answer_model"],
            created_at=r["created_at"],
            expires_at=r["expires_at"],
        )
        for r in rows
    ]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


# The two stages of a lookup (docs/adr/001). Stage 1: the nearest entries by the static embedding, same scope
# filter; only entries at or above the static threshold are returned, with their guard signatures.
_STATIC_NEAREST_SQL = """
SELECT id, similarity, guard FROM (
    SELECT id, 1 - (static_embedding <=> $1::vector) AS similarity, guard
    FROM semantic_cache_entries
    WHERE org_id = $2 AND model_class = $3 AND system_prompt_hash = $4 AND params_hash = $5 AND expires_at > now()
      AND created_at >= $7 AND static_embedding IS NOT NULL
    ORDER BY static_embedding <=> $1::vector
    LIMIT $6
) nearest
WHERE similarity >= $8
"""

# Stage 2: the full model's similarity of those entries (the org filter again: never trust ids alone).
_CONFIRM_SQL = """
SELECT id, 1 - (embedding <=> $1::vector) AS similarity, guard, response, answer_model, created_at, expires_at
FROM semantic_cache_entries
WHERE id = ANY($2::bigint[]) AND org_id = $3 AND expires_at > now()
ORDER BY embedding <=> $1::vector
"""


@dataclass(frozen=True, slots=True)
class StaticCandidate:
    id: int
    similarity: float  # static cosine
    guard: dict[str, Any]


async def static_candidates(
    *,
    org_id: int,
    model_class: str,
    context_hash: str,
    params_hash: str,
    vector: np.ndarray,
    k: int,
    min_similarity: float,
    not_before: dt.datetime | None = None,
) -> list[StaticCandidate]:
    """Stage 1: up to k live entries in the request's scope whose static vector is at least `min_similarity` close."""
    # Bounded like every request-path query; slow is not down (trips=False): the tier is skipped.
    rows = await query_bounded(
        "fetch",
        _STATIC_NEAREST_SQL,
        vector,
        org_id,
        model_class,
        context_hash,
        params_hash,
        k,
        not_before or dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        min_similarity,
        timeout_ms=conf().cache_semantic_timeout_ms,
        trips=False,
    )
    return [StaticCandidate(id=r["id"], similarity=float(r["similarity"]), guard=_json(r["guard"])) for r in rows]


async def confirmed_candidates(*, org_id: int, ids: list[int], vector: np.ndarray) -> list[Candidate]:
    """Stage 2: those entries with the full model's similarity to `vector`, nearest first."""
    rows = await query_bounded(
        "fetch", _CONFIRM_SQL, vector, ids, org_id, timeout_ms=conf().cache_semantic_timeout_ms, trips=False
    )
    return [
        Candidate(
            id=r["id"],
            similarity=float(r["similarity"]),
            guard=_json(r["guard"]),
            response=_json(r["response"]),
            answer_model=r["answer_model"],
            created_at=r["created_at"],
            expires_at=r["expires_at"],
        )
        for r in rows
    ]
