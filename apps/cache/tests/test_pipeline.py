"""The cache hooks against real Redis, Postgres+pgvector and the local embedding model."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from django.db import connection

from apps.cache.models import CacheRouteOverride, CacheSettings, SemanticCacheEntry
from apps.cache.services import ORGS_KEY, cache_invalidate, cache_purge_expired
from apps.cache.tests.conftest import chat_pairs, completion, make_ctx, runtime_forget
from apps.gateway.stages import cache_lookup_exact, cache_lookup_semantic, cache_store
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force

pytestmark = pytest.mark.django_db(transaction=True)


async def lookup(ctx):
    """The gateway's order: exact, then semantic."""
    hit = await cache_lookup_exact(ctx)
    if hit is None:
        hit = await cache_lookup_semantic(ctx)
    return hit


async def serve_and_store(ctx, content: str, **kwargs):
    hit = await lookup(ctx)
    assert hit is None, f"unexpected {ctx.cache_status} hit"
    await cache_store(ctx, completion(content, **kwargs))


def test_it_serves_an_identical_request_from_the_exact_tier_with_its_savings(cache_env, run):
    tenant = cache_env()
    run(serve_and_store(make_ctx(tenant, "What is the capital of France?", temperature=0), "Paris."))

    ctx = make_ctx(tenant, "What is the capital of France?", temperature=0)
    hit = run(lookup(ctx))

    assert hit is not None and hit["choices"][0]["message"]["content"] == "Paris."
    assert ctx.cache_status == "exact"
    assert ctx.status == "cached"
    assert ctx.cost_usd == Decimal(0)
    price = price_in_force(model="gpt-4o-mini", on=dt.datetime.now(dt.UTC).date())
    assert ctx.saved_usd == cost_compute(price=price, prompt_tokens=20, completion_tokens=50)
    assert ctx.saved_usd > 0
    assert ctx.price_id == price.id
    assert hit["id"] == f"chatcmpl-{ctx.request_id.hex}"


def test_it_keys_streaming_and_non_streaming_alike_but_not_different_parameters(cache_env, run):
    tenant = cache_env()
    run(serve_and_store(make_ctx(tenant, "Name a prime number.", temperature=0, max_tokens=50), "7"))

    streamed = make_ctx(
        tenant, "Name a prime number.", temperature=0, max_tokens=50, stream=True, stream_options={"include_usage": True}
    )
    assert run(cache_lookup_exact(streamed)) is not None

    longer = make_ctx(tenant, "Name a prime number.", temperature=0, max_tokens=51)
    assert run(cache_lookup_exact(longer)) is None
    assert longer.cache_status == "miss"
    seeded = make_ctx(tenant, "Name a prime number.", temperature=0, max_tokens=50, seed=3)
    assert run(cache_lookup_exact(seeded)) is None


def test_it_serves_a_paraphrase_from_the_semantic_tier(cache_env, run):
    tenant = cache_env()
    run(serve_and_store(make_ctx(tenant, "How do I reset my password?"), "Click 'Forgot password'."))

    ctx = make_ctx(tenant, "How can I reset my password?")
    hit = run(lookup(ctx))

    assert hit is not None and hit["choices"][0]["message"]["content"] == "Click 'Forgot password'."
    assert ctx.cache_status == "semantic"
    assert 0.92 <= ctx.similarity < 1.0
    assert ctx.saved_usd > 0
    entry = SemanticCacheEntry.objects.get(org=tenant.org)
    assert entry.hits == 1
    assert entry.prompt_text is None  # the org did not opt in to prompt storage

    # The paraphrase was promoted to the exact tier: asking it again skips the embedding.
    again = make_ctx(tenant, "How can I reset my password?")
    assert run(cache_lookup_exact(again)) is not None
    assert again.cache_status == "exact"


