"""The budgets' fail-open limiter: while the budget database is unreachable, N requests a minute per user.

The window itself is core's (`finops.ratelimit`): in Redis, shared by every gateway worker, with an
in-process fallback of the same size when Redis does not answer.
"""

from __future__ import annotations

from django.conf import settings

from finops.ratelimit import window_admit


def limiter_key(*, org_id: int, member_id: int) -> str:
    # The {o<org>} hash tag keeps one org's budget keys in one Redis Cluster slot.
    return f"finops:budget:failopen:{{o{org_id}}}:m{member_id}"


async def fail_open_admit(*, org_id: int, member_id: int, token: str, timeout_s: float | None = None) -> tuple[bool, str]:
    """Count one fail-open request for this user; returns (admitted, limiter) with limiter 'redis' or 'local'.

    `timeout_s` bounds the Redis attempt (default BUDGET_LIMITER_TIMEOUT_MS); past it the in-process window decides.
    """
    if timeout_s is None:
        timeout_s = settings.FINOPS["BUDGET_LIMITER_TIMEOUT_MS"] / 1000
    admission = await window_admit(
        key=limiter_key(org_id=org_id, member_id=member_id),
        limit=settings.FINOPS["BUDGET_FAIL_OPEN_RPM"],
        token=token,
        timeout_s=timeout_s,
    )
    return admission.admitted, admission.limiter
