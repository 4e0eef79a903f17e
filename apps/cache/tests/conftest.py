"""Fixtures of the cache tests: one event loop and one embedding model per session, real Redis and Postgres."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from apps.gateway.context import Caller, RequestContext

CHAT_PAIRS = Path(__file__).resolve().parent.parent / "fixtures" / "chat_pairs.jsonl"


@pytest.fixture(scope="session")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    from finops.runtime import runtime_close

    loop.run_until_complete(runtime_close())
    loop.close()


async def runtime_forget(name: str) -> None:
    """Drop (and close) one of the session loop's clients, so the next use builds it from the current settings."""
    from finops.runtime import runtime

    value = runtime().pop(name)
    if value is not None and hasattr(value, "aclose"):
        await value.aclose()
    elif value is not None and hasattr(value, "close"):
        await value.close()


@pytest.fixture
def run(loop):
    return loop.run_until_complete


@pytest.fixture(scope="session")
def embedder():
    """The local MiniLM, loaded once (seconds) for the whole session."""
    from apps.embeddings.embeddings import local_embedder

    local_embedder.load()
    return local_embedder


@pytest.fixture(autouse=True)
def _fresh_memos():
    from apps.cache import selectors
    from apps.cache.lookup import redis_breaker_reset
    from apps.ledger import selectors as prices

    selectors.cache_policy_forget()
    prices._prices.clear()
    redis_breaker_reset()
    yield
    selectors.cache_policy_forget()
    prices._prices.clear()
    redis_breaker_reset()


@pytest.fixture
def unlimited_store():
    """The semantic store's CPU budget lifted: a test stores entries at many times a real request rate."""
    from apps.cache.semantic import store_budget

    store_budget.unlimited = True
    yield
    store_budget.unlimited = False
    store_budget.reset()


@pytest.fixture
def cache_env(transactional_db, redis_client, prices, embedder, make_tenant):
    """Everything the hooks touch, committed so the asyncpg pool sees it."""
    return make_tenant


def caller_of(tenant) -> Caller:
    return Caller(
        api_key_id=tenant.api_key.id,
        api_key_prefix=tenant.api_key.prefix,
        org_id=tenant.org.id,
        team_id=tenant.team.id,
        member_id=tenant.member.id,
        store_prompts=tenant.org.store_prompts,
    )


def make_ctx(
    tenant, prompt: str, *, model: str = "gpt-4o-mini", system: str | None = "You are helpful.", **params
) -> RequestContext:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    cache_fields = {k: params.pop(k) for k in ("cache_no_cache", "cache_no_store", "cache_ttl_s") if k in params}
    # temperature 0 unless the test says otherwise: an omitted temperature samples at the provider's 1.0 and is
    # not cacheable under the default policy (apps.cache.lookup.sampling_temperature).
    body = {"model": model, "messages": messages, "temperature": 0, **params}
    return RequestContext(
        endpoint="chat_completions",
        caller=caller_of(tenant),
        body=body,
        messages=messages,
        requested_model=model,
        prompt_tokens_estimate=20,
        **cache_fields,
    )


def completion(
    content: str, *, model: str = "gpt-4o-mini", prompt_tokens: int = 20, completion_tokens: int = 50, finish: str = "stop"
) -> dict:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chat_pairs() -> list[dict]:
    return [json.loads(line) for line in CHAT_PAIRS.read_text().splitlines() if line.strip()]
