"""The fail-open limiter: while the budget database is unreachable, each user gets FINOPS["BUDGET_FAIL_OPEN_RPM"]
requests a minute, counted in the shared sliding window of `finops.limiter` (Redis, in-process if Redis is down).
"""

from __future__ import annotations

from finops.conf import conf
from finops.limiter import window_admit


def limiter_key(*, org_id: int, member_id: int) -> str:
    # The {o<org>} hash tag keeps one org's budget keys in one Redis Cluster slot.
    return f"finops:budget:failopen:{{o{org_id}}}:m{member_id}"


async def fail_open_admit(*, org_id: int, member_id: int, token: str, timeout_s: float | None = None) -> tuple[bool, str]:
    """Count one fail-open request for this user; returns (admitted, limiter) with limiter 'redis' or 'local'.

    `timeout_s` bounds the Redis attempt (default BUDGET_LIMITER_TIMEOUT_MS); past it the in-process window decides.
    """
    if timeout_s is None:
        timeout_s = conf().budget_limiter_timeout_ms / 1000
    admission = await window_admit(
        key=limiter_key(org_id=org_id, member_id=member_id),
        limit=conf().budget_fail_open_rpm,
        token=token,
        timeout_s=timeout_s,
    )
    return admission.admitted, admission.limiter
