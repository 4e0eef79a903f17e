"""The raw asyncpg pools for the hot path (auth, prices, budgets, ledger insert), and the deadlines on their queries.

The Django ORM is sync and would cost a thread per request; the hot path talks to Postgres
through this pool instead. One pool per process and event loop, created lazily.
The DSN comes from Django's connection settings, so under pytest it points at the test database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import asyncpg
from django.db import connections

from finops.conf import conf
from finops.runtime import runtime

logger = logging.getLogger(__name__)
T = TypeVar("T")

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


# Pools by purpose: the budgets' own small pool keeps the reservation round trip from queueing behind the shared
# pool's other users (the semantic tier, the ledger writer) under load.
_POOL_KEYS = {"default": "asyncpg", "budgets": "asyncpg.budgets"}


async def get_pool(name: str = "default") -> asyncpg.Pool:
    rt = runtime()
    key = _POOL_KEYS[name]
    pool = rt.get(key)
    if pool is not None:
        return pool
    async with rt.lock(key):
        pool = rt.get(key)
        if pool is None:
            small = name == "budgets"
            pool = await asyncpg.create_pool(
                dsn_from_settings(),
                min_size=1 if small else conf().asyncpg_pool_min,
                max_size=conf().budget_pool_max if small else conf().asyncpg_pool_max,
                # Connection attempts are bounded too: a hung Postgres must not hang the pool.
                timeout=conf().asyncpg_connect_timeout_s,
                command_timeout=conf().asyncpg_command_timeout_s,
                statement_cache_size=256,
                # asyncpg's default reset costs a round trip per release (RESET ALL, UNLISTEN, advisory unlock);
                # the hot path keeps no session state, and an open transaction is still rolled back.
                reset=_no_session_reset,
                init=_connection_init,
            )
            rt.put(key, pool, close=_close_pool)
    return pool


async def close_pools() -> None:
    """Close this loop's pools now (tests); the lifespan shutdown closes them with the rest (finops.runtime)."""
    rt = runtime()
    for key in _POOL_KEYS.values():
        pool = rt.pop(key)
        if pool is not None:
            await pool.close()


# --- deadlines on the request path ---------------------------------------------------------------------------
#
# Every query of the request path goes through `query_bounded`: its deadline counts from when the query is *sent*
# (not from when the request was queued: waiting for the loop or for the pool is local load, not a slow database),
# and a deadline that passes while the loop was busy does not count until the loop has had the chance to read a
# reply already in the socket. A query that still has no answer is abandoned at once (its connection terminated,
# not cancelled: a cancel request to a hung server would wait for it too), and the database is marked *suspect*:
# until a background probe gets an answer again, every request-path query of this loop fails at once with
# `DatabaseUnavailable("suspect")`, and each caller takes its degraded path (stale key, no semantic tier, budget
# fail-open, ledger rows to the outbox) without waiting.


