"""POST /v1/chat/completions through the real openai SDK against a live gateway and the mock LLM."""

from __future__ import annotations

import asyncio
import json

import httpx2
import openai
import pytest

from apps.gateway.tests.conftest import mini_cost, only_row, unique_prompt, wait_for_row
from apps.ledger.models import LLMRequest
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force
from apps.tenancy.services import api_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)


def sync_client(gateway_url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=secret, max_retries=0)


def async_client(gateway_url: str, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=secret, max_retries=0)


def assert_billed(row, *, prompt: int, completion: int, cached: int = 0) -> None:
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (prompt, completion, cached)
    price = price_in_force(model=row.model, on=row.received_at.date())
    assert row.price_id == price.id
    assert row.cost_usd == cost_compute(price=price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    assert row.cost_usd == mini_cost(prompt, completion, cached)
    assert row.cost_usd > 0


def test_it_serves_a_completion_with_cost_headers_and_one_ledger_row(gateway_url, tenant):
    client = sync_client(gateway_url, tenant.secret)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": unique_prompt()}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("Mock answer from gpt-4o-mini")

    row = only_row(raw.headers["x-request-id"])
    assert (row.status, row.http_status, row.endpoint, row.stream) == ("served", 200, "chat_completions", False)
    assert (row.org_id, row.member_id, row.api_key_id) == (tenant.org.id, tenant.member.id, tenant.api_key.id)
    assert (row.model, row.provider, row.attempts) == ("gpt-4o-mini", "mock", 1)
    assert_billed(row, prompt=completion.usage.prompt_tokens, completion=completion.usage.completion_tokens)
    assert row.upstream_ms > 0 and row.overhead_ms >= 0

    assert raw.headers["x-cost-usd"] == format(row.cost_usd, "f")
    assert raw.headers["x-tokens-prompt"] == str(row.prompt_tokens)
    assert raw.headers["x-tokens-completion"] == str(row.completion_tokens)
    assert raw.headers["x-cache"] == "bypass"  # no temperature: sampled at the provider default, never cached
    assert raw.headers["x-route"].startswith("gpt-4o-mini")
    assert "x-budget-remaining-usd" in raw.headers

    body = json.loads(raw.http_response.text)
    assert body["finops"] == body["usage"]["finops"]
    assert body["finops"]["cost_usd"] == raw.headers["x-cost-usd"]
    assert body["finops"]["request_id"] == raw.headers["x-request-id"]

    with httpx2.Client() as http:
        scraped = http.get(f"{gateway_url}/metrics").text
    assert 'finops_gateway_requests_total{cache_status="bypass",endpoint="chat_completions",outcome="served"}' in scraped
    assert 'finops_gateway_upstream_seconds_count{model="gpt-4o-mini",outcome="ok",provider="mock"}' in scraped


def test_it_bills_cached_prompt_tokens_once_at_the_cached_rate(gateway_url, tenant):
    async def call():
        async with async_client(gateway_url, tenant.secret) as client:
            return await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=[{"role": "system", "content": "You are terse. " * 20}, {"role": "user", "content": unique_prompt()}],
                extra_headers={"X-Mock-Cached-Tokens": "40"},  # forwarded to the mock upstream only
            )

    raw = asyncio.run(call())
    completion = raw.parse()
    assert completion.usage.prompt_tokens_details.cached_tokens == 40
    row = only_row(raw.headers["x-request-id"])
    assert_billed(row, prompt=completion.usage.prompt_tokens, completion=completion.usage.completion_tokens, cached=40)


def test_it_streams_without_usage_and_puts_the_cost_in_the_final_chunk(gateway_url, tenant):
    client = sync_client(gateway_url, tenant.secret)
    prompt = unique_prompt("Tell me a story")
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Mock answer from gpt-4o-mini")
    assert all(c.usage is None for c in chunks), "the client did not ask for usage"
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    finops = final.model_dump()["finops"]

    row = only_row(raw.headers["x-request-id"])
    assert (row.status, row.stream, row.http_status) == ("served", True, 200)
    assert finops["cost_usd"] == format(row.cost_usd, "f")
    assert finops["completion_tokens"] == row.completion_tokens
    # The upstream was asked for usage anyway; the bill is the upstream's count, which matches the text.
    from finops.tokens import count_message_tokens, count_tokens

    assert_billed(row, prompt=count_message_tokens([{"role": "user", "content": prompt}]), completion=count_tokens(text))