def test_it_keeps_the_prompt_text_only_for_orgs_that_opted_in(cache_env, run):
    tenant = cache_env(org="Opted In")
    tenant.org.store_prompts = True
    tenant.org.save()
    run(serve_and_store(make_ctx(tenant, "How do I reset my password?"), "Click 'Forgot password'."))
    assert SemanticCacheEntry.objects.get(org=tenant.org).prompt_text == "How do I reset my password?"


def test_tenant_b_never_receives_tenant_a_answer_in_either_tier(cache_env, run, redis_client):
    a = cache_env(org="Tenant A", user="alice")
    b = cache_env(org="Tenant B", user="bob")
    run(serve_and_store(make_ctx(a, "What is our refund policy?"), "Tenant A's secret policy."))
    run(serve_and_store(make_ctx(a, "Summarize our Q3 numbers."), "Tenant A's Q3 numbers."))

    for prompt in ("What is our refund policy?", "What's our refund policy?", "Summarize our Q3 numbers."):
        ctx = make_ctx(b, prompt)
        assert run(lookup(ctx)) is None, prompt
        assert ctx.cache_status == "miss"
    # A still gets its own answers, so the misses above are isolation, not a broken cache.
    ctx = make_ctx(a, "What is our refund policy?")
    assert run(lookup(ctx))["choices"][0]["message"]["content"] == "Tenant A's secret policy."


def test_hard_negatives_never_hit_at_the_default_settings(cache_env, run):
    tenant = cache_env()
    pairs = chat_pairs()
    for n, pair in enumerate(pairs):
        run(serve_and_store(make_ctx(tenant, pair["origin"]), f"answer {n}"))

    false_hits = []
    for pair in pairs:
        for hard in pair["hard_negatives"]:
            ctx = make_ctx(tenant, hard["text"])
            if run(lookup(ctx)) is not None:
                false_hits.append((hard["kind"], hard["text"], ctx.similarity))
    assert false_hits == []
    assert sum(len(p["hard_negatives"]) for p in pairs) >= 50


def test_the_system_prompt_and_the_model_scope_the_semantic_tier(cache_env, run):
    tenant = cache_env()
    run(serve_and_store(make_ctx(tenant, "How do I reset my password?", system="You are a pirate."), "Arr."))
    other_system = make_ctx(tenant, "How can I reset my password?", system="You are a lawyer.")
    assert run(lookup(other_system)) is None
    other_model = make_ctx(tenant, "How can I reset my password?", model="gpt-4o", system="You are a pirate.")
    assert run(lookup(other_model)) is None
    same = make_ctx(tenant, "How can I reset my password?", system="You are a pirate.")
    assert run(lookup(same)) is not None


def test_exact_and_semantic_entries_expire_with_the_ttl(cache_env, run, redis_client):
    tenant = cache_env()
    run(serve_and_store(make_ctx(tenant, "How do I reset my password?", cache_ttl_s=1), "Click 'Forgot password'."))
    entry = SemanticCacheEntry.objects.get(org=tenant.org)
    assert (entry.expires_at - entry.created_at).total_seconds() == pytest.approx(1, abs=0.01)
    keys = [k for k in redis_client.keys("finops:cache:x:*")]
    assert len(keys) == 1 and 0 < redis_client.pttl(keys[0]) <= 1000

    time.sleep(1.2)
    assert run(lookup(make_ctx(tenant, "How do I reset my password?"))) is None
    assert run(lookup(make_ctx(tenant, "How can I reset my password?"))) is None


