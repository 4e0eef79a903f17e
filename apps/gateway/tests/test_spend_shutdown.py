"""Issue #16 items 8 and 9: a deploy (SIGTERM: uvicorn's graceful shutdown, then the ASGI lifespan shutdown) ends the
requests still in flight the same way as any other end — billed, settled, recorded — before the process exits:
a /chat request whose client left (its pipeline still waiting for the upstream), a /v1 stream whose client left
(still being read to its usage), and the settles they queue."""

from __future__ import annotations

import threading
from decimal import Decimal

import httpx2
import pytest

from apps.budgets.models import Budget, Reservation
from apps.budgets.services import budget_create
from apps.gateway.tests.conftest import mini_cost, unique_prompt
from apps.gateway.tests.test_streaming_disconnect import abandon
from apps.ledger.models import LLMRequest

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_deploy_ends_abandoned_requests_and_drains_their_settles_before_exiting(mock_llm_url, make_tenant, prices):
    from conftest import gateway_server

    tenant = make_tenant()
    budget_create(
        budget=Budget(
            scope="user", org=tenant.org, team=tenant.team, member=tenant.member, period="monthly",
            cap_usd=Decimal("100"), action="block", soft_pct=[80],
        )
    )  # fmt: skip
    env = {"FINOPS_BUDGET_TIMEOUT_MS": "10000", "FINOPS_BUDGET_DECISION_MAX_MS": "10000"}
    left = threading.Event()

    def chat(url: str) -> None:
        with pytest.raises(httpx2.ReadTimeout), httpx2.Client(timeout=httpx2.Timeout(10.0, read=0.5)) as http:
            http.post(
                f"{url}/chat",
                json={"model": "gpt-4o-mini", "prompt": unique_prompt(), "max_tokens": 50},
                headers={
                    "Authorization": f"Bearer {tenant.secret}",
                    "X-Mock-Latency-Ms": "4000",
                },  # longer than the stream's drain
            )
        left.set()

    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        client = threading.Thread(target=chat, args=(url,))
        client.start()
        stream_id = abandon(
            url,
            tenant.secret,
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": unique_prompt()}], "max_tokens": 600},
            {"X-Mock-Completion-Tokens": "500", "X-Mock-Chunk-Delay-Ms": "4"},
            after_chunks=3,
        )
        client.join(timeout=10)
        assert left.is_set()
    # The server has exited (SIGTERM): nothing else could have written or settled these since.

    rows = {row.endpoint: row for row in LLMRequest.objects.filter(org=tenant.org)}
    assert sorted(rows) == ["chat", "chat_completions"]
    chat_row, stream_row = rows["chat"], rows["chat_completions"]
    assert str(stream_row.request_id) == stream_id
    assert (chat_row.status, stream_row.status) == ("disconnected", "disconnected")
    assert chat_row.cost_usd == mini_cost(chat_row.prompt_tokens, chat_row.completion_tokens) > 0
    assert (stream_row.completion_tokens, stream_row.usage_estimated) == (500, False)  # read to its usage first
    for row in (chat_row, stream_row):
        assert row.cost_usd <= row.reserved_usd
        reservation = Reservation.objects.get(request_id=row.request_id)
        assert (reservation.state, reservation.actual_usd) == ("settled", row.cost_usd)  # drained, not swept


# --- /v1 cancelled mid-request ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "mock"),
    [
        (False, {"x-mock-latency-ms": "1500"}),  # cancelled while waiting for the answer
        (True, {"x-mock-latency-ms": "1500"}),  # ... for the stream's first event
        (True, {"x-mock-chunk-delay-ms": "25", "x-mock-completion-tokens": "40"}),  # ... while relaying the stream
    ],
    ids=["json", "stream-waiting", "stream-relaying"],
)
def test_a_v1_request_whose_handler_is_cancelled_still_ends_once(mock_llm_url, make_tenant, prices, settings, stream, mock):
    """uvicorn never cancels /v1's handler (it sends http.disconnect), but another server or a forced shutdown may:
    the pipeline runs in a shielded task (pipeline.chat_to_the_end), so the request is still billed, settled and
    recorded, once — a stream nobody reads is read to its usage first. The real ASGI app, in-process, driven with
    ASGI events; the handler is cancelled half a second in."""
    import asyncio
    import json

    from apps.budgets.tests.conftest import run
    from apps.gateway import pipeline
    from apps.gateway.asgi import GatewayASGI

    settings.FINOPS = {
        **settings.FINOPS,
        "MOCK_LLM_URL": mock_llm_url,
        "BUDGET_TIMEOUT_MS": 10000,
        "BUDGET_DECISION_MAX_MS": 10000,
        "GATEWAY_CATALOG_CACHE_SECONDS": 0,
        "API_KEY_CACHE_SECONDS": 0,
    }
    tenant = make_tenant()
    budget_create(
        budget=Budget(
            scope="user", org=tenant.org, team=tenant.team, member=tenant.member, period="monthly",
            cap_usd=Decimal("100"), action="block", soft_pct=[80],
        )
    )  # fmt: skip
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": unique_prompt()}], "max_tokens": 40, "stream": stream}
    ).encode()
    scope = {
        "type": "http", "path": "/v1/chat/completions", "method": "POST",
        "headers": [(b"authorization", f"Bearer {tenant.secret}".encode()), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *((k.encode(), v.encode()) for k, v in mock.items())],
    }  # fmt: skip
    sent: list[dict] = []

    async def main() -> None:
        requests = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if requests:
                return requests.pop()
            await asyncio.Event().wait()  # the client says nothing more

        async def send(message):
            sent.append(message)

        handler = asyncio.ensure_future(GatewayASGI(None).v1(scope, receive, send))
        await asyncio.sleep(0.5)  # authenticated, reserved, waiting for the upstream
        handler.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handler
        await pipeline.abandoned_drain()

    run(main)
    relaying = "x-mock-chunk-delay-ms" in mock
    assert bool(sent) == relaying  # what reached the client before the cancel
    row = LLMRequest.objects.get(org=tenant.org)
    assert (row.endpoint, row.status, row.stream, row.usage_estimated) == ("chat_completions", "disconnected", stream, False)
    assert row.completion_tokens > 0 and row.cost_usd == mini_cost(row.prompt_tokens, row.completion_tokens)
    if relaying:
        assert row.completion_tokens == 40  # the whole answer, from the usage read after the cancel
    assert row.cost_usd <= row.reserved_usd
    reservation = Reservation.objects.get(request_id=row.request_id)
    assert (reservation.state, reservation.actual_usd) == ("settled", row.cost_usd)
