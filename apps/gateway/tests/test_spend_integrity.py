"""Issue #16, spend integrity: every request is reserved for what it can cost, billed once and recorded.

Through the real openai SDK against the live gateway (uvicorn + finops.asgi) and the mock LLM over HTTP; each
test asserts the reservation (the row's reserved_usd), the bill (cost and tokens) and the row.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from decimal import Decimal

import httpx2
import hypothesis
import openai
import pytest
import requests
from django.conf import settings
from django.db import connection
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from apps.budgets.models import Reservation
from apps.budgets.services import BudgetBroken
from apps.budgets.tests.conftest import caller_for, run
from apps.gateway.context import RequestContext
from apps.gateway.pipeline import _upstream_body, stage1_receive, stage3_validate
from apps.gateway.selectors import catalog_refresh
from apps.gateway.stages import budget_reserve
from apps.gateway.tests.conftest import mini_cost, unique_prompt, wait_for_row
from apps.ledger.models import LLMRequest
from finops.limiter import local_window
from finops.tokens import prompt_token_bound

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def gateway_url(django_db_setup, mock_llm_url):
    """This module's gateway: its budget check waits (10 s) instead of failing open at 50 ms. These tests assert the
    reservation, and on this shared 2-core machine (200 concurrent requests, a busy neighbour) the reserve can take
    longer than 50 ms — a fail-open request holds no reservation. Fail open itself is tested in-process below."""
    from conftest import gateway_server

    env = {
        "FINOPS_BUDGET_TIMEOUT_MS": "10000",
        "FINOPS_BUDGET_DECISION_MAX_MS": "10000",
        "FINOPS_UPSTREAM_TIMEOUT_S": "30",
        "FINOPS_GATEWAY_MAX_PROMPT_TOKENS": "2000",
    }
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        yield url


@pytest.fixture(autouse=True)
def _settled_before_teardown():
    """The gateway settles after the response; let the live server finish before the tables are truncated."""
    yield
    deadline = time.monotonic() + 5
    while Reservation.objects.filter(state=Reservation.State.RESERVED).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def client_for(gateway_url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=secret, max_retries=0)


def budgeted(make_tenant, cap: str = "100.00"):
    """A tenant with a user budget: its requests hold a reservation (the row's reserved_usd)."""
    from apps.budgets.models import Budget
    from apps.budgets.services import budget_create

    tenant = make_tenant()
    budget_create(
        budget=Budget(
            scope="user", org=tenant.org, team=tenant.team, member=tenant.member, period="monthly",
            cap_usd=Decimal(cap), action="block", soft_pct=[50, 80, 100],
        )
    )  # fmt: skip
    return tenant


# --- 1. n ---------------------------------------------------------------------------------------------------


def test_n_completions_are_reserved_billed_and_recorded(gateway_url, make_tenant, prices):
    tenant = budgeted(make_tenant)
    client = client_for(gateway_url, tenant.secret)
    messages = [{"role": "user", "content": unique_prompt("Name four rivers.")}]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", n=4, max_tokens=20, messages=messages)
    completion = raw.parse()
    assert len(completion.choices) == 4
    row = wait_for_row(raw.headers["x-request-id"])
    assert row.status == "served" and row.budget_state == "ok"
    # Reserved: the prompt's upper bound (finops.tokens.prompt_token_bound) and 4 × 20 completion tokens.
    assert row.reserved_usd == mini_cost(prompt_token_bound(messages), 4 * 20)
    # Billed: the provider's usage, all four completions, within what was reserved.
    assert row.completion_tokens == completion.usage.completion_tokens
    assert 4 <= row.completion_tokens <= 80
    assert row.cost_usd == mini_cost(row.prompt_tokens, row.completion_tokens)
    assert row.cost_usd <= row.reserved_usd


def test_n_above_the_configured_maximum_is_a_400(gateway_url, make_tenant, prices):
    tenant = make_tenant()
    client = client_for(gateway_url, tenant.secret)
    max_n = settings.FINOPS["GATEWAY_MAX_N"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", n=max_n + 1, messages=[{"role": "user", "content": unique_prompt()}])
    error = caught.value.response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "n")
    row = wait_for_row(caught.value.response.headers["x-request-id"])
    assert (row.status, row.http_status, row.cost_usd, row.attempts, row.reserved_usd) == ("rejected", 400, 0, 0, 0)


def test_n_is_one_while_failed_open(make_tenant, settings):
    """The budget database is unreachable: the limiter admits the request with one clamped completion, not n."""
    from conftest import free_port

    settings.FINOPS = {**settings.FINOPS, "BUDGET_TIMEOUT_MS": 50, "BUDGET_FAIL_OPEN_MAX_TOKENS": 256}
    local_window.clear()
    tenant = budgeted(make_tenant, "1.00")
    ctx = RequestContext(endpoint="chat_completions", caller=caller_for(tenant), requested_model="gpt-4o-mini")
    ctx.body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "n": 8, "max_tokens": 4000}
    ctx.n, ctx.max_tokens = 8, 4000
    db = connection.settings_dict
    saved = db["HOST"], db["PORT"]
    db["HOST"], db["PORT"] = "127.0.0.1", str(free_port())  # this run's pool connects to nothing
    try:
        run(lambda: budget_reserve(ctx))
    finally:
        db["HOST"], db["PORT"] = saved
    assert ctx.budget_state == "fail_open"
    assert (ctx.n, ctx.n_requested, ctx.max_tokens, ctx.max_tokens_requested) == (1, 8, 256, 4000)
    body = _upstream_body(ctx, "gpt-4o-mini", stream=False)
    assert (body["n"], body["max_tokens"]) == (1, 256)
    assert LLMRequest.objects.count() == 0


