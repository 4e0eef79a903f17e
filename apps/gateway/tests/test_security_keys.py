"""Issue #17, security: random API keys cannot evict known ones, are throttled per client address before any
database lookup, and do not write a ledger row each.

The gateway runs against the test database through a TCP proxy (finops.testing.pgproxy) that the test cuts, as in
test_key_cache_outage.py. Client addresses come from X-Forwarded-For, which uvicorn trusts from loopback (as it
would from a reverse proxy on the same host).
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection

from apps.gateway.tests.conftest import unique_prompt
from apps.ledger.models import LLMRequest
from conftest import gateway_server
from conftest import test_database_url as database_url
from finops.conf import FinopsConf
from finops.testing.pgproxy import PgProxy, pg_target

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RANDOM_KEYS = 10_000
KNOWN_CACHE_MAX = 5_000  # fewer than the random keys: were they cached with the known ones, they would evict them
FAILURES_PER_MINUTE = 3


def chat(url: str, secret: str, *, address: str, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(
        f"{url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": unique_prompt("keys")}]},
        headers={"Authorization": f"Bearer {secret}", "X-Forwarded-For": address},
        timeout=30,
    )


def code(response: requests.Response) -> str:
    return response.json()["error"]["code"] if response.status_code != 200 else "ok"


def counter(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def flood(url: str, count: int) -> list[int]:
    """`count` random keys, each from its own address (a distributed flood: the per-address throttle never trips)."""

    def batch(start: int) -> list[int]:
        statuses = []
        with requests.Session() as session:
            for i in range(start, min(start + 500, count)):
                address = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
                statuses.append(chat(url, "fo-" + secrets.token_urlsafe(24), address=address, session=session).status_code)
        return statuses

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [status for statuses in pool.map(batch, range(0, count, 500)) for status in statuses]


def test_random_keys_leave_known_keys_served_from_the_stale_cache_while_postgres_is_down(
    make_tenant, prices, mock_llm_url, redis_client, tmp_path
):
    known = [make_tenant(org=f"Known{i}", team="T", user=f"k{i}") for i in range(3)]
    proxy = PgProxy(pg_target(database_url()))
    env = {
        "DATABASE_URL": proxy.database_url(database_url(), connection.settings_dict["NAME"]),
        "FINOPS_API_KEY_CACHE_SECONDS": "1",
        "FINOPS_API_KEY_STALE_SECONDS": "600",
        "FINOPS_API_KEY_CACHE_MAX": str(KNOWN_CACHE_MAX),
        "FINOPS_API_KEY_NEGATIVE_CACHE_MAX": "1000",
        "FINOPS_AUTH_FAILURES_PER_MINUTE": str(FAILURES_PER_MINUTE),
        # The product's sampling (gateway_server turns it off for the other tests).
        "FINOPS_AUTH_FAILURE_ROWS_PER_MINUTE": str(FinopsConf.auth_failure_rows_per_minute),
        "FINOPS_AUTH_FAILURE_ROWS_MAX_PER_MINUTE": str(FinopsConf.auth_failure_rows_max_per_minute),
        "FINOPS_GATEWAY_CATALOG_CACHE_SECONDS": "600",
        "FINOPS_ROUTER_CONFIG_TTL_S": "600",
        "FINOPS_CACHE_ENABLED": "0",
        "FINOPS_LEDGER_SPOOL_DIR": str(tmp_path),
    }
    try:
        with gateway_server(mock_llm_url=mock_llm_url, env=env) as gateway:
            for tenant in known:
                assert code(chat(gateway, tenant.secret, address="192.0.2.10")) == "ok"

            statuses = flood(gateway, RANDOM_KEYS)
            assert statuses == [401] * RANDOM_KEYS
            # One address trying keys: FAILURES_PER_MINUTE tries, then 429 with Retry-After and no lookup.
            guesser = "198.51.100.66"
            for _ in range(FAILURES_PER_MINUTE):
                assert code(chat(gateway, "fo-" + secrets.token_urlsafe(24), address=guesser)) == "invalid_api_key"
            throttled = chat(gateway, "fo-" + secrets.token_urlsafe(24), address=guesser)
            assert (throttled.status_code, code(throttled)) == (429, "auth_rate_limited")
            assert 1 <= int(throttled.headers["retry-after"]) <= 60
            assert code(chat(gateway, known[0].secret, address=guesser)) == "ok"  # a known key from there still works
            scraped = requests.get(f"{gateway}/metrics", timeout=10).text

            proxy.outage()
            time.sleep(1.3)  # the known keys' fresh entries have expired: every lookup now fails
            for tenant in known:
                during = chat(gateway, tenant.secret, address="192.0.2.10")
                assert during.status_code == 200, during.text
                assert during.json()["finops"]["budget"]["state"] == "fail_open"  # Postgres really is out of reach
            # The throttled address is refused before the (failing) lookup; a new address reaches it and gets 503.
            assert code(chat(gateway, "fo-" + secrets.token_urlsafe(24), address=guesser)) == "auth_rate_limited"
            assert code(chat(gateway, "fo-" + secrets.token_urlsafe(24), address="192.0.2.99")) == "service_unavailable"
            during_outage = requests.get(f"{gateway}/metrics", timeout=10).text
    finally:
        proxy.close()

    assert counter(scraped, 'finops_gateway_auth_failures_total{reason="unknown"}') == RANDOM_KEYS + FAILURES_PER_MINUTE
    assert counter(scraped, 'finops_gateway_auth_failures_total{reason="throttled"}') == 1
    # Requests without a row are not in requests_total either: the ledger-completeness rule compares the two.
    assert (
        counter(scraped, 'finops_gateway_requests_total{cache_status="none",endpoint="chat_completions",outcome="rejected"}')
        <= 300
    )
    assert counter(during_outage, "finops_gateway_auth_stale_total") >= len(known)
    # A sample of the refusals has its row (at most 100 a minute in all), not every one of them.
    deadline = time.monotonic() + 10
    while not LLMRequest.objects.filter(http_status=401).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    refused_rows = LLMRequest.objects.filter(http_status__in=(401, 429)).count()
    assert 1 <= refused_rows <= 300, refused_rows
