"""The asyncio Redis client of the hot path (exact cache, limiter, outbox), one per event loop (finops.runtime)."""

from __future__ import annotations

import redis.asyncio as aioredis
from django.conf import settings

from finops.conf import conf
from finops.runtime import runtime


async def _close(client: aioredis.Redis) -> None:
    await client.aclose()


def get_redis() -> aioredis.Redis:
    rt = runtime()
    client = rt.get("redis")
    if client is None:
        client = rt.put(
            "redis",
            aioredis.Redis.from_url(
                settings.REDIS_URL,
                # Short timeouts: a Redis outage degrades the cache and limiter, it never stalls a request.
                socket_timeout=conf().redis_timeout_s,
                socket_connect_timeout=conf().redis_timeout_s,
                max_connections=conf().redis_max_connections,
            ),
            close=_close,
        )
    return client
