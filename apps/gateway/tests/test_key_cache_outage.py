"""Postgres unreachable: the gateway keeps its last known key states for a bounded time (stale-if-error).

The gateway runs against the test database through a TCP proxy (finops.testing.pgproxy) that the test cuts, so
only the gateway loses Postgres. Its key cache is short (1 s) and the stale window 6 s, so both run out within
the test. Prices and the router config are cached for longer, as in production, so that only keys are at stake.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
from django.db import connection

from apps.gateway.tests.conftest import unique_prompt
from apps.tenancy.services import api_key_revoke
from conftest import gateway_server
from conftest import test_database_url as database_url
from finops.testing.pgproxy import PgProxy, pg_target

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

KEY_TTL_S, STALE_S = 1, 6


def chat(url: str, secret: str) -> requests.Response:
    return requests.post(
        f"{url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": unique_prompt("outage")}]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=20,
    )


def code(response: requests.Response) -> str:
    return response.json()["error"]["code"] if response.status_code != 200 else "ok"


def test_known_keys_are_served_from_their_last_state_while_postgres_is_down(
    make_tenant, prices, mock_llm_url, redis_client, tmp_path
):
    active = make_tenant(org="Steady", team="T", user="s")
    revoked = make_tenant(org="Gone", team="T", user="g")
    api_key_revoke(api_key=revoked.api_key)
    never_seen = make_tenant(org="Late", team="T", user="l")  # exists, but the gateway never looked it up

    proxy = PgProxy(pg_target(database_url()))
    env = {
        "DATABASE_URL": proxy.database_url(database_url(), connection.settings_dict["NAME"]),
        "FINOPS_API_KEY_CACHE_SECONDS": str(KEY_TTL_S),
        "FINOPS_API_KEY_STALE_SECONDS": str(STALE_S),
        "FINOPS_GATEWAY_CATALOG_CACHE_SECONDS": "300",
        "FINOPS_ROUTER_CONFIG_TTL_S": "300",
        "FINOPS_CACHE_ENABLED": "0",
        "FINOPS_LEDGER_SPOOL_DIR": str(tmp_path),
    }
    try:
        with gateway_server(mock_llm_url=mock_llm_url, env=env) as gateway:
            assert code(chat(gateway, active.secret)) == "ok"
            assert code(chat(gateway, revoked.secret)) == "api_key_revoked"
            confirmed_at = time.monotonic()

            proxy.outage()
            time.sleep(KEY_TTL_S + 0.3)  # the fresh cache entries have expired: every lookup now fails
            during = chat(gateway, active.secret)
            assert during.status_code == 200, during.text
            assert during.json()["finops"]["budget"]["state"] == "fail_open"  # Postgres really is out of reach
            assert code(chat(gateway, revoked.secret)) == "api_key_revoked"  # seen revoked: stays refused
            unknown = chat(gateway, never_seen.secret)
            assert (unknown.status_code, code(unknown)) == (503, "service_unavailable")  # cannot be verified
            assert unknown.headers["retry-after"] == "1"
            assert code(chat(gateway, active.secret)) == "ok"

            # The window is bounded: past STALE_S since Postgres last confirmed the key, it is refused too.
            time.sleep(max(confirmed_at + STALE_S + 0.5 - time.monotonic(), 0))
            assert code(chat(gateway, active.secret)) == "service_unavailable"

            proxy.recover()
            deadline = time.monotonic() + 20
            while (answer := code(chat(gateway, active.secret))) != "ok" and time.monotonic() < deadline:
                time.sleep(0.3)
            assert answer == "ok"
            assert code(chat(gateway, never_seen.secret)) == "ok"
            scraped = requests.get(f"{gateway}/metrics", timeout=10).text
    finally:
        proxy.close()
    served_stale = next(line for line in scraped.splitlines() if line.startswith("finops_gateway_auth_stale_total "))
    assert float(served_stale.split()[1]) >= 2  # the active and the revoked key; re-asks within 1 s reuse the answer


def test_a_new_keys_slow_lookup_is_waited_for_not_refused(make_tenant, prices, mock_llm_url, tmp_path):
    """A key the gateway has never resolved has no last known state: a slow reply (Postgres held 300 ms, as on a
    loaded machine) is waited for up to FINOPS_API_KEY_LOOKUP_TIMEOUT_MS rather than answered with 503 at the
    100 ms a known key's re-check gets."""
    warm = make_tenant(org="Warm", team="T", user="w")
    fresh = make_tenant(org="Fresh", team="T", user="f")
    proxy = PgProxy(pg_target(database_url()))
    env = {
        "DATABASE_URL": proxy.database_url(database_url(), connection.settings_dict["NAME"]),
        "FINOPS_CACHE_ENABLED": "0",
        "FINOPS_LEDGER_SPOOL_DIR": str(tmp_path),
    }
    try:
        with gateway_server(mock_llm_url=mock_llm_url, env=env) as gateway:
            assert code(chat(gateway, warm.secret)) == "ok"  # the pools are connected
            proxy.hang()
            # A plain sleep, not threading.Timer: under libfaketime (docs/reliability.md, "Dates") a timed condition
            # wait does not return on time.
            threading.Thread(target=lambda: (time.sleep(0.3), proxy.resume()), daemon=True).start()
            answer = chat(gateway, fresh.secret)
            assert answer.status_code == 200, answer.text
            assert code(chat(gateway, fresh.secret)) == "ok"
    finally:
        proxy.resume()
        proxy.close()
