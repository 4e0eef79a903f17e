"""Stage 11 when Postgres is unreachable: rows go to the outbox and the replay inserts each exactly once."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import openai
import pytest
import redis.asyncio as aioredis

from apps.gateway.context import RequestContext
from apps.gateway.recorder import outbox_write, row_from_json, row_to_json
from apps.gateway.services import ledger_outbox_replay
from apps.gateway.tasks import ledger_outbox_replay_task
from apps.gateway.tests.conftest import mini_cost, unique_prompt
from apps.ledger.models import LLMRequest
from conftest import free_port, gateway_server
from finops.models import JobRun

STREAM = "finops:ledger:outbox"


@pytest.mark.django_db(transaction=True)
def test_rows_reach_the_redis_outbox_and_are_replayed_exactly_once(mock_llm_url, tenant, redis_client):
    # This gateway's ledger writer points at a port where no Postgres listens; everything else is normal.
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/finops"
    env = {"FINOPS_LEDGER_DATABASE_URL": dead, "FINOPS_CACHE_ENABLED": "0"}
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=tenant.secret, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": unique_prompt()}]
        )
        usage = raw.parse().usage
        request_id = raw.headers["x-request-id"]
        deadline = time.monotonic() + 10
        while redis_client.xlen(STREAM) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)

    assert redis_client.xlen(STREAM) == 1
    assert not LLMRequest.objects.exists()

    # A duplicate in the outbox (e.g. an insert that committed just as it timed out) must not double-bill.
    ((_, fields),) = redis_client.xrange(STREAM)
    redis_client.xadd(STREAM, {"row": fields[b"row"]})

    result = ledger_outbox_replay_task()
    assert "inserted=1" in result
    row = LLMRequest.objects.get()
    assert str(row.request_id) == request_id
    assert (row.status, row.org_id) == ("served", tenant.org.id)
    assert row.cost_usd == mini_cost(usage.prompt_tokens, usage.completion_tokens) > 0
    assert redis_client.xlen(STREAM) == 0
    assert JobRun.objects.get(name="ledger_outbox_replay").successes == 1

    ledger_outbox_replay_task()
    assert LLMRequest.objects.count() == 1


def served_row() -> dict:
    ctx = RequestContext(endpoint="chat_completions", requested_model="gpt-4o-mini", model="gpt-4o-mini", provider="mock")
    ctx.prompt_tokens, ctx.completion_tokens, ctx.cost_usd = 10, 20, Decimal("0.0000135000")
    return ctx.ledger_row()


def test_the_outbox_row_format_round_trips():
    row = served_row()
    assert row_from_json(row_to_json(row)) == row


@pytest.mark.django_db
def test_with_redis_down_too_rows_are_spooled_to_disk_and_replayed_once(tmp_path, settings):
    settings.FINOPS = {**settings.FINOPS, "LEDGER_SPOOL_DIR": str(tmp_path)}
    rows = [served_row(), served_row()]
    dead_redis = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)

    assert asyncio.run(outbox_write(rows, redis=dead_redis)) == "spool"
    spooled = list(tmp_path.glob("ledger-*.jsonl"))
    assert len(spooled) == 1 and len(spooled[0].read_text().splitlines()) == 2

    empty_redis = f"{settings.REDIS_URL}"  # the test Redis has no outbox entries of its own here
    result = ledger_outbox_replay(redis_url=empty_redis, directory=tmp_path)
    assert (result.inserted, result.unreadable) == (2, 0)
    assert set(LLMRequest.objects.values_list("request_id", flat=True)) == {r["request_id"] for r in rows}
    assert not list(tmp_path.iterdir())

    # The same rows spooled again (a retry after a crash) are not inserted twice; a torn line is skipped.
    asyncio.run(outbox_write(rows, redis=dead_redis))
    with open(next(tmp_path.glob("ledger-*.jsonl")), "a") as fh:
        fh.write('{"request_id": "half a li')
    result = ledger_outbox_replay(redis_url=empty_redis, directory=tmp_path)
    assert (result.seen, result.inserted, result.unreadable) == (2, 0, 1)
    assert LLMRequest.objects.count() == 2
    assert settings.FINOPS["LEDGER_OUTBOX_STREAM"] == STREAM
