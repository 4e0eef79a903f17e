"""The adapters' translations (pure functions) and the usage normalisation, both ways, against hand-written wire data."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from apps.gateway.adapters.anthropic import StreamTranslator, chat_to_messages, messages_to_chat
from apps.gateway.adapters.base import UpstreamFailure
from apps.gateway.adapters.gemini import GeminiStreamTranslator, chat_to_gemini, gemini_to_chat
from apps.gateway.billing import bill
from apps.gateway.usage import Usage, anthropic_usage, gemini_usage, usage_read
from apps.ledger.pricing import Price, cost_compute, cost_upper_bound

SONNET = Price(
    id=1, provider="anthropic", model="claude-sonnet-4-20250514", input_per_1m=Decimal("3.00"), output_per_1m=Decimal("15.00"),
    cached_input_per_1m=Decimal("0.30"), cache_write_per_1m=Decimal("3.75"),
)  # fmt: skip


def test_a_chat_request_becomes_a_messages_request():
    body = {
        "model": "claude-sonnet-4-20250514",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"q": "x"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "user", "content": "So?"},
        ],
        "max_completion_tokens": 300, "stop": "END", "temperature": 0.2, "user": "u-1", "stream": True,
        "stream_options": {"include_usage": True}, "logprobs": True,
        "tools": [{"type": "function", "function": {"name": "look", "description": "Look", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
    }  # fmt: skip
    out = chat_to_messages(body, default_max_tokens=1024)
    assert out == {
        "model": "claude-sonnet-4-20250514",
        "system": "Be terse.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "look", "input": {"q": "x"}}]},
            # the tool result and the next user turn are one user message (Anthropic alternates roles)
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"},
                                         {"type": "text", "text": "So?"}]},
        ],
        "max_tokens": 300, "stop_sequences": ["END"], "temperature": 0.2, "metadata": {"user_id": "u-1"}, "stream": True,
        "tools": [{"name": "look", "description": "Look", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
    }  # fmt: skip


def test_max_tokens_defaults_and_cache_control_is_kept():
    body = {"model": "c", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "Hi", "cache_control": {"type": "ephemeral"}}]}  # fmt: skip
    out = chat_to_messages(body, default_max_tokens=777)
    assert out["max_tokens"] == 777
    assert out["system"] == [{"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}
    ]


@pytest.mark.parametrize(
    ("change", "code"),
    [({"n": 2}, "unsupported_n"), ({"response_format": {"type": "json_object"}}, "unsupported_response_format"),
     ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "unsupported_content")],
)  # fmt: skip
def test_what_anthropic_cannot_do_is_a_400_not_a_silent_change(change, code):
    body = {"model": "c", "messages": [{"role": "user", "content": "Hi"}], **change}
    with pytest.raises(UpstreamFailure) as caught:
        chat_to_messages(body, default_max_tokens=10)
    assert (caught.value.kind, caught.value.status, caught.value.code) == ("status", 400, code)


def test_a_messages_answer_becomes_a_chat_completion_with_the_cache_usage_inside_the_prompt():
    answer = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "Bonjour"},
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": 1}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000, "output_tokens": 30},
    }  # fmt: skip
    chat = messages_to_chat(answer, model="claude-sonnet-4-20250514")
    assert chat["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Bonjour",
        "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "look", "arguments": '{"q":1}'}}]}}]  # fmt: skip
    assert chat["usage"]["prompt_tokens"] == 1210
    assert chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 1000, "cache_write_tokens": 200}
    usage = usage_read(chat["usage"])
    assert usage == Usage(prompt=1210, completion=30, cached=1000, cache_write=200)
    # 10 × $3 + 1000 × $0.30 + 200 × $3.75 (1.25 × input) + 30 × $15, per 1M
    cost = cost_compute(price=SONNET, prompt_tokens=1210, completion_tokens=30, cached_tokens=1000, cache_write_tokens=200)
    assert cost == Decimal("0.0015300000")


def test_anthropic_stream_events_become_chunks_with_one_usage_chunk():
    translator = StreamTranslator("claude-x")
    events = [
        {"type": "message_start", "message": {"id": "msg_9", "model": "claude-x", "usage": {
            "input_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 40, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]  # fmt: skip
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Hello"
    assert deltas[3]["tool_calls"][0] == {"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}
    assert deltas[4]["tool_calls"][0]["function"]["arguments"] == '{"a":'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["choices"] == [] and translator.done
    assert usage_read(chunks[-1]["usage"]) == Usage(prompt=45, completion=7, cached=40)
    assert all(c["id"] == "msg_9" for c in chunks)
    with pytest.raises(UpstreamFailure):
        translator.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def test_a_chat_request_becomes_a_gemini_request_and_back():
    body = {"model": "gemini-2.5-flash", "n": 2, "max_tokens": 64, "stop": ["X"], "top_p": 0.9,
            "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}],
            "response_format": {"type": "json_object"}}  # fmt: skip
    assert chat_to_gemini(body, default_max_tokens=1024) == {
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": "Hello"}]},
                     {"role": "user", "parts": [{"text": "Bye"}]}],
        "generationConfig": {"maxOutputTokens": 64, "candidateCount": 2, "stopSequences": ["X"], "topP": 0.9,
                             "responseMimeType": "application/json"},
    }  # fmt: skip
    answer = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "thinking…", "thought": True}, {"text": "Ciao"}]},
                        "finishReason": "MAX_TOKENS", "index": 0}],
        "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 5,
                          "thoughtsTokenCount": 20, "totalTokenCount": 125},
        "modelVersion": "gemini-2.5-flash",
    }  # fmt: skip
    chat = gemini_to_chat(answer, model="gemini-2.5-flash")
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "Ciao"}
    assert chat["choices"][0]["finish_reason"] == "length"
    # Thinking is reported outside candidatesTokenCount, billed as output: inside completion_tokens here.
    assert usage_read(chat["usage"]) == Usage(prompt=100, completion=25, cached=60, reasoning=20)
    with pytest.raises(UpstreamFailure) as caught:
        chat_to_gemini({**body, "tools": [{"type": "function", "function": {"name": "f"}}]}, default_max_tokens=1)
    assert caught.value.status == 400


def test_gemini_stream_events_keep_the_last_usage_only():
    translator = GeminiStreamTranslator("gemini-x")
    first = translator.feed({"candidates": [{"content": {"parts": [{"text": "Hel"}]}, "index": 0}],
                             "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1}})  # fmt: skip
    last = translator.feed({"candidates": [{"content": {"parts": [{"text": "lo"}]}, "index": 0, "finishReason": "STOP"}],
                            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2}})  # fmt: skip
    assert first[0]["choices"][0]["delta"] == {"content": "Hel", "role": "assistant"}
    assert [c["choices"][0]["finish_reason"] for c in last] == [None, "stop"]
    assert usage_read(translator.finish()["usage"]) == Usage(prompt=9, completion=2)


@pytest.mark.parametrize(
    ("usage", "tier", "expected"),
    [
        # OpenAI: cached and reasoning are subsets; service_tier comes from the response.
        ({"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150, "prompt_tokens_details": {"cached_tokens": 64},
          "completion_tokens_details": {"reasoning_tokens": 30}}, "priority",
         Usage(prompt=100, completion=50, cached=64, reasoning=30, service_tier="priority")),
        # DeepSeek: hit + miss = prompt.
        ({"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 80, "prompt_cache_miss_tokens": 20}, None,
         Usage(prompt=100, completion=5, cached=80)),
        # Reasoning reported outside completion_tokens (total = prompt + completion + reasoning): added to the completion.
        ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 45, "completion_tokens_details": {"reasoning_tokens": 30}},
         None, Usage(prompt=10, completion=35, reasoning=30)),
        # Anthropic's names passed through by a proxy.
        ({"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 20}, None,
         Usage(prompt=33, completion=4, cached=10, cache_write=20)),
        # Cached can never exceed the prompt.
        ({"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 99}}, None,
         Usage(prompt=10, completion=1, cached=10)),
    ],
)  # fmt: skip
def test_every_providers_usage_reads_into_one_shape(usage, tier, expected):
    assert usage_read(usage, service_tier=tier) == expected


def test_the_usage_helpers_agree_with_the_wire_formats():
    assert anthropic_usage({"input_tokens": 1, "output_tokens": 2})["prompt_tokens_details"] == {
        "cached_tokens": 0,
        "cache_write_tokens": 0,
    }
    assert gemini_usage({"promptTokenCount": 7, "toolUsePromptTokenCount": 3})["prompt_tokens"] == 10
    assert usage_read({}) is None


def test_priority_and_cache_writes_price_at_their_rates_and_the_upper_bound_covers_them():
    gpt = Price(id=2, provider="openai", model="gpt-4.1", input_per_1m=Decimal("2.00"), output_per_1m=Decimal("8.00"),
                cached_input_per_1m=Decimal("0.50"), priority_multiplier=Decimal("1.75"))  # fmt: skip
    standard = cost_compute(price=gpt, prompt_tokens=1000, completion_tokens=100, cached_tokens=400)
    assert standard == Decimal("0.0022000000")  # 600 × 2 + 400 × 0.5 + 100 × 8, per 1M
    assert cost_compute(price=gpt, prompt_tokens=1000, completion_tokens=100, cached_tokens=400, service_tier="priority") == (
        Decimal("0.0038500000")  # × 1.75
    )
    assert cost_compute(price=gpt, prompt_tokens=1000, completion_tokens=100, cached_tokens=400, service_tier="flex") == standard
    # The reservation's bound: every prompt token could be a cache write (1.25 × input at Anthropic).
    bound = cost_upper_bound(price=SONNET, prompt_tokens=1000, completion_tokens=100)
    assert bound == Decimal("0.0052500000")  # 1000 × 3.75 + 100 × 15
    assert bound >= cost_compute(price=SONNET, prompt_tokens=1000, completion_tokens=100, cache_write_tokens=1000)
    assert cost_upper_bound(price=gpt, prompt_tokens=1000, completion_tokens=0, service_tier="priority") == Decimal(
        "0.0035000000"
    )


def _ctx_and_catalog(model: str, **price_columns):
    from apps.gateway.context import RequestContext
    from apps.gateway.selectors import catalog_build

    row = {"id": 7, "provider": "openai", "model": model, "input_per_1m": "2.00", "output_per_1m": "8.00",
           "cached_input_per_1m": "0.50", "effective_from": dt.date(2025, 1, 1), "effective_to": None, **price_columns}  # fmt: skip
    ctx = RequestContext(endpoint="chat_completions", received_at=dt.datetime(2026, 6, 17, tzinfo=dt.UTC))
    ctx.model, ctx.provider = model, "openai"
    return ctx, catalog_build(price_rows=[row], provider_rows=[])


def test_billing_prices_a_priority_answer_and_keeps_the_usage_details_on_the_row():
    ctx, catalog = _ctx_and_catalog("gpt-4.1", priority_multiplier="1.75")
    response = {"service_tier": "priority", "choices": [], "usage": {
        "prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
        "prompt_tokens_details": {"cached_tokens": 400}, "completion_tokens_details": {"reasoning_tokens": 60}}}  # fmt: skip
    bill(ctx, catalog, response)
    assert ctx.cost_usd == Decimal("0.0038500000")  # (600 × 2 + 400 × 0.5 + 100 × 8) × 1.75, per 1M
    row = ctx.ledger_row()
    assert (row["cached_tokens"], row["cache_write_tokens"], row["reasoning_tokens"], row["service_tier"]) == (
        400,
        0,
        60,
        "priority",
    )


def test_billing_a_priority_answer_without_a_multiplier_bills_standard_rates_and_says_so(caplog):
    ctx, catalog = _ctx_and_catalog("gpt-4.1")
    bill(ctx, catalog, {"service_tier": "priority", "choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 0}})
    assert ctx.cost_usd == Decimal("0.0020000000")
    assert "does not price" in caplog.text


def test_billing_a_deepseek_answer_bills_its_cache_hits_at_the_cached_rate():
    ctx, catalog = _ctx_and_catalog("deepseek-chat")
    bill(ctx, catalog, {"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 10,
                                                 "prompt_cache_hit_tokens": 800, "prompt_cache_miss_tokens": 200}})  # fmt: skip
    assert (ctx.cached_tokens, ctx.cost_usd) == (800, Decimal("0.0008800000"))  # 200 × 2 + 800 × 0.5 + 10 × 8


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}}', ""),  # OpenAI
        (b'{"type": "error", "error": {"type": "not_found_error", "message": "model: x"}}', "not_found_error"),  # Anthropic
        (b'{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}', "INVALID_ARGUMENT"),  # Gemini
        (b'{"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 300000 tokens"}}',
         "context_length_exceeded"),
    ],
)  # fmt: skip
def test_each_providers_error_json_maps_onto_one_failure(raw, code):
    from apps.gateway.adapters.base import status_failure

    failure = status_failure(400, raw)
    assert (failure.kind, failure.status, failure.code) == ("status", 400, code)


def test_provider_options_are_validated_in_the_admin():
    from django.core.exceptions import ValidationError

    from apps.gateway.models import validate_provider_options

    validate_provider_options({"api_version": "2024-10-21", "deployments": {"gpt-4o": "prod-4o"}})
    for bad in ([], {"api_key": "sk-…"}, {"deployments": {"gpt-4o": ""}}, {"api_version": ""}):
        with pytest.raises(ValidationError):
            validate_provider_options(bad)


def test_a_settings_provider_may_name_its_kind_and_options(settings, monkeypatch):
    from apps.gateway.selectors import catalog_build

    monkeypatch.setenv("TEST_GEMINI_KEY", "g-test")
    settings.FINOPS = {**settings.FINOPS, "MOCK_LLM_URL": "", "UPSTREAMS": [
        {"name": "google", "kind": "gemini", "base_url": "https://generativelanguage.googleapis.com/v1beta",
         "api_key_env": "TEST_GEMINI_KEY", "models": ["*"], "options": {}}]}  # fmt: skip
    row = {"id": 1, "provider": "google", "model": "gemini-2.5-flash", "input_per_1m": "0.30", "output_per_1m": "2.50",
           "cached_input_per_1m": "0.075", "effective_from": dt.date(2025, 6, 17), "effective_to": None}  # fmt: skip
    upstream = catalog_build(price_rows=[row], provider_rows=[]).upstream_for("gemini-2.5-flash")
    assert (upstream.name, upstream.kind, upstream.api_key, upstream.mock) == ("google", "gemini", "g-test", False)
