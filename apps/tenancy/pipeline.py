"""Pipeline hook of tenancy: the per-key rate limit (stage 2b of apps.gateway.pipeline).

Contract with apps.gateway.pipeline:
- `api_key_rate_admit(ctx)` runs after stage 2 resolved an active key (ctx.caller set) and before anything
  else, for chat requests (/v1/chat/completions, /chat). It counts the request against the key's
  `rate_limit_per_minute` (0 = unlimited) and raises finops.errors.RateLimited (429, code
  `rate_limit_exceeded`, a Retry-After header) when the key has used its minute. Refused requests are
  not counted, so a client that keeps retrying is not locked out for longer.

The window is the sliding window of apps.budgets.limiter: in Redis, shared by every gateway worker; if
Redis does not answer within FINOPS["API_KEY_RATE_LIMIT_TIMEOUT_MS"], each process keeps its own window
of the same size (the bound becomes N per process while Redis is down: still bounded).
"""

from __future__ import annotations

import math

from django.conf import settings

from apps.budgets.limiter import window_admit
from apps.gateway.context import RequestContext
from apps.tenancy import metrics
from finops.errors import RateLimited


def rate_limit_key(*, org_id: int, api_key_id: int) -> str:
    # The {o<org>} hash tag keeps one org's keys in one Redis Cluster slot, like the budget keys.
    return f"finops:ratelimit:{{o{org_id}}}:k{api_key_id}"


async def api_key_rate_admit(ctx: RequestContext) -> None:
    caller = ctx.caller
    limit = caller.rate_limit_per_minute if caller is not None else 0
    if not limit:
        return
    admission = await window_admit(
        key=rate_limit_key(org_id=caller.org_id, api_key_id=caller.api_key_id),
        limit=limit,
        token=str(ctx.request_id),
        timeout_s=settings.FINOPS["API_KEY_RATE_LIMIT_TIMEOUT_MS"] / 1000,
    )
    if admission.admitted:
        return
    metrics.RATE_LIMITED.labels(limiter=admission.limiter).inc()
    retry_after = max(1, math.ceil(admission.retry_after_s))
    raise RateLimited(
        f"Rate limit reached for this API key ({caller.api_key_prefix}…): {limit} requests per minute. "
        f"Retry in {retry_after} s.",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )
