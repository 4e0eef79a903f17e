from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction

from apps.ledger import metrics
from apps.ledger.recorder import COLUMNS, intent_tag, row_from_dict, row_from_json, row_to_json, spool_dir
from finops.conf import conf

logger = logging.getLogger(__name__)

_REPLAY_SQL = (
    f"INSERT INTO llm_requests ({', '.join(COLUMNS)}, recorded_at) "
    f"VALUES ({', '.join(['%s'] * len(COLUMNS))}, now()) ON CONFLICT (request_id) DO NOTHING"
)


@dataclass
class ReplayResult:
    seen: int = 0
    inserted: int = 0
    unreadable: int = 0
    interrupted: int = 0  # rows inserted from the intents of gateway processes that died mid-request
    live_journals: int = 0  # intent journals skipped because their process is still running
    dead: int = 0  # rows Postgres refused (data or constraint errors), kept in the spool's dead-*.jsonl

    def __str__(self) -> str:
        return (
            f"seen={self.seen} inserted={self.inserted} unreadable={self.unreadable} "
            f"interrupted={self.interrupted} live_journals={self.live_journals} dead={self.dead}"
        )


def _insert(rows: list[dict], result: ReplayResult | None = None) -> int:
    """Insert `rows` in one transaction; if Postgres refuses one of them (a data or constraint error), insert them
    one by one instead and move each refused row to a dead-letter file, so one bad row neither blocks the outbox
    forever nor takes the good rows with it."""
    try:
        return _insert_batch(rows)
    except (DataError, IntegrityError) as exc:
        logger.error("ledger replay: a batch of %d row(s) was refused (%s); inserting them one by one", len(rows), exc)
    inserted = 0
    for row in rows:
        try:
            inserted += _insert_batch([row])
        except (DataError, IntegrityError) as exc:
            _dead_letter(row, exc)
            if result is not None:
                result.dead += 1
    return inserted


def _insert_batch(rows: list[dict]) -> int:
    inserted = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for row in rows:
            cursor.execute(_REPLAY_SQL, [row[c] for c in COLUMNS])
            inserted += cursor.rowcount
    return inserted


def _dead_letter(row: dict, exc: Exception) -> None:
    """Keep a refused row durable and visible: `dead-<date>.jsonl` in the spool directory, with Postgres's reason."""
    directory = spool_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"dead-{time.strftime('%Y%m%d')}.jsonl"
    line = orjson.dumps({"error": f"{type(exc).__name__}: {exc}"[:500], "row": orjson.loads(row_to_json(row))}) + b"\n"
    with open(path, "ab") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    metrics.LEDGER_DEAD_LETTERS.inc()
    logger.error("ledger row %s refused by Postgres (%s); kept in %s", row.get("request_id"), exc, path)


def ledger_outbox_replay(*, batch_size: int = 500, redis_url: str | None = None, directory: Path | None = None) -> ReplayResult:
    """Insert the rows the gateway diverted while Postgres was unavailable; idempotent by request_id.

    Redis stream entries are deleted only after their rows are committed; spool files are claimed by an
    atomic rename, read under the writer's lock, and deleted after commit. Running it twice, or twice at
    once, inserts every row exactly once.
    """
    result = ReplayResult()
    _replay_stream(result, batch_size=batch_size, redis_url=redis_url or settings.REDIS_URL)
    _replay_spool(result, directory=directory or spool_dir())
    # Last: a request killed after its final row reached the outbox has that row in by now, and it wins.
    _replay_intents(result, directory=directory or spool_dir())
    return result


def _replay_stream(result: ReplayResult, *, batch_size: int, redis_url: str) -> None:
    stream = conf().ledger_outbox_stream
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        after = "-"
        while True:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(stream, min=after, count=batch_size)  # type: ignore[assignment]
            if not entries:
                return
            rows: list[dict[str, Any]] = []
            ids: list[bytes] = []
            for entry_id, fields in entries:
                ids.append(entry_id)
                try:
                    rows.append(row_from_json(fields[b"row"]))
                except Exception:
                    result.unreadable += 1
                    logger.error("ledger outbox entry %s is unreadable and is left in the stream", entry_id)
                    ids.pop()
            result.seen += len(rows)
            result.inserted += _insert(rows, result)
            if ids:
                client.xdel(stream, *ids)
            after = "(" + entries[-1][0].decode()
    finally:
        client.close()


def _replay_spool(result: ReplayResult, *, directory: Path) -> None:
    if not directory.exists():
        return
    for path in sorted(directory.glob("ledger-*.jsonl*")):
        claimed = path
        if path.name.endswith(".jsonl"):
            claimed = path.with_name(f"{path.name}.replay-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another replay claimed it
        with open(claimed, "rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # wait for a writer that locked the file before the rename
            lines = fh.read().splitlines()
        rows = []
        for line in lines:
            if not line.strip():
                continue
            try:
                rows.append(row_from_json(line))
            except Exception:  # a torn last line from a crash mid-append
                result.unreadable += 1
                logger.error("unreadable line in %s: %r", claimed, line[:200])
        result.seen += len(rows)
        result.inserted += _insert(rows, result)
        claimed.unlink()


def _replay_intents(result: ReplayResult, *, directory: Path) -> None:
    """Intents of dead gateway processes with no `done` line become their requests' rows (recorder, step 5).

    A journal's process holds an exclusive flock on it for life, so a lock we can take means an orphan.
    """
    if not directory.exists():
        return
    tag = intent_tag()
    for path in sorted(directory.glob(f"intents-{tag}-*")):
        if path.suffix not in (".jsonl", ".new"):
            continue
        if path.suffix == ".new" and _age_s(path) < 60:
            continue  # a journal being created this moment (it is renamed once locked)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # another replay took it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                result.live_journals += path.suffix == ".jsonl"
                continue
            with os.fdopen(os.dup(fd), "rb") as fh:
                lines = fh.read().splitlines()
            orphans: dict[str, dict] = {}
            for line in lines:
                if not line.strip():
                    continue
                try:
                    entry = orjson.loads(line)
                    if "d" in entry:
                        orphans.pop(entry["d"], None)
                    else:
                        row = row_from_dict(entry["i"])
                        orphans[str(row["request_id"])] = row
                except Exception:  # a torn last line from a kill mid-append
                    result.unreadable += 1
                    logger.error("unreadable line in %s: %r", path, line[:200])
            result.interrupted += _insert(list(orphans.values()), result)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
