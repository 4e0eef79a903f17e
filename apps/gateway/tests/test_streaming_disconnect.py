"""A client that hangs up mid-stream (issue #16 item 5): the gateway reads the upstream on, not relayed, until the
provider's usage arrives, and bills that; only a stream that never reports usage is billed from the gateway's
upper-bound count of everything it received (text, reasoning, tool calls), capped at the reservation, on a row
marked `usage_estimated`. Each test asserts the reservation, the bill and the row."""

from __future__ import annotations

import json
import socket
import time
from decimal import Decimal
from urllib.parse import urlparse

import pytest

from apps.budgets.models import Reservation
from apps.gateway.tests.conftest import mini_cost, only_row, unique_prompt
from demo.mock_llm import mock_answer
from finops.tokens import count_message_tokens, count_tokens, prompt_token_bound, token_bound

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def budgeted(make_tenant, prices):
    """A tenant with a user budget: its requests hold a reservation (the row's reserved_usd)."""
    from apps.budgets.models import Budget
    from apps.budgets.services import budget_create

    tenant = make_tenant()
    budget_create(
        budget=Budget(
            scope="user", org=tenant.org, team=tenant.team, member=tenant.member, period="monthly",
            cap_usd=Decimal("100"), action="block", soft_pct=[80],
        )
    )  # fmt: skip
    return tenant


def abandon(gateway_url: str, secret: str, body: dict, headers: dict[str, str], *, after_chunks: int) -> str:
    """Stream `body`, read `after_chunks` SSE chunks, hang up; the request id."""
    payload = json.dumps({**body, "stream": True}).encode()
    url = urlparse(gateway_url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {secret}\r\n"
        f"Content-Type: application/json\r\n{extra}Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while received.count(b"data: ") < after_chunks:
            received += sock.recv(65536)
        head = received.split(b"\r\n\r\n", 1)[0].decode()
        sock.shutdown(socket.SHUT_RDWR)
    assert b"[DONE]" not in received
    return next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.lower().startswith("x-request-id"))


def settled(request_id: str) -> Reservation:
    deadline = time.monotonic() + 5
    reservation = Reservation.objects.get(request_id=request_id)
    while reservation.state == Reservation.State.RESERVED:
        assert time.monotonic() < deadline, "the reservation is still held"
        time.sleep(0.05)
        reservation.refresh_from_db()
    return reservation


def test_a_stream_abandoned_after_10_chunks_of_a_500_token_answer_is_billed_for_all_500(gateway_url, budgeted):
    messages = [{"role": "user", "content": unique_prompt("Write a long essay about cost control")}]
    body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 600}
    headers = {"X-Mock-Completion-Tokens": "500", "X-Mock-Chunk-Delay-Ms": "2"}
    request_id = abandon(gateway_url, budgeted.secret, body, headers, after_chunks=10)

    row = only_row(request_id)
    assert (row.status, row.stream, row.http_status, row.usage_estimated) == ("disconnected", True, 200, False)
    # Billed from the provider's usage, read after the client left: the whole answer, the prompt as the mock counts it.
    assert (row.prompt_tokens, row.completion_tokens) == (count_message_tokens(messages), 500)
    assert row.cost_usd == mini_cost(row.prompt_tokens, 500)
    assert row.reserved_usd == mini_cost(prompt_token_bound(messages), 600) >= row.cost_usd
    assert settled(request_id).actual_usd == row.cost_usd
    assert row.response_text is None  # the org does not store prompts


def test_a_stream_that_never_reports_usage_is_billed_from_everything_received_and_marked_estimated(gateway_url, budgeted):
    """Reasoning deltas and the answer, no usage chunk (the upstream ignores include_usage): the bill is our upper
    bound of all of it, at least the provider's own count, and never above the completion limit reserved."""
    messages = [{"role": "user", "content": unique_prompt("Think, then answer")}]
    body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 400}
    headers = {
        "X-Mock-Completion-Tokens": "120",
        "X-Mock-Reasoning-Tokens": "80",
        "X-Mock-No-Usage": "1",
        "X-Mock-Chunk-Delay-Ms": "2",
    }
    request_id = abandon(gateway_url, budgeted.secret, body, headers, after_chunks=5)

    row = only_row(request_id)
    assert (row.status, row.usage_estimated) == ("disconnected", True)
    assert row.prompt_tokens == prompt_token_bound(messages)
    assert 80 + 120 <= row.completion_tokens <= 400  # the provider would have reported 200: reasoning + answer
    assert row.cost_usd == mini_cost(row.prompt_tokens, row.completion_tokens) <= row.reserved_usd
    assert row.reserved_usd == mini_cost(prompt_token_bound(messages), 400)
    assert settled(request_id).actual_usd == row.cost_usd


@pytest.fixture(scope="module")
def short_drain_gateway(django_db_setup, mock_llm_url):
    """A gateway that reads an abandoned stream on for one second at most."""
    from conftest import gateway_server

    with gateway_server(mock_llm_url=mock_llm_url, env={"FINOPS_GATEWAY_ABANDONED_DRAIN_S": "1"}) as url:
        yield url


def test_a_stream_still_going_at_the_drain_deadline_is_estimated_and_capped_at_its_reservation(short_drain_gateway, budgeted):
    messages = [{"role": "user", "content": unique_prompt("Write slowly")}]
    body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 300}
    headers = {"X-Mock-Completion-Tokens": "300", "X-Mock-Chunk-Delay-Ms": "50"}  # 15 s of answer
    started = time.monotonic()
    request_id = abandon(short_drain_gateway, budgeted.secret, body, headers, after_chunks=3)

    row = only_row(request_id)
    assert time.monotonic() - started < 10  # the drain stopped at its deadline, not at the end of the answer
    assert (row.status, row.usage_estimated) == ("disconnected", True)
    assert 3 <= row.completion_tokens < 300
    assert row.cost_usd == mini_cost(prompt_token_bound(messages), row.completion_tokens) <= row.reserved_usd


def test_an_upstream_stream_cut_short_is_billed_for_what_was_streamed_and_marked_estimated(gateway_url, tenant):
    import openai

    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=tenant.secret, max_retries=0)
    messages = [{"role": "user", "content": unique_prompt("Describe the ledger")}]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, stream=True, extra_headers={"X-Mock-Truncate": "1"}
    )
    text = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in raw.parse():
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert "before the answer was complete" in str(caught.value)
    row = only_row(raw.headers["x-request-id"])
    assert (row.status, row.error_code, row.http_status, row.usage_estimated) == ("failed", "upstream_truncated", 200, True)
    assert row.completion_tokens == token_bound(text) >= count_tokens(text) > 0
    assert row.cost_usd == mini_cost(prompt_token_bound(messages), row.completion_tokens)


def test_the_mock_answer_helper_still_matches_a_full_stream(gateway_url, tenant):
    """The full answer streamed to the end is billed from usage (not estimated) at the mock's count."""
    import openai

    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=tenant.secret, max_retries=0)
    messages = [{"role": "user", "content": unique_prompt("Describe the ledger")}]
    with client.chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=messages, stream=True) as response:
        request_id = response.headers["x-request-id"]
        list(response.parse())
    row = only_row(request_id)
    assert (row.status, row.usage_estimated) == ("served", False)
    assert row.completion_tokens == count_tokens(mock_answer("gpt-4o-mini", messages))
