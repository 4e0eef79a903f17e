"""The asyncio Redis client of the hot path (exact cache, limiter, outbox), one per event loop."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from django.conf import settings

from finops.conf import conf

_clients: dict[int, aioredis.Redis] = {}


def get_redis() -> aioredis.Redis:
    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None:
        client = aioredis.Redis.from_url(
            settings.REDIS_URL,
            # Short timeouts: a Redis outage degrades the cache and limiter, it never stalls a request.
            socket_timeout=conf().redis_timeout_s,
            socket_connect_timeout=conf().redis_timeout_s,
            max_connections=conf().redis_max_connections,
        )
        _clients[loop_id] = client
    return client
