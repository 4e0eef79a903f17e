"""Stage 11, record: exactly one `llm_requests` row per request, never lost, never on the critical path.

How a row travels:
1. The pipeline hands the row to this process's `LedgerWriter` *after* the response has been sent
   (for streams, after the last chunk). The request's ASGI task awaits the write, so uvicorn's graceful
   shutdown (SIGTERM) waits for it, and the lifespan shutdown drains whatever is still queued.
2. The writer batches whatever is queued at that moment into one transaction
   (`INSERT … ON CONFLICT (request_id) DO NOTHING`, asyncpg executemany) — group commit: no added
   latency when idle, one commit per batch under load.
3. Postgres down, slow (> FINOPS["LEDGER_INSERT_TIMEOUT_S"]) or the queue full: the batch goes to the
   outbox, a Redis stream (XADD); if Redis is down too, to a local spool file (append + fsync) under
   FINOPS["LEDGER_SPOOL_DIR"]. After a database failure the writer skips Postgres for
   FINOPS["LEDGER_DB_RETRY_AFTER_S"] so requests do not queue behind timeouts.
4. `ledger_outbox_replay_task` (beat, every minute) inserts outbox and spool rows idempotently by request_id.
5. Intents, for a process killed mid-request (SIGKILL, OOM): just before each upstream call the pipeline
   journals the row as it would stand if the process died there (`ledger_intent`: status `failed`,
   error_code `gateway_interrupted`, the prompt estimate priced at the model being called); while a stream
   is relayed the intent is refreshed every second with the completion tokens streamed so far, and as the
   response leaves it becomes the final row itself (`ledger_intent_final`). Once the final row is durable
   (step 2/3), a `done` line supersedes the intent. The journal is a file of this
   process under FINOPS["LEDGER_SPOOL_DIR"], flock'ed for the process's life; the replay (step 4) takes the
   journals whose lock is free (their process is gone), after the outbox and spool, and inserts each intent
   without a `done` line — `ON CONFLICT (request_id) DO NOTHING`, so a final row that made it wins.
   Appends are not fsync'ed: they survive the process being killed, not the machine losing power.
   FINOPS["LEDGER_INTENTS"] turns the journal off.

What can still be lost: with the journal on, nothing a killed process had sent upstream — but such a
row bills what was known (the prompt estimate, the completion tokens of the last refresh), not the
upstream's own usage. Without it, or when the machine itself dies, the rows of requests in flight.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import logging
import os
import time
import uuid
from collections import deque
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from django.db import connections

from apps.ledger import metrics
from apps.ledger.models import LLMRequest
from apps.ledger.money import ZERO
from apps.tenancy.keys import api_keys_mark_used
from finops import clock
from finops.asyncdb import call_bounded, get_pool
from finops.asyncredis import get_redis
from finops.conf import conf
from finops.runtime import runtime

logger = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (
    "request_id", "endpoint", "received_at", "org_id", "team_id", "member_id", "api_key_id", "api_key_prefix",
    "status", "http_status", "error_code", "stream", "requested_model", "model", "provider", "tier", "price_id",
    "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "service_tier",
    "cost_usd", "saved_usd", "cache_status", "similarity", "requested_tier", "route_strategy", "route_reason",
    "escalated", "escalation_cost_usd", "fallback_from", "attempts",
    "budget_state", "reserved_usd", "upstream_ms", "overhead_ms", "prompt_hash", "prompt_text", "response_text",
    "usage_estimated",
)  # fmt: skip
_COLUMN_SET = frozenset(COLUMNS)
_ADDED_COLUMNS: dict[str, Any] = {"cache_write_tokens": 0, "reasoning_tokens": 0, "service_tier": ""}
MONEY_COLUMNS = frozenset({"cost_usd", "saved_usd", "escalation_cost_usd", "reserved_usd"})
def row_new(**values: Any) -> dict[str, Any]:
    """A ledger row with every column: the defaults of a request that did nothing, then `values`.

    The one place the row's shape is written down (COLUMNS); an unknown column is a programming error.
    """
    unknown = set(values) - _COLUMN_SET
    if unknown:
        raise KeyError(f"not columns of llm_requests: {sorted(unknown)}")
    row = {
        "request_id": uuid.uuid4(), "endpoint": "", "received_at": clock.now(), "org_id": None, "team_id": None,
        "member_id": None, "api_key_id": None, "api_key_prefix": "", "status": "served", "http_status": 200,
        "error_code": "", "stream": False, "requested_model": "", "model": "", "provider": "", "tier": "",
        "price_id": None, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "cache_write_tokens": 0,
        "reasoning_tokens": 0, "service_tier": "", "cost_usd": ZERO,
        "saved_usd": ZERO, "cache_status": "none", "similarity": None, "requested_tier": "", "route_strategy": "",
        "route_reason": "", "escalated": False, "escalation_cost_usd": ZERO, "fallback_from": "", "attempts": 0,
        "budget_state": "none", "reserved_usd": ZERO, "upstream_ms": None, "overhead_ms": None, "prompt_hash": "",
        "prompt_text": None, "response_text": None, "usage_estimated": False,
    }  # fmt: skip
    row.update(values)
    return row


INSERT_SQL = (
    f"INSERT INTO llm_requests ({', '.join(COLUMNS)}, recorded_at) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))}, now()) "
    "ON CONFLICT (request_id) DO NOTHING"
)
# Column widths, so an over-long client-supplied value (e.g. a 500-character model name) cannot fail the insert.
_MAX_LENGTHS: dict[str, int] = {
    str(f.column): int(f.max_length)
    for f in LLMRequest._meta.concrete_fields
    if f.max_length and f.get_internal_type() == "CharField"
}


def row_clean(row: dict[str, Any]) -> dict[str, Any]:
    # Postgres text cannot hold NUL: a client's "\u0000" (in a model name, a prompt kept on opt-in) would fail the
    # whole batch's insert and send the next rows to the outbox.
    for column, value in row.items():
        if isinstance(value, str) and "\x00" in value:
            row[column] = value.replace("\x00", "\ufffd")
    for column, length in _MAX_LENGTHS.items():
        text = row.get(column)
        if isinstance(text, str) and len(text) > length:
            row[column] = text[:length]
    return row


# --- the outbox ---------------------------------------------------------------------------------


def row_to_json(row: dict[str, Any]) -> str:
    def encode(value: Any) -> Any:
        if isinstance(value, Decimal):
            return format(value, "f")
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, dt.datetime):
            return value.isoformat()
        return value

    return json.dumps({column: encode(row.get(column)) for column in COLUMNS}, separators=(",", ":"))


def row_from_json(text: str | bytes) -> dict[str, Any]:
    return row_from_dict(json.loads(text))


def row_from_dict(data: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {column: data.get(column) for column in COLUMNS}
    for column, default in _ADDED_COLUMNS.items():  # rows spooled by a release before these columns existed
        if row[column] is None:
            row[column] = default
    row["request_id"] = uuid.UUID(row["request_id"])
    row["received_at"] = dt.datetime.fromisoformat(row["received_at"])
    for column in MONEY_COLUMNS:
        row[column] = Decimal(row[column] if row[column] is not None else "0")
    row["usage_estimated"] = bool(row["usage_estimated"])  # rows spooled before the column existed: False
    return row


def spool_dir() -> Path:
    return Path(conf().ledger_spool_dir)


def spool_append(lines: list[str], *, directory: Path | None = None) -> Path:
    """Append rows to this process's spool file and fsync; safe against a concurrent replay (see services)."""
    directory = directory or spool_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ledger-{os.getpid()}.jsonl"
    payload = "".join(line + "\n" for line in lines).encode()
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:
                continue  # a replay claimed the file between open and lock: write to a fresh one
            os.write(fd, payload)
            os.fsync(fd)
            return path
        finally:
            os.close(fd)


