"""Budget writes of the request path (async, asyncpg, no ORM): reserve and settle, batched per event loop.

- `reservation_create` queues the reservation for this loop's `_ReserveQueue`: the reservations waiting in one worker
  go out as ONE call of `budget_reserve_many` (migration 0004), while the next batch gathers. Its deadline,
  FINOPS["BUDGET_TIMEOUT_MS"], counts from when the batch is *sent* (finops.asyncdb.query_bounded): waiting in the
  queue or for a busy event loop is local load, and local load never fails open. No reply by the deadline, or no
  database at all, raises BudgetUnavailable (the caller fails open); while the database is held for down
  (finops.asyncdb.db_down), or while a batch of ours is overdue, it is raised at once, without a round trip. Another
  pool's query being overdue (db_suspect: a key lookup, a vector search) is not enough: the batch waits out its own
  deadline, since failing open spends the fail-open limiter's allowance.
- `reservation_settle_later` queues a settle for this loop's `_SettleQueue` (`budget_settle_many`), after the response.

The budgets have a small pool of their own (finops.asyncdb, "budgets"), so the reservation round trip never waits
behind the shared pool's other users. The admin and beat writes (sync, ORM) are in `apps.budgets.services`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from apps.ledger.money import quantize_usd
from finops.asyncdb import OUTAGE_ERRORS, DatabaseUnavailable, db_down, query_bounded
from finops.conf import conf
from finops.runtime import runtime

logger = logging.getLogger(__name__)


class BudgetUnavailable(Exception):
    """The budget database did not answer in time or at all; the caller fails open."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # timeout | lock_timeout | unavailable | suspect | error (a bounded metric label)


class BudgetBroken(Exception):
    """The budget database answered with an error that is not an outage: a function or table missing after a bad
    migration, a permission or constraint error. The caller fails closed (not open): a bug must not lift the caps."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # undefined_function | undefined_table | permission | constraint | schema | error


@dataclass(frozen=True, slots=True)
class ReserveResult:
    decision: str  # none | ok | soft | block | downgrade
    reservation_id: int | None
    remaining_usd: Decimal | None
    budget_count: int
    limit_budget_id: int | None = None
    limit_scope: str | None = None
    limit_label: str | None = None
    limit_period: str | None = None
    limit_cap_usd: Decimal | None = None
    limit_spent_usd: Decimal | None = None
    limit_reserved_usd: Decimal | None = None
    alert_ids: tuple[int, ...] = ()


_RESERVE_SQL = "SELECT * FROM budget_reserve($1, $2, $3, $4, $5, $6, $7, $8)"
_RESERVE_MANY_SQL = (
    "SELECT * FROM budget_reserve_many($1::bigint[], $2::bigint[], $3::bigint[], $4::uuid[], $5::numeric[], $6, "
    "$7::boolean[], $8)"
)
_SETTLE_MANY_SQL = "SELECT budget_settle_many($1::bigint[], $2::numeric[], $3)"
SETTLE_BATCH_MAX = 500

# Strong references to fire-and-forget tasks (queue workers, alert dispatch): asyncio keeps only weak ones.
_background: set[asyncio.Task] = set()


def _spawn(coro) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def background_drain(timeout: float = 5.0) -> None:
    """Wait for this loop's queued reserves and settles and its alert dispatches (tests, shutdown)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:  # a finishing task may start another (a settle raises an alert)
        pending = [t for t in _background if not t.done() and t.get_loop() is loop]
        remaining = deadline - loop.time()
        if not pending or remaining <= 0:
            return
        await asyncio.wait(pending, timeout=remaining)


def _broken_reason(exc: BaseException) -> str:
    """A bounded label for an error that fails closed."""
    if isinstance(exc, asyncpg.exceptions.UndefinedFunctionError):
        return "undefined_function"
    if isinstance(exc, asyncpg.exceptions.UndefinedTableError):
        return "undefined_table"
    if isinstance(exc, asyncpg.exceptions.InsufficientPrivilegeError):
        return "permission"
    if isinstance(exc, asyncpg.exceptions.IntegrityConstraintViolationError):
        return "constraint"
    if isinstance(exc, asyncpg.exceptions.SyntaxOrAccessError):
        return "schema"
    return "error"


