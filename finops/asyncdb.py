"""The raw asyncpg pool for the hot path (auth, prices, budgets, ledger insert).

The Django ORM is sync and would cost a thread per request; the hot path talks to Postgres
through this pool instead. One pool per process and event loop, created lazily.
The DSN comes from Django's connection settings, so under pytest it points at the test database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

import asyncpg
from django.db import connections

from finops.conf import conf
from finops.runtime import runtime

_connection_inits: list[Callable[[asyncpg.Connection], Awaitable[None]]] = []


def register_connection_init(init: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
    """Run `init(conn)` on every new connection of the hot-path pool before it is handed out (apps register
    warm-ups here from AppConfig.ready, e.g. compiling their plpgsql functions, so no request pays for it)."""
    if init not in _connection_inits:
        _connection_inits.append(init)


async def _connection_init(connection: asyncpg.Connection) -> None:
    for init in _connection_inits:
        await init(connection)


def dsn_from_settings() -> str:
    db = connections["default"].settings_dict
    user = quote(db.get("USER") or "postgres")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or ""
    port = db.get("PORT") or ""
    name = quote(db["NAME"])
    if host.startswith("/"):
        # Unix socket (the embedded pgserver): the host goes in the query string.
        query = f"?host={quote(host)}" + (f"&port={port}" if port else "")
        return f"postgresql://{user}{password}@/{name}{query}"
    return f"postgresql://{user}{password}@{host or '127.0.0.1'}{':' + port if port else ''}/{name}"


async def _no_session_reset(connection: asyncpg.Connection) -> None:
    return None


async def _close_pool(pool: asyncpg.Pool) -> None:
    await pool.close()


async def get_pool() -> asyncpg.Pool:
    rt = runtime()
    pool = rt.get("asyncpg")
    if pool is not None:
        return pool
    async with rt.lock("asyncpg"):
        pool = rt.get("asyncpg")
        if pool is None:
            pool = await asyncpg.create_pool(
                dsn_from_settings(),
                min_size=conf().asyncpg_pool_min,
                max_size=conf().asyncpg_pool_max,
                # Connection attempts are bounded too: a hung Postgres must not hang the pool.
                timeout=conf().asyncpg_connect_timeout_s,
                command_timeout=conf().asyncpg_command_timeout_s,
                statement_cache_size=256,
                # asyncpg's default reset costs a round trip per release (RESET ALL, UNLISTEN, advisory unlock);
                # the hot path keeps no session state, and an open transaction is still rolled back.
                reset=_no_session_reset,
                init=_connection_init,
            )
            rt.put("asyncpg", pool, close=_close_pool)
    return pool


async def close_pools() -> None:
    """Close this loop's pool now (tests); the lifespan shutdown closes it with the rest (finops.runtime)."""
    pool = runtime().pop("asyncpg")
    if pool is not None:
        await pool.close()