# --- 2. the completion limit --------------------------------------------------------------------------------


def test_no_limit_sent_means_the_default_limit_is_reserved_and_sent_upstream(gateway_url, make_tenant, prices):
    """The mock writes 5,000 tokens when nothing stops it; the gateway sends the limit it reserved."""
    tenant = budgeted(make_tenant)
    client = client_for(gateway_url, tenant.secret)
    default = settings.FINOPS["GATEWAY_DEFAULT_MAX_TOKENS"]
    messages = [{"role": "user", "content": unique_prompt("Write a very long essay.")}]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, extra_headers={"X-Mock-Completion-Tokens": "5000"}
    )
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == default
    row = wait_for_row(raw.headers["x-request-id"])
    assert row.reserved_usd == mini_cost(prompt_token_bound(messages), default)
    assert row.completion_tokens == default
    assert row.cost_usd == mini_cost(row.prompt_tokens, default) <= row.reserved_usd


@pytest.mark.parametrize(
    ("limits", "sent"),
    [
        ({"max_tokens": 50, "max_completion_tokens": 30}, ("max_completion_tokens", 30)),
        ({"max_tokens": 20, "max_completion_tokens": 40}, ("max_tokens", 20)),
        ({"max_tokens": 25}, ("max_tokens", 25)),
        ({"max_completion_tokens": 35}, ("max_completion_tokens", 35)),
    ],
)
def test_the_reserved_limit_is_sent_once_under_the_clients_name(
    gateway_url, mock_llm_url, make_tenant, prices, settings, limits, sent
):
    tenant = budgeted(make_tenant)
    client = client_for(gateway_url, tenant.secret)
    messages = [{"role": "user", "content": unique_prompt("Write a long essay.")}]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, extra_headers={"X-Mock-Completion-Tokens": "500"}, **limits
    )
    completion = raw.parse()
    name, limit = sent
    assert completion.usage.completion_tokens == limit  # the mock honoured the smaller limit
    row = wait_for_row(raw.headers["x-request-id"])
    assert row.reserved_usd == mini_cost(prompt_token_bound(messages), limit)
    assert (row.completion_tokens, row.cost_usd) == (limit, mini_cost(row.prompt_tokens, limit))
    assert row.cost_usd <= row.reserved_usd
    # What goes upstream: one name, one value (stage 3 and the body builder of the pipeline, on the same request).
    settings.FINOPS = {**settings.FINOPS, "MOCK_LLM_URL": mock_llm_url}  # the gateway's upstream, in this process too
    ctx = stage1_receive("chat_completions", {})
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **limits}
    stage3_validate(ctx, run(catalog_refresh), request, None)  # this test's prices
    body = _upstream_body(ctx, "gpt-4o-mini", stream=False)
    assert {k: v for k, v in body.items() if k in ("max_tokens", "max_completion_tokens")} == {name: limit}


