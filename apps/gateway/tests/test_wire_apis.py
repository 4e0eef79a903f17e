"""/v1/embeddings, /v1/responses and /v1/messages through the official openai and anthropic SDKs, against a live gateway
and the mock LLM: the answer, X-Cost-USD (or the stream's final finops figures) equal to the ledger row's cost, one row
per request, the budget counter moved by that cost, and the documented errors (bad key, unknown model, malformed input).
"""

from __future__ import annotations

import base64
import json
import struct
import time
from decimal import Decimal

import anthropic
import httpx2
import openai
import pytest

from apps.budgets.models import BudgetCounter, Reservation
from apps.gateway.tests.conftest import mini_cost, only_row, unique_prompt, wait_for_row
from apps.ledger.models import LLMRequest
from apps.ledger.money import quantize_usd
from finops.tokens import count_tokens

pytestmark = pytest.mark.django_db(transaction=True)

EMBEDDING_INPUT = Decimal("0.02")  # text-embedding-3-small in fixtures/prices.json, per 1M input tokens


@pytest.fixture(scope="module")
def gateway_url(django_db_setup, mock_llm_url):
    """This module's gateway: the budget check waits instead of failing open on a loaded machine (a fail-open request
    holds no reservation, and these tests assert the counter)."""
    from conftest import gateway_server

    env = {"FINOPS_BUDGET_TIMEOUT_MS": "10000", "FINOPS_BUDGET_DECISION_MAX_MS": "10000", "FINOPS_UPSTREAM_TIMEOUT_S": "30"}
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        yield url


@pytest.fixture(autouse=True)
def _settled_before_teardown():
    yield
    deadline = time.monotonic() + 5
    while Reservation.objects.filter(state=Reservation.State.RESERVED).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def tenant(make_tenant, prices):
    """A tenant with a monthly user budget, so that every request reserves and settles on its counter."""
    from apps.budgets.models import Budget
    from apps.budgets.services import budget_create

    tenant = make_tenant()
    budget_create(
        budget=Budget(
            scope="user", org=tenant.org, team=tenant.team, member=tenant.member, period="monthly",
            cap_usd=Decimal("100.00"), action="block", soft_pct=[50, 80, 100],
        )
    )  # fmt: skip
    return tenant


def spent() -> Decimal:
    return sum((c.spent_usd for c in BudgetCounter.objects.all()), Decimal(0))


