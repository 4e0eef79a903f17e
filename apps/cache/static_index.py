"""Stage 1 in process: each gateway process keeps a copy of its orgs' static vectors (docs/adr/001).

A cache miss used to cost a pgvector search (stage 1) on every request: a round trip, a query plan and a scan
of the scope in Postgres — the largest share of the default configuration's CPU per request (issue #18). The
static vectors are small (STATIC_DIM float32s), so each process keeps them in memory instead, per org and scope,
and a miss is a matrix-vector product over its scope: microseconds, no I/O.

Postgres stays the store of record and the judge. A candidate found here is only a proposal: stage 2 reads the
entry back from Postgres by id, with the org filter and `expires_at` (apps.cache.selectors.confirmed_candidates),
so a stale copy can cost a miss, never a wrong or a cross-tenant answer.

Keeping the copies current, with Redis (keys under `finops:cache:`):
- `sg:{org}` the org's generation: INCRed by every semantic store, after its row is committed, in the same script
  that appends the entry to the stream `ss:{org}` with the generation as its id (`{gen}-0`), trimmed to the newest
  FINOPS_CACHE_STATIC_INDEX_STREAM entries.
- `se:{org}` the org's epoch: INCRed when entries are deleted (an admin invalidation), so every copy reloads.
The exact tier's lookup reads both in the same MGET as the exact key, so knowing that a copy is current costs no
round trip. A copy behind reads the stream from its own generation on; one too far behind (the stream was trimmed
past it, or Redis restarted) or of another epoch reloads the org from Postgres. Without Redis (down, or an
unknown generation), for an org over FINOPS_CACHE_STATIC_INDEX_MAX_ENTRIES live entries, or a scope over
FINOPS_CACHE_STATIC_INDEX_SCOPE_MAX (the scan is brute force: about 0.1 ms per thousand entries), stage 1 falls back
to the pgvector search (apps.cache.selectors.static_candidates), as before.

Expired entries are skipped by the search and dropped when a scope is compacted; entries deleted by the hourly
purge are expired already. Memory: STATIC_DIM × 4 bytes plus the guard signature per entry; the whole copy is
capped at FINOPS_CACHE_STATIC_INDEX_TOTAL entries per process (the least recently used org is dropped first).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from apps.cache.selectors import StaticCandidate
from apps.embeddings import STATIC_DIM
from finops.asyncdb import query_bounded
from finops.asyncredis import get_redis, redis_script
from finops.conf import conf
from finops.runtime import runtime

logger = logging.getLogger(__name__)

PREFIX = "finops:cache:"


def generation_key(org_id: int) -> str:
    return f"{PREFIX}sg:{org_id}"


def epoch_key(org_id: int) -> str:
    return f"{PREFIX}se:{org_id}"


def stream_key(org_id: int) -> str:
    return f"{PREFIX}ss:{org_id}"


Scope = tuple[str, str, str]  # model class, context hash, params hash


@dataclass(frozen=True, slots=True)
class Versions:
    """An org's generation and epoch as Redis has them (0 when the key does not exist)."""

    generation: int
    epoch: int

    @classmethod
    def parse(cls, generation: Any, epoch: Any) -> Versions:
        return cls(generation=int(generation or 0), epoch=int(epoch or 0))


@dataclass(slots=True)
class Entry:
    id: int
    scope: Scope
    vector: np.ndarray  # unit, float32, STATIC_DIM
    guard: str  # the guard signature as stored (JSON), parsed only for a near entry
    created: float  # epoch seconds
    expires: float


class _ScopeRows:
    """The entries of one scope of one org: a growable matrix of unit vectors and their columns."""

    def __init__(self) -> None:
        self.n = 0
        self.ids = np.zeros(8, dtype=np.int64)
        self.vectors = np.zeros((8, STATIC_DIM), dtype=np.float32)
        self.created = np.zeros(8, dtype=np.float64)
        self.expires = np.zeros(8, dtype=np.float64)
        self.guards: list[str] = []
        self.row_of: dict[int, int] = {}

    def put(self, entry: Entry) -> bool:
        """Add or refresh (same id: the prompt was stored again); True when added."""
        row = self.row_of.get(entry.id)
        added = row is None
        if row is None:
            if self.n == len(self.ids):
                self._grow()
            row = self.n
            self.n += 1
            self.row_of[entry.id] = row
            self.guards.append(entry.guard)
        else:
            self.guards[row] = entry.guard
        self.ids[row] = entry.id
        self.vectors[row] = entry.vector
        self.created[row] = entry.created
        self.expires[row] = entry.expires
        return added

    def _grow(self) -> None:
        size = len(self.ids) * 2
        for name in ("ids", "created", "expires"):
            old = getattr(self, name)
            new = np.zeros(size, dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)
        vectors = np.zeros((size, STATIC_DIM), dtype=np.float32)
        vectors[: self.n] = self.vectors[: self.n]
        self.vectors = vectors

    def compact(self, now: float) -> int:
        """Drop expired rows; the number dropped."""
        live = np.flatnonzero(self.expires[: self.n] > now)
        dropped = self.n - len(live)
        if dropped:
            self.ids[: len(live)] = self.ids[live]
            self.vectors[: len(live)] = self.vectors[live]
            self.created[: len(live)] = self.created[live]
            self.expires[: len(live)] = self.expires[live]
            self.guards = [self.guards[i] for i in live]
            self.n = len(live)
            self.row_of = {int(i): r for r, i in enumerate(self.ids[: self.n])}
        return dropped

    def nearest(
        self, vector: np.ndarray, *, k: int, min_similarity: float, not_before: float, now: float
    ) -> list[StaticCandidate]:
        if self.n == 0:
            return []
        similarity = self.vectors[: self.n] @ vector
        eligible = (similarity >= min_similarity) & (self.expires[: self.n] > now) & (self.created[: self.n] >= not_before)
        rows = np.flatnonzero(eligible)
        if len(rows) > k:
            rows = rows[np.argpartition(-similarity[rows], k - 1)[:k]]
        rows = rows[np.argsort(-similarity[rows], kind="stable")]
        return [
            StaticCandidate(id=int(self.ids[r]), similarity=float(similarity[r]), guard=json.loads(self.guards[r])) for r in rows
        ]


@dataclass(slots=True)
class _OrgCopy:
    versions: Versions
    loaded_at: float
    scopes: dict[Scope, _ScopeRows] = field(default_factory=dict)
    entries: int = 0
    complete: bool = True  # False: more live entries than the cap, stage 1 asks Postgres
    expired_seen: int = 0

    def put(self, entry: Entry) -> None:
        rows = self.scopes.get(entry.scope)
        if rows is None:
            rows = self.scopes[entry.scope] = _ScopeRows()
        if rows.put(entry):
            self.entries += 1

    def compact(self, now: float) -> None:
        for rows in self.scopes.values():
            self.entries -= rows.compact(now)


_LOAD_SQL = """
SELECT id, model_class, system_prompt_hash, params_hash, static_embedding, guard::text AS guard,
       extract(epoch FROM created_at)::float8 AS created, extract(epoch FROM expires_at)::float8 AS expires
FROM semantic_cache_entries
WHERE org_id = $1 AND expires_at > now() AND static_embedding IS NOT NULL
"""

# Counted first (up to the cap and one), so that an org over the cap is not read whole at every reload.
_COUNT_SQL = """
SELECT count(*) FROM (
    SELECT 1 FROM semantic_cache_entries
    WHERE org_id = $1 AND expires_at > now() AND static_embedding IS NOT NULL
    LIMIT $2
) live
"""


