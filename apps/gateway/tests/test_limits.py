"""Per-key rate limits and request size limits, against a live gateway (uvicorn + finops.asgi).

Rate limits go through the real openai SDK (max_retries=0: the SDK would otherwise honour Retry-After and retry);
size limits through raw sockets, so that the test controls exactly what is sent and when.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from urllib.parse import urlparse

import openai
import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from apps.gateway.tests.conftest import unique_prompt, wait_for_row
from apps.ledger.models import LLMRequest
from apps.tenancy.keys import rate_limit_key
from apps.tenancy.services import api_key_create
from conftest import gateway_server
from finops.limiter import window_admit

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = settings.FINOPS["GATEWAY_MAX_BODY_BYTES"]


def client_for(url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)


def ask(client: openai.OpenAI):
    """One request, and its ledger row: a row still in flight when the test's flush empties the tables would fail
    its insert and send the next test's rows to the outbox."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": unique_prompt("rate")}], max_tokens=8
        )
    except openai.APIStatusError as exc:
        wait_for_row(exc.response.headers["x-request-id"])
        raise
    wait_for_row(raw.headers["x-request-id"])
    return raw


def assert_rate_limited(caught: pytest.ExceptionInfo, *, limit: int) -> LLMRequest:
    """The 429 is OpenAI error JSON with a Retry-After, and the refused request has exactly one rejected row."""
    error = caught.value
    assert error.status_code == 429
    body = error.response.json()["error"]
    assert (body["type"], body["code"], body["param"]) == ("rate_limit_error", "rate_limit_exceeded", None)
    assert f"{limit} requests per minute" in body["message"]
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    request_id = error.response.headers["x-request-id"]
    row = wait_for_row(request_id)
    assert (row.status, row.http_status, row.error_code) == ("rejected", 429, "rate_limit_exceeded")
    assert (row.cost_usd, row.attempts) == (0, 0)
    assert LLMRequest.objects.filter(request_id=request_id).count() == 1
    return row


# --- per-key rate limits ----------------------------------------------------------------------------------------


def test_a_key_over_its_rate_limit_gets_a_429_with_retry_after_and_one_ledger_row(
    gateway_url, make_tenant, prices, redis_client
):
    limited = make_tenant(org="Limited", team="T", user="lim", rate_limit_per_minute=3)
    client = client_for(gateway_url, limited.secret)
    served = [ask(client).headers["x-request-id"] for _ in range(3)]
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    row = assert_rate_limited(caught, limit=3)
    assert (row.org_id, row.member_id, row.api_key_id) == (limited.org.id, limited.member.id, limited.api_key.id)
    # Refused requests are not counted: the window still holds the three served ones, in Redis.
    with pytest.raises(openai.RateLimitError):
        ask(client)
    assert redis_client.zcard(rate_limit_key(org_id=limited.org.id, api_key_id=limited.api_key.id)) == 3
    for request_id in served:
        assert wait_for_row(request_id).status == "served"
    assert LLMRequest.objects.filter(api_key_id=limited.api_key.id).count() == 5

    # The limit is the key's: another key of the same user (0 = unlimited) and another org are unaffected.
    unlimited = api_key_create(member=limited.member, name="no limit")
    assert unlimited.api_key.rate_limit_per_minute == 0
    other_client = client_for(gateway_url, unlimited.secret)
    for _ in range(5):
        assert ask(other_client).http_response.status_code == 200
    other_org = make_tenant(org="Elsewhere", team="T", user="e", rate_limit_per_minute=3)
    assert ask(client_for(gateway_url, other_org.secret)).http_response.status_code == 200


def test_the_rate_limit_is_edited_in_the_admin_and_applies_to_chat(gateway_url, make_tenant, prices, redis_client):
    tenant = make_tenant(org="Edited", team="T", user="ed")
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    browser = Client()
    browser.force_login(root)
    url = reverse("admin:tenancy_apikey_change", args=[tenant.api_key.pk])
    page = browser.get(url)
    assert page.status_code == 200 and 'name="rate_limit_per_minute"' in page.content.decode()
    response = browser.post(url, {"name": "ci", "rate_limit_per_minute": "1", "_save": "Save"})
    assert response.status_code == 302, response.content.decode()[:2000]
    tenant.api_key.refresh_from_db()
    assert tenant.api_key.rate_limit_per_minute == 1
    assert "1/min" in browser.get(reverse("admin:tenancy_apikey_changelist")).content.decode()

    client = client_for(gateway_url, tenant.secret)  # the test gateway's key cache is off: the edit applies at once
    assert ask(client).http_response.status_code == 200
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    assert_rate_limited(caught, limit=1)
    # /chat (the native API) shares the key's window.
    response = requests.post(
        f"{gateway_url}/chat", json={"model": "gpt-4o-mini", "prompt": "hi"},
        headers={"Authorization": f"Bearer {tenant.secret}"}, timeout=15,
    )  # fmt: skip
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limit_exceeded"
    assert wait_for_row(response.headers["x-request-id"]).endpoint == "chat"


