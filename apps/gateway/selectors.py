"""Reads of the hot path, served from short in-process caches so a request needs no database round trip.

- `caller_for_secret`: the API key behind a bearer secret (SHA-256 lookup, constant-time compare),
  cached for FINOPS["API_KEY_CACHE_SECONDS"] — so a revoked key stops working within that window.
  While Postgres is unreachable, a key the gateway resolved within FINOPS["API_KEY_STALE_SECONDS"]
  keeps its last known resolution (stale-if-error); see `caller_for_secret`.
- `catalog_get`: the price rows and the upstream providers, reloaded in the background every
  FINOPS["GATEWAY_CATALOG_CACHE_SECONDS"]; a cost is computed from the price row in force without a query.

Both use the asyncpg pool (`finops.asyncdb`), never the ORM.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field

from django.conf import settings

from apps.gateway import metrics
from apps.gateway.context import Caller
from apps.ledger.pricing import Price
from finops.asyncdb import get_pool

logger = logging.getLogger(__name__)

MOCK_PROVIDER = "mock"
ALL_PRICED = "*"
_KEY_CACHE_MAX = 50_000

_KEY_SQL = """
SELECT k.id, k.prefix, k.key_hash, k.org_id, k.team_id, k.member_id, k.revoked_at, k.rate_limit_per_minute,
       o.store_prompts, o.allow_model_pinning
