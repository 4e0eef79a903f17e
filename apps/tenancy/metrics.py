"""Tenancy metrics. Labels are bounded: the limiter backend, the auth failure reason (per-key counts live in the ledger)."""

from __future__ import annotations

from prometheus_client import Counter

RATE_LIMITED = Counter(
    "finops_api_key_rate_limited_total",
    "Requests refused by a per-key rate limit (ApiKey.rate_limit_per_minute), by limiter (redis, local).",
    ["limiter"],
)

AUTH_STALE = Counter(
    "finops_gateway_auth_stale_total",
    "Requests authenticated from a key's last known state because the key lookup failed (Postgres unreachable).",
)

AUTH_FAILURES = Counter(
    "finops_gateway_auth_failures_total",
    "Gateway requests refused at authentication, by reason (missing, unknown, revoked, throttled); only a sample "
    "of them gets a ledger row (FINOPS_AUTH_FAILURE_ROWS_PER_MINUTE).",
    ["reason"],
)
