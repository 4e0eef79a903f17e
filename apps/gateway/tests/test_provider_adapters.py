"""/v1/chat/completions through the native adapters: the official openai SDK → finops → Anthropic Messages / Gemini /
Azure OpenAI wire formats → the mock LLM (mock mode routes each model by its price row's provider: mock-anthropic,
mock-gemini, mock-azure). Each asserts the answer, X-Cost-USD = the ledger row's cost, one row, the budget counter,
and the provider's prompt-cache usage billed at its own rate."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal

import httpx2
import openai
import pytest

from apps.gateway.tests.conftest import only_row, unique_prompt
from apps.ledger.models import ModelPrice
from apps.ledger.money import quantize_usd
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force
from finops.tokens import prompt_token_bound

pytestmark = pytest.mark.django_db(transaction=True)

SONNET = "claude-sonnet-4-20250514"
# claude-sonnet-4 in fixtures/prices.json, per 1M tokens: input, cache read, cache write (1.25 × input), output.
S_IN, S_READ, S_WRITE, S_OUT = Decimal("3.00"), Decimal("0.30"), Decimal("3.75"), Decimal("15.00")


def sonnet_cost(*, fresh: int, read: int, write: int, completion: int) -> Decimal:
    """By hand, independently of apps.ledger.pricing."""
    return quantize_usd((fresh * S_IN + read * S_READ + write * S_WRITE + completion * S_OUT) / Decimal(1_000_000))


def client_for(gateway_url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=secret, max_retries=0)


def budgeted(make_tenant):
    from apps.budgets.models import Budget
    from apps.budgets.services import budget_create

    tenant = make_tenant()
    budget = budget_create(
        budget=Budget(scope="user", org=tenant.org, team=tenant.team, member=tenant.member, period="monthly",
                      cap_usd=Decimal("100.00"), action="block", soft_pct=[50, 80, 100])
    )  # fmt: skip
    return tenant, budget


def spent(budget, expected: Decimal, timeout: float = 10.0) -> Decimal:
    """The budget counter's spend once settlement (after the response) has moved it to `expected`."""
    from apps.budgets.models import BudgetCounter

    deadline = time.monotonic() + timeout
    value = Decimal(0)
    while time.monotonic() < deadline:
        counter = BudgetCounter.objects.filter(budget=budget).order_by("-period_start").first()
        value = counter.spent_usd if counter else Decimal(0)
        if value == expected:
            break
        time.sleep(0.05)
    return value


def cached_system(text: str) -> list[dict]:
    # Anthropic caches the prefix up to a block marked cache_control; OpenAI-style clients put the marker on a part.
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


@pytest.mark.parametrize("stream", [False, True])
def test_a_claude_model_through_the_anthropic_adapter_bills_cache_writes_and_reads_at_their_rates(
    gateway_url, make_tenant, prices, stream
):
    tenant, budget = budgeted(make_tenant)
    client = client_for(gateway_url, tenant.secret)
    system = cached_system(f"You are the policy assistant. {'Rule: be exact. ' * 40} ({uuid.uuid4().hex})")
    total = Decimal(0)
    for turn, expect in ((1, "write"), (2, "read")):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": unique_prompt(f"Question {turn}")}]
        if stream:
            raw = client.chat.completions.with_raw_response.create(
                model=SONNET, messages=messages, stream=True, stream_options={"include_usage": True}, max_tokens=40
            )
            chunks = list(raw.parse())
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            usage = chunks[-1].usage
            cost_header = chunks[-1].model_extra["finops"]["cost_usd"]
        else:
            raw = client.chat.completions.with_raw_response.create(model=SONNET, messages=messages, max_tokens=40)
            completion = raw.parse()
            text, usage = completion.choices[0].message.content, completion.usage
            cost_header = raw.headers["x-cost-usd"]
        assert text.startswith(f"Mock answer from {SONNET}")
        row = only_row(raw.headers["x-request-id"])
        row.delete() if turn == 1 else None  # only_row counts the table: keep one row per turn
        details = usage.prompt_tokens_details
        cached, written = (
            details.cached_tokens,
            details.model_extra.get("cache_write_tokens", getattr(details, "cache_write_tokens", 0)),
        )
        if expect == "write":
            assert cached == 0 and written > 0
        else:
            assert cached > 0 and written == 0
        assert (row.provider, row.model, row.stream, row.status) == ("mock-anthropic", SONNET, stream, "served")
        assert (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens, row.completion_tokens) == (
            usage.prompt_tokens,
            cached,
            written,
            usage.completion_tokens,
        )
        fresh = row.prompt_tokens - cached - written
        assert fresh > 0
        assert row.cost_usd == sonnet_cost(fresh=fresh, read=cached, write=written, completion=row.completion_tokens)
        assert cost_header == format(row.cost_usd, "f")
        assert row.cost_usd <= row.reserved_usd  # the reservation priced every prompt token as a (dearer) cache write
        total += row.cost_usd
    assert spent(budget, total) == total
    scraped = httpx2.get(f"{gateway_url}/metrics").text
    assert f'finops_gateway_tokens_total{{kind="cache_write",model="{SONNET}",provider="mock-anthropic"' in scraped


