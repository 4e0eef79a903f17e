"""The API key behind a bearer secret, for the request path: asyncpg, short in-process caches, stale-if-error.

- `caller_for_secret`: the key's `Caller` (SHA-256 lookup, constant-time compare), cached for
  FINOPS["API_KEY_CACHE_SECONDS"] — so a revoked key stops working within that window. While Postgres is
  unreachable, a key resolved within FINOPS["API_KEY_STALE_SECONDS"] keeps its last known resolution.
  Known keys live in a bounded LRU (API_KEY_CACHE_MAX); unknown keys in a separate, smaller negative cache
  (API_KEY_NEGATIVE_CACHE_MAX), so that random keys never evict the entries that keep known keys working
  through an outage. A client address with too many failed authentications (AUTH_FAILURES_PER_MINUTE) gets
  429 for further unknown keys *before* any database lookup.
- `auth_failure_note`: counts a refused authentication (Prometheus, all of them) and says whether it gets a
  ledger row (AUTH_FAILURE_ROWS_PER_MINUTE per client address, or per revoked key).
- `api_key_rate_admit`: the key's requests per minute (ApiKey.rate_limit_per_minute).
- `api_keys_mark_used`: ApiKey.last_used_at, touched by the ledger writer in its own transaction.

Tenancy owns the key table: this module is the only raw SQL on it. The caches and counters are per process.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from django.conf import settings

from apps.tenancy import metrics
from apps.tenancy.services import api_key_hash
from apps.tenancy.types import Caller
from finops.asyncdb import query_bounded
from finops.conf import conf
from finops.errors import RateLimited
from finops.limiter import window_admit

logger = logging.getLogger(__name__)

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
_WINDOW_S = 60.0


@dataclass(slots=True)
class _KeyEntry:
    fresh_until: float  # monotonic: served without a query until then
    stale_until: float  # monotonic: last confirmed by Postgres + API_KEY_STALE_SECONDS
    caller: Caller
    revoked: bool


@dataclass(slots=True)
class _Window:
    """A fixed one-minute window of events for one subject (a client address, a revoked key)."""

    started: float
    count: int = 0


class AuthThrottled(RateLimited):
    code = "auth_rate_limited"


# Known keys (caller resolved, active or revoked): least recently used first. Never holds unknown keys.
_key_cache: OrderedDict[str, _KeyEntry] = OrderedDict()
# Unknown keys: digest -> monotonic time until which "unknown" is answered without a query.
_unknown_keys: OrderedDict[str, float] = OrderedDict()
# Failed authentications per client address ("a:<addr>") and ledger rows per subject ("r:<subject>"). Shared with
# the management API's authentication (apps.tenancy.authentication), which runs in a thread: hence the lock.
_windows: OrderedDict[str, _Window] = OrderedDict()
_windows_lock = threading.Lock()
# During an outage a key is re-checked against Postgres at most this often; in between, its stale entry answers.
_STALE_RECHECK_S = 1.0


def _lru_put(cache: OrderedDict, key: str, value, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > max(limit, 1):
        cache.popitem(last=False)


def _window(key: str, now: float) -> _Window:
    window = _windows.get(key)
    if window is None or now - window.started >= _WINDOW_S:
        window = _Window(started=now)
        _lru_put(_windows, key, window, conf().api_key_negative_cache_max)
    else:
        _windows.move_to_end(key)
    return window


def _throttle_check(client: str, now: float) -> None:
    """429 before the database when this address has failed authentication too often this minute."""
    limit = conf().auth_failures_per_minute
    if not limit or not client:
        return
    with _windows_lock:
        window = _windows.get(f"a:{client}")
    if window is None or now - window.started >= _WINDOW_S or window.count < limit:
        return
    retry_after = max(1, math.ceil(window.started + _WINDOW_S - now))
    raise AuthThrottled(
        f"Too many failed authentications from this address; retry in {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
    )


def _strike(client: str, now: float) -> None:
    if client:
        with _windows_lock:
            _window(f"a:{client}", now).count += 1


def auth_throttle_check(*, client: str) -> None:
    """For a key lookup outside the gateway (the management API): raise AuthThrottled (429) when `client` has
    failed authentication FINOPS["AUTH_FAILURES_PER_MINUTE"] times this minute, before the lookup."""
    _throttle_check(client, time.monotonic())


def auth_failure_strike(*, client: str) -> None:
    """Count a failed key lookup of `client` outside the gateway against the same per-address limit."""
    _strike(client, time.monotonic())


def auth_failure_note(*, reason: str, client: str = "", api_key_id: int | None = None) -> bool:
    """Count a refused authentication (reason: missing, unknown, revoked, throttled) in
    finops_gateway_auth_failures_total; True when it should also get a ledger row: the first
    AUTH_FAILURE_ROWS_PER_MINUTE per client address (per key, for a revoked key) and minute, and no more than
    AUTH_FAILURE_ROWS_MAX_PER_MINUTE in all (a flood from many addresses), in this process."""
    metrics.AUTH_FAILURES.labels(reason=reason).inc()
    cfg = settings.FINOPS
    now = time.monotonic()
    with _windows_lock:
        subject = _window(f"r:k{api_key_id}" if api_key_id is not None else f"r:a{client}", now)
        subject.count += 1
        if subject.count > cfg["AUTH_FAILURE_ROWS_PER_MINUTE"]:
            return False
        total = _window("r:*", now)
        total.count += 1
        return total.count <= cfg["AUTH_FAILURE_ROWS_MAX_PER_MINUTE"]


async def caller_for_secret(secret: str, *, client: str = "") -> tuple[Caller | None, bool]:
    """(caller, revoked): the key's caller, or (None, False) for an unknown key.

    A revoked key still names its caller, so that the rejected request is attributed to the org it
    belonged to (a leaked key shows up on the org's ledger), but `revoked` is True and it is refused.

    Stale-if-error: when the lookup fails (Postgres down or hung) and this process resolved the key
    within the last FINOPS["API_KEY_STALE_SECONDS"], that resolution is served again — an active key
    keeps working, a key seen revoked stays refused. A key never seen (or seen only as unknown) raises,
    and the gateway answers 503: it cannot tell a new key from a forged one without the database. The
    window is bounded because a key revoked during the outage cannot be known until Postgres is back.

    `client` is the caller's address: a key this process does not know yet is looked up only if that
    address has not failed authentication FINOPS["AUTH_FAILURES_PER_MINUTE"] times this minute
    (AuthThrottled, a 429, otherwise). Unknown results and failed lookups count as failures.
    """
    digest = api_key_hash(secret)
    cfg = settings.FINOPS
    ttl = cfg["API_KEY_CACHE_SECONDS"]
    stale_s = cfg["API_KEY_STALE_SECONDS"]
    now = time.monotonic()
    entry = _key_cache.get(digest)
    if entry is not None:
        _key_cache.move_to_end(digest)
        if entry.fresh_until > now:
            return entry.caller, entry.revoked
    else:
        _throttle_check(client, now)
        unknown_until = _unknown_keys.get(digest)
        if unknown_until is not None:
            if unknown_until > now:
                _strike(client, now)
                return None, False
            del _unknown_keys[digest]
    fallback = entry if entry is not None and entry.stale_until > now else None
    try:
        # Bounded from when the query is sent; while the database is held for down it fails at once (finops.asyncdb).
        # A known key waits at most API_KEY_REVALIDATE_TIMEOUT_MS before its stale entry answers. A key never seen has
        # only a 503 to fall back on: it waits API_KEY_LOOKUP_TIMEOUT_MS, and is not failed at once because another
        # query is merely overdue (a slow reply on a loaded machine is not an outage).
        if fallback is None:
            row = await _key_row(digest, cfg["API_KEY_LOOKUP_TIMEOUT_MS"], insist=True)
        else:
            row = await _key_row(digest, cfg["API_KEY_REVALIDATE_TIMEOUT_MS"])
    except Exception as exc:
        if fallback is None:
            if entry is None:
                _strike(client, now)
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
    if caller is None:
        _key_cache.pop(digest, None)  # deleted since: no longer a known key
        _strike(client, now)
        # Unknown keys are cached only for the fresh TTL (0: not at all), apart from the known ones: never served stale.
        if ttl > 0:
            _lru_put(_unknown_keys, digest, now + ttl, cfg["API_KEY_NEGATIVE_CACHE_MAX"])
    elif ttl > 0 or stale_s > 0:
        _unknown_keys.pop(digest, None)
        _lru_put(_key_cache, digest, _KeyEntry(now + ttl, now + max(stale_s, ttl), caller, revoked), cfg["API_KEY_CACHE_MAX"])
    return caller, revoked


async def _key_row(digest: str, timeout_ms: int, *, insist: bool = False):
    return await query_bounded("fetchrow", _KEY_SQL, digest, timeout_ms=timeout_ms, insist=insist)


def caller_cache_clear() -> None:
    _key_cache.clear()
    _unknown_keys.clear()
    with _windows_lock:
        _windows.clear()


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
        timeout_s=conf().api_key_rate_limit_timeout_ms / 1000,
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
