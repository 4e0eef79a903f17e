"""The asyncio Redis client of the hot path (exact cache, limiter, outbox), one per event loop (finops.runtime)."""

from __future__ import annotations

import hashlib
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import NoScriptError

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


async def redis_script(redis, script: str, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA `script`, loading it on the first NOSCRIPT (a restarted or another Redis): one round trip usually."""
    digest = _script_digests.get(script)
    if digest is None:
        digest = _script_digests[script] = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    try:
        return await redis.evalsha(digest, len(keys), *keys, *args)
    except NoScriptError:
        return await redis.eval(script, len(keys), *keys, *args)


_script_digests: dict[str, str] = {}
