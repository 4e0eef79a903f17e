"""The fail-open limiter: while the budget database is unreachable, each user gets N requests a minute.

A sliding window (not fixed buckets, which let 2N through across a minute boundary), kept in Redis
so that every gateway worker shares it; when Redis is unreachable too, each process falls back to an
in-process window of the same size (so the bound becomes N per process: still bounded).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque

from django.conf import settings
from redis.exceptions import RedisError

from finops.asyncredis import get_redis

logger = logging.getLogger(__name__)
WINDOW_S = 60.0

# Redis' own clock, so that workers with skewed clocks share one window.
_SLIDING_WINDOW_LUA = """
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window_us = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_us - window_us)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then
    return {0, n}
end
redis.call('ZADD', KEYS[1], now_us, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window_us / 1000))
return {1, n + 1}
"""


def limiter_key(*, org_id: int, member_id: int) -> str:
    # The {o<org>} hash tag keeps one org's budget keys in one Redis Cluster slot.
    return f"finops:budget:failopen:{{o{org_id}}}:m{member_id}"


class LocalWindow:
    """Per-process sliding window, the last resort when Redis is down as well."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, *, limit: int, window_s: float = WINDOW_S) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self.MAX_KEYS:
                    self._prune(now, window_s)
                hits = self._hits[key] = deque()
            while hits and hits[0] <= now - window_s:
                hits.popleft()
            if len(hits) >= limit:
                return False
            hits.append(now)
            return True

    def count(self, key: str, *, window_s: float = WINDOW_S) -> int:
        now = time.monotonic()
        with self._lock:
            return sum(1 for t in self._hits.get(key, ()) if t > now - window_s)

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()

    def _prune(self, now: float, window_s: float) -> None:
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - window_s]:
            del self._hits[key]


local_window = LocalWindow()


async def fail_open_admit(*, org_id: int, member_id: int, token: str) -> tuple[bool, str]:
    """Count one fail-open request for this user; returns (admitted, limiter) with limiter 'redis' or 'local'."""
    limit = settings.FINOPS["BUDGET_FAIL_OPEN_RPM"]
    key = limiter_key(org_id=org_id, member_id=member_id)
    timeout_s = settings.FINOPS["BUDGET_LIMITER_TIMEOUT_MS"] / 1000
    try:
        client = get_redis()
        admitted, _ = await asyncio.wait_for(
            client.eval(_SLIDING_WINDOW_LUA, 1, key, int(WINDOW_S * 1_000_000), limit, token), timeout_s
        )
        return bool(admitted), "redis"
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("fail-open limiter: Redis unavailable (%s); using the in-process window", type(exc).__name__)
    except Exception:  # whatever broke, the fail-open path must still answer, and stay bounded
        logger.exception("fail-open limiter: Redis call failed; using the in-process window")
    return local_window.admit(key, limit=limit), "local"