# --- the prompt is counted with an upper bound -------------------------------------------------------------------


def test_a_chinese_prompt_reserves_its_upper_bound_not_a_handful_of_words(gateway_url, make_tenant, prices):
    """91 Chinese characters were 14 "tokens" to the old counter; the reservation now holds 3 per character (the
    UTF-8 length: a byte-level BPE token is at least one byte), more than a real BPE makes of them."""
    tenant = budgeted(make_tenant)
    client = client_for(gateway_url, tenant.secret)
    chinese = "成本控制是每个组织在使用大语言模型时必须认真对待的问题预算上限缓存与路由共同决定了每一次请求的花费" * 2
    messages = [{"role": "user", "content": unique_prompt(chinese[:91])}]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", max_tokens=30, messages=messages)
    row = wait_for_row(raw.headers["x-request-id"])
    assert prompt_token_bound(messages) >= 3 * 91
    assert row.reserved_usd == mini_cost(prompt_token_bound(messages), 30)
    assert row.prompt_tokens == raw.parse().usage.prompt_tokens < 3 * 91  # billed: what the provider counted
    assert row.cost_usd <= row.reserved_usd


def test_a_46_kb_base64_blob_counts_against_the_prompt_limit(gateway_url, make_tenant, prices):
    """The old counter made a URL-safe base64 blob one token: it passed any prompt limit. Its bound is its length."""
    tenant = budgeted(make_tenant)
    client = client_for(gateway_url, tenant.secret)
    blob = base64.urlsafe_b64encode(bytes(range(256)) * 135).decode()
    assert len(blob) >= 46_000
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"Decode this: {blob}"}], max_tokens=10
        )
    assert (caught.value.status_code, caught.value.body["code"]) == (413, "context_length_exceeded")
    row = wait_for_row(caught.value.response.headers["x-request-id"])
    assert (row.status, row.http_status, row.attempts, row.reserved_usd, row.cost_usd) == ("rejected", 413, 0, 0, 0)


# --- 3. streams billed once -----------------------------------------------------------------------------------


@pytest.mark.parametrize("continuous", [True, False])
def test_a_stream_with_usage_on_every_chunk_is_billed_once(gateway_url, make_tenant, prices, continuous):
    """vLLM's continuous_usage_stats: each of the 120 chunks carries the usage so far; the bill is the last one."""
    tenant = budgeted(make_tenant)
    client = client_for(gateway_url, tenant.secret)
    stream_options = {"include_usage": True, **({"continuous_usage_stats": True} if continuous else {})}
    messages = [{"role": "user", "content": unique_prompt("Count slowly.")}]
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        max_tokens=200,
        stream=True,
        stream_options=stream_options,  # type: ignore[arg-type] - a vLLM extension
        messages=messages,
        extra_headers={"X-Mock-Completion-Tokens": "120"},
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    usages = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert len(usages) > 100 if continuous else len(usages) == 1
    final = usages[-1]
    assert final.completion_tokens == 120
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    row = wait_for_row(request_id)
    assert (row.status, row.stream) == ("served", True)
    assert (row.prompt_tokens, row.completion_tokens) == (final.prompt_tokens, 120)
    assert row.cost_usd == mini_cost(final.prompt_tokens, 120)
    assert row.reserved_usd == mini_cost(prompt_token_bound(messages), 200) >= row.cost_usd
    assert final.model_extra["finops"]["cost_usd"] == str(row.cost_usd)


