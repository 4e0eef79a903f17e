"""Load shedding (apps.gateway.admission): past FINOPS_GATEWAY_MAX_IN_FLIGHT requests in flight in a worker, a new
request gets 503 `overloaded` with Retry-After, counted in finops_gateway_shed_total — never a budget 429."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from apps.gateway.tests.conftest import unique_prompt, wait_for_row
from conftest import gateway_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def gateway_metric(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def shed_total(url: str) -> float:
    return gateway_metric(url, "finops_gateway_shed_total")


def test_requests_past_the_in_flight_limit_get_503_overloaded_with_retry_after(make_tenant, prices, mock_llm_url):
    tenant = make_tenant()
    env = {"FINOPS_GATEWAY_MAX_IN_FLIGHT": "2", "FINOPS_GATEWAY_SHED_RETRY_AFTER_S": "3"}
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        before = shed_total(url)

        def chat(latency_ms: int) -> requests.Response:
            return requests.post(
                f"{url}/v1/chat/completions",
                json={"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": unique_prompt()}]},
                headers={"Authorization": f"Bearer {tenant.secret}", "X-Mock-Latency-Ms": str(latency_ms)},
                timeout=30,
            )

        slow: list[requests.Response] = []
        holders = [threading.Thread(target=lambda: slow.append(chat(10_000))) for _ in range(2)]
        for holder in holders:
            holder.start()
        # Probe only once both slow requests are admitted: a probe sent earlier could take a slot and shed a holder.
        deadline = time.monotonic() + 8
        while gateway_metric(url, "finops_gateway_in_flight") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        in_flight = gateway_metric(url, "finops_gateway_in_flight")
        shed = chat(0)
        auth = {"Authorization": f"Bearer {tenant.secret}"}
        shed_wire = {  # every paid /v1 endpoint counts against the same limit
            path: requests.post(f"{url}{path}", json=body, headers=auth, timeout=30)
            for path, body in {
                "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hello"},
                "/v1/responses": {"model": "gpt-4o-mini", "input": "hello"},
                "/v1/messages": {"model": "claude-3-5-haiku", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                "/chat": {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
            }.items()
        }
        for holder in holders:
            holder.join()
        after = chat(0)  # the slow ones are done: admitted again
        shed_after = shed_total(url)

    assert in_flight == 2, f"the two slow requests were not both in flight: {[r.status_code for r in slow]}"
    assert shed.status_code == 503, shed.text
    error = shed.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "overloaded")
    assert shed.headers["retry-after"] == "3"
    assert shed_after - before >= 5
    for path in ("/v1/embeddings", "/v1/responses", "/chat"):
        answer = shed_wire[path]
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "overloaded", (path, answer.text)
        assert answer.headers["retry-after"] == "3"
    messages = shed_wire["/v1/messages"]  # Anthropic's overloaded answer, which the anthropic SDK retries
    assert messages.status_code == 529, messages.text
    assert messages.json()["type"] == "error" and messages.json()["error"]["type"] == "overloaded_error"
    assert [r.status_code for r in slow] == [200, 200]  # the requests in flight are not disturbed
    assert after.status_code == 200
    assert wait_for_row(after.headers["x-request-id"]).budget_state == "none"
