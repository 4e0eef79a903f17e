"""Sliding-window request limiters: N requests a minute per key, shared by every gateway worker.

A sliding window (not fixed buckets, which let 2N through across a minute boundary), kept in Redis
so that every gateway worker shares it; when Redis is unreachable, each process falls back to an
in-process window of the same size (so the bound becomes N per process: still bounded). The in-process window also counts what Redis admitted, so a
process that falls back mid-minute keeps counting the same minute.

Core, because more than one app limits requests with it (STYLE.md §11: siblings never import each other):
- budgets' fail-open limiter (`apps.budgets.limiter.fail_open_admit`): while the budget database is
  unreachable, each user gets FINOPS["BUDGET_FAIL_OPEN_RPM"] requests a minute;
- tenancy's per-key rate limit (ApiKey.rate_limit_per_minute).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from redis.exceptions import RedisError

from finops.asyncdb import abandon, reply_within
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
    -- refused (and not counted): the slot frees when the oldest admitted request leaves the window
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    local retry_us = window_us
    if oldest[2] then retry_us = tonumber(oldest[2]) + window_us - now_us end
    return {0, n, retry_us}
end
redis.call('ZADD', KEYS[1], now_us, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window_us / 1000))
return {1, n + 1}
"""


# A request the in-process window admitted (Redis too slow or down) is added to the Redis window afterwards, off the
# request path: the shared minute then counts it too. The token is the member, so an abandoned call that did reach
# Redis is not counted twice.
_ADD_LUA = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) / 1000))
return 1
"""
_later: set[asyncio.Task] = set()


def _count_in_redis_later(key: str, token: str, window_s: float) -> None:
    async def add() -> None:
        try:
            await get_redis().eval(_ADD_LUA, 1, key, int(window_s * 1_000_000), token)
        except Exception as exc:  # noqa: BLE001 - Redis down: the in-process window holds the bound meanwhile
            logger.debug("limiter: could not add a local admission to Redis: %r", exc)

    task = asyncio.get_running_loop().create_task(add())
    _later.add(task)
    task.add_done_callback(_later.discard)


class LocalWindow:
    """Per-process sliding window, the last resort when Redis is down as well."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _window(self, key: str, now: float, window_s: float) -> deque[float]:
        """The key's hits within the window (old ones dropped); call with the lock held."""
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.MAX_KEYS:
                self._prune(now, window_s)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - window_s:
            hits.popleft()
        return hits

    def admit(self, key: str, *, limit: int, window_s: float = WINDOW_S) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._window(key, now, window_s)
            if len(hits) >= limit:
                return False
            hits.append(now)
            return True

    def record(self, key: str, *, window_s: float = WINDOW_S) -> None:
        """Count a request Redis admitted: if this process falls back to its own window (Redis slow or down), the
        requests Redis already let through this minute still count — the user's minute is not split in two."""
        now = time.monotonic()
        with self._lock:
            self._window(key, now, window_s).append(now)

    def retry_after(self, key: str, *, window_s: float = WINDOW_S) -> float:
        """Seconds until the oldest request of the window leaves it (0 for an empty window)."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.get(key)
            return max(hits[0] + window_s - now, 0.0) if hits else 0.0

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


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    limiter: str  # "redis", or "local" when Redis could not answer in time
    retry_after_s: float = 0.0  # refused: when the oldest request of the window leaves it


async def window_admit(*, key: str, limit: int, token: str, timeout_s: float, window_s: float = WINDOW_S) -> Admission:
    """Count one request against `key`'s window of `limit` requests per `window_s`; refused requests are not counted.

    `token` must be unique per request (the request id). Never raises: if Redis fails or does not answer
    within `timeout_s`, this process's own window decides.
    """
    try:
        client = get_redis()
        sent: list[float] = []

        async def call():
            sent.append(asyncio.get_running_loop().time())
            return await client.eval(_SLIDING_WINDOW_LUA, 1, key, int(window_s * 1_000_000), limit, token)

        # The timeout counts from the call's sending, and a reply that a busy loop has not read yet is not a timeout
        # (finops.asyncdb.reply_within): local load must not push the count into the in-process window.
        task = asyncio.ensure_future(call())
        if not await reply_within(task, sent, timeout_s):
            abandon(task)
            raise TimeoutError
        result = task.result()
        admitted = bool(result[0])
        if admitted:
            local_window.record(key, window_s=window_s)
        return Admission(admitted, "redis", 0.0 if admitted else max(int(result[2]), 0) / 1_000_000)
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("limiter: Redis unavailable (%s); using the in-process window", type(exc).__name__)
    except Exception:  # whatever broke, a limiter must still answer, and stay bounded
        logger.exception("limiter: Redis call failed; using the in-process window")
    if local_window.admit(key, limit=limit, window_s=window_s):
        _count_in_redis_later(key, token, window_s)
        return Admission(True, "local")
    return Admission(False, "local", local_window.retry_after(key, window_s=window_s))
