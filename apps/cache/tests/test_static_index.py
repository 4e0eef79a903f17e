"""Stage 1 in process (apps.cache.static_index): each process's copy of the static vectors, kept current through
Redis, against real Postgres+pgvector, Redis and the local model. A copy may be behind; it must never serve another
org's entry, never keep serving deleted ones past an invalidation, and must find what Postgres finds."""

from __future__ import annotations

import pytest

from apps.cache import metrics
from apps.cache.models import SemanticCacheEntry
from apps.cache.semantic import static_vector
from apps.cache.services import cache_invalidate
from apps.cache.static_index import StaticIndex, Versions, epoch_key, generation_key, static_index, stream_key
from apps.cache.tests.conftest import completion, make_ctx
from apps.cache.tests.test_semantic_stages import _sample
from apps.gateway.stages import _cache_state, cache_lookup_exact, cache_lookup_semantic, cache_store
from finops.asyncredis import get_redis

pytestmark = pytest.mark.django_db(transaction=True)

K, MIN_SIMILARITY = 5, 0.7


async def _versions(org_id: int) -> Versions:
    return Versions.parse(*await get_redis().mget(generation_key(org_id), epoch_key(org_id)))


async def _near(index: StaticIndex, tenant, text: str, *, org_id: int | None = None):
    """Stage 1 of `text` in `index`, for `org_id` (default: the tenant's), at the versions Redis has now."""
    ctx = make_ctx(tenant, text)
    state = await _cache_state(ctx)
    assert state.key is not None
    vector, _ = static_vector(text)
    org = org_id if org_id is not None else tenant.org.id
    return await index.candidates(
        org_id=org,
        scope=(state.model_class, state.key.context_hash, state.key.params_hash),
        vector=vector,
        k=K,
        min_similarity=MIN_SIMILARITY,
        not_before=0.0,
        versions=await _versions(org),
    )


async def _loaded(index: StaticIndex, tenant, text: str, *, org_id: int | None = None):
    """The first lookup of an org starts its load and is answered by Postgres (None); the next one by the copy."""
    org = org_id if org_id is not None else tenant.org.id
    first = await _near(index, tenant, text, org_id=org)
    await index.wait_loaded(org)
    return first, await _near(index, tenant, text, org_id=org)


def _one_entry_in_a_loaded_copy(tenant, run) -> tuple[StaticIndex, str]:
    question = "How do I reset my password?"
    run(cache_store(make_ctx(tenant, question), completion("Use the reset link.")))
    index = StaticIndex()
    _, loaded = run(_loaded(index, tenant, question))
    assert len(loaded) == 1
    return index, question


def test_the_process_copy_serves_the_same_hits_as_the_postgres_search(cache_env, run, unlimited_store):
    tenant = cache_env()
    origins, queries = _sample()
    for i, text in enumerate(origins):
        run(cache_store(make_ctx(tenant, text), completion(f"answer {i}")))

    async def through_the_gateway(text: str, *, exact_first: bool):
        ctx = make_ctx(tenant, text, cache_no_store=True)  # a hit is not promoted to the exact tier: both passes judge
        if exact_first:  # reads the index's versions with the exact key: stage 1 runs in process
            assert await cache_lookup_exact(ctx) is None
        hit = await cache_lookup_semantic(ctx)  # without the versions: stage 1 asks Postgres
        return None if hit is None else hit["choices"][0]["message"]["content"]

    run(through_the_gateway(queries[0], exact_first=True))  # starts the org's load

    async def wait_loaded() -> None:
        await static_index().wait_loaded(tenant.org.id)

    run(wait_loaded())
    from_process = metrics.CACHE_STATIC_STAGE.labels(source="process")._value.get()
    in_process = [run(through_the_gateway(q, exact_first=True)) for q in queries]
    assert metrics.CACHE_STATIC_STAGE.labels(source="process")._value.get() - from_process == len(queries)

    from_postgres = metrics.CACHE_STATIC_STAGE.labels(source="postgres")._value.get()
    in_postgres = [run(through_the_gateway(q, exact_first=False)) for q in queries]
    assert metrics.CACHE_STATIC_STAGE.labels(source="postgres")._value.get() - from_postgres == len(queries)

    assert in_process == in_postgres
    assert sum(a is not None for a in in_process) >= 10


