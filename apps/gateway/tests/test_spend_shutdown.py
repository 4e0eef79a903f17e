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
