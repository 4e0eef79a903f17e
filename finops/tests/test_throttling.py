"""DRF throttling of /api/* (finops.throttling) and cached sessions: both in Redis through django-redis."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext


@pytest.fixture
def api_rate(settings, redis_client):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": "3/min"}}


def test_the_api_is_throttled_per_key_with_retry_after(client, make_tenant, api_rate):
    acme = make_tenant(org="Acme")
    globex = make_tenant(org="Globex", team="Risk", user="gina")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {acme.secret}"}
    statuses = [client.get("/api/spend/", **auth).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = client.get("/api/anomalies/", **auth)  # one budget for every /api/* endpoint of the caller
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "throttled"
    # Another key has its own budget.
    assert client.get("/api/spend/", HTTP_AUTHORIZATION=f"Bearer {globex.secret}").status_code == 200


def test_only_api_paths_are_throttled(make_tenant, api_rate):
    """`/chat` is DRF too, but its limits are the gateway's (per-key rate limit, budgets): no cache key, no throttle."""
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from apps.tenancy.authentication import ApiKeyUser
    from finops.throttling import ApiRateThrottle

    acme = make_tenant(org="Acme")
    factory = APIRequestFactory()
    for path, throttled in (("/api/spend/", True), ("/api/budgets/", True), ("/chat", False), ("/v1/models", False)):
        request = Request(factory.get(path))
        request.user = ApiKeyUser(acme.api_key)
        key = ApiRateThrottle().get_cache_key(request, view=None)
        assert (key is not None) == throttled, path
        if throttled:
            assert key.endswith(f"key:{acme.api_key.pk}")


def test_sessions_are_read_from_redis(client, django_user_model, redis_client):
    user = django_user_model.objects.create_superuser("root", password="pw-root-123")
    client.force_login(user)
    session_key = client.cookies["sessionid"].value
    assert cache.get(f"django.contrib.sessions.cached_db{session_key}") is not None
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/admin/password_change/").status_code == 200
    assert not [q for q in queries.captured_queries if "django_session" in q["sql"]]
