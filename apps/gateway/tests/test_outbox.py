"""Stage 11 when Postgres is unreachable: rows go to the outbox and the replay inserts each exactly once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal

import openai
import pytest
import redis.asyncio as aioredis
from django.utils import timezone

from apps.gateway.context import RequestContext
from apps.gateway.tests.conftest import mini_cost, unique_prompt
from apps.ledger.models import LLMRequest
from apps.ledger.outbox import ledger_outbox_replay
from apps.ledger.pricing import cost_compute
from apps.ledger.recorder import INTERRUPTED, outbox_write, row_from_json, row_to_json
from apps.ledger.selectors import price_in_force
from apps.ledger.tasks import ledger_outbox_replay_task
from conftest import ROOT, free_port, gateway_server
from finops.models import JobRun

STREAM = "finops:ledger:outbox"


@pytest.fixture
def own_stream(settings) -> str:
    """An outbox stream of this test's own: a gateway of an earlier test that is still writing a late row (to the
    default stream, refused by Postgres after that test's flush) cannot change what this test counts."""
    stream = f"finops:ledger:outbox:test-{uuid.uuid4().hex[:8]}"
    settings.FINOPS = {**settings.FINOPS, "LEDGER_OUTBOX_STREAM": stream}
    return stream


@pytest.mark.django_db(transaction=True)
def test_rows_reach_the_redis_outbox_and_are_replayed_exactly_once(mock_llm_url, tenant, redis_client, own_stream):
    # This gateway's ledger writer points at a port where no Postgres listens; everything else is normal.
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/finops"
    env = {"FINOPS_LEDGER_DATABASE_URL": dead, "FINOPS_CACHE_ENABLED": "0", "FINOPS_LEDGER_OUTBOX_STREAM": own_stream}
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=tenant.secret, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": unique_prompt()}]
        )
        usage = raw.parse().usage
        request_id = raw.headers["x-request-id"]
        deadline = time.monotonic() + 10
        while redis_client.xlen(own_stream) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)

    assert redis_client.xlen(own_stream) == 1
    assert not LLMRequest.objects.exists()

    # A duplicate in the outbox (e.g. an insert that committed just as it timed out) must not double-bill.
    ((_, fields),) = redis_client.xrange(own_stream)
    redis_client.xadd(own_stream, {"row": fields[b"row"]})

    result = ledger_outbox_replay_task()
    assert "inserted=1" in result
    row = LLMRequest.objects.get()
    assert str(row.request_id) == request_id
    assert (row.status, row.org_id) == ("served", tenant.org.id)
    assert row.cost_usd == mini_cost(usage.prompt_tokens, usage.completion_tokens) > 0
    assert redis_client.xlen(own_stream) == 0
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


def test_the_outbox_stream_is_the_one_the_runbook_names(settings):
    assert settings.FINOPS["LEDGER_OUTBOX_STREAM"] == STREAM


@pytest.mark.django_db
def test_with_redis_down_too_rows_are_spooled_to_disk_and_replayed_once(tmp_path, settings, own_stream):
    settings.FINOPS = {**settings.FINOPS, "LEDGER_SPOOL_DIR": str(tmp_path)}
    rows = [served_row(), served_row()]
    dead_redis = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)

    assert asyncio.run(outbox_write(rows, redis=dead_redis)) == "spool"
    spooled = list(tmp_path.glob("ledger-*.jsonl"))
    assert len(spooled) == 1 and len(spooled[0].read_text().splitlines()) == 2

    empty_redis = f"{settings.REDIS_URL}"  # this test's own outbox stream is empty
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