async def outbox_write(rows: list[dict[str, Any]], *, redis=None) -> str:
    """Put rows in the Redis stream outbox, or the spool file if Redis fails. Returns where they went."""
    lines = [row_to_json(row) for row in rows]
    try:
        client = redis if redis is not None else get_redis()
        pipe = client.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(conf().ledger_outbox_stream, {"row": line})
        await pipe.execute()
        sink = "redis"
    except Exception as exc:
        logger.warning("ledger outbox: Redis unavailable (%s); spooling %d row(s) to disk", exc, len(lines))
        await asyncio.to_thread(spool_append, lines)
        sink = "spool"
    metrics.child(metrics.LEDGER_OUTBOX, sink).inc(len(lines))
    return sink


# --- the writer -----------------------------------------------------------------------------------

async def _close_pool(pool: asyncpg.Pool) -> None:
    await pool.close()


async def _ledger_pool() -> asyncpg.Pool:
    dsn = conf().ledger_database_url
    if not dsn:
        return await get_pool()
    rt = runtime()
    pool = rt.get("ledger.pool")
    if pool is None:
        async with rt.lock("ledger.pool"):
            pool = rt.get("ledger.pool")
            if pool is None:
                pool = await asyncpg.create_pool(
                    dsn, min_size=1, max_size=4, timeout=conf().asyncpg_connect_timeout_s, statement_cache_size=32
                )
                rt.put("ledger.pool", pool, close=_close_pool)
    return pool


