"""Per-process gateway metrics (merged across workers by PROMETHEUS_MULTIPROC_DIR, see finops.metrics).

Labels are bounded: endpoint, outcome (the ledger status), cache status, provider, model, tier. Model
labels only ever carry catalog models (priced or served), never what a client typed; per-key and
per-user figures live in Postgres, not here. Dollars are floats here only — the ledger is the source of truth.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from finops.metrics import child  # noqa: F401 - the memoised .labels() of the hot path

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

REQUESTS = Counter(
    "finops_gateway_requests_total",
    "Requests by endpoint (chat_completions, chat, responses, messages, embeddings), outcome (served, cached, rejected,"
    " failed, disconnected) and cache status.",
    ["endpoint", "outcome", "cache_status"],
)
TOKENS = Counter(
    "finops_gateway_tokens_total",
    "Tokens billed by upstreams, by kind (prompt, completion; cached, cache_write ⊂ prompt; reasoning ⊂ completion).",
    ["provider", "model", "tier", "kind"],
)
COST = Counter(
    "finops_gateway_cost_usd_total", "Upstream cost in USD (float; the ledger has the Decimal).", ["provider", "model", "tier"]
)
SAVED = Counter("finops_gateway_saved_usd_total", "Cost avoided by cache hits, in USD.", ["cache_status"])
UPSTREAM_SECONDS = Histogram(
    "finops_gateway_upstream_seconds",
    "Upstream call latency (to the full body, or to the first chunk of a stream), by outcome (ok, error, timeout).",
    ["provider", "model", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
OVERHEAD_SECONDS = Histogram(
    "finops_gateway_overhead_seconds",
    "Time the gateway adds to a request: total handling time minus the upstream calls.",
    ["endpoint", "cache_status"],
    buckets=_OVERHEAD_BUCKETS,
)
FALLBACKS = Counter(
    "finops_gateway_fallbacks_total",
    "Moves to the next model of the fallback chain, by the model that failed.",
    ["model", "reason"],
)
ESCALATIONS = Counter(
    "finops_gateway_escalations_total", "Low-confidence answers re-asked one tier up, by the first tier.", ["tier"]
)
ABANDONED_DRAINS = Counter(
    "finops_gateway_abandoned_stream_drains_total",
    "Streams whose client left, read on to the end: billed from the provider's usage, or estimated without it.",
    ["outcome"],
)
