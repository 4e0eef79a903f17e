"""POST /chat: the native DRF API on the same pipeline."""

from __future__ import annotations

import httpx2
import pytest

from apps.gateway.tests.conftest import mini_cost, only_row, unique_prompt

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_answers_with_the_cost_in_the_body_and_headers(gateway_url, tenant):
    with httpx2.Client() as http:
        response = http.post(
            f"{gateway_url}/chat",
            json={"model": "gpt-4o-mini", "prompt": unique_prompt(), "system": "Be brief.", "max_tokens": 200},
            headers={"Authorization": f"Bearer {tenant.secret}"},
        )
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["content"].startswith("Mock answer from gpt-4o-mini")
    assert data["cost_usd"] == response.headers["x-cost-usd"]
    row = only_row(data["request_id"])
    assert (row.endpoint, row.status, row.model) == ("chat", "served", "gpt-4o-mini")
    assert row.cost_usd == mini_cost(data["prompt_tokens"], data["completion_tokens"])
    assert format(row.cost_usd, "f") == data["cost_usd"]


def test_serializer_errors_are_openai_style_400s_with_a_row(gateway_url, tenant):
    with httpx2.Client() as http:
        response = http.post(
            f"{gateway_url}/chat",
            json={"model": "gpt-4o-mini", "max_tokens": 0, "prompt": "hi"},
            headers={"Authorization": f"Bearer {tenant.secret}"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["type"]) == ("max_tokens", "invalid_request_error")
    row = only_row(response.headers["x-request-id"])
    assert (row.endpoint, row.status, row.http_status, row.org_id) == ("chat", "rejected", 400, tenant.org.id)


def test_it_needs_a_key(gateway_url, tenant):
    with httpx2.Client() as http:
        response = http.post(f"{gateway_url}/chat", json={"prompt": "hi"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    only_row(response.headers["x-request-id"])
