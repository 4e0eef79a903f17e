"""Budget writes.

Hot path (async, asyncpg, no ORM): `reservation_create` and `reservation_settle`, each ONE call of a
SQL function from migration 0002, bounded by a deadline that covers pool acquisition and the query.

Admin and beat (sync, ORM): `budget_create` / `budget_update` (which keep the history),
`reservation_sweep`, `budget_reconcile` and `budget_alert_dispatch`.
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
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from apps.alerts.services import alert_dispatch
from apps.budgets.models import Budget, BudgetAlert, BudgetChange
from apps.ledger.money import CAP_DECIMAL_PLACES, quantize_usd
from finops import clock
from finops.asyncdb import get_pool
from finops.conf import conf
from finops.runtime import runtime

logger = logging.getLogger(__name__)

# --- hot path -------------------------------------------------------------------------------------


class BudgetUnavailable(Exception):
    """The budget database did not answer in time or at all; the caller fails open."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # timeout | lock_timeout | unavailable | error (a bounded metric label)


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
_SETTLE_MANY_SQL = "SELECT budget_settle_many($1::bigint[], $2::numeric[], $3)"
SETTLE_BATCH_MAX = 500

# Strong references to fire-and-forget tasks (connection releases, alert dispatch): asyncio keeps only weak ones.
_background: set[asyncio.Task] = set()


def _spawn(coro) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def background_drain(timeout: float = 5.0) -> None:
    """Wait for this loop's queued settles, connection releases and alert dispatches (tests, shutdown)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:  # a finishing task may start another (a settle raises an alert)
        pending = [t for t in _background if not t.done() and t.get_loop() is loop]
        remaining = deadline - loop.time()
        if not pending or remaining <= 0:
            return
        await asyncio.wait(pending, timeout=remaining)


async def _release_after_failure(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    # After a timeout the connection is still cancelling its query (asyncpg sends a cancel request);
    # release waits for that, and terminates the connection itself if it takes longer than this.
    try:
        await pool.release(conn, timeout=5.0)
    except Exception as exc:  # terminated by asyncpg; the pool reconnects on a later acquire
        logger.debug("budget connection dropped on release: %r", exc)


async def _pool(timeout_s: float) -> asyncpg.Pool:
    """The shared pool, waited for at most `timeout_s`.

    Creating the pool (connecting to a hung server) can take up to the connect timeout; it runs as
    its own task, shielded, so a request that stops waiting does not abort it half-way.
    """
    rt = runtime()
    task = rt.get("budgets.pool_task")
    stale = task is None
    if not stale and task.done():
        stale = task.cancelled() or task.exception() is not None or task.result().is_closing()
    if stale:
        task = rt.put("budgets.pool_task", asyncio.get_running_loop().create_task(get_pool()))
    return await asyncio.wait_for(asyncio.shield(task), timeout_s)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.exceptions.LockNotAvailableError):
        return "lock_timeout"
    if isinstance(exc, (TimeoutError, asyncpg.exceptions.QueryCanceledError)):
        return "timeout"
    if isinstance(exc, _OUTAGE):
        return "unavailable"
    return "error"


# The database cannot be reached or cannot take the query now: the only errors, with timeouts, that fail open.
_OUTAGE = (
    OSError,
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, out of memory, disk full
)


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


def _unavailable_or_broken(exc: Exception) -> Exception:
    reason = _reason(exc)
    return BudgetBroken(_broken_reason(exc)) if reason == "error" else BudgetUnavailable(reason)


async def _fetchrow_bounded(sql: str, *args: Any, timeout_ms: int) -> asyncpg.Record | None:
    """One query on the hot-path pool; the deadline covers pool creation, acquire and the query.

    An `asyncio.timeout` around `async with pool.acquire()` would not do: once it fired, the context
    exit awaits `release()`, which waits for the cancelled query, which waits for the hung server.
    Releasing happens in the background instead, so the caller gets its answer at the deadline.
    """
    loop = asyncio.get_running_loop()
    timeout_s = timeout_ms / 1000
    deadline = loop.time() + timeout_s
    try:
        pool = await _pool(timeout_s)
        conn = await pool.acquire(timeout=max(deadline - loop.time(), 0.0005))
    except Exception as exc:
        raise _unavailable_or_broken(exc) from exc
    try:
        row = await conn.fetchrow(sql, *args, timeout=max(deadline - loop.time(), 0.0005))
    except BaseException as exc:
        _spawn(_release_after_failure(pool, conn))
        if isinstance(exc, Exception):
            if _reason(exc) == "error":
                logger.exception("budget query failed (reserves fail closed; settles are left to sweep and reconcile)")
            raise _unavailable_or_broken(exc) from exc
        raise  # CancelledError: the request itself went away
    await pool.release(conn)  # immediate: finops.asyncdb's pool runs no reset query
    return row


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

    All levels are checked and reserved in one SQL call with the counter rows locked in id order:
    either every level takes the reservation or none does. `over_downgrade` means the request was
    already moved to the cheapest tier, so downgrade budgets no longer refuse it (block budgets still do).
    Raises BudgetUnavailable when the database does not answer within the deadline.
    """
    if timeout_ms is None:
        timeout_ms = conf().budget_timeout_ms
    row = await _fetchrow_bounded(
        _RESERVE_SQL,
        org_id,
        team_id,
        member_id,
        request_id,
        quantize_usd(max(amount_usd, Decimal(0))),
        float(conf().budget_reservation_ttl_s),
        over_downgrade,
        int(timeout_ms),
        timeout_ms=timeout_ms,
    )
    if row is None:  # the function always returns one row; be defensive anyway
        raise BudgetBroken("error")
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
    row = await _fetchrow_bounded(_SETTLE_MANY_SQL, ids, actuals, int(timeout_ms), timeout_ms=timeout_ms)
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
    rt = runtime()
    queue = rt.get("budgets.settle_queue")
    if queue is None:
        queue = rt.put("budgets.settle_queue", _SettleQueue(), close=_close_settle_queue)
    queue.items.append((reservation_id, actual_usd, 0))
    if queue.worker is None or queue.worker.done():
        queue.worker = _spawn(queue.run())


