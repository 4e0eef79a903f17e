"""The Responses and Messages translations, both ways, on their own: request → internal chat request, and the normalised
OpenAI usage (with the adapters' prompt-cache fields) → each format's usage. The live SDK tests are test_wire_apis.py."""

from __future__ import annotations

import pytest

from apps.gateway import wire_messages, wire_responses
from apps.gateway.context import RequestContext
from apps.gateway.wire import sse_events
from finops.errors import BadRequest

# What an adapter hands back for a provider with prompt caching (api-up's contract): cached reads and cache writes
# are both part of prompt_tokens; reasoning tokens are part of completion_tokens.
USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 250,
    "total_tokens": 1250,
    "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300},
    "completion_tokens_details": {"reasoning_tokens": 200},
}


def test_messages_request_becomes_a_chat_request():
    chat = wire_messages.to_chat(
        {
            "model": "claude-sonnet-4-20250514", "max_tokens": 300, "temperature": 0.1, "top_p": 0.9, "top_k": 5,
            "system": [{"type": "text", "text": "Be terse. "}, {"type": "text", "text": "Cite sources.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                {"role": "user", "content": [{"type": "text", "text": "Costs?"}]},
            ],
            "stop_sequences": ["\n\nHuman:"], "metadata": {"user_id": "u-42"}, "stream": True,
        }
    )  # fmt: skip
    assert chat == {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 300,
        "temperature": 0.1,
        "top_p": 0.9,
        "messages": [
            {"role": "system", "content": "Be terse. Cite sources."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Costs?"},
        ],
        "stop": ["\n\nHuman:"],
        "user": "u-42",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"max_tokens": 5, "messages": []}, "messages"),
        ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "content": "1"}]}]},
         "messages.0.content.0.type"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled"}}, "thinking"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stop_sequences": "END"}, "stop_sequences"),
    ],
)  # fmt: skip
def test_messages_requests_the_translation_cannot_carry_are_refused_by_name(body, param):
    with pytest.raises(BadRequest) as caught:
        wire_messages.to_chat({"model": "gpt-4o-mini", **body})
    assert caught.value.param == param


def test_messages_usage_separates_cache_reads_and_writes_as_anthropic_counts_them():
    assert wire_messages.anthropic_usage(USAGE) == {
        "input_tokens": 100,  # 1000 − 600 read − 300 written
        "output_tokens": 250,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 600,
    }
    # No usage from the upstream (a stream without a usage chunk): the billed figures.
    assert wire_messages.anthropic_usage(None, {"prompt_tokens": 12, "completion_tokens": 3})["input_tokens"] == 12


def test_a_completion_becomes_an_anthropic_message_and_an_error_anthropics_shape():
    ctx = RequestContext(endpoint="messages")
    completion = {
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"}],
        "usage": USAGE,
        "finops": {"cost_usd": "0.1"},
    }
    message = wire_messages.to_message(ctx, completion)
    assert (message["id"], message["content"], message["stop_reason"]) == (
        f"msg_{ctx.request_id.hex}", [{"type": "text", "text": "Hi"}], "max_tokens",
    )  # fmt: skip
    assert message["usage"]["cache_read_input_tokens"] == 600 and message["finops"] == {"cost_usd": "0.1"}
    error = wire_messages.anthropic_error(429, {"error": {"message": "Budget spent", "code": "budget_exceeded"}})
    assert error == {"type": "error", "error": {"type": "rate_limit_error", "message": "Budget spent", "code": "budget_exceeded"}}
    assert wire_messages.anthropic_error(504, {})["error"]["type"] == "api_error"


def test_responses_request_becomes_a_chat_request():
    chat = wire_responses.to_chat(
        {
            "model": "o3-mini", "instructions": "Be terse.", "max_output_tokens": 500, "store": False,
            "input": [
                {"role": "developer", "content": "Use SI units."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "How far "}, {"type": "input_text", "text": "is it?"}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Where?"}]},
            ],
            "reasoning": {"effort": "low"}, "metadata": {"k": "v"},
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        }
    )  # fmt: skip
    assert chat == {
        "model": "o3-mini",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": "Use SI units."},
            {"role": "user", "content": "How far is it?"},
            {"role": "assistant", "content": "Where?"},
        ],
        "max_completion_tokens": 500,
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
    }
    assert wire_responses.to_chat({"model": "m", "input": "hi", "text": {"format": {"type": "text"}}}) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_responses_usage_reports_cached_and_reasoning_tokens():
    assert wire_responses.responses_usage(USAGE) == {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 600},
        "output_tokens": 250,
        "output_tokens_details": {"reasoning_tokens": 200},
        "total_tokens": 1250,
    }


def test_a_truncated_completion_is_an_incomplete_response():
    ctx = RequestContext(endpoint="responses")
    completion = {"model": "m", "choices": [{"message": {"content": "Half"}, "finish_reason": "length"}], "usage": USAGE}
    response = wire_responses.to_response(ctx, {"max_output_tokens": 5}, completion)
    assert (response["status"], response["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert response["output"][0]["content"][0]["text"] == "Half"


def test_the_relay_chunks_parse_back_to_events():
    assert sse_events(b'data: {"a": 1}\n\n') == [{"a": 1}]
    assert sse_events(b"data: [DONE]\n\n") == [None]
    assert sse_events(b": keep-alive\n\n") == []