FROM tenancy_apikey k JOIN tenancy_organization o ON o.id = k.org_id
WHERE k.key_hash = $1
"""
_PRICES_SQL = """
SELECT id, provider, model, input_per_1m, output_per_1m, cached_input_per_1m, effective_from, effective_to
FROM model_prices ORDER BY model, effective_from DESC
"""
_PROVIDERS_SQL = """
SELECT name, base_url, api_key_env, served_models, timeout_s, connect_timeout_s, max_connections, enabled
FROM gateway_provider ORDER BY name
"""

# --- API keys ---------------------------------------------------------------------------------

@dataclass(slots=True)
class _KeyEntry:
    fresh_until: float  # monotonic: served without a query until then
    stale_until: float  # monotonic: last confirmed by Postgres + API_KEY_STALE_SECONDS
    caller: Caller | None
    revoked: bool


_key_cache: dict[str, _KeyEntry] = {}
# During an outage a key is re-checked against Postgres at most this often; in between, its stale entry answers.
_STALE_RECHECK_S = 1.0


async def caller_for_secret(secret: str) -> tuple[Caller | None, bool]:
    """(caller, revoked): the key's caller, or (None, False) for an unknown key.

    A revoked key still names its caller, so that the rejected request is attributed to the org it
    belonged to (a leaked key shows up on the org's ledger), but `revoked` is True and it is refused.

    Stale-if-error: when the lookup fails (Postgres down or hung) and this process resolved the key
    within the last FINOPS["API_KEY_STALE_SECONDS"], that resolution is served again — an active key
    keeps working, a key seen revoked stays refused. A key never seen (or seen only as unknown) raises,
    and the gateway answers 503: it cannot tell a new key from a forged one without the database. The
    window is bounded because a key revoked during the outage cannot be known until Postgres is back.
    """
    digest = hashlib.sha256(secret.encode()).hexdigest()
    cfg = settings.FINOPS
    ttl = cfg["API_KEY_CACHE_SECONDS"]
    stale_s = cfg["API_KEY_STALE_SECONDS"]
    now = time.monotonic()
    entry = _key_cache.get(digest)
    if entry is not None and entry.fresh_until > now:
        return entry.caller, entry.revoked
    fallback = entry if entry is not None and entry.caller is not None and entry.stale_until > now else None
    try:
        if fallback is None:
            row = await _key_row(digest)
        else:  # a known key: do not make it wait the full command timeout on a hung database
            row = await asyncio.wait_for(_key_row(digest), cfg["API_KEY_REVALIDATE_TIMEOUT_MS"] / 1000)
    except Exception as exc:
        if fallback is None:
            raise
        fallback.fresh_until = now + min(_STALE_RECHECK_S, fallback.stale_until - now)
        metrics.AUTH_STALE.inc()
        logger.warning("API key lookup failed (%s); serving key %s… from its last known state", type(exc).__name__,
                       fallback.caller.api_key_prefix)  # fmt: skip
        return fallback.caller, fallback.revoked
    caller = None
    revoked = False
    # The lookup is by hash; compare_digest keeps the final check constant-time all the same.
    if row is not None and hmac.compare_digest(row["key_hash"], digest):
        revoked = row["revoked_at"] is not None
        caller = Caller(
            api_key_id=row["id"],
            api_key_prefix=row["prefix"],
            org_id=row["org_id"],
            team_id=row["team_id"],
            member_id=row["member_id"],
            store_prompts=row["store_prompts"],
            allow_model_pinning=row["allow_model_pinning"],
            rate_limit_per_minute=row["rate_limit_per_minute"],
        )
    # Unknown keys are cached only for the fresh TTL (0: not at all): they are never served stale.
    if ttl > 0 or (caller is not None and stale_s > 0):
        if len(_key_cache) >= _KEY_CACHE_MAX:
            _key_cache.clear()  # bounded memory: a flood of random keys cannot grow it forever
        _key_cache[digest] = _KeyEntry(now + ttl, now + max(stale_s, ttl), caller, revoked)
    return caller, revoked


async def _key_row(digest: str):
    pool = await get_pool()
    return await pool.fetchrow(_KEY_SQL, digest)


def caller_cache_clear() -> None:
    _key_cache.clear()


# --- catalog: prices and upstreams ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upstream:
    """One OpenAI-compatible provider, with its secret resolved from the environment."""

    name: str
    base_url: str
    api_key: str
    timeout_s: float
    connect_timeout_s: float
    max_connections: int
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _PriceWindow:
    effective_from: dt.date
    effective_to: dt.date | None
    price: Price


@dataclass(slots=True)
class Catalog:
    loaded_at: float
    prices: dict[str, list[_PriceWindow]] = field(default_factory=dict)  # newest window first
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    model_upstream: dict[str, Upstream] = field(default_factory=dict)
    router_models: frozenset[str] = frozenset()

    def price_for(self, model: str, on: dt.date) -> Price | None:
        for window in self.prices.get(model, ()):
            if window.effective_from <= on and (window.effective_to is None or window.effective_to > on):
                return window.price
        return None

    def upstream_for(self, model: str) -> Upstream | None:
        return self.model_upstream.get(model)

    def is_router_name(self, model: str) -> bool:
        """A name the router resolves ("auto", "finops/<route or tier>"): entries ending in * are prefixes."""
        return model in self.router_models or any(r.endswith("*") and model.startswith(r[:-1]) for r in self.router_models)

    def is_known(self, model: str) -> bool:
        return model in self.model_upstream or self.is_router_name(model)

    def served_models(self) -> list[str]:
        return sorted(self.model_upstream)


_catalog: Catalog | None = None
_refreshing: asyncio.Task | None = None


async def catalog_get() -> Catalog:
    """The cached catalog; a stale one is served while a background task reloads it."""
    global _refreshing
    ttl = settings.FINOPS["GATEWAY_CATALOG_CACHE_SECONDS"]
    catalog = _catalog
    if catalog is None or ttl <= 0:
        return await catalog_refresh()
    if time.monotonic() - catalog.loaded_at > ttl and (_refreshing is None or _refreshing.done()):
        _refreshing = asyncio.get_running_loop().create_task(_refresh_quietly())
    return catalog


async def _refresh_quietly() -> None:
    try:
        await catalog_refresh()
    except Exception:  # keep serving the previous catalog; try again after the next TTL
        logger.exception("catalog refresh failed; serving the cached prices and providers")
        if _catalog is not None:
            _catalog.loaded_at = time.monotonic()


async def catalog_refresh() -> Catalog:
    global _catalog
    pool = await get_pool()
    async with pool.acquire() as conn:
        price_rows = await conn.fetch(_PRICES_SQL)
        try:
            provider_rows = await conn.fetch(_PROVIDERS_SQL)
        except Exception as exc:  # the gateway migration is not applied yet: settings providers only
            logger.warning("gateway_provider unreadable (%s); using FINOPS_UPSTREAMS only", exc)
            provider_rows = []
    _catalog = catalog_build(price_rows=price_rows, provider_rows=provider_rows)
    return _catalog


def catalog_build(*, price_rows, provider_rows) -> Catalog:
    catalog = Catalog(loaded_at=time.monotonic(), router_models=frozenset(settings.FINOPS["GATEWAY_ROUTER_MODELS"]))
    for row in price_rows:
        window = _PriceWindow(row["effective_from"], row["effective_to"], Price.from_row(row))
        catalog.prices.setdefault(row["model"], []).append(window)
    for windows in catalog.prices.values():
        windows.sort(key=lambda w: w.effective_from, reverse=True)

    catalog.upstreams = _upstreams(provider_rows)
    explicit: dict[str, Upstream] = {}
    wildcard: dict[str, Upstream] = {}
    for upstream in catalog.upstreams.values():
        for model in upstream.models:
            if model == ALL_PRICED:
                for priced_model, windows in catalog.prices.items():
                    if upstream.name == MOCK_PROVIDER or windows[0].price.provider == upstream.name:
                        wildcard.setdefault(priced_model, upstream)
            else:
                explicit.setdefault(model, upstream)
    catalog.model_upstream = {**wildcard, **explicit}
    return catalog


def _upstreams(provider_rows) -> dict[str, Upstream]:
    cfg = settings.FINOPS
    mock_url = cfg["MOCK_LLM_URL"]
    if mock_url:
        # Mock mode: every priced model goes to the mock, so a development setup never spends real money.
        return {
            MOCK_PROVIDER: Upstream(
                name=MOCK_PROVIDER,
                base_url=mock_url,
                api_key="sk-mock",
                timeout_s=cfg["UPSTREAM_TIMEOUT_S"],
                connect_timeout_s=cfg["UPSTREAM_CONNECT_TIMEOUT_S"],
                max_connections=cfg["UPSTREAM_MAX_CONNECTIONS"],
                models=(ALL_PRICED,),
            )
        }
    specs: dict[str, dict] = {}
    for spec in cfg["UPSTREAMS"]:
        specs[spec["name"]] = dict(spec)
    for row in provider_rows:
        if not row["enabled"]:
            specs.pop(row["name"], None)
            continue
        models = row["served_models"]
        specs[row["name"]] = {
            "name": row["name"],
            "base_url": row["base_url"],
            "api_key_env": row["api_key_env"],
            "models": json.loads(models) if isinstance(models, str) else models,
            "timeout_s": row["timeout_s"],
            "connect_timeout_s": row["connect_timeout_s"],
            "max_connections": row["max_connections"],
        }
    upstreams: dict[str, Upstream] = {}
    for name, spec in specs.items():
        key_env = spec.get("api_key_env") or ""
        api_key = os.environ.get(key_env, "") if key_env else "not-needed"
        if not api_key:
            logger.info("upstream %s skipped: environment variable %s is not set", name, key_env)
            continue
        upstreams[name] = Upstream(
            name=name,
            base_url=spec["base_url"].rstrip("/"),
            api_key=api_key,
            timeout_s=float(spec.get("timeout_s") or cfg["UPSTREAM_TIMEOUT_S"]),
            connect_timeout_s=float(spec.get("connect_timeout_s") or cfg["UPSTREAM_CONNECT_TIMEOUT_S"]),
            max_connections=int(spec.get("max_connections") or cfg["UPSTREAM_MAX_CONNECTIONS"]),
            models=tuple(spec.get("models") or ()),
        )
    return upstreams