def test_the_purge_job_deletes_expired_semantic_rows_only(cache_env, run, redis_client):
    tenant = cache_env()
    run(serve_and_store(make_ctx(tenant, "How do I reset my password?"), "old"))
    run(serve_and_store(make_ctx(tenant, "What is the capital of France?"), "Paris."))
    SemanticCacheEntry.objects.filter(response__choices__0__message__content="old").update(
        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    redis_client.delete(*redis_client.keys("finops:cache:x:*"))  # as if both exact entries had expired

    from apps.cache.tasks import cache_purge_expired_task
    from finops.models import JobRun

    result = cache_purge_expired_task()

    assert "semantic_deleted=1" in result and "index_pruned=2" in result
    assert list(SemanticCacheEntry.objects.values_list("response__choices__0__message__content", flat=True)) == ["Paris."]
    assert JobRun.objects.get(name="cache_purge_expired").successes == 1
    assert cache_purge_expired().semantic_deleted == 0  # running it twice changes nothing


def test_redis_down_bypasses_the_exact_tier_without_raising(cache_env, run, settings, request):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]

    tenant = cache_env()
    run(serve_and_store(make_ctx(tenant, "How do I reset my password?"), "Click 'Forgot password'."))

    run(runtime_forget("redis"))
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"  # nothing listens there
    request.addfinalizer(lambda: run(runtime_forget("redis")))  # the next test's client talks to the real Redis

    ctx = make_ctx(tenant, "How do I reset my password?")
    assert run(cache_lookup_exact(ctx)) is None
    assert ctx.cache_status == "bypass"
    # Postgres is still up: the semantic tier serves the identical prompt.
    hit = run(cache_lookup_semantic(ctx))
    assert hit is not None and ctx.cache_status == "semantic"
    # And storing a new answer while Redis is down does not raise.
    fresh = make_ctx(tenant, "What is the capital of France?")
    assert run(cache_lookup_exact(fresh)) is None and fresh.cache_status == "bypass"
    assert run(cache_lookup_semantic(fresh)) is None
    run(cache_store(fresh, completion("Paris.")))
    assert fresh.cache_status == "bypass"
    assert SemanticCacheEntry.objects.filter(org=tenant.org).count() == 2


def test_no_store_stores_nothing_and_no_cache_skips_the_lookup(cache_env, run, redis_client):
    tenant = cache_env()
    ctx = make_ctx(tenant, "What is the capital of France?", cache_no_store=True)
    run(serve_and_store(ctx, "Paris."))
    assert redis_client.keys("finops:cache:x:*") == []
    assert SemanticCacheEntry.objects.count() == 0

    run(serve_and_store(make_ctx(tenant, "What is the capital of France?"), "Paris."))
    no_cache = make_ctx(tenant, "What is the capital of France?", cache_no_cache=True)
    assert run(lookup(no_cache)) is None
    assert no_cache.cache_status == "bypass"
    # no-cache still refreshes the stored answer with the new one.
    run(cache_store(no_cache, completion("Paris, France.")))
    again = make_ctx(tenant, "What is the capital of France?")
    assert run(lookup(again))["choices"][0]["message"]["content"] == "Paris, France."


def test_incomplete_answers_are_not_cached(cache_env, run, redis_client):
    tenant = cache_env()
    ctx = make_ctx(tenant, "Tell me a long story.")
    run(serve_and_store(ctx, "Once upon", finish=None))
    assert redis_client.keys("finops:cache:x:*") == []
    assert SemanticCacheEntry.objects.count() == 0


def test_high_temperature_and_tools_bypass_unless_the_org_opts_in(cache_env, run, redis_client):
    tenant = cache_env()
    hot = make_ctx(tenant, "Write a poem about the sea.", temperature=1.2)
    run(serve_and_store(hot, "Waves..."))
    assert hot.cache_status == "bypass"
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
    with_tools = make_ctx(tenant, "What's the weather in Paris?", tools=tools)
    run(serve_and_store(with_tools, "Calling get_weather"))
    assert with_tools.cache_status == "bypass"
    assert redis_client.keys("finops:cache:x:*") == [] and SemanticCacheEntry.objects.count() == 0

    CacheSettings.objects.create(org=tenant.org, allow_high_temperature=True, allow_tools=True)
    from apps.cache.selectors import cache_policy_forget

    cache_policy_forget(tenant.org.id)
    run(serve_and_store(make_ctx(tenant, "Write a poem about the sea.", temperature=1.2), "Waves..."))
    assert run(lookup(make_ctx(tenant, "Write a poem about the sea.", temperature=1.2))) is not None
    run(serve_and_store(make_ctx(tenant, "What's the weather in Paris?", tools=tools), "Calling get_weather"))
    tool_hit = make_ctx(tenant, "What's the weather in Paris?", tools=tools)
    assert run(lookup(tool_hit)) is not None and tool_hit.cache_status == "exact"
    # Tool requests are matched exactly, never by meaning.
    assert not SemanticCacheEntry.objects.filter(response__choices__0__message__content="Calling get_weather").exists()