def assert_counter_moved(before: Decimal, cost: Decimal) -> None:
    """The settle runs after the response (batched): wait for it, then the counter moved by exactly the row's cost."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not Reservation.objects.filter(state=Reservation.State.RESERVED).exists() and spent() == before + cost:
            return
        time.sleep(0.05)
    assert spent() == before + cost


def openai_client(gateway_url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=secret, max_retries=0)


def anthropic_client(gateway_url: str, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway_url, api_key=secret, max_retries=0)


def scraped(gateway_url: str) -> str:
    with httpx2.Client() as http:
        return http.get(f"{gateway_url}/metrics").text


def embedding_cost(tokens: int) -> Decimal:
    return quantize_usd(tokens * EMBEDDING_INPUT / Decimal(1_000_000))


def rejected_row(request_id: str, status: int) -> LLMRequest:
    row = only_row(request_id)
    assert (row.status, row.http_status, row.cost_usd, row.attempts) == ("rejected", status, 0, 0)
    return row


# --- /v1/embeddings -----------------------------------------------------------------------------------------


def test_embeddings_float_are_priced_per_input_token_recorded_and_counted(gateway_url, mock_llm_url, tenant):
    client = openai_client(gateway_url, tenant.secret)
    texts = [unique_prompt("Invoices are due in thirty days"), unique_prompt("Refunds take a week")]
    before = spent()
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    direct = openai.OpenAI(base_url=mock_llm_url, api_key="sk-mock").embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    assert [d.embedding for d in result.data] == [d.embedding for d in direct.data]  # the upstream's vectors, unchanged

    row = only_row(raw.headers["x-request-id"])
    assert (row.endpoint, row.status, row.model, row.provider, row.completion_tokens) == (
        "embeddings", "served", "text-embedding-3-small", "mock", 0,
    )  # fmt: skip
    tokens = sum(count_tokens(t) for t in texts)
    assert row.prompt_tokens == result.usage.prompt_tokens == tokens
    assert row.cost_usd == embedding_cost(tokens) > 0
    assert raw.headers["x-cost-usd"] == format(row.cost_usd, "f")
    assert raw.headers["x-tokens-prompt"] == str(tokens)
    assert row.reserved_usd == row.cost_usd  # the estimate is the input: nothing else to pay for
    assert_counter_moved(before, row.cost_usd)
    assert 'finops_gateway_requests_total{cache_status="miss",endpoint="embeddings",outcome="served"}' in scraped(gateway_url)


def test_embeddings_base64_decode_to_the_float_vectors_and_the_repeat_is_an_exact_hit(gateway_url, tenant):
    client = openai_client(gateway_url, tenant.secret)
    text = unique_prompt("Quarterly cloud spend")
    first = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text, encoding_format="float")
    floats = first.parse().data[0].embedding
    only_row(first.headers["x-request-id"])  # recorded after the response: wait for it before clearing the ledger
    LLMRequest.objects.all().delete()
    before = spent()
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text, encoding_format="base64")
    encoded = json.loads(raw.http_response.text)["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = list(struct.unpack(f"<{len(floats)}f", base64.b64decode(encoded)))
    assert decoded == pytest.approx(floats, abs=1e-6)
    row = only_row(raw.headers["x-request-id"])
    assert raw.headers["x-cost-usd"] == format(row.cost_usd, "f") and row.cost_usd > 0
    assert_counter_moved(before, row.cost_usd)

    # The same input and options again: the org's exact cache answers, at $0, and nothing is spent.
    LLMRequest.objects.all().delete()
    before = spent()
    again = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text, encoding_format="base64")
    assert json.loads(again.http_response.text)["data"][0]["embedding"] == encoded
    hit = only_row(again.headers["x-request-id"])
    assert (hit.status, hit.cache_status, hit.cost_usd, again.headers["x-cache"]) == ("cached", "exact", 0, "exact")
    assert hit.saved_usd == row.cost_usd
    assert Decimal(again.headers["x-cost-usd"]) == 0
    assert_counter_moved(before, Decimal(0))


def test_embeddings_accept_token_arrays(gateway_url, tenant):
    raw = openai_client(gateway_url, tenant.secret).embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=[[101, 2023, 2003], [7592, 2088]], encoding_format="float",
        extra_headers={"Cache-Control": "no-store"},
    )  # fmt: skip
    assert len(raw.parse().data) == 2
    row = only_row(raw.headers["x-request-id"])
    assert (row.prompt_tokens, row.cost_usd) == (5, embedding_cost(5))


@pytest.mark.parametrize(
    ("kwargs", "error", "status", "param", "code"),
    [
        ({"model": "no-such-embedder", "input": "x"}, openai.NotFoundError, 404, "model", "model_not_found"),
        ({"model": "text-embedding-3-small", "input": [1.5]}, openai.BadRequestError, 400, "input", None),
        ({"model": "text-embedding-3-small", "input": "x", "encoding_format": "int8"}, openai.BadRequestError, 400,
         "encoding_format", None),
        ({"model": "gpt-4o-mini", "input": "x"}, openai.BadRequestError, 400, "model", "wrong_model_kind"),
    ],
)  # fmt: skip
def test_embeddings_errors_are_openai_shaped_and_recorded(gateway_url, tenant, kwargs, error, status, param, code):
    client = openai_client(gateway_url, tenant.secret)
    before = spent()
    with pytest.raises(error) as caught:
        client.embeddings.create(**kwargs)
    body = caught.value.response.json()["error"]
    assert body["param"] == param
    if code:
        assert body["code"] == code
    if code == "wrong_model_kind":
        assert "is a chat model" in body["message"]
    row = rejected_row(caught.value.response.headers["x-request-id"], status)
    assert row.endpoint == "embeddings"
    assert spent() == before


def test_embeddings_with_a_bad_key_are_a_401(gateway_url, tenant):
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_client(gateway_url, "fo-not-a-key").embeddings.create(model="text-embedding-3-small", input="x")
    assert caught.value.response.json()["error"]["type"] == "authentication_error"
    row = only_row(caught.value.response.headers["x-request-id"])
    assert (row.endpoint, row.http_status, row.org_id) == ("embeddings", 401, None)


def test_a_chat_request_to_an_embedding_model_is_a_400_and_models_say_their_kind(gateway_url, tenant):
    client = openai_client(gateway_url, tenant.secret)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="all-minilm-l6-v2", messages=[{"role": "user", "content": "hi"}])
    error = caught.value.response.json()["error"]
    assert (error["code"], error["param"]) == ("wrong_model_kind", "model")
    assert "embedding model" in error["message"]
    rejected_row(caught.value.response.headers["x-request-id"], 400)

    tenant.api_key.allow_model_pinning = True
    tenant.api_key.save()
    with httpx2.Client() as http:
        listed = http.get(f"{gateway_url}/v1/models", headers={"Authorization": f"Bearer {tenant.secret}"}).json()["data"]
    kinds = {m["id"]: m["kind"] for m in listed}
    assert kinds["gpt-4o-mini"] == "chat"
    assert kinds["text-embedding-3-small"] == kinds["all-minilm-l6-v2"] == "embedding"
    order = [m["kind"] for m in listed]
    assert order == sorted(order, key=lambda kind: kind != "chat"), "chat models are listed first"


# --- /v1/responses ---------------------------------------------------------------------------------------------


def test_responses_create_is_answered_billed_and_recorded(gateway_url, tenant):
    client = openai_client(gateway_url, tenant.secret)
    before = spent()
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini", instructions="Answer briefly.", input=unique_prompt("Why cache prompts?"), max_output_tokens=60,
        store=False, extra_headers={"X-Mock-Cached-Tokens": "4"},
    )  # fmt: skip
    response = raw.parse()
    assert response.object == "response" and response.status in ("completed", "incomplete")
    assert response.output_text.startswith("Mock answer from gpt-4o-mini")
    row = only_row(raw.headers["x-request-id"])
    assert (row.endpoint, row.status, row.model, row.stream) == ("responses", "served", "gpt-4o-mini", False)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (row.prompt_tokens, row.completion_tokens)
    assert response.usage.input_tokens_details.cached_tokens == row.cached_tokens == 4
    assert row.cost_usd == mini_cost(row.prompt_tokens, row.completion_tokens, 4) > 0
    assert raw.headers["x-cost-usd"] == format(row.cost_usd, "f")
    assert_counter_moved(before, row.cost_usd)


def test_responses_bill_reasoning_tokens_as_output(gateway_url, tenant):
    raw = openai_client(gateway_url, tenant.secret).responses.with_raw_response.create(
        model="gpt-4o-mini", input=[{"role": "user", "content": [{"type": "input_text", "text": unique_prompt()}]}],
        extra_headers={"X-Mock-Reasoning-Tokens": "300"},
    )  # fmt: skip
    response = raw.parse()
    visible = count_tokens(response.output_text)
    assert response.usage.output_tokens_details.reasoning_tokens == 300
    assert response.usage.output_tokens == visible + 300
    row = only_row(raw.headers["x-request-id"])
    assert row.completion_tokens == visible + 300
    assert row.cost_usd == mini_cost(row.prompt_tokens, visible + 300)


def test_responses_stream_typed_events_with_the_usage_in_response_completed(gateway_url, tenant):
    client = openai_client(gateway_url, tenant.secret)
    before = spent()
    raw = client.responses.with_raw_response.create(model="gpt-4o-mini", input=unique_prompt("Tell a story"), stream=True)
    events = list(raw.parse())
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("Mock answer from gpt-4o-mini")
    completed = events[-1].response
    assert completed.output_text == text
    finops = completed.model_dump()["finops"]
    row = only_row(raw.headers["x-request-id"])
    assert (row.endpoint, row.stream, row.status) == ("responses", True, "served")
    assert (completed.usage.input_tokens, completed.usage.output_tokens) == (row.prompt_tokens, row.completion_tokens)
    assert finops["cost_usd"] == format(row.cost_usd, "f") and row.cost_usd == mini_cost(row.prompt_tokens, count_tokens(text))
    assert_counter_moved(before, row.cost_usd)


@pytest.mark.parametrize(
    ("kwargs", "error", "status", "param"),
    [
        ({"model": "no-such-model", "input": "hi"}, openai.NotFoundError, 404, "model"),
        ({"model": "gpt-4o-mini", "input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]},
         openai.BadRequestError, 400, "input[0]"),
        ({"model": "gpt-4o-mini", "input": "hi", "store": True}, openai.BadRequestError, 400, "store"),
        ({"model": "gpt-4o-mini", "input": "hi", "previous_response_id": "resp_1"}, openai.BadRequestError, 400,
         "previous_response_id"),
        ({"model": "gpt-4o-mini", "input": "hi", "tools": [{"type": "web_search"}]}, openai.BadRequestError, 400, "tools"),
        ({"model": "text-embedding-3-small", "input": "hi"}, openai.BadRequestError, 400, "model"),
    ],
)  # fmt: skip
def test_responses_errors_are_openai_shaped_and_recorded(gateway_url, tenant, kwargs, error, status, param):
    before = spent()
    with pytest.raises(error) as caught:
        openai_client(gateway_url, tenant.secret).responses.create(**kwargs)
    body = caught.value.response.json()["error"]
    assert body["param"] == param and body["message"]
    row = rejected_row(caught.value.response.headers["x-request-id"], status)
    assert (row.endpoint, row.requested_model) == ("responses", kwargs["model"])
    assert spent() == before


def test_responses_with_a_bad_key_are_a_401(gateway_url, tenant):
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_client(gateway_url, "fo-not-a-key").responses.create(model="gpt-4o-mini", input="hi")
    assert caught.value.response.json()["error"]["type"] == "authentication_error"
    assert only_row(caught.value.response.headers["x-request-id"]).endpoint == "responses"


# --- /v1/messages ---------------------------------------------------------------------------------------------


def test_messages_create_is_answered_billed_and_recorded(gateway_url, tenant):
    client = anthropic_client(gateway_url, tenant.secret)
    before = spent()
    raw = client.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=80, system="You are terse. " * 10, extra_body={"temperature": 0.2},
        messages=[{"role": "user", "content": [{"type": "text", "text": unique_prompt("Summarise our cloud bill")}]}],
        extra_headers={"X-Mock-Cached-Tokens": "30"},
    )  # fmt: skip
    message = raw.parse()
    assert (message.type, message.role, message.stop_reason) == ("message", "assistant", "end_turn")
    assert message.content[0].text.startswith("Mock answer from gpt-4o-mini")
    row = only_row(raw.headers["x-request-id"])
    assert (row.endpoint, row.status, row.model, row.stream) == ("messages", "served", "gpt-4o-mini", False)
    usage = message.usage
    assert usage.cache_read_input_tokens == row.cached_tokens == 30
    assert usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens == row.prompt_tokens
    assert usage.output_tokens == row.completion_tokens == count_tokens(message.content[0].text)
    assert row.cost_usd == mini_cost(row.prompt_tokens, row.completion_tokens, 30) > 0
    assert raw.headers["x-cost-usd"] == format(row.cost_usd, "f")
    assert_counter_moved(before, row.cost_usd)
    assert 'finops_gateway_requests_total{cache_status="miss",endpoint="messages",outcome="served"}' in scraped(gateway_url)


def test_messages_stream_events_and_usage_with_the_official_sdk(gateway_url, tenant):
    client = anthropic_client(gateway_url, tenant.secret)
    before = spent()
    prompt = unique_prompt("Write a haiku about invoices")
    with client.messages.stream(model="gpt-4o-mini", max_tokens=200, messages=[{"role": "user", "content": prompt}]) as stream:
        events = list(stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    types = [e.type for e in events if not e.type.endswith(("text", "input_json", "citation", "signature", "thinking"))]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = final.content[0].text
    assert text.startswith("Mock answer from gpt-4o-mini") and final.stop_reason == "end_turn"
    row = only_row(request_id)
    assert (row.endpoint, row.stream, row.status) == ("messages", True, "served")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (row.prompt_tokens, row.completion_tokens)
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.model_dump()["finops"]["cost_usd"] == format(row.cost_usd, "f")
    assert row.cost_usd == mini_cost(row.prompt_tokens, count_tokens(text))
    assert_counter_moved(before, row.cost_usd)


@pytest.mark.parametrize(
    ("kwargs", "error", "status", "kind"),
    [
        ({"model": "no-such-model"}, anthropic.NotFoundError, 404, "not_found_error"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]},
         anthropic.BadRequestError, 400, "invalid_request_error"),
        ({"tools": [{"name": "f", "input_schema": {"type": "object"}}]}, anthropic.BadRequestError, 400, "invalid_request_error"),
    ],
)  # fmt: skip
def test_messages_errors_are_anthropic_shaped_and_recorded(gateway_url, tenant, kwargs, error, status, kind):
    request = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **kwargs}
    before = spent()
    with pytest.raises(error) as caught:
        anthropic_client(gateway_url, tenant.secret).messages.create(**request)
    body = caught.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]
    row = rejected_row(caught.value.response.headers["x-request-id"], status)
    assert row.endpoint == "messages"
    assert spent() == before


def test_messages_without_max_tokens_or_with_a_bad_key(gateway_url, tenant):
    with httpx2.Client() as http:
        response = http.post(
            f"{gateway_url}/v1/messages", headers={"x-api-key": tenant.secret, "anthropic-version": "2023-06-01"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )  # fmt: skip
    assert response.status_code == 400
    assert (response.json()["type"], response.json()["error"]["type"]) == ("error", "invalid_request_error")
    assert response.json()["error"]["message"].startswith("max_tokens: Field required")
    rejected_row(response.headers["x-request-id"], 400)
    LLMRequest.objects.all().delete()

    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic_client(gateway_url, "fo-not-a-key").messages.create(
            model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.response.json()["error"]["type"] == "authentication_error"
    assert only_row(caught.value.response.headers["x-request-id"]).endpoint == "messages"


# --- budgets and upstream faults, on every format ---------------------------------------------------------------


@pytest.fixture
def broke(make_tenant, prices):
    """A tenant whose block budget has nothing left: every priced request is refused before the upstream."""
    from apps.budgets.models import Budget
    from apps.budgets.services import budget_create

    tenant = make_tenant()
    budget_create(
        budget=Budget(scope="user", org=tenant.org, team=tenant.team, member=tenant.member, period="monthly",
                      cap_usd=Decimal("0.00"), action="block", soft_pct=[100])
    )  # fmt: skip
    return tenant


def test_a_spent_budget_blocks_each_api_in_its_own_error_shape(gateway_url, broke):
    client = openai_client(gateway_url, broke.secret)
    with pytest.raises(openai.RateLimitError) as embeddings:
        client.embeddings.create(
            model="text-embedding-3-small", input=unique_prompt(), extra_headers={"Cache-Control": "no-cache"}
        )
    with pytest.raises(openai.RateLimitError) as responses:
        client.responses.create(model="gpt-4o-mini", input=unique_prompt())
    with pytest.raises(anthropic.RateLimitError) as messages:
        anthropic_client(gateway_url, broke.secret).messages.create(
            model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": unique_prompt()}]
        )
    assert embeddings.value.response.json()["error"]["code"] == "budget_exceeded"
    assert responses.value.response.json()["error"]["code"] == "budget_exceeded"
    assert messages.value.response.json()["error"]["type"] == "rate_limit_error"
    for caught, endpoint in ((embeddings, "embeddings"), (responses, "responses"), (messages, "messages")):
        row = wait_for_row(caught.value.response.headers["x-request-id"])
        assert (row.endpoint, row.status, row.http_status, row.budget_state, row.cost_usd, row.attempts) == (
            endpoint, "rejected", 429, "blocked", 0, 0,
        )  # fmt: skip
    assert spent() == 0


def test_an_upstream_failure_is_a_502_with_a_failed_row_and_nothing_spent(gateway_url, tenant):
    before = spent()
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(gateway_url, tenant.secret).embeddings.create(
            model="text-embedding-3-small", input=unique_prompt(), extra_headers={"X-Mock-Error": "500"}
        )
    assert caught.value.status_code == 502
    row = only_row(caught.value.response.headers["x-request-id"])
    assert (row.endpoint, row.status, row.http_status, row.cost_usd, row.attempts) == ("embeddings", "failed", 502, 0, 1)
    assert_counter_moved(before, Decimal(0))
    with pytest.raises(anthropic.APIStatusError) as failed:
        anthropic_client(gateway_url, tenant.secret).messages.create(
            model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": unique_prompt()}],
            extra_headers={"X-Mock-Error": "503"},
        )  # fmt: skip
    assert failed.value.status_code == 502 and failed.value.response.json()["error"]["type"] == "api_error"


@pytest.mark.parametrize(
    ("path", "body", "events"),
    [
        ("/v1/messages", {"max_tokens": 400}, b"event: content_block_delta"),
        ("/v1/responses", {"max_output_tokens": 400}, b"event: response.output_text.delta"),
    ],
)
def test_a_client_that_hangs_up_mid_stream_is_billed_for_what_was_streamed_and_settled(gateway_url, tenant, path, body, events):
    import socket
    from urllib.parse import urlparse

    from demo.mock_llm import mock_answer
    from finops.tokens import count_message_tokens

    messages = [{"role": "user", "content": unique_prompt("Write a long essay about cost control")}]
    payload = {"model": "gpt-4o-mini", "stream": True, **body}
    payload["messages" if path == "/v1/messages" else "input"] = messages if path == "/v1/messages" else messages[0]["content"]
    raw = json.dumps(payload).encode()
    url = urlparse(gateway_url)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nx-api-key: {tenant.secret}\r\n"
        f"Content-Type: application/json\r\nX-Mock-Chunk-Delay-Ms: 40\r\nContent-Length: {len(raw)}\r\n\r\n"
    ).encode() + raw
    before = spent()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while received.count(events) < 3:
            received += sock.recv(65536)
        head = received.split(b"\r\n\r\n", 1)[0].decode()
        sock.shutdown(socket.SHUT_RDWR)
    request_id = next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.lower().startswith("x-request-id"))
    row = only_row(request_id)
    assert (row.endpoint, row.status, row.stream) == (path.rsplit("/", 1)[1], "disconnected", True)
    # The gateway reads the abandoned upstream on to its final usage (ADR-013): the whole answer is billed, exactly.
    assert row.completion_tokens == count_tokens(mock_answer("gpt-4o-mini", messages)) and not row.usage_estimated
    assert row.prompt_tokens == count_message_tokens(messages)
    assert row.cost_usd == mini_cost(row.prompt_tokens, row.completion_tokens) > 0
    assert_counter_moved(before, row.cost_usd)


def test_messages_count_tokens_is_free_and_unrecorded(gateway_url, tenant):
    from finops.tokens import count_message_tokens

    client = anthropic_client(gateway_url, tenant.secret)
    messages = [{"role": "user", "content": "How much did we spend on embeddings?"}]
    counted = client.messages.count_tokens(model="gpt-4o-mini", system="Be terse.", messages=messages)
    assert counted.input_tokens == count_message_tokens([{"role": "system", "content": "Be terse."}, *messages])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(gateway_url, "fo-not-a-key").messages.count_tokens(model="gpt-4o-mini", messages=messages)
    time.sleep(0.2)
    assert LLMRequest.objects.count() == 0