def test_without_redis_the_limit_holds_in_process(make_tenant, prices, mock_llm_url, tmp_path):
    tenant = make_tenant(org="NoRedis", team="T", user="nr", rate_limit_per_minute=2)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{dead.getsockname()[1]}/0",
        "FINOPS_CACHE_ENABLED": "0",
        "FINOPS_LEDGER_SPOOL_DIR": str(tmp_path),
    }
    try:
        with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
            client = client_for(url, tenant.secret)
            served = [ask(client).headers["x-request-id"] for _ in range(2)]
            with pytest.raises(openai.RateLimitError) as caught:
                ask(client)
            assert_rate_limited(caught, limit=2)
            scraped = requests.get(f"{url}/metrics", timeout=10).text
    finally:
        dead.close()
    assert all(wait_for_row(r).status == "served" for r in served)
    assert 'finops_api_key_rate_limited_total{limiter="local"} 1.0' in scraped


def test_the_window_slides(redis_client):
    """The limiter itself, on a half-second window: a refusal says when a slot frees, and the slot does free."""

    async def run():
        key = f"finops:ratelimit:test:{uuid.uuid4().hex}"
        admit = [await window_admit(key=key, limit=2, token=uuid.uuid4().hex, timeout_s=1, window_s=0.5) for _ in range(3)]
        assert [a.admitted for a in admit] == [True, True, False]
        assert {a.limiter for a in admit} == {"redis"}
        assert 0 < admit[2].retry_after_s <= 0.5
        await asyncio.sleep(admit[2].retry_after_s + 0.05)
        assert (await window_admit(key=key, limit=2, token=uuid.uuid4().hex, timeout_s=1, window_s=0.5)).admitted

    asyncio.run(run())


# --- request size limits ------------------------------------------------------------------------------------------


def raw_request(url: str, head: str, body_parts, *, read_timeout: float = 20.0) -> tuple[int, dict[str, str], bytes]:
    """Send `head` and each part of the body (stopping quietly if the server closes on us), then read the answer.

    The parts need not complete the body: a test can send part of what it announced and wait for the answer."""
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=read_timeout) as sock:
        sock.sendall(head.encode("latin-1"))
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:
                break
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest


def head_for(url: str, path: str, secret: str | None, extra: str) -> str:
    auth = f"Authorization: Bearer {secret}\r\n" if secret else ""
    host = urlparse(url).netloc
    return f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}{extra}\r\n"


def a_body_of(size: int) -> bytes:
    """A valid chat request of exactly `size` bytes (one token per two bytes of prompt)."""
    prefix = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
    suffix = b'"}]}'
    filler = size - len(prefix) - len(suffix)
    return prefix + (b"x " * (filler // 2 + 1))[:filler] + suffix


@pytest.mark.parametrize("path,endpoint", [("/v1/chat/completions", "chat_completions"), ("/chat", "chat")])
def test_a_body_over_the_limit_is_a_413_with_a_ledger_row(gateway_url, tenant, path, endpoint):
    body = a_body_of(LIMIT + 1)
    status, headers, payload = raw_request(
        gateway_url, head_for(gateway_url, path, tenant.secret, f"Content-Length: {len(body)}\r\n"), [body]
    )
    assert status == 413, payload[:300]
    error = json.loads(payload)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")
    assert str(LIMIT) in error["message"]
    row = wait_for_row(headers["x-request-id"])
    assert (row.status, row.http_status, row.error_code, row.endpoint) == ("rejected", 413, "request_too_large", endpoint)
    assert (row.org_id, row.api_key_id) == (tenant.org.id, tenant.api_key.id)
    assert LLMRequest.objects.filter(request_id=headers["x-request-id"]).count() == 1


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat", "/api/spend/"])
def test_a_declared_length_over_the_limit_is_refused_before_any_of_the_body_is_read(gateway_url, tenant, path):
    # 10 GiB announced, 2 bytes sent: the answer comes at once, so the gateway never waited for (or held) the rest.
    status, headers, payload = raw_request(
        gateway_url, head_for(gateway_url, path, tenant.secret, f"Content-Length: {10 * 2**30}\r\n"), [b"{}"], read_timeout=10
    )
    assert status == 413
    assert json.loads(payload)["error"]["code"] == "request_too_large"
    if path != "/api/spend/":  # a chat request: the refused request is on the ledger
        assert wait_for_row(headers["x-request-id"]).http_status == 413


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat"])
def test_a_chunked_body_is_cut_off_at_the_limit(gateway_url, tenant, path):
    """No Content-Length: the gateway counts as it reads and answers as soon as the limit is passed. The client
    sends one chunk more than the limit and never ends the body, so a gateway that read to the end would hang."""
    chunk = b"x" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (LIMIT // len(chunk) + 1)
    status, headers, payload = raw_request(
        gateway_url, head_for(gateway_url, path, tenant.secret, "Transfer-Encoding: chunked\r\n"), chunks
    )
    assert status == 413, payload[:300]
    assert json.loads(payload)["error"]["code"] == "request_too_large"
    assert wait_for_row(headers["x-request-id"]).http_status == 413


def test_a_body_just_under_the_limit_is_read(gateway_url, tenant):
    # Just under the limit, and over Django's default of 2.5 MB: /chat reads it (the prompt is then too long).
    body = a_body_of(LIMIT - 16)
    status, headers, payload = raw_request(
        gateway_url, head_for(gateway_url, "/chat", tenant.secret, f"Content-Length: {len(body)}\r\n"), [body]
    )
    assert status == 413
    assert json.loads(payload)["error"]["code"] == "context_length_exceeded"  # the token limit, not the byte limit
    assert wait_for_row(headers["x-request-id"]).error_code == "context_length_exceeded"