@pytest.mark.parametrize("stream", [False, True])
def test_a_gemini_model_bills_cached_reads_and_thinking_tokens(gateway_url, tenant, stream):
    client = client_for(gateway_url, tenant.secret)
    kwargs = dict(model="gemini-2.5-flash", max_tokens=30, messages=[{"role": "user", "content": unique_prompt("Gemini, a haiku")}],
                  extra_headers={"X-Mock-Cached-Tokens": "8", "X-Mock-Reasoning-Tokens": "25"})  # fmt: skip
    if stream:
        raw = client.chat.completions.with_raw_response.create(stream=True, stream_options={"include_usage": True}, **kwargs)
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage, cost_seen = chunks[-1].usage, chunks[-1].model_extra["finops"]["cost_usd"]
    else:
        raw = client.chat.completions.with_raw_response.create(**kwargs)
        completion = raw.parse()
        text, usage, cost_seen = completion.choices[0].message.content, completion.usage, raw.headers["x-cost-usd"]
    assert text.startswith("Mock answer from gemini-2.5-flash")
    row = only_row(raw.headers["x-request-id"])
    assert (row.provider, row.cached_tokens, row.reasoning_tokens, row.stream) == ("mock-gemini", 8, 25, stream)
    visible = usage.completion_tokens - 25
    assert visible > 0 and usage.completion_tokens_details.reasoning_tokens == 25
    # gemini-2.5-flash: $0.30 in, $0.075 cached, $2.50 out (thinking billed as output), per 1M, by hand.
    expected = quantize_usd(((row.prompt_tokens - 8) * Decimal("0.30") + 8 * Decimal("0.075")
                             + (visible + 25) * Decimal("2.50")) / Decimal(1_000_000))  # fmt: skip
    assert row.cost_usd == expected
    assert cost_seen == format(row.cost_usd, "f")


def test_a_claude_model_answers_with_a_tool_call(gateway_url, tenant):
    client = client_for(gateway_url, tenant.secret)
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look it up",
                                               "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}}}}]  # fmt: skip
    raw = client.chat.completions.with_raw_response.create(
        model=SONNET, tools=tools, tool_choice={"type": "function", "function": {"name": "lookup"}},
        messages=[{"role": "user", "content": unique_prompt("Look up the capital")}],
    )  # fmt: skip
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup" and json.loads(call.function.arguments)["answer"].startswith("Mock answer")
    row = only_row(raw.headers["x-request-id"])
    assert row.provider == "mock-anthropic" and raw.headers["x-cost-usd"] == format(row.cost_usd, "f")


def test_an_azure_deployment_bills_cached_reads_on_a_stream(gateway_url, tenant):
    ModelPrice.objects.create(
        provider="azure", model="azure-gpt-4o-mini", input_per_1m=Decimal("0.15"), output_per_1m=Decimal("0.60"),
        cached_input_per_1m=Decimal("0.075"), effective_from="2024-07-18", source="test row",
    )  # fmt: skip
    client = client_for(gateway_url, tenant.secret)
    raw = client.chat.completions.with_raw_response.create(
        model="azure-gpt-4o-mini", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": unique_prompt("Azure, hello")}], extra_headers={"X-Mock-Cached-Tokens": "5"},
    )  # fmt: skip
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Mock answer from azure-gpt-4o-mini")
    row = only_row(raw.headers["x-request-id"])
    assert (row.provider, row.cached_tokens, row.stream) == ("mock-azure", 5, True)
    price = price_in_force(model="azure-gpt-4o-mini", on=row.received_at.date())
    assert row.cost_usd == cost_compute(price=price, prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                                        cached_tokens=5)  # fmt: skip
    assert chunks[-1].model_extra["finops"]["cost_usd"] == format(row.cost_usd, "f")


def test_an_upstream_error_from_the_anthropic_adapter_falls_under_the_same_rules(gateway_url, tenant):
    """The mock's fault injection speaks Anthropic's error shape; the adapter maps it onto the pipeline's failures."""
    client = client_for(gateway_url, tenant.secret)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": unique_prompt()}],
                                       extra_headers={"X-Mock-Error": "429"})  # fmt: skip
    assert caught.value.response.json()["error"]["type"] != "error"  # OpenAI's error shape to the client, not Anthropic's
    row = only_row(caught.value.response.headers["x-request-id"])
    assert (row.status, row.http_status, row.cost_usd, row.attempts) == ("rejected", 429, 0, 1)


def test_an_unknown_claude_model_is_a_404(gateway_url, tenant):
    client = client_for(gateway_url, tenant.secret)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="claude-9-unknown", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"