async def _query(method: str, sql: str, *args: Any, timeout_ms: int, on_late=None) -> Any:
    """One bounded round trip on the budgets' pool: BudgetUnavailable (fail open) or BudgetBroken (fail closed)."""
    try:
        # A connection of the budgets' own pool is free unless one is being (re)connected: waiting for it is bounded
        # by the connect timeout, apart from the deadline (finops.asyncdb.query_bounded).
        # insist: another pool's query being overdue is no reason to fail open (and spend the limiter's allowance);
        # only a database held for down, or a batch of ours still unanswered, is. Else it waits out its own deadline.
        return await query_bounded(
            method, sql, *args, timeout_ms=timeout_ms, pool="budgets", on_late=on_late, insist=True
        )
    except DatabaseUnavailable as exc:
        raise BudgetUnavailable("unavailable" if exc.reason == "busy" else exc.reason) from exc
    except asyncpg.exceptions.LockNotAvailableError as exc:  # the server answered: a lock held past the deadline
        raise BudgetUnavailable("lock_timeout") from exc
    except asyncpg.exceptions.QueryCanceledError as exc:
        raise BudgetUnavailable("timeout") from exc
    except OUTAGE_ERRORS as exc:
        raise BudgetUnavailable("unavailable") from exc
    except Exception as exc:
        logger.exception("budget query failed (reserves fail closed; settles are left to sweep and reconcile)")
        raise BudgetBroken(_broken_reason(exc)) from exc


# --- reserve: one round trip per batch --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reserve:
    org_id: int
    team_id: int
    member_id: int
    request_id: uuid.UUID
    amount_usd: Decimal
    over_downgrade: bool
    timeout_ms: int


def _result(row: asyncpg.Record) -> ReserveResult:
    return ReserveResult(
        decision=row["decision"],
        reservation_id=row["reservation_id"],
        remaining_usd=row["remaining_usd"],
        budget_count=row["budget_count"],
        limit_budget_id=row["limit_budget_id"],
        limit_scope=row["limit_scope"],
        limit_label=row["limit_label"],
        limit_period=row["limit_period"],
        limit_cap_usd=row["limit_cap_usd"],
        limit_spent_usd=row["limit_spent_usd"],
        limit_reserved_usd=row["limit_reserved_usd"],
        alert_ids=tuple(row["alert_ids"] or ()),
    )


async def reserve_many(items: list[_Reserve]) -> list[ReserveResult]:
    """Reserve every item in one round trip (`budget_reserve_many`), in order; one result per item."""
    timeout_ms = max(i.timeout_ms for i in items)
    rows = await _query(
        "fetch",
        _RESERVE_MANY_SQL,
        [i.org_id for i in items],
        [i.team_id for i in items],
        [i.member_id for i in items],
        [i.request_id for i in items],
        [quantize_usd(max(i.amount_usd, Decimal(0))) for i in items],
        float(conf().budget_reservation_ttl_s),
        [i.over_downgrade for i in items],
        _lock_timeout_ms(timeout_ms),
        timeout_ms=timeout_ms,
        on_late=_release_late,
    )
    by_index = {row["idx"]: row for row in rows}
    if len(by_index) != len(items):  # the function returns one row per request; be defensive anyway
        raise BudgetBroken("error")
    return [_result(by_index[n]) for n in range(1, len(items) + 1)]