def test_it_streams_usage_with_the_finops_extension_when_asked(gateway_url, tenant):
    async def call():
        async with async_client(gateway_url, tenant.secret) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": unique_prompt("Explain budgets")}],
                stream=True,
                stream_options={"include_usage": True},
            )
            return raw.headers, [chunk async for chunk in raw.parse()]

    headers, chunks = asyncio.run(call())
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert sum(1 for c in chunks if c.usage is not None) == 1
    dumped = usage_chunk.model_dump()
    assert dumped["usage"]["finops"] == dumped["finops"]

    row = only_row(headers["x-request-id"])
    assert_billed(row, prompt=usage_chunk.usage.prompt_tokens, completion=usage_chunk.usage.completion_tokens)
    assert dumped["finops"]["cost_usd"] == format(row.cost_usd, "f")


def assert_rejected(row, *, http_status: int, error_code: str) -> None:
    assert (row.status, row.http_status, row.error_code) == ("rejected", http_status, error_code)
    assert (row.cost_usd, row.prompt_tokens, row.completion_tokens, row.attempts) == (0, 0, 0, 0)


def test_an_unknown_model_is_a_404(gateway_url, tenant):
    client = sync_client(gateway_url, tenant.secret)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9-ultra", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"
    row = only_row(caught.value.response.headers["x-request-id"])
    assert_rejected(row, http_status=404, error_code="model_not_found")
    assert (row.requested_model, row.org_id) == ("gpt-9-ultra", tenant.org.id)


def test_a_revoked_key_is_a_401_on_the_orgs_ledger(gateway_url, tenant):
    api_key_revoke(api_key=tenant.api_key)
    client = sync_client(gateway_url, tenant.secret)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "api_key_revoked"
    row = only_row(caught.value.response.headers["x-request-id"])
    assert_rejected(row, http_status=401, error_code="api_key_revoked")
    assert (row.org_id, row.api_key_id) == (tenant.org.id, tenant.api_key.id)


def test_an_unknown_key_is_a_401(gateway_url, tenant):
    client = sync_client(gateway_url, "fo-not-a-real-key")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    row = only_row(caught.value.response.headers["x-request-id"])
    assert_rejected(row, http_status=401, error_code="invalid_api_key")
    assert row.org_id is None


def test_an_oversized_prompt_is_a_413(gateway_url, tenant):
    # The test server accepts at most 2,000 prompt tokens (FINOPS_GATEWAY_MAX_PROMPT_TOKENS).
    client = sync_client(gateway_url, tenant.secret)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "word " * 2500}])
    assert caught.value.status_code == 413
    assert caught.value.code == "context_length_exceeded"
    row = only_row(caught.value.response.headers["x-request-id"])
    assert_rejected(row, http_status=413, error_code="context_length_exceeded")