@pytest.mark.django_db(transaction=True)
def test_a_row_postgres_refuses_neither_takes_its_batch_nor_blocks_the_outbox(tmp_path, settings, redis_client, own_stream):
    """A row Postgres refuses (here: an org that does not exist) goes to the outbox alone; the replay inserts what
    it can and keeps the refused row in a dead-letter file, so the outbox drains instead of failing every minute."""
    from apps.ledger.recorder import LedgerWriter
    from finops.asyncdb import close_pools

    settings.FINOPS = {**settings.FINOPS, "LEDGER_SPOOL_DIR": str(tmp_path)}
    good, refused = served_row(), served_row()
    refused["org_id"] = 987_654_321  # no such organization: a foreign-key violation at commit

    async def write_both() -> None:
        writer = LedgerWriter()
        await asyncio.gather(writer.write(good), writer.write(refused))
        writer.task.cancel()
        await close_pools()

    asyncio.run(write_both())
    assert list(LLMRequest.objects.values_list("request_id", flat=True)) == [good["request_id"]]
    assert redis_client.xlen(own_stream) == 1  # only the refused row was diverted

    result = ledger_outbox_replay(directory=tmp_path)
    assert (result.seen, result.inserted, result.dead) == (1, 0, 1)
    assert redis_client.xlen(own_stream) == 0
    (dead,) = tmp_path.glob("dead-*.jsonl")
    assert str(refused["request_id"]) in dead.read_text() and "foreign key constraint" in dead.read_text()
    assert ledger_outbox_replay(directory=tmp_path).dead == 0  # drained: nothing is retried forever

    from apps.ledger.metrics import ledger_dead_letters  # what FinopsLedgerDeadLetters alerts on, read at scrape time

    (family,) = ledger_dead_letters()
    assert [sample.value for sample in family.samples] == [1]


# --- intents: a gateway process killed mid-request ----------------------------------------------------------