def _lock_timeout_ms(timeout_ms: int) -> int:
    """The server gives up on a held lock a little before the client gives up on the server: lock contention then
    answers `lock_timeout` (the database is up) rather than looking like a hang — and not much sooner either, since
    two workers' batches queueing on the org's counter row under load is not a reason to fail open."""
    return max(1, timeout_ms // 2, timeout_ms - 10)


def _release_late(rows: list[asyncpg.Record]) -> None:
    """A batch that answered after its requests had failed open: release what it reserved (nobody will settle it)."""
    for row in rows:
        if row["reservation_id"] is not None:
            reservation_settle_later(reservation_id=row["reservation_id"], actual_usd=Decimal(0))


class _ReserveQueue:
    """Reservations of one event loop, sent in batches: while one batch is in flight the next one gathers.

    Idle, a reservation goes out at once (a batch of one); under load, one round trip reserves every request that
    arrived meanwhile, so a busy worker sends fewer, larger transactions instead of queueing one per request.
    """

    def __init__(self) -> None:
        self.items: list[tuple[_Reserve, asyncio.Future]] = []
        self.worker: asyncio.Task | None = None
        self.round_trips = 0  # batches sent (tests: N concurrent reservations, one round trip)

    async def run(self) -> None:
        batch_max = conf().budget_reserve_batch_max
        while self.items:
            batch, self.items = self.items[:batch_max], self.items[batch_max:]
            batch = [(item, future) for item, future in batch if not future.done()]  # a cancelled request left
            if not batch:
                continue
            if db_down("budgets"):  # held for down, or a batch of ours overdue: no round trip, fail open now
                _fail(batch, BudgetUnavailable("suspect"))
                continue
            self.round_trips += 1
            try:
                results = await reserve_many([item for item, _ in batch])
            except BudgetBroken as exc:
                if len(batch) == 1:
                    _fail(batch, exc)
                    continue
                await self._one_by_one(batch)  # only the request that breaks fails closed
            except (BudgetUnavailable, Exception) as exc:
                _fail(batch, exc if isinstance(exc, BudgetUnavailable) else BudgetBroken("error"))
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)

    async def _one_by_one(self, batch: list[tuple[_Reserve, asyncio.Future]]) -> None:
        for item, future in batch:
            if future.done():
                continue
            self.round_trips += 1
            try:
                (result,) = await reserve_many([item])
            except (BudgetUnavailable, BudgetBroken) as exc:
                _fail([(item, future)], exc)
            else:
                if not future.done():
                    future.set_result(result)


