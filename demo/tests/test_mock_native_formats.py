"""The mock's native wire formats, read by the official SDKs (anthropic, openai's AzureOpenAI) and plain HTTP (Gemini):
the mock must be a faithful stand-in for the providers the gateway's adapters talk to."""

from __future__ import annotations

import uuid

import anthropic
import httpx2
import openai
import pytest

from finops.tokens import count_message_tokens, count_tokens


@pytest.fixture
def root(mock_llm_url) -> str:
    return mock_llm_url.removesuffix("/v1")


def test_anthropic_messages_write_then_read_the_prompt_cache(root):
    client = anthropic.Anthropic(base_url=root, api_key="sk-ant-test", max_retries=0)
    rules = f"Rules {uuid.uuid4().hex}: " + "be exact. " * 30
    system = [{"type": "text", "text": rules, "cache_control": {"type": "ephemeral"}}]
    first = client.messages.create(model="claude-x", max_tokens=30, system=system, messages=[{"role": "user", "content": "a"}])
    prefix = count_message_tokens([{"role": "system", "content": rules}])
    assert first.content[0].text.startswith("Mock answer from claude-x")
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (prefix, 0)
    with client.messages.stream(model="claude-x", max_tokens=30, system=system, messages=[{"role": "user", "content": "b"}]) as s:
        second = s.get_final_message()
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (0, prefix)
    assert (
        second.usage.input_tokens
        == count_message_tokens([{"role": "system", "content": rules}, {"role": "user", "content": "b"}]) - prefix
    )
    assert second.usage.output_tokens == count_tokens(second.content[0].text) > 0


def test_anthropic_errors_have_anthropics_shape(root):
    good = anthropic.Anthropic(base_url=root, api_key="sk-ant-test", max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as caught:
        good.messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}], extra_headers={"X-Mock-Error": "429"}
        )
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=root, api_key="sk-bad", max_retries=0).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    # max_tokens is required by the Messages API
    missing = httpx2.post(
        f"{root}/v1/messages", headers={"x-api-key": "k"}, json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert (missing.status_code, missing.json()["type"], missing.json()["error"]["type"]) == (
        400,
        "error",
        "invalid_request_error",
    )


def test_azure_deployments_need_the_api_version_and_report_cached_tokens(root):
    client = openai.AzureOpenAI(
        azure_endpoint=root, api_key="k", api_version="2024-10-21", azure_deployment="prod-4o", max_retries=0
    )
    answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                            extra_headers={"X-Mock-Cached-Tokens": "3"})  # fmt: skip
    assert answer.choices[0].message.content.startswith("Mock answer from gpt-4o")
    assert answer.usage.prompt_tokens_details.cached_tokens == 3
    no_version = httpx2.post(f"{root}/openai/deployments/prod-4o/chat/completions", headers={"api-key": "k"},
                             json={"messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert no_version.status_code == 404


def test_gemini_generate_content_reports_cached_and_thinking_tokens_and_streams(root):
    url = f"{root}/v1beta/models/gemini-x"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"candidateCount": 2}}
    plain = httpx2.post(f"{url}:generateContent", headers={"x-goog-api-key": "k", "X-Mock-Cached-Tokens": "2",
                                                             "X-Mock-Reasoning-Tokens": "9"}, json=body).json()  # fmt: skip
    meta = plain["usageMetadata"]
    assert len(plain["candidates"]) == 2 and plain["candidates"][0]["content"]["parts"][0]["text"].startswith("Mock answer")
    assert (meta["cachedContentTokenCount"], meta["thoughtsTokenCount"]) == (2, 9)
    assert meta["totalTokenCount"] == meta["promptTokenCount"] + meta["candidatesTokenCount"] + 9
    stream = httpx2.post(f"{url}:streamGenerateContent?alt=sse", headers={"x-goog-api-key": "k"}, json=body)
    events = [line for line in stream.text.splitlines() if line.startswith("data: ")]
    assert len(events) > 2 and '"finishReason":"STOP"' in events[-1]
    error = httpx2.post(f"{url}:generateContent", headers={"x-goog-api-key": "k", "X-Mock-Error": "503"}, json=body)
    assert (error.status_code, error.json()["error"]["status"]) == (503, "UNAVAILABLE")
