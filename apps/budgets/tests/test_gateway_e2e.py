"""Budgets through the live gateway (uvicorn + the mock LLM): the remaining-budget header, the 429 block,
and the settled counter matching the ledger row."""

from __future__ import annotations

import os
import time
from decimal import Decimal

import openai
import pytest

from apps.budgets.tests.conftest import counter_of
from apps.gateway.tests.conftest import unique_prompt, wait_for_row
from apps.ledger.models import LLMRequest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _wait_until_released(timeout_s: float, request_ids: list[str] | None = None) -> None:
    """Poll until no reservation (of these requests, or at all) is still held, for at most `timeout_s`."""
    from apps.budgets.models import Reservation

    held = Reservation.objects.filter(state=Reservation.State.RESERVED)
    if request_ids is not None:
        held = held.filter(request_id__in=request_ids)
    deadline = time.monotonic() + timeout_s
    while held.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _gateway_settled_before_teardown():
    """The gateway settles reservations after the response; the test database is truncated between tests, and a
    settle still running then can deadlock with the TRUNCATE. Let the live server finish first."""
    yield
    _wait_until_released(5)


def client_for(gateway_url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=secret, max_retries=0)


def test_remaining_header_then_block_at_the_cap(gateway_url, make_tenant, make_budget, prices):
    tenant = make_tenant(org="Acme", team="Search", user="alice")
    client = client_for(gateway_url, tenant.secret)
    # Before any budget exists: warms the server's connection (the first call compiles the SQL function).
    client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": unique_prompt()}])
    budget = make_budget(scope="user", tenant=tenant, cap="0.01")

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": unique_prompt()}]
    )
    assert raw.status_code == 200
    remaining = Decimal(raw.headers["x-budget-remaining-usd"])
    assert Decimal(0) < remaining < Decimal("0.01")  # the cap less this request's reservation
    row = wait_for_row(raw.headers["x-request-id"])
    assert row.budget_state == "ok" and row.reserved_usd > 0
    # Settled to the actual cost (settles are batched after the response: allow it a moment).
    settled = (row.cost_usd, Decimal(0))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (counter_of(budget).spent_usd, counter_of(budget).reserved_usd) != settled:
        time.sleep(0.05)
    counter = counter_of(budget)
    assert (counter.spent_usd, counter.reserved_usd) == settled

    # 20,000 completion tokens of gpt-4o-mini are estimated at $0.012: over the $0.01 cap.
    with pytest.raises(openai.RateLimitError) as excinfo:
        client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=20_000, messages=[{"role": "user", "content": unique_prompt()}]
        )
    error = excinfo.value
    assert error.status_code == 429
    assert error.code == "budget_exceeded"
    assert "User budget exceeded" in error.message and "'alice'" in error.message and "$0.01" in error.message
    blocked = wait_for_row(error.response.headers["x-request-id"])
    assert (blocked.budget_state, blocked.http_status, blocked.cost_usd) == ("blocked", 429, Decimal(0))
    assert LLMRequest.objects.filter(status="served").count() == 2  # the blocked one never reached the upstream


@pytest.mark.skipif(
    "faketime" in os.environ.get("LD_PRELOAD", ""),
    reason="under libfaketime Postgres's own timers (lock_timeout) never fire, so the locked reserve never gives up",
)
def test_budget_database_hang_through_the_gateway(gateway_url, make_tenant, make_budget, prices, redis_client):
    """Counters locked: the gateway keeps answering under the limiter, the 31st request of a user in a minute
    gets 429, every request is in the ledger, and reconcile books the fail-open spend once the lock is gone.
    (max_tokens clamping is asserted on the hook, in test_fail_open.)"""
    from apps.budgets.services import budget_reconcile
    from apps.budgets.tests.test_fail_open import budget_counters_locked

    tenant = make_tenant(org="Acme", team="Search", user="alice")
    budget = make_budget(scope="org", tenant=tenant, cap="100.00")
    client = client_for(gateway_url, tenant.secret)
    request_ids, refused = [], None
    with budget_counters_locked():
        for _ in range(31):
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", max_tokens=2000, messages=[{"role": "user", "content": unique_prompt()}]
                )
                request_ids.append(raw.headers["x-request-id"])
                assert raw.headers["x-budget-remaining-usd"] == "unknown"  # not "unlimited": there is a cap, unread
            except openai.RateLimitError as exc:
                refused = exc
    assert len(request_ids) == 30
    assert refused is not None and refused.code == "budget_degraded_rate_limit"

    rows = [wait_for_row(rid) for rid in request_ids]
    assert {(r.status, r.budget_state) for r in rows} == {("served", "fail_open")}
    assert wait_for_row(refused.response.headers["x-request-id"]).http_status == 429

    # A reserve that was waiting on the lock completes once it is gone, and the gateway releases that reservation
    # nobody waited for (finops.asyncdb, on_late). Until it has, the row counts as reserved, not spent (by design:
    # never both), so reconcile runs after the release, as the every-minute task would.
    _wait_until_released(10, request_ids)
    budget_reconcile()
    assert counter_of(budget).spent_usd == sum((r.cost_usd for r in rows), Decimal(0)) > 0