def test_per_org_switch_threshold_and_route_override(cache_env, run):
    tenant = cache_env()
    settings_row = CacheSettings.objects.create(org=tenant.org, enabled=False)
    off = make_ctx(tenant, "How do I reset my password?")
    run(serve_and_store(off, "Click 'Forgot password'."))
    assert off.cache_status == "bypass" and SemanticCacheEntry.objects.count() == 0

    from apps.cache.selectors import cache_policy_forget

    settings_row.enabled = True
    settings_row.threshold = 0.995  # only near-identical prompts
    settings_row.save()
    cache_policy_forget(tenant.org.id)
    run(serve_and_store(make_ctx(tenant, "How do I reset my password?"), "Click 'Forgot password'."))
    strict = make_ctx(tenant, "How can I reset my password?")
    assert run(lookup(strict)) is None and strict.cache_status == "miss"

    CacheRouteOverride.objects.create(settings=settings_row, model_class="gpt-4o-mini", threshold=0.9)
    cache_policy_forget(tenant.org.id)
    relaxed = make_ctx(tenant, "How can I reset my password?")
    assert run(lookup(relaxed)) is not None and relaxed.cache_status == "semantic"


def test_invalidation_by_org_and_by_model_clears_both_tiers_of_that_scope_only(cache_env, run, redis_client):
    a = cache_env(org="Tenant A", user="alice")
    b = cache_env(org="Tenant B", user="bob")
    run(serve_and_store(make_ctx(a, "What is the capital of France?"), "Paris."))
    run(serve_and_store(make_ctx(a, "What is the capital of France?", model="gpt-4o"), "Paris (4o)."))
    run(serve_and_store(make_ctx(b, "What is the capital of France?"), "Paris (B)."))

    result = cache_invalidate(org_id=a.org.id, model_class="gpt-4o")
    assert (result.semantic_deleted, result.exact_deleted) == (1, 1)
    assert run(lookup(make_ctx(a, "What is the capital of France?", model="gpt-4o"))) is None
    assert run(lookup(make_ctx(a, "What is the capital of France?"))) is not None

    result = cache_invalidate(org_id=a.org.id)
    assert (result.semantic_deleted, result.exact_deleted) == (1, 1)
    assert run(lookup(make_ctx(a, "What is the capital of France?"))) is None
    assert run(lookup(make_ctx(b, "What is the capital of France?")))["choices"][0]["message"]["content"] == "Paris (B)."
    assert redis_client.sismember(ORGS_KEY, str(b.org.id))


def test_the_semantic_table_has_an_hnsw_cosine_index(transactional_db):
    with connection.cursor() as cur:
        cur.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'semantic_cache_entries'")
        definitions = [row[0] for row in cur.fetchall()]
    assert any("USING hnsw" in d and "vector_cosine_ops" in d for d in definitions), definitions


def test_hits_and_savings_are_counted_in_prometheus(cache_env, run):
    from prometheus_client import REGISTRY

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    tenant = cache_env()
    before_hits = sample("finops_cache_lookups_total", tier="exact", outcome="hit")
    before_saved = sample("finops_cache_saved_usd_total", tier="exact")
    run(serve_and_store(make_ctx(tenant, "What is the capital of France?"), "Paris."))
    ctx = make_ctx(tenant, "What is the capital of France?")
    run(lookup(ctx))
    assert sample("finops_cache_lookups_total", tier="exact", outcome="hit") == before_hits + 1
    assert sample("finops_cache_saved_usd_total", tier="exact") == pytest.approx(before_saved + float(ctx.saved_usd))