async def budget_connection_warm(conn: asyncpg.Connection) -> None:
    """Compile the budget SQL functions on a new hot-path connection (registered as a pool `init` hook).

    The first call of a plpgsql function on a connection compiles it: 10-20 ms, enough on a busy
    machine to miss the 50 ms deadline and fail open. No budget has id 0: the reserve answers "none"
    and writes nothing; the settle of nothing settles nothing.
    """
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

    try:
        for alert_id in alert_ids:
            try:
                budget_alert_dispatch(alert_id=alert_id)
            except Exception:
                logger.exception("budget alert %s not dispatched; the sweep will retry", alert_id)
    finally:
        # A worker thread of the executor: do not leave its database connection behind.
        connections.close_all()


# --- budgets and their history ----------------------------------------------------------------------

EDITABLE_FIELDS = ("cap_usd", "soft_pct", "action", "period", "active")


def budget_cap_validate(cap_usd: Decimal) -> Decimal:
    if cap_usd is None:
        raise ValidationError("A cap is required.")
    cap = quantize_usd(Decimal(cap_usd), places=CAP_DECIMAL_PLACES)
    if cap < 0:
        raise ValidationError("A cap cannot be negative.", code="negative")
    limit = conf().budget_cap_max_usd
    if cap > limit:
        raise ValidationError(f"A cap above ${limit:,.2f} is almost certainly a typo.", code="absurd")
    return cap


def budget_soft_pct_normalize(values: Iterable[int]) -> list[int]:
    cleaned = sorted({int(v) for v in values})
    if any(v < 1 or v > 100 for v in cleaned):
        raise ValidationError("Alert thresholds are percentages of the cap, from 1 to 100.")
    return cleaned


