"""A client that hangs up mid-stream: the upstream is closed and what was streamed is billed."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlparse

import pytest

from apps.gateway.tests.conftest import mini_cost, only_row, unique_prompt
from demo.mock_llm import mock_answer
from finops.tokens import count_message_tokens, count_tokens

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_client_disconnect_mid_stream_leaves_a_row_with_partial_usage(gateway_url, tenant):
    messages = [{"role": "user", "content": unique_prompt("Write a long essay about cost control")}]
    full_answer_tokens = count_tokens(mock_answer("gpt-4o-mini", messages))
    body = json.dumps({"model": "gpt-4o-mini", "messages": messages, "stream": True}).encode()
    url = urlparse(gateway_url)
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {tenant.secret}\r\n"
        f"Content-Type: application/json\r\nX-Mock-Chunk-Delay-Ms: 40\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while received.count(b"data: ") < 4:  # the role chunk and three words
            received += sock.recv(65536)
        head = received.split(b"\r\n\r\n", 1)[0].decode()
        sock.shutdown(socket.SHUT_RDWR)
    request_id = next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.lower().startswith("x-request-id"))

    row = only_row(request_id)
    assert (row.status, row.stream, row.http_status) == ("disconnected", True, 200)
    assert 3 <= row.completion_tokens < full_answer_tokens
    assert row.prompt_tokens == count_message_tokens(messages)
    assert row.cost_usd == mini_cost(row.prompt_tokens, row.completion_tokens) > 0
    assert row.response_text is None  # the org does not store prompts


def test_an_upstream_stream_cut_short_is_billed_for_what_was_streamed_and_reported(gateway_url, tenant):
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
    assert (row.status, row.error_code, row.http_status) == ("failed", "upstream_truncated", 200)
    assert row.completion_tokens == count_tokens(text) > 0
    assert row.cost_usd == mini_cost(count_message_tokens(messages), row.completion_tokens)