class DatabaseUnavailable(Exception):
    """No answer within the deadline, no connection, or the database is suspect; the caller degrades."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # timeout | unavailable | suspect | busy (no pool connection free in time: local load)


# The database cannot be reached or cannot take a query now (with timeouts, the only errors that mean "outage").
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, out of memory, disk full
)
_NO_ANSWER: tuple[type[BaseException], ...] = (TimeoutError, *OUTAGE_ERRORS)
# Before a passed deadline counts, the loop polls I/O this many more times (a reply already read is not a timeout).
GRACE_YIELDS = 3


@dataclass(slots=True)
class _Breaker:
    down_since: float | None = None
    reason: str = ""
    trips: int = 0
    probe: asyncio.Task | None = None
    # tripping queries past their deadline, still in their confirmation window, by pool
    overdue_on: dict[str, int] = field(default_factory=dict)


def _breaker() -> _Breaker:
    return runtime().get_or_put("asyncdb.breaker", _Breaker, close=_close_breaker)


async def _close_breaker(breaker: _Breaker) -> None:
    if breaker.probe is not None and not breaker.probe.done():
        breaker.probe.cancel()


def db_suspect() -> bool:
    """True while this loop holds the database for down (a request-path query went unanswered past its confirmation
    window, and no probe has had an answer since) — or while a query that trips the breaker is overdue (past its
    deadline, unanswered, still in its confirmation window): a new query would most likely wait out its whole
    deadline too. A slow vector search (trips=False) never makes the database suspect."""
    breaker = _breaker()
    return breaker.down_since is not None or any(breaker.overdue_on.values())


def db_down(pool: str | None = None) -> bool:
    """True while this loop holds the database for down (confirmed: a query went unanswered past its whole
    confirmation window) — or, given a `pool`, while a query of that pool is overdue. Another pool's overdue query
    (a key lookup, say) is not evidence enough for a caller whose degraded path is costly."""
    breaker = _breaker()
    return breaker.down_since is not None or (pool is not None and breaker.overdue_on.get(pool, 0) > 0)


def db_mark_down(reason: str) -> None:
    """Hold the database for down on this loop (request-path queries fail fast) until a probe gets an answer."""
    breaker = _breaker()
    loop = asyncio.get_running_loop()
    if breaker.down_since is None:
        breaker.down_since = loop.time()
        breaker.reason = reason
        breaker.trips += 1
        logger.warning("database unanswered (%s): request-path queries fail fast until it answers again", reason)
    if breaker.probe is None or breaker.probe.done():
        breaker.probe = loop.create_task(_probe(breaker))


def db_mark_up() -> None:
    """Forget a recorded outage (tests; an operator who knows better)."""
    breaker = _breaker()
    breaker.down_since = None
    if breaker.probe is not None and not breaker.probe.done():
        breaker.probe.cancel()


async def _probe(breaker: _Breaker) -> None:
    """`SELECT 1` on a connection of its own (never the pool's, which may be full of stuck connections) until it answers."""
    while breaker.down_since is not None:
        await asyncio.sleep(conf().db_probe_interval_ms / 1000)
        timeout_s = conf().db_probe_timeout_ms / 1000
        conn = None
        try:
            conn = await asyncpg.connect(dsn_from_settings(), timeout=timeout_s)
            await conn.fetchval("SELECT 1", timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - still down: try again after the interval
            logger.debug("database probe failed: %r", exc)
            continue
        finally:
            if conn is not None:
                conn.terminate()
        loop = asyncio.get_running_loop()
        logger.warning("database answers again after %.1f s", loop.time() - (breaker.down_since or loop.time()))
        breaker.down_since = None


async def reply_within(
    task: asyncio.Future,
    sent: list[float],
    timeout_s: float,
    give_up: Callable[[], bool] | None = None,
    replied: list[float] | None = None,
) -> bool | None:
    """Wait for `task` until `timeout_s` after `sent[0]` (the loop time the task appends when it sends its query;
    the wait starts counting only then). True when it finished. A deadline that passes is checked once more after
    the loop has polled I/O again: on a busy loop the timer can fire before a reply already received is read. A task
    that appends to `replied` when its reply is in (before it releases its connection) counts as answered from then:
    what is left of it is local work, waited for without a deadline.
    Before the query is sent, every `timeout_s` of waiting asks `give_up()`; None when it said yes."""
    loop = asyncio.get_running_loop()
    while not task.done() and not replied:
        remaining = (sent[0] + timeout_s - loop.time()) if sent else timeout_s
        if remaining > 0:
            await asyncio.wait({task}, timeout=remaining)
            if not sent and not task.done() and give_up is not None and give_up():
                return None
            continue
        for _ in range(GRACE_YIELDS):
            await asyncio.sleep(0)
            if task.done() or replied:
                break
        if not replied:
            return task.done()
    if not task.done():  # the reply is in: what is left (releasing the connection) is local work
        await asyncio.wait({task})
    return True


_abandoned: set[asyncio.Future] = set()


def _consume(task: asyncio.Future) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned query's error is expected, not "never retrieved"


def abandon(task: asyncio.Future, conn: asyncpg.Connection | None = None) -> None:
    """Give up on a query without waiting for it: terminate its connection (the pool gets the slot back at once;
    a cancel request would wait for the hung server too), or cancel it if it never got one. Never blocks."""
    _abandoned.add(task)
    task.add_done_callback(_consume)
    if conn is not None and not conn.is_closed():
        conn.terminate()
    else:
        task.cancel()


async def pool_within(timeout_s: float, name: str = "default") -> asyncpg.Pool:
    """The pool, waited for at most `timeout_s`: creating it (connecting to a hung server) runs as its own shielded
    task, so a request that stops waiting does not abort it half-way."""
    rt = runtime()
    key = f"asyncdb.pool_task.{name}"
    task = rt.get(key)
    stale = task is None
    if not stale and task.done():
        stale = task.cancelled() or task.exception() is not None or task.result().is_closing()
    if stale:
        task = rt.put(key, asyncio.get_running_loop().create_task(get_pool(name)))
    return await asyncio.wait_for(asyncio.shield(task), timeout_s)


async def _send(pool: asyncpg.Pool, method: str, sql: str, args: tuple, sent: list[float], held: list,
                acquire_timeout_s: float, replied: list[float]) -> Any:  # fmt: skip
    conn = await pool.acquire(timeout=acquire_timeout_s)
    held.append(conn)
    try:
        loop = asyncio.get_running_loop()
        sent.append(loop.time())
        result = await getattr(conn, method)(sql, *args)
        replied.append(loop.time())  # the answer is in: releasing the connection is local work
        return result
    finally:
        await pool.release(conn)  # immediate: no reset query (a terminated connection returns its slot at once)


async def query_bounded(
    method: str,
    sql: str,
    *args: Any,
    timeout_ms: float | None = None,
    pool: str = "default",
    trips: bool = True,
    acquire_timeout_ms: float | None = None,
    on_late: Callable[[Any], None] | None = None,
    insist: bool = False,
) -> Any:
    """`conn.<method>(sql, *args)` (fetch, fetchrow, fetchval, execute) on the hot-path pool, bounded (see above).

    Raises DatabaseUnavailable: `suspect` at once while the database is held for down or another query is overdue
    (past its deadline, unanswered, in its confirmation window); `timeout` when no reply came
    `timeout_ms` (default FINOPS_DB_QUERY_TIMEOUT_MS) after the query was sent; `unavailable` when the server cannot be
    reached; `busy` when no pool connection was free within the deadline (local load: the database is not blamed).
    `timeout` and `unavailable` mark the database down when `trips` (a query that is merely slow, like a vector search,
    passes trips=False). Errors the server answered with (a constraint, a lock timeout) propagate unchanged.
    Waiting for a pool connection is bounded by `acquire_timeout_ms` (default: the connect timeout), apart from it.

    A query past its deadline is not abandoned at once: the caller has its answer (`timeout`), and the query gets
    FINOPS_DB_CONFIRM_TIMEOUT_MS more to come back. If it does, the database is slow, not down — nothing is marked,
    and `on_late(result)` may undo what the late query did (the budgets release the reservations nobody waited for).
    If it does not, its connection is terminated and the database held for down (one slow reply on a loaded machine
    must not fail every request of the next probe interval open).

    `insist`: a caller whose degraded path is costly (the budgets: failing open spends the fail-open limiter's
    allowance) is not failed at once because another pool's query is overdue — only by an overdue query of its own
    pool, or once the database is held for down; otherwise it sends its query and waits out its own deadline.
    """
    if db_down(pool) if insist else db_suspect():  # while merely slow: until the overdue query's late reply arrives
        raise DatabaseUnavailable("suspect")
    timeout_s = (timeout_ms if timeout_ms is not None else conf().db_query_timeout_ms) / 1000
    try:
        # Creating the pool (the process's first query; the lifespan start-up does it before traffic) is bounded by
        # the connect timeout: connecting, and compiling the init hooks' functions, is not a query's round trip.
        hot_pool = await pool_within(conf().asyncpg_connect_timeout_s, pool)
    except _NO_ANSWER as exc:
        if trips:
            db_mark_down("unavailable")
        raise DatabaseUnavailable("unavailable") from exc
    sent: list[float] = []
    replied: list[float] = []
    held: list[asyncpg.Connection] = []
    # Waiting for a free connection, or for a new one to connect, is local load (a burst larger than the pool) unless
    # the connect itself hangs: bounded by the connect timeout, not by the query's deadline. Once the database is held
    # for down no one waits here at all.
    acquire_s = conf().asyncpg_connect_timeout_s if acquire_timeout_ms is None else acquire_timeout_ms / 1000
    task = asyncio.get_running_loop().create_task(_send(hot_pool, method, sql, args, sent, held, acquire_s, replied))
    try:
        # Still waiting for a connection while another query is overdue or the database is held for down: the
        # connections are stuck on a server that does not answer (a new one would hang connecting), not just busy.
        answered = await reply_within(task, sent, timeout_s, give_up=db_suspect, replied=replied)
    except BaseException:  # the request itself went away (CancelledError): do not leave its query behind
        abandon(task, held[0] if held else None)
        raise
    if answered is None:
        abandon(task, held[0] if held else None)
        raise DatabaseUnavailable("suspect" if db_suspect() else "timeout")
    if not answered:
        _confirm_later(task, held, replied, trips=trips, on_late=on_late, pool=pool)
        raise DatabaseUnavailable("timeout")
    error = task.exception()
    if error is None:
        return task.result()
    if isinstance(error, TimeoutError) and not sent:
        raise DatabaseUnavailable("busy") from error
    if isinstance(error, _NO_ANSWER):
        if trips:
            db_mark_down("unavailable")
        raise DatabaseUnavailable("unavailable") from error
    raise error


def _confirm_later(
    task: asyncio.Future,
    held: list,
    replied: list[float],
    *,
    trips: bool,
    on_late: Callable[[Any], None] | None,
    pool: str,
) -> None:
    breaker = _breaker()
    overdue = 1 if trips else 0  # a query that may not trip the breaker (a vector search) makes no one suspect
    breaker.overdue_on[pool] = breaker.overdue_on.get(pool, 0) + overdue

    async def confirm() -> None:
        try:
            window = conf().db_confirm_timeout_ms / 1000
            late = await reply_within(task, [asyncio.get_running_loop().time()], window, replied=replied)
        finally:
            breaker.overdue_on[pool] -= overdue
        if late:
            if on_late is not None and not task.cancelled() and task.exception() is None:
                try:
                    on_late(task.result())
                except Exception:
                    logger.exception("undoing a late query's work failed")
            return
        abandon(task, held[0] if held else None)
        if trips:
            db_mark_down("timeout")

    _abandoned.add(task)
    task.add_done_callback(_consume)
    watcher = asyncio.get_running_loop().create_task(confirm())
    _abandoned.add(watcher)
    watcher.add_done_callback(_abandoned.discard)


async def call_bounded(coro: Awaitable[T], *, timeout_s: float) -> T:
    """Await `coro` for at most `timeout_s` and, past it, abandon it (cancelled, not waited for: `asyncio.wait_for`
    waits for the cancellation, which on a hung server means waiting for the server). Raises TimeoutError."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.wait({task}, timeout=timeout_s)
        for _ in range(GRACE_YIELDS if not task.done() else 0):
            await asyncio.sleep(0)
            if task.done():
                break
    except BaseException:
        abandon(task)
        raise
    if not task.done():
        abandon(task)
        raise TimeoutError(f"no answer within {timeout_s:.3f} s")
    return task.result()
