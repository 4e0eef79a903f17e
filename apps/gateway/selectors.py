"""Reads of the hot path, served from short in-process caches so a request needs no database round trip.

- `catalog_get`: the price rows and the upstream providers, reloaded in the background every
  FINOPS["GATEWAY_CATALOG_CACHE_SECONDS"]; a cost is computed from the price row in force without a query.

Both use the asyncpg pool (`finops.asyncdb`), never the ORM.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings

from apps.gateway.upstream_policy import base_url_refusal, key_env_refusal
from apps.ledger.pricing import Price, PriceBook
from apps.ledger.selectors import price_book_fetch
from finops.asyncdb import get_pool
from finops.conf import conf

logger = logging.getLogger(__name__)

MOCK_PROVIDER = "mock"
ALL_PRICED = "*"

_PROVIDERS_SQL = """
SELECT name, kind, options, base_url, api_key_env, served_models, timeout_s, connect_timeout_s, max_connections, enabled
FROM gateway_provider ORDER BY name
"""

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
    kind: str = "openai"  # the wire format: openai | anthropic | azure | gemini (apps.gateway.adapters)
    options: dict = field(default_factory=dict, compare=False, hash=False)  # the kind's options (azure: api_version…)
    mock: bool = False  # the built-in mock LLM: the request's X-Mock-* fault injection headers are forwarded


@dataclass(slots=True)
class Catalog:
    loaded_at: float
    prices: PriceBook = field(default_factory=PriceBook)
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    model_upstream: dict[str, Upstream] = field(default_factory=dict)
    router_models: frozenset[str] = frozenset()

    def price_for(self, model: str, on: dt.date) -> Price | None:
        return self.prices.price_for(model, on)

    def upstream_for(self, model: str) -> Upstream | None:
        return self.model_upstream.get(model)

    def is_router_name(self, model: str) -> bool:
        """A name the router resolves ("auto", "finops/<route or tier>"): entries ending in * are prefixes."""
        return model in self.router_models or any(r.endswith("*") and model.startswith(r[:-1]) for r in self.router_models)

    def is_known(self, model: str) -> bool:
        return model in self.model_upstream or self.is_router_name(model)

    def served_models(self) -> list[str]:
        return sorted(self.model_upstream)

    def kind_of(self, model: str) -> str:
        """The model's kind, "chat" or "embedding" (ModelPrice.kind of its newest price row); router names are chat."""
        if self.is_router_name(model):
            return "chat"
        price = self.prices.latest(model)
        return price.kind if price is not None else "chat"


_catalog: Catalog | None = None
_refreshing: asyncio.Task | None = None


async def catalog_get() -> Catalog:
    """The cached catalog; a stale one is served while a background task reloads it."""
    global _refreshing
    ttl = conf().gateway_catalog_cache_seconds
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
        prices = await price_book_fetch(conn)
        try:
            provider_rows = await conn.fetch(_PROVIDERS_SQL)
        except Exception as exc:  # the gateway migration is not applied yet: settings providers only
            logger.warning("gateway_provider unreadable (%s); using FINOPS_UPSTREAMS only", exc)
            provider_rows = []
    _catalog = catalog_build(price_rows=prices, provider_rows=provider_rows)
    return _catalog


def catalog_build(*, price_rows: PriceBook | Iterable, provider_rows) -> Catalog:
    """The catalog from price rows (or a PriceBook of them) and provider rows; pure, for tests too."""
    prices = price_rows if isinstance(price_rows, PriceBook) else PriceBook(price_rows)
    catalog = Catalog(
        loaded_at=time.monotonic(), prices=prices, router_models=frozenset(conf().gateway_router_models)
    )

    catalog.upstreams = _upstreams(provider_rows)
    explicit: dict[str, Upstream] = {}
    wildcard: dict[str, Upstream] = {}
    for upstream in catalog.upstreams.values():
        for model in upstream.models:
            if model == ALL_PRICED:
                for priced_model in prices.models():
                    latest = prices.latest(priced_model)  # never None: every model in the book has a window
                    if upstream.name == MOCK_PROVIDER or (latest is not None and latest.provider == upstream.name):
                        wildcard.setdefault(priced_model, _mock_native(catalog.upstreams, prices, priced_model) or upstream)
            else:
                explicit.setdefault(model, upstream)
    catalog.model_upstream = {**wildcard, **explicit}
    return catalog


# Mock mode: the price row's provider → (the adapter kind, its path on the mock).
MOCK_NATIVE_KINDS = {"anthropic": ("anthropic", "/v1"), "google": ("gemini", "/v1beta"), "azure": ("azure", "")}


def _mock_native(upstreams: dict[str, Upstream], prices: PriceBook, model: str) -> Upstream | None:
    price = prices.latest(model)
    native = MOCK_NATIVE_KINDS.get(price.provider) if price is not None else None
    return upstreams.get(f"{MOCK_PROVIDER}-{native[0]}") if native else None


def _upstreams(provider_rows) -> dict[str, Upstream]:
    cfg = settings.FINOPS
    mock_url = cfg["MOCK_LLM_URL"]
    if mock_url:
        # Mock mode: every priced model goes to the mock, so a development setup never spends real money. The mock
        # speaks each native wire format too: a model priced under one of MOCK_NATIVE_KINDS' providers goes through
        # that kind's adapter (mock-anthropic, mock-gemini…), the others through the OpenAI-compatible one.
        root = mock_url.rstrip("/").removesuffix("/v1")
        common = dict(
            api_key="sk-mock", timeout_s=cfg["UPSTREAM_TIMEOUT_S"], connect_timeout_s=cfg["UPSTREAM_CONNECT_TIMEOUT_S"],
            max_connections=cfg["UPSTREAM_MAX_CONNECTIONS"], mock=True,
        )  # fmt: skip
        mocks = {MOCK_PROVIDER: Upstream(name=MOCK_PROVIDER, base_url=mock_url, models=(ALL_PRICED,), **common)}
        for kind, path in MOCK_NATIVE_KINDS.values():
            name = f"{MOCK_PROVIDER}-{kind}"
            mocks[name] = Upstream(name=name, base_url=root + path, models=(), kind=kind, **common)
        return mocks
    specs: dict[str, dict] = {}
    for spec in cfg["UPSTREAMS"]:
        specs[spec["name"]] = dict(spec)
    for row in provider_rows:
        if not row["enabled"]:
            specs.pop(row["name"], None)
            continue
        # A row written around the admin (SQL, a fixture) gets the same policy as the admin form: refused, not used.
        refusal = key_env_refusal(row["api_key_env"] or "") or base_url_refusal(row["base_url"] or "")
        if refusal:
            logger.error("provider row %s ignored: %s", row["name"], refusal)
            continue
        models = row["served_models"]
        options = row["options"] if "options" in row.keys() else {}
        specs[row["name"]] = {
            "name": row["name"],
            "kind": row["kind"] if "kind" in row.keys() else "openai",
            "options": json.loads(options) if isinstance(options, str) else options or {},
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
            kind=spec.get("kind") or "openai",
            options=dict(spec.get("options") or {}),
        )
    return upstreams
