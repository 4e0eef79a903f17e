"""Issue #17, security of the cache, through HTTP: a client's Cache-Control cannot lengthen its org's TTL, an
omitted temperature is not cached under the default policy, and a 64 KB numeric prompt costs the guard next
to nothing (the guard is linear and capped; before, it was cubic: seconds of event loop for 16 KB).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from apps.cache.guard import GUARD_MAX_CHARS, PromptTooLong, guard_signature
from apps.cache.models import CacheSettings
from conftest import gateway_server

pytestmark = pytest.mark.django_db(transaction=True)

ORG_TTL_S = 120


@pytest.fixture(scope="module")
def big_prompt_gateway(django_db_setup, mock_llm_url):
    with gateway_server(mock_llm_url=mock_llm_url, env={"FINOPS_GATEWAY_MAX_PROMPT_TOKENS": "100000"}) as url:
        yield url


def numeric_prompt(size: int) -> str:
    """Numbers and operators, the guard's worst case: every token is a number next to an operator."""
    parts, length, i = [], 0, 0
    while length < size:
        part = f"{i * 7919 % 100000} + {i * 104729 % 1000} = "
        parts.append(part)
        length += len(part)
        i += 1
    return "".join(parts)[:size]


def ask(url: str, secret: str, prompt: str, *, headers: dict | None = None, **body) -> requests.Response:
    response = requests.post(
        f"{url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": prompt}], **body},
        headers={"Authorization": f"Bearer {secret}", **(headers or {})},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response


def exact_entries(redis_client, org_id: int, timeout: float = 10.0) -> list[bytes]:
    """The org's exact-cache entries (written just after the response: poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        keys = [k for k in redis_client.scan_iter(match=f"finops:cache:x:{org_id}:*")]
        if keys:
            return keys
        time.sleep(0.05)
    return []


def test_a_64_kb_numeric_prompt_is_guarded_in_under_50_ms():
    """The acceptance bound of issue #17, measured around guard_signature itself."""
    big = numeric_prompt(64 * 1024)
    started = time.perf_counter()
    with pytest.raises(PromptTooLong):  # over the cap: refused at once, the semantic tier is skipped
        guard_signature(big)
    assert time.perf_counter() - started < 0.050
    largest = numeric_prompt(GUARD_MAX_CHARS)  # the longest prompt the guard signs, in full
    started = time.perf_counter()
    signature = guard_signature(largest)
    assert time.perf_counter() - started < 0.050
    assert signature.numbers  # it did read the numbers


def test_a_64_kb_numeric_prompt_is_answered_and_cached_exactly(big_prompt_gateway, tenant, redis_client):
    prompt = numeric_prompt(64 * 1024) + f" ({uuid.uuid4().hex})"
    first = ask(big_prompt_gateway, tenant.secret, prompt, temperature=0)
    assert first.headers["x-cache"] == "miss"
    assert exact_entries(redis_client, tenant.org.id)
    again = ask(big_prompt_gateway, tenant.secret, prompt, temperature=0)
    assert again.headers["x-cache"] == "exact"


def test_cache_control_max_age_above_the_orgs_ttl_is_ignored(big_prompt_gateway, tenant, redis_client):
    CacheSettings.objects.create(org=tenant.org, ttl_s=ORG_TTL_S, semantic_enabled=False)
    prompt = f"What is the boiling point of water? ({uuid.uuid4().hex})"
    ask(big_prompt_gateway, tenant.secret, prompt, temperature=0, headers={"Cache-Control": "max-age=2592000"})
    (entry,) = exact_entries(redis_client, tenant.org.id)
    assert 0 < redis_client.ttl(entry) <= ORG_TTL_S  # the org's ceiling, not the client's 30 days
    assert ask(big_prompt_gateway, tenant.secret, prompt, temperature=0).headers["x-cache"] == "exact"

    # A client may shorten it.
    redis_client.delete(entry)
    shorter = f"What is the freezing point of water? ({uuid.uuid4().hex})"
    ask(big_prompt_gateway, tenant.secret, shorter, temperature=0, headers={"Cache-Control": "max-age=30"})
    (entry,) = exact_entries(redis_client, tenant.org.id)
    assert 0 < redis_client.ttl(entry) <= 30
    assert json.loads(redis_client.get(entry))["o"] == tenant.org.id


def test_an_omitted_temperature_is_not_cached_under_the_default_policy(big_prompt_gateway, tenant, redis_client):
    prompt = f"Name a colour. ({uuid.uuid4().hex})"
    for _ in range(2):
        sampled = ask(big_prompt_gateway, tenant.secret, prompt)  # the provider samples at its default, 1.0
        assert sampled.headers["x-cache"] == "bypass"
    assert exact_entries(redis_client, tenant.org.id, timeout=1.0) == []
    # The same prompt at temperature 0 is cached: what makes the difference is the temperature.
    ask(big_prompt_gateway, tenant.secret, prompt, temperature=0)
    assert ask(big_prompt_gateway, tenant.secret, prompt, temperature=0).headers["x-cache"] == "exact"
