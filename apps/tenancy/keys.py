"""The API key behind a bearer secret, for the request path: asyncpg, a short in-process cache, stale-if-error.

- `caller_for_secret`: the key's `Caller` (SHA-256 lookup, constant-time compare), cached for
  FINOPS["API_KEY_CACHE_SECONDS"] — so a revoked key stops working within that window. While Postgres is
  unreachable, a key resolved within FINOPS["API_KEY_STALE_SECONDS"] keeps its last known resolution.
- `api_key_rate_admit`: the key's requests per minute (ApiKey.rate_limit_per_minute).
- `api_keys_mark_used`: ApiKey.last_used_at, touched by the ledger writer in its own transaction.

Tenancy owns the key table: this module is the only raw SQL on it.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings

from apps.tenancy import metrics
from apps.tenancy.services import api_key_hash
from apps.tenancy.types import Caller
from finops.asyncdb import query_bounded
from finops.errors import RateLimited
from finops.limiter import window_admit

logger = logging.getLogger(__name__)

_KEY_CACHE_MAX = 50_000

_KEY_SQL = """
SELECT k.id, k.prefix, k.key_hash, k.org_id, k.team_id, k.member_id, k.revoked_at, k.rate_limit_per_minute,
       o.store_prompts, o.allow_model_pinning
FROM tenancy_apikey k JOIN tenancy_organization o ON o.id = k.org_id
WHERE k.key_hash = $1
"""
_LAST_USED_SQL = (
    "UPDATE tenancy_apikey SET last_used_at = now() "
    "WHERE id = ANY($1::bigint[]) AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')"
)

@dataclass(slots=True)
class _KeyEntry:
    fresh_until: float  # monotonic: served without a query until then
    stale_until: float  # monotonic: last confirmed by Postgres + API_KEY_STALE_SECONDS
    caller: Caller | None
    revoked: bool


_key_cache: dict[str, _KeyEntry] = {}
# During an outage a key is re-checked against Postgres at most this often; in between, its stale entry answers.
_STALE_RECHECK_S = 1.0


async def caller_for_secret(secret: str) -> tuple[Caller | None, bool]:
    """(caller, revoked): the key's caller, or (None, False) for an unknown key.

    A revoked key still names its caller, so that the rejected request is attributed to the org it
    belonged to (a leaked key shows up on the org's ledger), but `revoked` is True and it is refused.

    Stale-if-error: when the lookup fails (Postgres down or hung) and this process resolved the key
    within the last FINOPS["API_KEY_STALE_SECONDS"], that resolution is served again — an active key
    keeps working, a key seen revoked stays refused. A key never seen (or seen only as unknown) raises,
    and the gateway answers 503: it cannot tell a new key from a forged one without the database. The
    window is bounded because a key revoked during the outage cannot be known until Postgres is back.
    """
    digest = api_key_hash(secret)
    cfg = settings.FINOPS
    ttl = cfg["API_KEY_CACHE_SECONDS"]
    stale_s = cfg["API_KEY_STALE_SECONDS"]
    now = time.monotonic()
    entry = _key_cache.get(digest)
    if entry is not None and entry.fresh_until > now:
        return entry.caller, entry.revoked
    fallback = entry if entry is not None and entry.caller is not None and entry.stale_until > now else None
    try:
        # Bounded from when the query is sent; while the database is held for down it fails at once (finops.asyncdb).
        # A known key waits at most API_KEY_REVALIDATE_TIMEOUT_MS before its stale entry answers.
        row = await _key_row(digest, None if fallback is None else cfg["API_KEY_REVALIDATE_TIMEOUT_MS"])
    except Exception as exc:
        if fallback is None:
            raise
        fallback.fresh_until = now + min(_STALE_RECHECK_S, fallback.stale_until - now)
        metrics.AUTH_STALE.inc()
        logger.warning("API key lookup failed (%s); serving key %s… from its last known state", type(exc).__name__,
                       fallback.caller.api_key_prefix)  # fmt: skip
        return fallback.caller, fallback.revoked
    caller = None
    revoked = False
    # The lookup is by hash; compare_digest keeps the final check constant-time all the same.
    if row is not None and hmac.compare_digest(row["key_hash"], digest):
        revoked = row["revoked_at"] is not None
        caller = Caller(
            api_key_id=row["id"],
            api_key_prefix=row["prefix"],
            org_id=row["org_id"],
            team_id=row["team_id"],
            member_id=row["member_id"],
            store_prompts=row["store_prompts"],
            allow_model_pinning=row["allow_model_pinning"],
            rate_limit_per_minute=row["rate_limit_per_minute"],
        )
    # Unknown keys are cached only for the fresh TTL (0: not at all): they are never served stale.
    if ttl > 0 or (caller is not None and stale_s > 0):
        if len(_key_cache) >= _KEY_CACHE_MAX:
            _key_cache.clear()  # bounded memory: a flood of random keys cannot grow it forever
        _key_cache[digest] = _KeyEntry(now + ttl, now + max(stale_s, ttl), caller, revoked)
    return caller, revoked


async def _key_row(digest: str, timeout_ms: int | None = None):
    return await query_bounded("fetchrow", _KEY_SQL, digest, timeout_ms=timeout_ms)


def caller_cache_clear() -> None:
    _key_cache.clear()


async def api_keys_mark_used(*, conn, key_ids: list[int]) -> None:
    """Set last_used_at on these keys (at most once a minute each), on the caller's connection."""
    await conn.execute(_LAST_USED_SQL, key_ids)


def rate_limit_key(*, org_id: int, api_key_id: int) -> str:
    # The {o<org>} hash tag keeps one org's keys in one Redis Cluster slot, like the budget keys.
    return f"finops:ratelimit:{{o{org_id}}}:k{api_key_id}"


async def api_key_rate_admit(*, caller: Caller, token: str) -> None:
    """Count one request against the key's `rate_limit_per_minute` (0 = unlimited).

    Raises finops.errors.RateLimited (429, code `rate_limit_exceeded`, a Retry-After header) when the key
    has used its minute. Refused requests are not counted, so a client that keeps retrying is not locked
    out for longer. The window is core's sliding window (finops.limiter): in Redis, shared by every
    worker; if Redis does not answer within FINOPS["API_KEY_RATE_LIMIT_TIMEOUT_MS"], each process keeps
    its own window of the same size (N per process while Redis is down: still bounded).
    """
    limit = caller.rate_limit_per_minute
    if not limit:
        return
    admission = await window_admit(
        key=rate_limit_key(org_id=caller.org_id, api_key_id=caller.api_key_id),
        limit=limit,
        token=token,
        timeout_s=settings.FINOPS["API_KEY_RATE_LIMIT_TIMEOUT_MS"] / 1000,
    )
    if admission.admitted:
        return
    metrics.RATE_LIMITED.labels(limiter=admission.limiter).inc()
    retry_after = max(1, math.ceil(admission.retry_after_s))
    raise RateLimited(
        f"Rate limit reached for this API key ({caller.api_key_prefix}…): {limit} requests per minute. "
        f"Retry in {retry_after} s.",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )
