"""Stage 8 against the real mock LLM: the fallback chain steps on after 429/5xx/timeouts, never on a client error."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from apps.gateway import pipeline
from apps.gateway.context import RequestContext, RouteDecision
from apps.gateway.selectors import catalog_build
from apps.ledger.models import ModelPrice
from finops.errors import BadRequest, UnpricedModel, UpstreamError

CHAIN = [("cheap", "gpt-4o-mini"), ("cheap", "gpt-4.1-nano"), ("premium", "gpt-4o")]


@pytest.fixture
def mock_faults(mock_llm_url):
    url = mock_llm_url.removesuffix("/v1") + "/_mock/faults"
    added: list[str] = []

    def inject(model: str, spec: dict) -> None:
        httpx2.post(url, json={model: spec}).raise_for_status()
        added.append(model)

    yield inject
    if added:
        httpx2.post(url, json={model: None for model in added}).raise_for_status()


@pytest.fixture(autouse=True)
def closed_circuits():
    # The routing app's per-process breaker would open after these tests' deliberate failures.
    from apps.routing.decide import breaker

    breaker().reset()
    yield
    breaker().reset()


def test_an_open_circuit_is_skipped_without_a_call(catalog):
    from apps.routing.decide import breaker

    for _ in range(breaker().failures):
        breaker().record("gpt-4o-mini", False)
    ctx = context()
    _, position = walk(ctx, catalog)
    assert (position, ctx.model, ctx.attempts, ctx.fallback_from) == (1, "gpt-4.1-nano", 1, "gpt-4o-mini")


@pytest.fixture
def catalog(prices, settings, mock_llm_url):
    settings.FINOPS = {**settings.FINOPS, "MOCK_LLM_URL": mock_llm_url, "UPSTREAM_TIMEOUT_S": 1.0}
    return catalog_build(price_rows=list(ModelPrice.objects.values()), provider_rows=[])


def context(chain=CHAIN) -> RequestContext:
    ctx = RequestContext(endpoint="chat_completions")
    ctx.messages = [{"role": "user", "content": "Which tier answers?"}]
    ctx.body = {"model": chain[0][1], "messages": ctx.messages}
    ctx.route = RouteDecision(model=chain[0][1], tier=chain[0][0], strategy="pinned", chain=list(chain))
    ctx.mock_headers = {}
    return ctx


def walk(ctx, catalog):
    async def run():
        try:
            return await pipeline.stage8_upstream(ctx, catalog, ctx.route.chain)
        finally:
            from finops.runtime import runtime_close

            await runtime_close()

    return asyncio.run(run())


@pytest.mark.parametrize("fault", ["503", "429", "timeout", "malformed"])
def test_it_steps_to_the_next_model_after_an_upstream_failure(catalog, mock_faults, fault):
    mock_faults("gpt-4o-mini", {"error": fault})
    ctx = context()
    response, position = walk(ctx, catalog)
    assert (position, ctx.model, ctx.tier, ctx.provider) == (1, "gpt-4.1-nano", "cheap", "mock")
    assert response["model"] == "gpt-4.1-nano"
    assert (ctx.fallback_from, ctx.attempts) == ("gpt-4o-mini", 2)
    if fault == "timeout":
        assert ctx.upstream_ms >= 1000  # the first attempt waited for the 1 s read timeout


def test_it_walks_upward_to_the_next_tier(catalog, mock_faults):
    mock_faults("gpt-4o-mini", {"error": "500"})
    mock_faults("gpt-4.1-nano", {"error": "502"})
    ctx = context()
    _, position = walk(ctx, catalog)
    assert (position, ctx.model, ctx.tier, ctx.attempts) == (2, "gpt-4o", "premium", 3)


def test_when_every_model_fails_it_is_a_502(catalog, mock_faults):
    for _, model in CHAIN:
        mock_faults(model, {"error": "500"})
    ctx = context()
    with pytest.raises(UpstreamError) as caught:
        walk(ctx, catalog)
    assert caught.value.status == 502
    assert ctx.attempts == 3


def test_a_client_error_is_not_retried_on_other_models(catalog, mock_faults):
    mock_faults("gpt-4o-mini", {"error": "400"})
    ctx = context()
    with pytest.raises(BadRequest):
        walk(ctx, catalog)
    assert ctx.attempts == 1


def test_unpriced_models_in_the_chain_are_skipped(catalog):
    ctx = context([("cheap", "not-priced-anywhere"), ("cheap", "gpt-4o-mini")])
    _, position = walk(ctx, catalog)
    assert (position, ctx.model, ctx.attempts) == (1, "gpt-4o-mini", 1)


def test_a_served_model_without_a_price_is_a_400_never_free(settings, prices, monkeypatch):
    monkeypatch.setenv("TEST_LOCAL_KEY", "k")
    settings.FINOPS = {
        **settings.FINOPS,
        "MOCK_LLM_URL": "",
        "UPSTREAMS": [
            {"name": "local", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "TEST_LOCAL_KEY", "models": ["home-brew-7b"]}
        ],
    }
    catalog = catalog_build(price_rows=list(ModelPrice.objects.values()), provider_rows=[])
    assert catalog.is_known("home-brew-7b")
    ctx = context([("", "home-brew-7b")])
    with pytest.raises(UnpricedModel) as caught:
        asyncio.run(pipeline.stage7_budget(ctx, catalog))
    assert (caught.value.status, caught.value.code) == (400, "model_not_priced")