def test_a_copy_learns_another_process_store_from_the_stream_and_never_another_orgs(cache_env, run, unlimited_store):
    acme, other = cache_env("Acme"), cache_env("Globex")
    question, paraphrase = "How do I reset my password?", "How can I reset my password?"
    index = StaticIndex()  # another process's copy: it sees the stores of this one only through Redis
    first, loaded = run(_loaded(index, acme, paraphrase))
    assert first is None and loaded == []  # loaded, and the org has nothing cached yet

    generation = run(_versions(acme.org.id)).generation
    run(cache_store(make_ctx(acme, question), completion("Use the reset link.")))
    assert run(_versions(acme.org.id)).generation == generation + 1

    near = run(_near(index, acme, paraphrase))
    entry = SemanticCacheEntry.objects.get(org=acme.org)
    assert [c.id for c in near] == [entry.id]
    assert near[0].similarity >= MIN_SIMILARITY and near[0].guard == entry.guard

    # The other org, same prompt, same scope otherwise: its copy has nothing, before and after loading.
    first, loaded = run(_loaded(index, other, paraphrase))
    assert first is None and loaded == []
    assert run(_near(index, other, question)) == []


def test_an_invalidation_makes_every_copy_drop_the_orgs_entries(cache_env, run, unlimited_store):
    tenant = cache_env()
    index, question = _one_entry_in_a_loaded_copy(tenant, run)

    cache_invalidate(org_id=tenant.org.id)  # sync, as the admin runs it: the rows go, the epoch moves

    assert run(_near(index, tenant, question)) is None  # another epoch: Postgres answers while the copy reloads
    run(index.wait_loaded(tenant.org.id))
    assert run(_near(index, tenant, question)) == []


def test_a_copy_behind_a_trimmed_stream_reloads_from_postgres(cache_env, run, unlimited_store, redis_client):
    tenant = cache_env()
    question = "How do I reset my password?"
    index = StaticIndex()
    _, loaded = run(_loaded(index, tenant, question))
    assert loaded == []
    run(cache_store(make_ctx(tenant, question), completion("Use the reset link.")))
    redis_client.delete(stream_key(tenant.org.id))  # as if trimmed past this copy's generation

    assert run(_near(index, tenant, question)) is None  # a gap: Postgres answers, the copy reloads
    run(index.wait_loaded(tenant.org.id))
    assert len(run(_near(index, tenant, question))) == 1


def test_a_restarted_redis_is_a_new_epoch(cache_env, run, unlimited_store, redis_client):
    tenant = cache_env()
    index, question = _one_entry_in_a_loaded_copy(tenant, run)
    redis_client.flushdb()  # every key gone: generation 0, no epoch

    assert run(_near(index, tenant, question)) is None
    run(index.wait_loaded(tenant.org.id))
    assert len(run(_near(index, tenant, question))) == 1  # reloaded from Postgres, where the entry still is
    assert run(_versions(tenant.org.id)).epoch != 0


def test_an_org_over_the_cap_is_searched_in_postgres(cache_env, run, unlimited_store, settings):
    tenant = cache_env()
    settings.FINOPS = {**settings.FINOPS, "CACHE_STATIC_INDEX_MAX_ENTRIES": 2}
    for i, text in enumerate(["How do I reset my password?", "What is the capital of France?", "How tall is Everest?"]):
        run(cache_store(make_ctx(tenant, text), completion(f"answer {i}")))
    index = StaticIndex()
    first, loaded = run(_loaded(index, tenant, "How can I reset my password?"))
    assert first is None and loaded is None  # over the cap: no copy answers

    async def paraphrase_served() -> str | None:
        ctx = make_ctx(tenant, "How can I reset my password?")
        assert await cache_lookup_exact(ctx) is None
        hit = await cache_lookup_semantic(ctx)
        return None if hit is None else hit["choices"][0]["message"]["content"]

    assert run(paraphrase_served()) == "answer 0"  # through pgvector, as before the copies


def test_a_scope_over_the_scan_limit_is_searched_in_postgres(cache_env, run, unlimited_store, settings):
    tenant = cache_env()
    for i, text in enumerate(["How do I reset my password?", "What is the capital of France?", "How tall is Everest?"]):
        run(cache_store(make_ctx(tenant, text), completion(f"answer {i}")))
    index = StaticIndex()
    _, loaded = run(_loaded(index, tenant, "How can I reset my password?"))
    assert len(loaded) == 1  # within the limit: the copy answers
    settings.FINOPS = {**settings.FINOPS, "CACHE_STATIC_INDEX_SCOPE_MAX": 2}
    assert run(_near(index, tenant, "How can I reset my password?")) is None  # three entries in the scope: pgvector