def test_malformed_json_is_a_400_not_a_500(gateway_url, tenant):
    with httpx2.Client() as http:
        response = http.post(
            f"{gateway_url}/v1/chat/completions",
            content=b'{"model": "gpt-4o-mini", "messages": [',
            headers={"Authorization": f"Bearer {tenant.secret}", "Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    row = only_row(response.headers["x-request-id"])
    assert_rejected(row, http_status=400, error_code="invalid_json")
    assert row.org_id == tenant.org.id


BAD_BODIES = [
    ([1, 2], None),
    ({"model": "gpt-4o-mini"}, "messages"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": -3}, "max_tokens"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"model": "m" * 500, "messages": [{"role": "user", "content": "x"}]}, "model"),
]


def test_bad_parameters_are_4xx_with_one_row_each(gateway_url, tenant):
    request_ids = []
    with httpx2.Client() as http:
        for body, param in BAD_BODIES:
            response = http.post(
                f"{gateway_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {tenant.secret}"}
            )
            assert response.status_code in (400, 404), response.text
            assert response.json()["error"]["param"] == param
            request_ids.append((response.headers["x-request-id"], response.status_code))
    for request_id, status in request_ids:
        row = wait_for_row(request_id)
        assert (row.status, row.http_status, row.cost_usd) == ("rejected", status, 0)
    assert LLMRequest.objects.count() == len(BAD_BODIES)
    assert LLMRequest.objects.get(request_id=request_ids[-1][0]).requested_model == "m" * 128  # cut to the column


def test_upstream_timeout_is_a_504_and_failed_row(gateway_url, tenant):
    # The test server's upstream read timeout is 3 s; the mock's timeout fault never answers.
    client = sync_client(gateway_url, tenant.secret)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": unique_prompt()}],
            extra_headers={"X-Mock-Error": "timeout", "Cache-Control": "no-cache"},
            timeout=30,
        )
    assert caught.value.status_code == 504
    row = only_row(caught.value.response.headers["x-request-id"])
    assert (row.status, row.http_status, row.error_code, row.cost_usd) == ("failed", 504, "upstream_timeout", 0)
    assert row.attempts >= 1


def test_an_upstream_bad_request_is_passed_on_as_a_400(gateway_url, tenant):
    client = sync_client(gateway_url, tenant.secret)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": unique_prompt()}], extra_headers={"X-Mock-Error": "400"}
        )
    row = only_row(caught.value.response.headers["x-request-id"])
    assert (row.status, row.http_status, row.attempts) == ("rejected", 400, 1)


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_upstream_json_with_no_tier_left_is_a_502_upstream_error(gateway_url, tenant, stream):
    # The header reaches every mock call, so each model of the chain answers 200 with a broken body.
    client = sync_client(gateway_url, tenant.secret)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": unique_prompt()}],
            stream=stream,
            extra_headers={"X-Mock-Error": "malformed"},
        )
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "upstream_error" and caught.value.body["code"] == "upstream_error"
    row = only_row(caught.value.response.headers["x-request-id"])
    assert (row.status, row.http_status, row.error_code, row.cost_usd) == ("failed", 502, "upstream_error", 0)
    assert row.attempts >= 1


def test_wrong_method_and_unknown_v1_paths_answer_in_openai_json(gateway_url):
    with httpx2.Client() as http:
        assert http.get(f"{gateway_url}/v1/chat/completions").status_code == 405
        missing = http.post(f"{gateway_url}/v1/nothing-here", json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_url"


def test_a_low_confidence_answer_is_re_asked_one_tier_up_and_both_are_billed(gateway_url, tenant):
    from apps.routing.services import routing_defaults_ensure

    routing_defaults_ensure()  # the tiers of "auto" (the transactional flush removed the migration's rows)
    client = sync_client(gateway_url, tenant.secret)
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        logprobs=True,
        messages=[{"role": "user", "content": unique_prompt("Summarize this: the meeting moved to Tuesday.")}],
        extra_headers={"X-Mock-Logprob": "-4"},  # the mock's answer is very unsure of itself
    )
    finops = raw.parse().model_extra["finops"]
    row = only_row(raw.headers["x-request-id"])
    assert row.escalated and finops["route"]["escalated"]
    assert row.attempts == 2 and row.fallback_from == ""
    assert 0 < row.escalation_cost_usd < row.cost_usd
    final_price = price_in_force(model=row.model, on=row.received_at.date())
    usage = raw.parse().usage
    second = cost_compute(price=final_price, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
    assert row.cost_usd == row.escalation_cost_usd + second
    assert row.prompt_tokens == 2 * usage.prompt_tokens  # both answers' tokens are on the bill
    assert raw.headers["x-cost-usd"] == format(row.cost_usd, "f")