class StaticIndex:
    """The copies of one process (one event loop: apps.cache.lookup gets it through `static_index()`).

    An org's first lookup, or one after an invalidation, starts loading the org's copy in the background and is
    answered by Postgres meanwhile: no request waits for a load. A copy a few generations behind catches up from the
    stream before answering (one XRANGE, shared by the org's concurrent lookups).
    """

    def __init__(self) -> None:
        self.orgs: OrderedDict[int, _OrgCopy] = OrderedDict()  # least recently used first
        self._loading: dict[int, asyncio.Task] = {}
        self._catching_up: dict[int, asyncio.Future] = {}
        self._retry_at: dict[int, float] = {}  # after a failed load: Postgres answers until then

    @property
    def entries(self) -> int:
        return sum(copy.entries for copy in self.orgs.values())

    async def candidates(
        self,
        *,
        org_id: int,
        scope: Scope,
        vector: np.ndarray,
        k: int,
        min_similarity: float,
        not_before: float,
        versions: Versions | None,
    ) -> list[StaticCandidate] | None:
        """Stage 1 from the copy; None when the copy cannot answer (no versions, no copy yet, another epoch, the
        org over the cap, or Redis failed while catching up): the caller asks Postgres."""
        if versions is None:
            return None
        copy = self.orgs.get(org_id)
        now = time.time()
        if copy is None or copy.versions.epoch != versions.epoch:
            self._start_load(org_id)
            return None
        if now - copy.loaded_at > conf().cache_static_index_reload_s:
            self._start_load(org_id)  # a periodic reload; this copy answers meanwhile
        if copy.versions.generation < versions.generation and not await self._catch_up(org_id, copy, versions):
            self._start_load(org_id)
            return None
        self.orgs.move_to_end(org_id)
        if not copy.complete:
            return None
        rows = copy.scopes.get(scope)
        if rows is None:
            return []
        if rows.n > conf().cache_static_index_scope_max:
            return None  # a brute-force scan this long costs more than pgvector's HNSW: Postgres answers
        if rows.n >= 64 and (rows.expires[: rows.n] <= now).sum() * 2 > rows.n:
            copy.entries -= rows.compact(now)
        return rows.nearest(vector, k=k, min_similarity=min_similarity, not_before=not_before, now=now)

    async def _catch_up(self, org_id: int, copy: _OrgCopy, versions: Versions) -> bool:
        running = self._catching_up.get(org_id)
        if running is None:
            running = asyncio.ensure_future(self._read_stream(org_id, copy, versions))
            self._catching_up[org_id] = running
            running.add_done_callback(lambda _f: self._catching_up.pop(org_id, None))
        try:
            return bool(await asyncio.shield(running)) and copy.versions.generation >= versions.generation
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("cache: static index of org %s could not catch up (%s); stage 1 asks Postgres", org_id, exc)
            return False

    async def _read_stream(self, org_id: int, copy: _OrgCopy, versions: Versions) -> bool:
        """Apply the stream's entries after the copy's generation; False when it has a gap (trimmed, restarted)."""
        first = copy.versions.generation + 1
        items: Any = await get_redis().xrange(
            stream_key(org_id), min=f"{first}-0", max="+", count=conf().cache_static_index_stream
        )
        expected = first
        for stream_id, fields in items or []:
            generation = int(bytes(stream_id).split(b"-")[0])
            if generation != expected:
                return False
            expected += 1
            entry = _entry_from_stream(fields) if copy.complete else None  # an org over the cap keeps no entries
            if entry is not None:
                copy.put(entry)
        if expected <= versions.generation:
            return False  # fewer entries than generations: some were trimmed or lost
        copy.versions = Versions(generation=expected - 1, epoch=copy.versions.epoch)
        if copy.entries > conf().cache_static_index_max_entries:
            copy.complete = False
        return True

    def _start_load(self, org_id: int) -> None:
        if org_id in self._loading or time.monotonic() < self._retry_at.get(org_id, 0.0):
            return
        task = asyncio.ensure_future(self._load(org_id))
        self._loading[org_id] = task
        task.add_done_callback(lambda t: self._loaded(org_id, t))

    def _loaded(self, org_id: int, task: asyncio.Task) -> None:
        self._loading.pop(org_id, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._retry_at[org_id] = time.monotonic() + LOAD_RETRY_S
            logger.warning("cache: static index of org %s not loaded (%s); stage 1 asks Postgres", org_id, exc)

    async def wait_loaded(self, org_id: int) -> None:
        """Wait for the org's load in progress, if any (tests, and the evaluation's warm-up)."""
        task = self._loading.get(org_id)
        if task is not None:
            await asyncio.wait([task])

    async def _load(self, org_id: int) -> None:
        """The org's live entries from Postgres. The versions are read first: every entry of a generation up to
        them is committed (the store bumps the generation after its commit), later ones come from the stream."""
        redis = get_redis()
        ttl = conf().cache_max_ttl_s
        # A random first epoch, so that a restarted Redis (every key gone) is never mistaken for the same history.
        await redis.set(epoch_key(org_id), secrets.randbelow(2**62) + 1, nx=True, ex=ttl)
        generation, epoch = await redis.mget(generation_key(org_id), epoch_key(org_id))
        versions = Versions.parse(generation, epoch)
        cap = conf().cache_static_index_max_entries
        timeout_ms = conf().cache_static_index_load_timeout_ms
        live = await query_bounded("fetchval", _COUNT_SQL, org_id, cap + 1, timeout_ms=timeout_ms, trips=False)
        rows = [] if live > cap else await query_bounded("fetch", _LOAD_SQL, org_id, timeout_ms=timeout_ms, trips=False)
        copy = _OrgCopy(versions=versions, loaded_at=time.time())
        if live > cap or len(rows) > cap:
            copy.complete = False  # no entries kept: stage 1 asks pgvector's HNSW for this org
        else:
            for row in rows:
                copy.put(
                    Entry(
                        id=row["id"],
                        scope=(row["model_class"], row["system_prompt_hash"], row["params_hash"]),
                        vector=np.asarray(row["static_embedding"], dtype=np.float32),
                        guard=row["guard"],
                        created=row["created"],
                        expires=row["expires"],
                    )
                )
        self.orgs[org_id] = copy
        self.orgs.move_to_end(org_id)
        self._evict()

    def _evict(self) -> None:
        total_cap = conf().cache_static_index_total
        while len(self.orgs) > 1 and self.entries > total_cap:
            self.orgs.popitem(last=False)

    async def aclose(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()
        if self._loading:
            await asyncio.wait(list(self._loading.values()))


LOAD_RETRY_S = 30.0


def _entry_from_stream(fields: dict[bytes, bytes]) -> Entry | None:
    try:
        meta = json.loads(fields[b"m"])
        vector = np.frombuffer(fields[b"v"], dtype="<f4").astype(np.float32)
        if vector.shape != (STATIC_DIM,):
            return None
        return Entry(
            id=int(meta["id"]),
            scope=(meta["mc"], meta["ch"], meta["ph"]),
            vector=vector,
            guard=meta["g"],
            created=float(meta["c"]),
            expires=float(meta["e"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        logger.warning("cache: unreadable static index stream entry skipped: %s", exc)
        return None


async def _close(index: StaticIndex) -> None:
    await index.aclose()


def static_index() -> StaticIndex:
    """This event loop's copies (one per gateway process; a test's loop gets its own)."""
    index: StaticIndex = runtime().get_or_put("cache.static_index", StaticIndex, close=_close)
    return index


# Appended by every semantic store, after its row is committed: the generation, then the entry under it.
_PUBLISH_LUA = """
local generation = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], generation .. '-0', 'm', ARGV[1], 'v', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return generation
"""


async def static_index_publish(
    *, org_id: int, entry_id: int, scope: Scope, vector: np.ndarray, guard: str, created: float, expires: float
) -> None:
    """Tell every process's copy about a stored entry (raises RedisError: the caller logs it; the copies catch up
    at their next reload)."""
    meta = json.dumps(
        {"id": entry_id, "mc": scope[0], "ch": scope[1], "ph": scope[2], "g": guard, "c": created, "e": expires},
        separators=(",", ":"),
    )
    await redis_script(
        get_redis(),
        _PUBLISH_LUA,
        [generation_key(org_id), stream_key(org_id)],
        [meta, np.asarray(vector, dtype="<f4").tobytes(), conf().cache_static_index_stream, conf().cache_max_ttl_s],
    )


def static_index_forget_sync(client: Any, org_id: int) -> None:
    """After entries of `org_id` were deleted (sync code: admin invalidation): every copy reloads the org."""
    try:
        client.incr(epoch_key(org_id))
        client.expire(epoch_key(org_id), conf().cache_max_ttl_s)
    except RedisError as exc:  # the copies reload within FINOPS_CACHE_STATIC_INDEX_RELOAD_S; confirmation reads Postgres
        logger.warning("cache: static index of org %s not told of the invalidation: %s", org_id, exc)