KILLED_GATEWAY = """
import os, signal, sys
import django

django.setup()
from apps.gateway.context import Caller, RequestContext
from apps.gateway.pipeline import journal_intent
from apps.gateway.selectors import catalog_build
from apps.ledger.recorder import _intent_journal, ledger_intent_final
from apps.ledger.models import ModelPrice

org, team, member, key = map(int, sys.argv[1:5])
catalog = catalog_build(price_rows=list(ModelPrice.objects.values()), provider_rows=[])
ids = []
for _ in range(3):
    ctx = RequestContext(endpoint="chat_completions", requested_model="gpt-4o-mini", prompt_tokens_estimate=100)
    ctx.caller = Caller(api_key_id=key, api_key_prefix="fk", org_id=org, team_id=team, member_id=member)
    ctx.catalog = catalog
    journal_intent(ctx, model="gpt-4o-mini", tier="cheap", provider="mock")  # the upstream call starts
    ids.append(ctx.request_id)
    if len(ids) == 1:  # answered and recorded: its intent is done
        ledger_intent_final(ctx.ledger_row())
        _intent_journal().done(str(ctx.request_id))
    elif len(ids) == 2:  # streaming: 7 completion tokens relayed so far
        ctx.model, ctx.tier, ctx.provider = "gpt-4o-mini", "cheap", "mock"
        journal_intent(ctx, model="gpt-4o-mini", tier="cheap", provider="mock", completion_tokens=7, http_status=200)
print(" ".join(map(str, ids)), flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.django_db(transaction=True)
def test_intents_of_a_killed_gateway_process_become_interrupted_rows_exactly_once(tenant, tmp_path, subprocess_env, settings):
    settings.FINOPS = {**settings.FINOPS, "LEDGER_SPOOL_DIR": str(tmp_path)}
    env = {**subprocess_env, "FINOPS_LEDGER_SPOOL_DIR": str(tmp_path), "FINOPS_LEDGER_INTENTS": "1"}
    ids = (tenant.org.id, tenant.team.id, tenant.member.id, tenant.api_key.id)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_GATEWAY, *map(str, ids)], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        done_id, streaming_id, recorded_id = proc.stdout.readline().split()
        # While its process lives, a journal is in use: nothing is replayed from it.
        live = ledger_outbox_replay(redis_url=settings.REDIS_URL, directory=tmp_path)
        assert (live.live_journals, live.interrupted) == (1, 0)
        # The third request's final row made it (killed after the commit, before its `done` line).
        LLMRequest.objects.create(request_id=recorded_id, endpoint="chat_completions", status="served", model="gpt-4o-mini",
                                  received_at=timezone.now(), org=tenant.org, team=tenant.team, member=tenant.member,
                                  api_key=tenant.api_key)  # fmt: skip
        proc.stdin.write("die\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()

    result = ledger_outbox_replay(redis_url=settings.REDIS_URL, directory=tmp_path)
    assert (result.interrupted, result.live_journals, result.unreadable) == (1, 0, 0)
    assert not LLMRequest.objects.filter(request_id=done_id).exists()  # its final row is someone else's business
    assert LLMRequest.objects.get(request_id=recorded_id).status == "served"  # the final row wins
    row = LLMRequest.objects.get(request_id=streaming_id)
    assert (row.status, row.error_code, row.http_status, row.stream) == ("failed", INTERRUPTED, 200, False)
    assert (row.org_id, row.member_id, row.model, row.prompt_tokens, row.completion_tokens) == (
        tenant.org.id, tenant.member.id, "gpt-4o-mini", 100, 7,
    )  # fmt: skip
    price = price_in_force(model="gpt-4o-mini", on=row.received_at.date())
    assert row.cost_usd == cost_compute(price=price, prompt_tokens=100, completion_tokens=7) > 0
    assert row.price_id == price.id
    assert not list(tmp_path.glob("intents-*"))  # the journal is gone: a second replay has nothing to do
    assert ledger_outbox_replay(redis_url=settings.REDIS_URL, directory=tmp_path).interrupted == 0
    assert LLMRequest.objects.count() == 2


def test_a_long_lived_journal_is_rotated_down_to_its_open_intents(tmp_path, monkeypatch):
    from apps.ledger import recorder

    monkeypatch.setattr(recorder, "INTENT_ROTATE_BYTES", 4096)
    journal = recorder.IntentJournal(tmp_path)
    rows = [served_row() for _ in range(40)]
    for row in rows:
        journal.intent(str(row["request_id"]), row)
    for row in rows[1:]:
        journal.done(str(row["request_id"]))
    (path,) = tmp_path.glob("intents-*.jsonl")
    lines = path.read_bytes().splitlines()
    assert len(lines) < 10 and str(rows[0]["request_id"]).encode() in lines[0]
    journal.done(str(rows[0]["request_id"]))
    journal.shutdown()  # a clean exit with nothing open leaves nothing behind
    assert not list(tmp_path.iterdir())


@pytest.mark.django_db(transaction=True)
def test_a_gateway_killed_mid_stream_gets_its_row_from_the_replay(mock_llm_url, tenant, tmp_path, settings):
    import httpx2
    import psutil

    spool = tmp_path / "spool"
    settings.FINOPS = {**settings.FINOPS, "LEDGER_SPOOL_DIR": str(spool)}
    env = {"FINOPS_LEDGER_SPOOL_DIR": str(spool), "FINOPS_CACHE_ENABLED": "0"}
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": unique_prompt()}]}
    headers = {"Authorization": f"Bearer {tenant.secret}", "X-Mock-Chunk-Delay-Ms": "150"}
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        port = url.rsplit(":", 1)[1]
        (gateway,) = [p for p in psutil.Process().children() if port in " ".join(p.cmdline())]
        with pytest.raises(httpx2.TransportError), httpx2.stream("POST", f"{url}/v1/chat/completions", json=body,
                                                                  headers=headers, timeout=30) as response:  # fmt: skip
            request_id = response.headers["x-request-id"]
            started = time.monotonic()
            for _ in response.iter_lines():
                if time.monotonic() - started > 1.5:  # past the first refresh of the intent (every second)
                    gateway.send_signal(signal.SIGKILL)
    assert not LLMRequest.objects.filter(request_id=request_id).exists()

    result = ledger_outbox_replay(redis_url=settings.REDIS_URL, directory=spool)
    assert result.interrupted == 1
    row = LLMRequest.objects.get(request_id=request_id)
    assert (row.status, row.error_code, row.http_status, row.stream) == ("failed", INTERRUPTED, 200, True)
    assert row.completion_tokens > 0  # what had been streamed a moment before the kill
    assert row.usage_estimated  # the prompt's bound and our count: no provider usage reached the ledger
    assert row.cost_usd == mini_cost(row.prompt_tokens, row.completion_tokens) > mini_cost(row.prompt_tokens, 0)
    assert ledger_outbox_replay(redis_url=settings.REDIS_URL, directory=spool).interrupted == 0
    assert LLMRequest.objects.count() == 1