def _fail(batch: list[tuple[_Reserve, asyncio.Future]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(type(exc)(getattr(exc, "reason", "error")))


async def _close_reserve_queue(queue: _ReserveQueue) -> None:
    _fail(queue.items, BudgetUnavailable("unavailable"))
    queue.items.clear()


def reserve_queue() -> _ReserveQueue:
    return runtime().get_or_put("budgets.reserve_queue", _ReserveQueue, close=_close_reserve_queue)


async def reservation_create(
    *,
    org_id: int,
    team_id: int,
    member_id: int,
    request_id: uuid.UUID,
    amount_usd: Decimal,
    over_downgrade: bool = False,
    timeout_ms: int | None = None,
) -> ReserveResult:
    """Reserve `amount_usd` against every active budget of the user, its team and its org, or refuse.

    All levels are checked and reserved in one SQL call with the counter rows locked in the global order: either
    every level takes the reservation or none does. `over_downgrade` means the request was already moved to the
    cheapest tier, so downgrade budgets no longer refuse it (block budgets still do). Raises BudgetUnavailable when
    the database does not answer within the deadline (counted from when the batch is sent), BudgetBroken on an error
    that is not an outage.
    """
    if timeout_ms is None:
        timeout_ms = conf().budget_timeout_ms
    queue = reserve_queue()
    future: asyncio.Future[ReserveResult] = asyncio.get_running_loop().create_future()
    item = _Reserve(org_id, team_id, member_id, request_id, amount_usd, over_downgrade, int(timeout_ms))
    queue.items.append((item, future))
    if queue.worker is None or queue.worker.done():
        queue.worker = _spawn(queue.run())
    return await future


# --- settle: batched after the response ---------------------------------------------------------------------------


async def reservation_settle_many(*, items: list[tuple[int, Decimal]], timeout_ms: int | None = None) -> tuple[int, ...]:
    """Release reservations and book their actual costs on every level, in one round trip; returns alerts raised.

    Idempotent. Raises BudgetUnavailable on timeout: the reservations then expire, the sweep releases
    them, and `budget_reconcile` books the costs from the ledger rows.
    """
    if not items:
        return ()
    if timeout_ms is None:
        timeout_ms = conf().budget_settle_timeout_ms
    ids = [reservation_id for reservation_id, _ in items]
    actuals = [quantize_usd(max(actual, Decimal(0))) for _, actual in items]
    lock_timeout_ms = _lock_timeout_ms(int(timeout_ms))
    row = await _query("fetchrow", _SETTLE_MANY_SQL, ids, actuals, lock_timeout_ms, timeout_ms=int(timeout_ms))
    return tuple(row[0] or ()) if row is not None else ()


async def reservation_settle(*, reservation_id: int, actual_usd: Decimal, timeout_ms: int | None = None) -> tuple[int, ...]:
    return await reservation_settle_many(items=[(reservation_id, actual_usd)], timeout_ms=timeout_ms)


class _SettleQueue:
    """Settles of one event loop, sent in batches: while one batch is in flight the next one gathers.

    Idle, a settle goes out at once (a batch of one); under load, one transaction settles hundreds and
    takes the shared team and org row locks once instead of once per request.
    """

    def __init__(self) -> None:
        self.items: list[tuple[int, Decimal, int]] = []  # (reservation id, actual, attempt)
        self.worker: asyncio.Task | None = None

    async def run(self) -> None:
        from apps.budgets import metrics

        while self.items:
            batch, self.items = self.items[:SETTLE_BATCH_MAX], self.items[SETTLE_BATCH_MAX:]
            try:
                alerts_dispatch_soon(await reservation_settle_many(items=[(rid, actual) for rid, actual, _ in batch]))
            except BudgetUnavailable as exc:
                retry = [(rid, actual, attempt + 1) for rid, actual, attempt in batch if attempt == 0]
                dropped = len(batch) - len(retry)
                if dropped:
                    # Left to the sweep (releases the reservation) and reconcile (books the cost from the ledger).
                    metrics.BUDGET_SETTLE_FAILURES.labels(reason=exc.reason).inc(dropped)
                    logger.warning("%d budget settles failed twice (%s); left to sweep and reconcile", dropped, exc.reason)
                if retry:
                    await asyncio.sleep(0.2)
                    self.items.extend(retry)
            except Exception:
                metrics.BUDGET_SETTLE_FAILURES.labels(reason="error").inc(len(batch))
                logger.exception("budget settle batch failed; left to sweep and reconcile")


async def _close_settle_queue(queue: _SettleQueue) -> None:
    """Shutdown: the queued settles go out before the pool closes (else reservations wait 15 minutes for the sweep)."""
    if queue.items and (queue.worker is None or queue.worker.done()):
        queue.worker = _spawn(queue.run())
    await background_drain()


def reservation_settle_later(*, reservation_id: int, actual_usd: Decimal) -> None:
    """Queue a settle for this loop's batcher; returns at once and never raises."""
    queue = runtime().get_or_put("budgets.settle_queue", _SettleQueue, close=_close_settle_queue)
    queue.items.append((reservation_id, actual_usd, 0))
    if queue.worker is None or queue.worker.done():
        queue.worker = _spawn(queue.run())


async def budget_connection_warm(conn: asyncpg.Connection) -> None:
    """Compile the budget SQL functions on a new hot-path connection (registered as a pool `init` hook).

    The first call of a plpgsql function on a connection compiles it: 10-20 ms, enough on a busy
    machine to miss the 50 ms deadline and fail open. No budget has id 0: the reserve answers "none"
    and writes nothing; the settle of nothing settles nothing.
    """
    await conn.fetch(_RESERVE_MANY_SQL, [0], [0], [0], [uuid.uuid4()], [Decimal(0)], 1.0, [False], 1000)
    await conn.fetchrow(_RESERVE_SQL, 0, 0, 0, uuid.uuid4(), Decimal(0), 1.0, False, 1000)
    await conn.fetchrow(_SETTLE_MANY_SQL, [], [], 1000)


def alerts_dispatch_soon(alert_ids: Iterable[int]) -> None:
    """Hand freshly raised alerts to `budget_alert_dispatch` off the request path (the sweep retries leftovers)."""
    ids = list(alert_ids)
    if not ids:
        return
    from asgiref.sync import sync_to_async

    _spawn(sync_to_async(_alerts_dispatch_in_thread, thread_sensitive=False)(ids))


def _alerts_dispatch_in_thread(alert_ids: list[int]) -> None:
    from django.db import connections

    from apps.budgets.services import budget_alert_dispatch

    try:
        for alert_id in alert_ids:
            try:
                budget_alert_dispatch(alert_id=alert_id)
            except Exception:
                logger.exception("budget alert %s not dispatched; the sweep will retry", alert_id)
    finally:
        # A worker thread of the executor: do not leave its database connection behind.
        connections.close_all()