def test_a_ladder_may_mix_providers(gateway_url, tenant):
    from apps.routing.models import Tier, TierModel
    from apps.routing.services import routing_defaults_ensure

    routing_defaults_ensure()
    premium = Tier.objects.get(ladder="default", name="premium")
    TierModel.objects.filter(tier=premium).delete()
    TierModel.objects.create(tier=premium, model=SONNET)
    client = client_for(gateway_url, tenant.secret)
    raw = client.chat.completions.with_raw_response.create(
        model="finops/premium", max_tokens=30, messages=[{"role": "user", "content": unique_prompt("Plan a migration")}]
    )
    assert raw.parse().choices[0].message.content.startswith(f"Mock answer from {SONNET}")
    row = only_row(raw.headers["x-request-id"])
    assert (row.tier, row.model, row.provider) == ("premium", SONNET, "mock-anthropic")
    assert raw.headers["x-cost-usd"] == format(row.cost_usd, "f") and row.cost_usd > 0


@pytest.fixture
def admin_configured_gateway(django_db_setup, mock_llm_url):
    """A gateway with no mock mode: its providers are admin rows (Provider.kind anthropic) pointing at the mock."""
    from conftest import gateway_server

    env = {"FINOPS_MOCK_LLM_URL": "", "FINOPS_UPSTREAMS": "[]", "FINOPS_UPSTREAM_TEST_GOOD_KEY": "sk-ant-test",
           "FINOPS_UPSTREAM_TEST_BAD_KEY": "sk-bad-key"}  # fmt: skip
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        yield url


def test_an_admin_anthropic_provider_with_a_bad_key_is_a_documented_502(admin_configured_gateway, tenant):
    from apps.gateway.models import Provider

    Provider.objects.create(name="claude-good", kind="anthropic", base_url=_mock_v1(), api_key_env="FINOPS_UPSTREAM_TEST_GOOD_KEY",
                            served_models=[SONNET])  # fmt: skip
    Provider.objects.create(name="claude-bad", kind="anthropic", base_url=_mock_v1(), api_key_env="FINOPS_UPSTREAM_TEST_BAD_KEY",
                            served_models=["claude-3-5-haiku-20241022"])  # fmt: skip
    client = client_for(admin_configured_gateway, tenant.secret)
    raw = client.chat.completions.with_raw_response.create(model=SONNET, messages=[{"role": "user", "content": unique_prompt()}])
    assert raw.parse().choices[0].message.content.startswith(f"Mock answer from {SONNET}")
    row = only_row(raw.headers["x-request-id"])
    assert row.provider == "claude-good" and raw.headers["x-cost-usd"] == format(row.cost_usd, "f")
    row.delete()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="claude-3-5-haiku-20241022", messages=[{"role": "user", "content": unique_prompt()}])
    assert caught.value.status_code == 502
    error = caught.value.response.json()["error"]
    assert "check its key" in error["message"]
    row = only_row(caught.value.response.headers["x-request-id"])
    assert (row.status, row.http_status, row.cost_usd) == ("failed", 502, 0)


_MOCK_URL: list[str] = []


@pytest.fixture(autouse=True)
def _remember_mock(mock_llm_url):
    _MOCK_URL[:] = [mock_llm_url]


def _mock_v1() -> str:
    return _MOCK_URL[0]


@pytest.mark.parametrize("stream", [False, True])
def test_a_priority_answer_from_an_openai_compatible_upstream_bills_at_the_rows_multiplier(
    gateway_url, make_tenant, prices, stream
):
    from apps.gateway.tests.conftest import mini_cost

    ModelPrice.objects.filter(model="gpt-4o-mini").update(priority_multiplier=Decimal("1.5"))  # a test multiplier
    tenant, budget = budgeted(make_tenant)
    client = client_for(gateway_url, tenant.secret)
    kwargs = dict(model="gpt-4o-mini", max_tokens=20, service_tier="priority", extra_headers={"X-Mock-Service-Tier": "priority"},
                  messages=[{"role": "user", "content": unique_prompt("Fast, please")}])  # fmt: skip
    if stream:
        raw = client.chat.completions.with_raw_response.create(stream=True, **kwargs)
        final = list(raw.parse())[-1]
        assert final.service_tier == "priority"
        cost_seen = final.model_extra["finops"]["cost_usd"]
    else:
        raw = client.chat.completions.with_raw_response.create(**kwargs)
        assert raw.parse().service_tier == "priority"
        cost_seen = raw.headers["x-cost-usd"]
    row = only_row(raw.headers["x-request-id"])
    assert row.service_tier == "priority"
    assert row.cost_usd == quantize_usd(mini_cost(row.prompt_tokens, row.completion_tokens) * Decimal("1.5")) > 0
    assert cost_seen == format(row.cost_usd, "f")
    # The request asked for priority: its reservation was priced with the multiplier too.
    bound = prompt_token_bound(kwargs["messages"])  # the reservation's prompt: an upper bound
    assert row.reserved_usd == quantize_usd(mini_cost(bound, 20) * Decimal("1.5"))
    assert spent(budget, row.cost_usd) == row.cost_usd
