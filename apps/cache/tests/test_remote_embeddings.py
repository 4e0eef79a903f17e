"""The OpenAI-compatible embeddings option, against the mock LLM over real HTTP."""

from __future__ import annotations

import pytest

from apps.cache.tests.conftest import completion, make_ctx, runtime_forget
from apps.embeddings.embeddings import background_flush
from apps.gateway.stages import cache_lookup_exact, cache_lookup_semantic, cache_store
from apps.ledger.models import LLMRequest
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def remote_backend(settings, mock_llm_url, run):
    settings.FINOPS = {
        **settings.FINOPS,
        "CACHE_EMBEDDING_BACKEND": "openai",
        "CACHE_EMBEDDING_MODEL": "text-embedding-3-small",
        "CACHE_EMBEDDING_BASE_URL": mock_llm_url,
    }
    run(runtime_forget("embeddings.remote"))  # a client built from these settings
    yield
    run(runtime_forget("embeddings.remote"))


def test_a_remote_embedding_is_billed_on_its_own_ledger_row(cache_env, remote_backend, run):
    tenant = cache_env()
    first = make_ctx(tenant, "How do I reset my password?")
    assert run(cache_lookup_exact(first)) is None
    assert run(cache_lookup_semantic(first)) is None
    run(cache_store(first, completion("Click 'Forgot password'.")))

    # The mock embeds a lower-cased bag of words: a change of case is a different exact key, the same vector.
    second = make_ctx(tenant, "how do I reset my password?")
    assert run(cache_lookup_exact(second)) is None
    hit = run(cache_lookup_semantic(second))
    assert hit is not None and second.cache_status == "semantic"
    assert second.cost_usd == 0  # the embedding is billed on its own row, not on the chat row
    run(background_flush())

    rows = list(LLMRequest.objects.filter(endpoint="embeddings").order_by("received_at"))
    assert len(rows) == 2  # one embedding per lookup; the store reused the first one
    price = price_in_force(model="text-embedding-3-small", on=rows[0].received_at.date())
    for row, ctx in zip(rows, (first, second), strict=True):
        assert (row.org_id, row.member_id, row.api_key_id) == (tenant.org.id, tenant.member.id, tenant.api_key.id)
        assert (row.model, row.price_id, row.status) == ("text-embedding-3-small", price.id, "served")
        assert row.prompt_tokens > 0
        assert row.cost_usd == cost_compute(price=price, prompt_tokens=row.prompt_tokens, completion_tokens=0) > 0
        assert str(ctx.request_id) in row.route_reason


def test_an_unpriced_embedding_model_switches_the_semantic_tier_off_instead_of_billing_zero(
    cache_env, remote_backend, run, settings
):
    settings.FINOPS = {**settings.FINOPS, "CACHE_EMBEDDING_MODEL": "text-embedding-unpriced"}
    tenant = cache_env()
    ctx = make_ctx(tenant, "How do I reset my password?")
    assert run(cache_lookup_semantic(ctx)) is None
    run(cache_store(ctx, completion("Click 'Forgot password'.")))
    run(background_flush())
    assert not LLMRequest.objects.filter(endpoint="embeddings").exists()