def budget_validate(*, budget: Budget) -> None:
    """Scope shape and tenancy consistency; fills org (and team) from the narrower target."""
    if budget.scope == Budget.Scope.USER:
        if budget.member_id is None:
            raise ValidationError({"member": "A user budget needs a user."})
        member = budget.member
        budget.org_id, budget.team_id = member.org_id, member.team_id
    elif budget.scope == Budget.Scope.TEAM:
        if budget.team_id is None:
            raise ValidationError({"team": "A team budget needs a team."})
        budget.member = None
        budget.org_id = budget.team.org_id
    else:
        budget.team = None
        budget.member = None
        if budget.org_id is None:
            raise ValidationError({"org": "An org budget needs an organization."})
    budget.cap_usd = budget_cap_validate(budget.cap_usd)
    budget.soft_pct = budget_soft_pct_normalize(budget.soft_pct)
    if budget.active:
        clash = Budget.objects.filter(
            active=True,
            scope=budget.scope,
            org_id=budget.org_id,
            team_id=budget.team_id,
            member_id=budget.member_id,
            period=budget.period,
        ).exclude(pk=budget.pk)
        if clash.exists():
            raise ValidationError("There is already an active budget for this target and period; edit that one.")


def _display(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if value is None:
        return ""
    return str(value)


def _actor(user) -> tuple[Any, str]:
    if user is None or not getattr(user, "pk", None):
        return None, str(user or "system")
    return user, user.get_username()


@transaction.atomic
def budget_create(*, budget: Budget, user=None) -> Budget:
    """Save a new budget and record its initial values in the history."""
    budget_validate(budget=budget)
    budget.save()
    changed_by, label = _actor(user)
    BudgetChange.objects.bulk_create(
        [
            BudgetChange(
                budget=budget,
                changed_by=changed_by,
                changed_by_label=label,
                field=field,
                old_value="",
                new_value=_display(getattr(budget, field)),
            )
            for field in EDITABLE_FIELDS
        ]
    )
    return budget


@transaction.atomic
def budget_update(*, budget: Budget, changes: dict[str, Any], user=None) -> Budget:
    """Apply `changes` (field → new value) to a budget and keep one history row per changed field.

    The old values are read from the locked row, not from `budget`, which a form may already have modified.
    """
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    current = Budget.objects.select_for_update().get(pk=budget.pk)
    changed_by, label = _actor(user)
    records: list[BudgetChange] = []
    for field, new in changes.items():
        if field == "cap_usd":
            new = budget_cap_validate(new)
        elif field == "soft_pct":
            new = budget_soft_pct_normalize(new)
        old = getattr(current, field)
        if old == new:
            continue
        setattr(current, field, new)
        records.append(
            BudgetChange(
                budget=current,
                changed_by=changed_by,
                changed_by_label=label,
                field=field,
                old_value=_display(old),
                new_value=_display(new),
            )
        )
    if not records:
        return current
    budget_validate(budget=current)
    current.save()
    BudgetChange.objects.bulk_create(records)
    for field in EDITABLE_FIELDS:
        setattr(budget, field, getattr(current, field))
    return current


# --- beat: sweep, reconcile, alerts -----------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    expired: int
    purged: int
    alerts_dispatched: int

    def __str__(self) -> str:
        return f"expired={self.expired} purged={self.purged} alerts={self.alerts_dispatched}"


def reservation_sweep(*, batch: int = 5000) -> SweepResult:
    """Expire reservations past their TTL and release what they held; purge old settled ones; retry alerts."""
    expired = 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT budget_sweep(%s)", [batch])
            n = cursor.fetchone()[0]
            expired += n
            if n < batch:
                break
        cursor.execute(
            """
            DELETE FROM budget_reservations WHERE id IN (
                SELECT id FROM budget_reservations
                WHERE state <> 'reserved' AND settled_at < now() - make_interval(days => %s)
                LIMIT 50000)
            """,
            [conf().budget_reservation_retention_days],
        )
        purged = cursor.rowcount
    dispatched = budget_alerts_dispatch_pending()
    return SweepResult(expired=expired, purged=purged, alerts_dispatched=dispatched)


@dataclass(frozen=True)
class ReconcileResult:
    budgets: int
    corrected: int
    spent_delta_usd: Decimal
    alerts_dispatched: int

    def __str__(self) -> str:
        return f"budgets={self.budgets} corrected={self.corrected} delta={self.spent_delta_usd} alerts={self.alerts_dispatched}"


def budget_reconcile(*, budget_ids: Iterable[int] | None = None) -> ReconcileResult:
    """Bring the current-period counters in line with the ledger (fail-open spend, drift, lost settles).

    One short transaction per budget, so the hot path never waits behind the whole job.
    """
    ids = (
        list(budget_ids)
        if budget_ids is not None
        else list(Budget.objects.filter(active=True).order_by("id").values_list("id", flat=True))
    )
    window = float(conf().budget_reconcile_window_s)
    corrected = 0
    delta = Decimal(0)
    alert_ids: list[int] = []
    with connection.cursor() as cursor:
        for budget_id in ids:
            cursor.execute("SELECT * FROM budget_reconcile(%s, %s)", [budget_id, window])
            row = cursor.fetchone()
            if row is None:
                continue
            _, spent_before, spent_after, reserved_before, reserved_after, raised = row
            if spent_before != spent_after or reserved_before != reserved_after:
                corrected += 1
                delta += spent_after - spent_before
            alert_ids.extend(raised or ())
    dispatched = sum(1 for alert_id in alert_ids if budget_alert_dispatch(alert_id=alert_id))
    return ReconcileResult(budgets=len(ids), corrected=corrected, spent_delta_usd=delta, alerts_dispatched=dispatched)


SEVERITY_BY_THRESHOLD = ((100, "critical"), (80, "warning"), (0, "info"))
ALERT_SCOPE_TYPE = {Budget.Scope.ORG: "org", Budget.Scope.TEAM: "team", Budget.Scope.USER: "member"}


def budget_alert_severity(threshold: int) -> str:
    return next(severity for floor, severity in SEVERITY_BY_THRESHOLD if threshold >= floor)


def budget_alert_dispatch(*, alert_id: int) -> bool:
    """Send one threshold alert through the alert routes (apps.alerts), exactly once.

    The row is claimed with a lock and marked in the same transaction as the dispatch: if routing
    fails, both roll back and the sweep retries; if another worker holds it, this one skips it.
    """
    with transaction.atomic():
        alert = (
            BudgetAlert.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("budget", "budget__org", "budget__team", "budget__member")
            .filter(pk=alert_id, dispatched_at__isnull=True)
            .first()
        )
        if alert is None:
            return False
        budget = alert.budget
        reached = "its cap" if alert.threshold >= 100 else f"{alert.threshold}% of its cap"
        title = f"Budget {budget.get_scope_display().lower()} '{budget.target_label}' reached {reached}"
        text = (
            f"{budget.get_scope_display()} '{budget.target_label}' ({budget.org.name}) has spent ${quantize_usd(alert.spent_usd, places=2)} "
            f"of its {budget.period} cap of ${alert.cap_usd} in the period starting {alert.period_start:%Y-%m-%d} UTC. "
            f"Action at the cap: {budget.get_action_display()}."
        )
        routes = alert_dispatch(
            severity=budget_alert_severity(alert.threshold),
            scope_type=ALERT_SCOPE_TYPE[budget.scope],
            org_id=budget.org_id,
            title=title,
            text=text,
            payload={
                "kind": "budget_threshold",
                "budget_id": budget.id,
                "scope": budget.scope,
                "target": budget.target_label,
                "period": budget.period,
                "period_start": alert.period_start.isoformat(),
                "threshold_pct": alert.threshold,
                "spent_usd": str(alert.spent_usd),
                "cap_usd": str(alert.cap_usd),
                "action": budget.action,
            },
        )
        alert.dispatched_at = clock.now()
        alert.dispatch_result = f"{routes} route(s)"
        alert.save(update_fields=["dispatched_at", "dispatch_result"])
    return True


def budget_alerts_dispatch_pending(*, limit: int = 500) -> int:
    pending = BudgetAlert.objects.filter(dispatched_at__isnull=True).order_by("created_at").values_list("id", flat=True)[:limit]
    dispatched = 0
    for alert_id in list(pending):
        try:
            dispatched += budget_alert_dispatch(alert_id=alert_id)
        except Exception:
            logger.exception("budget alert %s not dispatched; retrying next sweep", alert_id)
    return dispatched


def finance_group_ensure():
    """The `finance` group with its budget permissions (migration 0003 creates it; tests flush tables)."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name="finance")
    codenames = [
        "add_budget",
        "change_budget",
        "view_budget",
        "view_budgetchange",
        "view_budgetalert",
        "view_budgetcounter",
        "view_reservation",
    ]
    group.permissions.add(*Permission.objects.filter(content_type__app_label="budgets", codename__in=codenames))
    return group
