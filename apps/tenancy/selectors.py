from __future__ import annotations

import hmac

from apps.tenancy.models import ApiKey
from apps.tenancy.services import api_key_hash


def api_key_for_secret(*, secret: str) -> ApiKey | None:
    """The active key for a presented secret, or None. The hash is compared in constant time."""
    digest = api_key_hash(secret)
    key = (
        ApiKey.objects.select_related("member", "team", "org")
        .filter(key_hash=digest, revoked_at__isnull=True)
        .first()
    )
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    return key