# Errors that mean "this row", not "this database": Postgres answered and refused the data.
ROW_REFUSED = (asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError)


class LedgerWriter:
    """One per event loop: batches queued rows into one transaction per round."""

    def __init__(self) -> None:
        self.queue: deque[tuple[dict[str, Any], asyncio.Future]] = deque()
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.db_down_until = 0.0
        self.key_seen: dict[int, float] = {}
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def write(self, row: dict[str, Any]) -> bool:
        """True once the row is committed or in the outbox; False if the writer failed unexpectedly."""
        row_clean(row)
        if len(self.queue) >= conf().ledger_queue_max:
            # Bounded memory: while the writer is backed up, new rows go straight to the outbox.
            await outbox_write([row])
            return True
        future = asyncio.get_running_loop().create_future()
        self.queue.append((row, future))
        self.idle.clear()
        self.wakeup.set()
        return await asyncio.shield(future)

    async def drain(self) -> None:
        while self.queue or not self.idle.is_set():
            self.wakeup.set()
            await self.idle.wait()

    async def _run(self) -> None:
        batch_max = conf().ledger_batch_max
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(batch_max, len(self.queue)))]
                durable = True
                try:
                    await self._flush([row for row, _ in batch])
                except Exception:  # never leave a request waiting forever
                    durable = False
                    logger.exception("ledger writer: unexpected error; %d row(s) may need the outbox", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_result(durable)
            self.idle.set()

    async def _flush(self, rows: list[dict[str, Any]]) -> None:
        if time.monotonic() >= self.db_down_until:
            try:
                # Abandoned past the deadline, not waited for (wait_for would wait for a hung server's cancel): if the
                # insert lands after all, the outbox replay's ON CONFLICT (request_id) DO NOTHING keeps one row.
                await call_bounded(self._insert(rows), timeout_s=conf().ledger_insert_timeout_s)
                metrics.child(metrics.LEDGER_ROWS, "postgres").inc(len(rows))
                return
            except ROW_REFUSED as exc:
                # Postgres is up but refused a row (a data or constraint error): the others must not share its fate.
                logger.warning("ledger batch of %d row(s) refused (%s); inserting one by one", len(rows), exc)
                rows = await self._insert_each(rows)
                if not rows:
                    return
            except Exception as exc:
                self._db_down(exc, len(rows))
        await outbox_write(rows)  # the replay dead-letters a row Postgres keeps refusing

    def _db_down(self, exc: BaseException, count: int) -> None:
        self.db_down_until = time.monotonic() + conf().ledger_db_retry_after_s
        logger.warning("ledger insert failed (%s: %s); %d row(s) to the outbox", type(exc).__name__, exc, count)

    async def _insert_each(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert rows one at a time; returns those not inserted (refused ones, and the rest if Postgres goes away)."""
        left: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            try:
                await call_bounded(self._insert([row]), timeout_s=conf().ledger_insert_timeout_s)
                metrics.child(metrics.LEDGER_ROWS, "postgres").inc()
            except ROW_REFUSED as exc:
                logger.error("ledger row %s refused by Postgres (%s); to the outbox", row.get("request_id"), exc)
                left.append(row)
            except Exception as exc:
                self._db_down(exc, len(rows) - i)
                return left + rows[i:]
        return left

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        pool = await _ledger_pool()
        async with pool.acquire() as conn:
            # One round trip: asyncpg sends every Bind/Execute and a single Sync, so the batch is one implicit
            # transaction (all rows or none) without BEGIN/COMMIT round trips of its own.
            await conn.executemany(INSERT_SQL, [tuple(row[c] for c in COLUMNS) for row in rows])
            await self._touch_keys(conn, rows)

    async def _touch_keys(self, conn, rows: list[dict[str, Any]]) -> None:
        # ApiKey.last_used_at, at most once a minute per key and process: a convenience, not a ledger.
        now = time.monotonic()
        due = {r["api_key_id"] for r in rows if r["api_key_id"] and self.key_seen.get(r["api_key_id"], 0) < now - 60}
        if not due:
            return
        for key_id in due:
            self.key_seen[key_id] = now
        try:
            await api_keys_mark_used(conn=conn, key_ids=list(due))
        except Exception as exc:
            logger.info("api key last_used_at not updated: %s", exc)


async def _close_writer(writer: LedgerWriter) -> None:
    await writer.drain()
    writer.task.cancel()


def _writer() -> LedgerWriter:
    rt = runtime()
    writer = rt.get("ledger.writer")
    if writer is None or writer.task.done():
        writer = rt.put("ledger.writer", LedgerWriter(), close=_close_writer)
    return writer


async def ledger_record(row: dict[str, Any]) -> None:
    """Returns once the row is committed to Postgres or durable in the outbox; then its intent is done."""
    if await _writer().write(row) and _journal is not None and _journal.pid == os.getpid():
        _journal.done(str(row["request_id"]))


async def ledger_drain() -> None:
    """Flush this loop's queued rows and close the ledger's own pool (the ASGI lifespan shutdown does this through
    finops.runtime.runtime_close(); tests call it directly), then close the intent journal if nothing is open."""
    rt = runtime()
    writer = rt.pop("ledger.writer")
    if writer is not None:
        await _close_writer(writer)
    pool = rt.pop("ledger.pool")
    if pool is not None:
        await pool.close()
    intent_journal_shutdown()


def intent_journal_shutdown() -> None:
    if _journal is not None:
        _journal.shutdown()


# --- intents: what a killed process had started ---------------------------------------------------

INTERRUPTED = "gateway_interrupted"
INTENT_ROTATE_BYTES = 4 << 20


def intent_tag() -> str:
    """Journals are named after the database their rows belong to: a replay takes only its own."""
    name = str(connections["default"].settings_dict.get("NAME") or "default")
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


def _intent_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(type(value).__name__)


class IntentJournal:
    """This process's journal: `{"i": row}` lines (a later one for the same request replaces it) and
    `{"d": request_id}` once the request's final row is durable. Written from the event loop only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self.open_lines: dict[str, bytes] = {}  # request_id -> its latest intent line
        self.open_bytes = 0  # their total size
        self.path: Path | None = None
        self.fd = -1
        self.size = 0

    def _new_file(self) -> tuple[Path, int]:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"intents-{intent_tag()}-{self.pid}-{uuid.uuid4().hex[:8]}.jsonl"
        building = path.with_suffix(".new")  # invisible to the replay until it is locked
        fd = os.open(building, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until this process exits: "still running, not orphaned"
        os.rename(building, path)
        return path, fd

    def _append(self, data: bytes) -> None:
        if self.fd < 0:
            self.path, self.fd = self._new_file()
            self.size = 0
        os.write(self.fd, data)  # O_APPEND, one write per call; page cache only (see the module doc)
        self.size += len(data)

    def intent(self, request_id: str, row: dict[str, Any]) -> None:
        line = b'{"i":' + orjson.dumps({c: row.get(c) for c in COLUMNS}, default=_intent_default) + b"}\n"
        self._append(line)
        self.open_bytes += len(line) - len(self.open_lines.get(request_id, b""))
        self.open_lines[request_id] = line

    def done(self, request_id: str) -> None:
        line = self.open_lines.pop(request_id, None)
        if line is None:
            return
        self.open_bytes -= len(line)
        self._append(b'{"d":"' + request_id.encode() + b'"}\n')
        # Rotate once the file is mostly superseded lines: the copy costs at most a quarter of what was written since.
        if self.size > INTENT_ROTATE_BYTES and self.size > 4 * self.open_bytes:
            self._rotate()

    def _rotate(self) -> None:
        """A fresh file holding only the open intents; the old one goes (both exist for a moment: the replay dedups)."""
        old_path, old_fd = self.path, self.fd
        self.fd = -1
        self._append(b"".join(self.open_lines.values()))
        if old_path is not None:
            old_path.unlink(missing_ok=True)
        os.close(old_fd)

    def shutdown(self) -> None:
        """A clean exit with nothing open leaves no journal behind."""
        if self.fd >= 0 and not self.open_lines:
            if self.path is not None:
                self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = -1


_journal: IntentJournal | None = None


def _intent_journal() -> IntentJournal:
    global _journal
    if _journal is None or _journal.pid != os.getpid():  # a forked child starts its own
        _journal = IntentJournal(spool_dir())
    return _journal


def ledger_intent(row: dict[str, Any]) -> None:
    """Journal the row a request becomes if this process dies before recording it (module doc, step 5). Never raises.

    The caller builds the row as it would stand at death: before each upstream call, the prompt estimate priced at
    the model being called on top of what is already billed; while a stream is relayed, the completion tokens so far.
    """
    if not conf().ledger_intents:
        return
    try:
        _intent_journal().intent(str(row["request_id"]), row_clean(row))
    except Exception:
        logger.exception("ledger intent for %s not journaled", row.get("request_id"))


def ledger_intent_final(row: dict[str, Any]) -> None:
    """The response is about to leave with this row: a request with an open intent journals the row itself."""
    journal = _journal
    if journal is None or journal.pid != os.getpid():
        return
    request_id = str(row["request_id"])
    if request_id in journal.open_lines:
        try:
            journal.intent(request_id, row_clean(row))
        except Exception:
            logger.exception("ledger intent for %s not journaled", request_id)