# --- 4. fail open only for an outage ----------------------------------------------------------------------------


def fail_closed_count(reason: str) -> float:
    return REGISTRY.get_sample_value("finops_budget_fail_closed_total", {"reason": reason}) or 0.0


def scraped(gateway_url: str, name: str, labels: str) -> float:
    for line in requests.get(f"{gateway_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


@contextlib.contextmanager
def budget_reserve_renamed():
    """A bad migration: the reserve function is gone (renamed away, and back afterwards)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT oid::regprocedure::text FROM pg_proc WHERE proname = 'budget_reserve'")
        (signature,) = cursor.fetchone()
        cursor.execute(f"ALTER FUNCTION {signature} RENAME TO budget_reserve_gone")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER FUNCTION {signature.replace('budget_reserve', 'budget_reserve_gone', 1)} RENAME TO budget_reserve"
            )


def test_a_missing_budget_function_fails_closed_with_a_503_a_metric_and_a_row(gateway_url, make_tenant, prices):
    tenant = budgeted(make_tenant)
    client = client_for(gateway_url, tenant.secret)
    labels = 'reason="undefined_function"'
    before = scraped(gateway_url, "finops_budget_fail_closed_total", labels)
    with budget_reserve_renamed(), pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": unique_prompt()}])
    assert caught.value.status_code == 503
    error = caught.value.response.json()["error"]
    assert error["code"] == "budget_unavailable"
    row = wait_for_row(caught.value.response.headers["x-request-id"])
    assert (row.status, row.http_status, row.error_code) == ("failed", 503, "budget_unavailable")
    assert (row.attempts, row.cost_usd, row.reserved_usd) == (0, 0, 0)  # never sent upstream, nothing held
    assert row.budget_state != "fail_open"
    assert not Reservation.objects.exists()
    assert scraped(gateway_url, "finops_budget_fail_closed_total", labels) == before + 1


def test_a_permission_error_fails_closed_and_an_outage_still_fails_open(make_tenant, settings):
    from conftest import free_port

    settings.FINOPS = {**settings.FINOPS, "BUDGET_TIMEOUT_MS": 10_000}
    local_window.clear()
    tenant = budgeted(make_tenant, "1.00")
    with connection.cursor() as cursor:
        cursor.execute("DO $$ BEGIN CREATE ROLE finops_test_noperm LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    db = connection.settings_dict
    saved = db["USER"], db["HOST"], db["PORT"]
    before = fail_closed_count("permission")
    ctx = RequestContext(endpoint="chat_completions", caller=caller_for(tenant), requested_model="gpt-4o-mini")
    db["USER"] = "finops_test_noperm"  # this run's pool: a role that may not read the budget tables
    try:
        with pytest.raises(BudgetBroken) as caught:
            run(lambda: budget_reserve(ctx))
        assert caught.value.reason == "permission"
        assert fail_closed_count("permission") == before + 1
        assert ctx.budget_state != "fail_open" and ctx.reservation_id is None
        # An outage (nothing listens) still fails open, under the limiter.
        db["USER"], db["HOST"], db["PORT"] = saved[0], "127.0.0.1", str(free_port())
        settings.FINOPS = {**settings.FINOPS, "BUDGET_TIMEOUT_MS": 50}
        outage = RequestContext(endpoint="chat_completions", caller=caller_for(tenant), requested_model="gpt-4o-mini")
        run(lambda: budget_reserve(outage))
        assert (outage.budget_state, outage.fail_open_reason) == ("fail_open", "unavailable")
    finally:
        db["USER"], db["HOST"], db["PORT"] = saved


# --- 5. cache only exact answers: streamed tool calls ------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
        },
    }
]


def test_a_streamed_tool_call_is_reassembled_billed_and_cached_whole(gateway_url, make_tenant, prices, redis_client):
    from apps.cache.models import CacheSettings

    tenant = make_tenant(org=f"Tools {uuid.uuid4().hex[:8]}")
    CacheSettings.objects.create(org=tenant.org, allow_tools=True)
    client = client_for(gateway_url, tenant.secret)
    request = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": unique_prompt("What is the weather in Paris?")}],
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "lookup_weather"}},
    }
    with client.chat.completions.with_streaming_response.create(
        stream=True, stream_options={"include_usage": True}, **request
    ) as response:
        assert response.headers["x-cache"] == "miss"
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    fragments = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(fragments) > 2  # the arguments arrived in pieces
    arguments = "".join(f.function.arguments or "" for f in fragments)
    assert json.loads(arguments)["answer"]
    usage = next(c.usage for c in chunks if c.usage is not None)
    row = wait_for_row(request_id)
    assert (row.status, row.completion_tokens) == ("served", usage.completion_tokens)
    assert row.cost_usd == mini_cost(usage.prompt_tokens, usage.completion_tokens)

    # The same request again (the store ran before the row was written): an exact hit, and the hit is the whole tool
    # call, not empty content.
    raw = client.chat.completions.with_raw_response.create(**request)
    wait_for_row(raw.headers["x-request-id"])
    assert raw.headers["x-cache"] == "exact"
    message = raw.parse().choices[0].message
    assert raw.parse().choices[0].finish_reason == "tool_calls"
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (fragments[0].id, "lookup_weather", arguments)


# --- 8. /chat: a client that disconnects ------------------------------------------------------------------------


def test_a_chat_client_that_disconnects_leaves_one_billed_row_and_no_open_reservation(gateway_url, make_tenant, prices):
    """Django cancels /chat's view when its client goes away (CancelledError is not an Exception): the end of the
    request — the bill, the settlement and the ledger row — still happens, once."""
    tenant = budgeted(make_tenant)
    prompt = unique_prompt()
    with pytest.raises(httpx2.ReadTimeout), httpx2.Client(timeout=httpx2.Timeout(10.0, read=0.5)) as http:
        http.post(
            f"{gateway_url}/chat",
            json={"model": "gpt-4o-mini", "prompt": prompt, "max_tokens": 50},
            headers={"Authorization": f"Bearer {tenant.secret}", "X-Mock-Latency-Ms": "3000"},
        )
    # The client is gone (after 0.5 s of a 3-second upstream call); the answer arrives later, and the request ends on
    # the server: one row and no open reservation within 5 seconds (the acceptance).
    deadline = time.monotonic() + 5
    while not LLMRequest.objects.filter(org=tenant.org).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    while Reservation.objects.filter(state=Reservation.State.RESERVED).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # a second, stray row would be written in the same breath
    rows = list(LLMRequest.objects.filter(org=tenant.org))
    assert len(rows) == 1, rows
    assert not Reservation.objects.filter(state=Reservation.State.RESERVED).exists()
    row = rows[0]
    assert (row.endpoint, row.status, row.model) == ("chat", "disconnected", "gpt-4o-mini")
    assert row.completion_tokens > 0 and row.cost_usd == mini_cost(row.prompt_tokens, row.completion_tokens)
    assert row.reserved_usd == mini_cost(prompt_token_bound([{"role": "user", "content": prompt}]), 50) >= row.cost_usd
    reservation = Reservation.objects.get()
    assert reservation.state != Reservation.State.RESERVED


# --- the reservation is an upper bound ------------------------------------------------------------------------------


@hypothesis.settings(max_examples=20, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(
    words=st.integers(1, 80),
    n=st.integers(1, 8),
    limits=st.sampled_from(["none", "max_tokens", "max_completion_tokens", "both"]),
    limit=st.integers(1, 300),
    other=st.integers(1, 300),
    stream=st.booleans(),
    length=st.integers(1, 600),
    script=st.sampled_from(["english", "chinese", "base64"]),
    reasoning=st.sampled_from([0, 0, 50, 400]),
)
def test_for_any_request_shape_the_reservation_covers_the_bill(
    gateway_url, make_tenant, prices, words, n, limits, limit, other, stream, length, script, reasoning
):
    """Reserved ≥ billed, unless the row is marked estimated (the provider reported no usage)."""
    tenant = budgeted(lambda: make_tenant(user=f"u{uuid.uuid4().hex[:12]}"))  # hypothesis reuses the fixtures
    client = client_for(gateway_url, tenant.secret)
    params: dict = {}
    if limits in ("max_tokens", "both"):
        params["max_tokens"] = limit
    if limits in ("max_completion_tokens", "both"):
        params["max_completion_tokens"] = other if limits == "both" else limit
    text = {
        "english": " ".join(["word"] * words),
        "chinese": "成本控制预算上限缓存路由账本结算"[: 1 + words % 16] * (1 + words // 16),
        "base64": base64.b64encode(bytes(range(words * 7 % 256)) * (1 + words // 20)).decode(),
    }[script]
    prompt = unique_prompt(text)
    kwargs = dict(
        model="gpt-4o-mini",
        n=n,
        messages=[{"role": "user", "content": prompt}],
        extra_headers={"X-Mock-Completion-Tokens": str(length), "X-Mock-Reasoning-Tokens": str(reasoning)},
        **params,
    )
    if stream:
        with client.chat.completions.with_streaming_response.create(stream=True, **kwargs) as response:
            request_id = response.headers["x-request-id"]
            list(response.parse())
    else:
        request_id = client.chat.completions.with_raw_response.create(**kwargs).headers["x-request-id"]
    row = wait_for_row(request_id)
    assert row.status == "served" and row.reserved_usd > 0
    assert row.usage_estimated or row.cost_usd <= row.reserved_usd, (row.prompt_tokens, row.completion_tokens, n, params)
    assert not row.usage_estimated  # the mock reports usage: every row here is billed from it


def test_200_concurrent_requests_with_n_8_and_no_limit_overshoot_a_cap_by_at_most_one_request(gateway_url, make_tenant, prices):
    """Each request asks for 8 completions and no limit; the mock would write 5,000 tokens each. The reservation (8 ×
    the default limit) and the limit sent upstream keep the spend within the $0.05 cap plus one request."""
    from concurrent.futures import ThreadPoolExecutor

    cap = Decimal("0.05")
    tenant = budgeted(make_tenant, str(cap))
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=tenant.secret, max_retries=0, timeout=60)

    def one(i: int) -> str:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                n=8,
                messages=[{"role": "user", "content": unique_prompt(f"Essay {i}")}],
                extra_headers={"X-Mock-Completion-Tokens": "5000"},
            )
            return raw.headers["x-request-id"]
        except openai.RateLimitError as exc:
            return exc.response.headers["x-request-id"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        request_ids = list(pool.map(one, range(200)))
    rows = [wait_for_row(request_id) for request_id in request_ids]
    assert not [row for row in rows if row.budget_state == "fail_open"]
    served = [row for row in rows if row.status == "served"]
    blocked = [row for row in rows if row.status == "rejected"]
    assert served and blocked and len(served) + len(blocked) == 200
    assert all(row.http_status == 429 and row.cost_usd == 0 for row in blocked)
    default = settings.FINOPS["GATEWAY_DEFAULT_MAX_TOKENS"]
    for row in served:
        assert row.completion_tokens == 8 * default  # every completion cut at the limit that was reserved
        assert row.cost_usd == mini_cost(row.prompt_tokens, 8 * default) <= row.reserved_usd
    spent = sum(row.cost_usd for row in served)
    assert spent <= cap + max(row.cost_usd for row in served)
