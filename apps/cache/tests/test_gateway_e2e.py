"""The cache through the live gateway (uvicorn + finops.asgi), the real openai SDK and the mock LLM."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import openai
import pytest

from apps.ledger.models import LLMRequest
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for_row(request_id: str, timeout: float = 10.0) -> LLMRequest:
    """Every test waits for the rows of all its requests: a row still in flight when the test's
    flush truncates the tables would fail to insert and push the next test's rows to the outbox."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = LLMRequest.objects.filter(request_id=request_id).first()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError(f"no llm_requests row for {request_id}")


@pytest.fixture
def client(gateway_url, make_tenant, prices, redis_client):
    tenant = make_tenant(org=f"E2E {uuid.uuid4().hex[:8]}")
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=tenant.secret, max_retries=0), tenant


def ask(client, prompt: str, **kwargs):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], temperature=0, **kwargs
    )
    return raw, raw.parse()


def test_a_repeated_request_is_an_exact_hit_that_costs_nothing_and_records_its_savings(client):
    client, tenant = client
    prompt = f"What is the capital of France? (ticket {uuid.uuid4().hex[:6]})"
    raw1, first = ask(client, prompt)
    assert raw1.headers["x-cache"] == "miss"
    row1 = wait_for_row(raw1.headers["x-request-id"])
    assert row1.cost_usd > 0

    raw2, second = ask(client, prompt)
    assert raw2.headers["x-cache"] == "exact"
    assert second.choices[0].message.content == first.choices[0].message.content
    row2 = wait_for_row(raw2.headers["x-request-id"])
    assert (row2.cache_status, row2.status, row2.cost_usd) == ("exact", "cached", Decimal(0))
    price = price_in_force(model="gpt-4o-mini", on=row2.received_at.date())
    expected = cost_compute(price=price, prompt_tokens=first.usage.prompt_tokens, completion_tokens=first.usage.completion_tokens)
    assert row2.saved_usd == expected == row1.cost_usd
    assert raw2.headers["x-cost-usd"] == "0.0000000000"


def test_a_paraphrase_is_a_semantic_hit(client):
    client, tenant = client
    raw1, first = ask(client, "How do I reset my password?")
    assert raw1.headers["x-cache"] == "miss"
    wait_for_row(raw1.headers["x-request-id"])

    raw2, second = ask(client, "How can I reset my password?")
    assert raw2.headers["x-cache"] == "semantic"
    assert second.choices[0].message.content == first.choices[0].message.content
    row = wait_for_row(raw2.headers["x-request-id"])
    assert row.cache_status == "semantic" and 0.92 <= row.similarity < 1
    assert row.saved_usd > 0 and row.cost_usd == 0

    raw3, _ = ask(client, "How can I reset my password? I have not lost access to my email.")
    assert raw3.headers["x-cache"] == "miss"
    wait_for_row(raw3.headers["x-request-id"])


def test_a_cached_answer_is_replayed_as_a_stream(client):
    client, tenant = client
    prompt = f"Name three primes (ticket {uuid.uuid4().hex[:6]})."
    raw1, first = ask(client, prompt)
    wait_for_row(raw1.headers["x-request-id"])

    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == first.choices[0].message.content
    row = LLMRequest.objects.filter(org=tenant.org, stream=True).first()
    deadline = time.monotonic() + 10
    while row is None and time.monotonic() < deadline:
        time.sleep(0.05)
        row = LLMRequest.objects.filter(org=tenant.org, stream=True).first()
    assert row is not None and row.cache_status == "exact" and row.cost_usd == 0


def test_cache_control_no_store_and_no_cache_are_honoured(client):
    client, tenant = client
    prompt = f"Summarize the rules of chess (ticket {uuid.uuid4().hex[:6]})."
    raw1, _ = ask(client, prompt, extra_headers={"Cache-Control": "no-store"})
    wait_for_row(raw1.headers["x-request-id"])
    raw2, _ = ask(client, prompt)
    assert raw2.headers["x-cache"] == "miss"  # nothing was kept from the no-store call
    wait_for_row(raw2.headers["x-request-id"])
    raw3, _ = ask(client, prompt, extra_headers={"Cache-Control": "no-cache"})
    assert raw3.headers["x-cache"] == "bypass"
    wait_for_row(raw3.headers["x-request-id"])
    raw4, _ = ask(client, prompt)
    assert raw4.headers["x-cache"] == "exact"
    wait_for_row(raw4.headers["x-request-id"])


def test_another_tenant_never_gets_the_answer(client, make_tenant, gateway_url):
    client, tenant = client
    prompt = f"What is our internal refund policy? (ticket {uuid.uuid4().hex[:6]})"
    raw1, _ = ask(client, prompt)
    wait_for_row(raw1.headers["x-request-id"])
    other = make_tenant(org=f"Other {uuid.uuid4().hex[:8]}", user="mallory")
    other_client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=other.secret, max_retries=0)
    raw2, _ = ask(other_client, prompt)
    assert raw2.headers["x-cache"] == "miss"
    wait_for_row(raw2.headers["x-request-id"])
