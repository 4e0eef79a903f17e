"""The management API (/api/*) shares the gateway's per-address limit on failed authentications: past it, an
unknown key gets 429 before the key table is read. (The gateway's side: apps/gateway/tests/test_security_keys.py.)"""

from __future__ import annotations

import secrets

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.tenancy.keys import caller_cache_clear

pytestmark = pytest.mark.django_db

LIMIT = 3


@pytest.fixture(autouse=True)
def fresh_counters(settings):
    settings.FINOPS = {**settings.FINOPS, "AUTH_FAILURES_PER_MINUTE": LIMIT}
    caller_cache_clear()
    yield
    caller_cache_clear()


def get(client, secret: str, address: str):
    return client.get("/api/spend/", HTTP_AUTHORIZATION=f"Bearer {secret}", REMOTE_ADDR=address)


def test_an_address_guessing_keys_is_throttled_before_the_lookup(client, make_tenant):
    tenant = make_tenant()
    for _ in range(LIMIT):
        assert get(client, "fo-" + secrets.token_urlsafe(24), "198.51.100.7").status_code == 401
    with CaptureQueriesContext(connection) as queries:
        throttled = get(client, "fo-" + secrets.token_urlsafe(24), "198.51.100.7")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "auth_rate_limited"
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert not [q for q in queries.captured_queries if "tenancy_apikey" in q["sql"]]
    # Another address is not affected, and a valid key is served.
    assert get(client, "fo-" + secrets.token_urlsafe(24), "198.51.100.8").status_code == 401
    assert get(client, tenant.secret, "198.51.100.8").status_code == 200
