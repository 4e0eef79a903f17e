"""The cache pages of the admin (finance's UI), the invalidation command and the /metrics gauge."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse

from apps.cache.models import CacheSettings, SemanticCacheEntry
from apps.cache.tests.conftest import completion, make_ctx
from apps.gateway.stages import cache_lookup_exact, cache_lookup_semantic, cache_store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client, transactional_db):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def cache_answer(run, tenant, prompt: str, *, model: str = "gpt-4o-mini") -> None:
    ctx = make_ctx(tenant, prompt, model=model)
    assert run(cache_lookup_exact(ctx)) is None and run(cache_lookup_semantic(ctx)) is None
    run(cache_store(ctx, completion(f"answer to {prompt}")))


def exact_hit(run, tenant, prompt: str, *, model: str = "gpt-4o-mini") -> bool:
    return run(cache_lookup_exact(make_ctx(tenant, prompt, model=model))) is not None


def test_the_pages_render_and_say_the_threshold_is_a_similarity(staff, cache_env, run):
    tenant = cache_env()
    CacheSettings.objects.create(org=tenant.org, threshold=0.95)
    cache_answer(run, tenant, "What is the capital of France?")
    settings_page = staff.get(reverse("admin:cache_cachesettings_changelist"))
    assert settings_page.status_code == 200 and b"0.950" in settings_page.content
    change = staff.get(reverse("admin:cache_cachesettings_change", args=[CacheSettings.objects.get().pk]))
    assert change.status_code == 200 and b"not distance" in change.content.lower()
    entries = staff.get(reverse("admin:cache_semanticcacheentry_changelist"))
    assert entries.status_code == 200 and b"gpt-4o-mini" in entries.content
    entry = staff.get(reverse("admin:cache_semanticcacheentry_change", args=[SemanticCacheEntry.objects.get().pk]))
    assert entry.status_code == 200


def test_the_org_action_invalidates_both_tiers_of_the_selected_org_only(staff, cache_env, run):
    a = cache_env(org="Tenant A", user="alice")
    b = cache_env(org="Tenant B", user="bob")
    row = CacheSettings.objects.create(org=a.org)
    CacheSettings.objects.create(org=b.org)
    cache_answer(run, a, "What is the capital of France?")
    cache_answer(run, b, "What is the capital of France?")

    response = staff.post(
        reverse("admin:cache_cachesettings_changelist"), {"action": "invalidate_orgs", "_selected_action": [row.pk]}, follow=True
    )

    assert b"Invalidated 1 semantic and 1 exact entries of 1 org(s)." in response.content
    assert not exact_hit(run, a, "What is the capital of France?")
    assert exact_hit(run, b, "What is the capital of France?")
    assert list(SemanticCacheEntry.objects.values_list("org_id", flat=True)) == [b.org.id]


def test_the_entry_action_invalidates_one_model_class(staff, cache_env, run):
    tenant = cache_env()
    cache_answer(run, tenant, "What is the capital of France?")
    cache_answer(run, tenant, "What is the capital of France?", model="gpt-4o")
    selected = SemanticCacheEntry.objects.get(model_class="gpt-4o")

    staff.post(
        reverse("admin:cache_semanticcacheentry_changelist"),
        {"action": "invalidate_org_model", "_selected_action": [selected.pk]},
        follow=True,
    )

    assert not exact_hit(run, tenant, "What is the capital of France?", model="gpt-4o")
    assert exact_hit(run, tenant, "What is the capital of France?")
    assert list(SemanticCacheEntry.objects.values_list("model_class", flat=True)) == ["gpt-4o-mini"]


def test_the_invalidate_command(cache_env, run, capsys):
    tenant = cache_env()
    cache_answer(run, tenant, "What is the capital of France?")
    call_command("cache_invalidate", tenant.org.slug, "--model", "gpt-4o-mini")
    assert "deleted 1 semantic and 1 exact entries" in capsys.readouterr().out
    assert not exact_hit(run, tenant, "What is the capital of France?")


def test_metrics_exposes_the_semantic_cache_size(staff, cache_env, run):
    from django.db import connection

    tenant = cache_env()
    cache_answer(run, tenant, "What is the capital of France?")
    with connection.cursor() as cur:
        cur.execute("ANALYZE semantic_cache_entries")
    body = staff.get("/metrics").content.decode()
    assert "finops_cache_semantic_entries 1.0" in body
    assert "finops_cache_lookups_total" in body
