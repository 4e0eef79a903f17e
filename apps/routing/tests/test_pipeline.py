"""The gateway hooks (route_select, route_cheapest, confidence_escalate, circuit) on the seeded database config."""

from __future__ import annotations

import asyncio

import pytest

from apps.gateway import stages as pipeline
from apps.gateway.context import Caller, RequestContext
from apps.routing import decide
from apps.routing.circuit import CircuitBreaker
from apps.routing.models import KeywordRule
from apps.routing.selectors import router_config_cached, router_config_invalidate
from apps.routing.services import routing_defaults_ensure
from finops.errors import ModelNotFound


def reprime() -> None:
    """Reload the snapshot in this thread (the test's transaction); the async hooks then read it from memory."""
    router_config_invalidate()
    router_config_cached()


@pytest.fixture
def seeded(prices):
    routing_defaults_ensure()
    reprime()
    yield
    router_config_invalidate()


@pytest.fixture
def fresh_breaker(monkeypatch):
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    cb = CircuitBreaker(failures=2, cooldown_s=30.0, clock=clock)
    monkeypatch.setattr(decide, "_breaker", cb)
    return cb, clock


def ctx_for(tenant, model: str, text: str, **kwargs) -> RequestContext:
    org = tenant.org
    caller = Caller(
        api_key_id=tenant.api_key.id,
        api_key_prefix=tenant.api_key.prefix,
        org_id=org.id,
        team_id=tenant.team.id,
        member_id=tenant.member.id,
        allow_model_pinning=org.allow_model_pinning,
    )
    messages = [{"role": "user", "content": text}]
    return RequestContext(
        endpoint="chat_completions",
        caller=caller,
        messages=messages,
        requested_model=model,
        body={"model": model, "messages": messages, **kwargs},
    )


def select(ctx: RequestContext):
    ctx.route = asyncio.run(pipeline.route_select(ctx))
    return ctx.route


def answer(text: str, finish_reason: str = "stop", **message) -> dict:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, **message}, "finish_reason": finish_reason}]
    }


@pytest.mark.django_db
def test_auto_routes_by_complexity_with_an_upward_chain(seeded, make_tenant, fresh_breaker) -> None:
    ctx = ctx_for(make_tenant(), "auto", "What is the capital of France?")
    route = select(ctx)
    assert (route.model, route.tier, route.provider, route.strategy) == ("gpt-4o-mini", "cheap", "openai", "complexity")
    assert route.requested_tier == "cheap"
    assert route.reason.startswith("complexity=0.0") and "→ cheap" in route.reason
    assert route.chain == [("cheap", "gpt-4o-mini"), ("mid", "gpt-4.1-mini"), ("premium", "gpt-4o")]
    row = ctx.ledger_row()
    assert (row["route_strategy"], row["requested_tier"], row["tier"], row["model"]) == (
        "complexity",
        "cheap",
        "cheap",
        "gpt-4o-mini",
    )


@pytest.mark.django_db
def test_keyword_rule_wins_before_complexity(seeded, make_tenant, fresh_breaker) -> None:
    route = select(ctx_for(make_tenant(), "finops/auto", "Is this indemnification clause enforceable?"))
    rule = KeywordRule.objects.get(name="legal")
    assert (route.strategy, route.tier, route.model) == ("keyword", "premium", "gpt-4o")
    assert route.reason == f"rule {rule.id} 'legal' → premium"


@pytest.mark.django_db
def test_an_org_rule_applies_to_that_org_only(seeded, make_tenant, fresh_breaker) -> None:
    acme, other = make_tenant(org="Acme"), make_tenant(org="Other", team="t", user="bob")
    KeywordRule.objects.create(org=acme.org, name="acme invoices", pattern="invoice", tier="mid", priority=500)
    reprime()
    assert select(ctx_for(acme, "auto", "check this invoice")).tier == "mid"
    assert select(ctx_for(other, "auto", "check this invoice")).tier == "cheap"


@pytest.mark.django_db
def test_pinning_honoured_or_refused_per_org(seeded, make_tenant, fresh_breaker) -> None:
    allowed = make_tenant(org="Pins")
    pinned = select(ctx_for(allowed, "gpt-4.1-mini", "hi"))
    assert (pinned.strategy, pinned.model, pinned.tier) == ("pinned", "gpt-4.1-mini", "mid")
    assert pinned.chain == [("mid", "gpt-4.1-mini"), ("premium", "gpt-4o")]

    strict = make_tenant(org="NoPins", team="t", user="bob")
    strict.org.allow_model_pinning = False
    strict.org.save()
    refused = select(ctx_for(strict, "gpt-4o", "Name a fruit."))
    assert refused.strategy == "complexity" and refused.model == "gpt-4o-mini"
    assert "pin gpt-4o refused" in refused.reason


@pytest.mark.django_db
def test_named_route_and_tier_alias(seeded, make_tenant, fresh_breaker) -> None:
    tenant = make_tenant()
    # A GSM8K-like word problem: the index's neighbours agree (for "What is 2 + 2?" it abstains, complexity decides).
    evalroute = select(
        ctx_for(
            tenant,
            "finops/eval",
            "Seth is twice as old as Brooke. In 2 years, the sum of their ages will be 28. How old is Seth?",
        )
    )
    assert evalroute.strategy == "learned"  # the eval route routes by the learned index (test_learned.py)
    assert [m for _, m in evalroute.chain] in (["mixtral-8x7b-instruct", "gpt-4-1106-preview"], ["gpt-4-1106-preview"])
    tier = select(ctx_for(tenant, "finops/premium", "hi"))
    assert (tier.strategy, tier.model) == ("tier", "gpt-4o")
    with pytest.raises(ModelNotFound):
        select(ctx_for(tenant, "finops/nonexistent", "hi"))


@pytest.mark.django_db
def test_budget_downgrade_stays_in_the_lowest_tier(seeded, make_tenant, fresh_breaker) -> None:
    ctx = ctx_for(make_tenant(), "auto", "Is this indemnification clause enforceable?")
    select(ctx)
    down = asyncio.run(pipeline.route_cheapest(ctx))
    assert (down.strategy, down.tier, down.model, down.requested_tier) == ("downgrade", "cheap", "gpt-4o-mini", "premium")
    assert down.chain == [("cheap", "gpt-4o-mini")]
    assert down.reason == "budget downgrade premium → cheap"


@pytest.mark.django_db
def test_confidence_escalates_a_truncated_cheap_answer_one_tier_up(seeded, make_tenant, fresh_breaker) -> None:
    ctx = ctx_for(make_tenant(), "auto", "What is the capital of France?")
    select(ctx)
    ctx.tier, ctx.model = "cheap", "gpt-4o-mini"  # what the gateway sets after the upstream call
    assert asyncio.run(pipeline.confidence_escalate(ctx, answer("The capital of France is Paris."))) is False
    assert ctx.confidence.uncertainty == 0.0
    assert asyncio.run(pipeline.confidence_escalate(ctx, answer("The capital of", finish_reason="length"))) is True
    assert ctx.confidence.target == ("mid", "gpt-4.1-mini")
    assert ctx.route.strategy == "confidence"
    assert "escalated cheap→mid" in ctx.route.reason and "truncated" in ctx.route.reason
    ctx.escalated = True
    assert asyncio.run(pipeline.confidence_escalate(ctx, answer("", finish_reason="length"))) is False  # once per request


@pytest.mark.django_db
def test_confidence_reads_logprobs_and_json_format(seeded, make_tenant, fresh_breaker) -> None:
    tenant = make_tenant()
    ctx = ctx_for(tenant, "auto", "List two colours.", response_format={"type": "json_object"})
    select(ctx)
    ctx.tier = "cheap"
    assert asyncio.run(pipeline.confidence_escalate(ctx, answer('{"colours": ["red", "blue"]}'))) is False
    assert asyncio.run(pipeline.confidence_escalate(ctx, answer("red and blue"))) is True

    ctx = ctx_for(tenant, "auto", "Name a colour.")
    select(ctx)
    ctx.tier = "cheap"
    shaky = answer("Red.")
    shaky["choices"][0]["logprobs"] = {"content": [{"token": "Red", "logprob": -2.5}, {"token": ".", "logprob": -0.5}]}
    assert asyncio.run(pipeline.confidence_escalate(ctx, shaky)) is True
    assert ctx.confidence.signals["logprob"] == 1.0


@pytest.mark.django_db
def test_no_escalation_from_the_top_tier_or_for_a_pin(seeded, make_tenant, fresh_breaker) -> None:
    tenant = make_tenant()
    top = ctx_for(tenant, "finops/auto", "Is this indemnification clause enforceable?")
    select(top)
    top.tier = "premium"
    assert asyncio.run(pipeline.confidence_escalate(top, answer("", finish_reason="length"))) is False
    pinned = ctx_for(tenant, "gpt-4o-mini", "hi")
    select(pinned)
    pinned.tier = "cheap"
    assert asyncio.run(pipeline.confidence_escalate(pinned, answer("", finish_reason="length"))) is False


@pytest.mark.django_db
def test_an_open_circuit_moves_the_first_model_up_without_spending_the_probe(seeded, make_tenant, fresh_breaker) -> None:
    cb, clock = fresh_breaker
    tenant = make_tenant()
    decide.circuit_record("gpt-4o-mini", False)
    assert decide.circuit_allows("gpt-4o-mini")
    decide.circuit_record("gpt-4o-mini", False)
    assert not decide.circuit_allows("gpt-4o-mini")
    route = select(ctx_for(tenant, "auto", "hi"))
    assert (route.model, route.tier) == ("gpt-4.1-mini", "mid")
    assert route.chain[0] == ("cheap", "gpt-4o-mini")  # the chain itself is unchanged; the gateway skips open circuits
    clock.now += 30
    select(ctx_for(tenant, "auto", "hi"))  # route_select only peeks ...
    assert decide.circuit_allows("gpt-4o-mini")  # ... so the gateway still gets the half-open probe
    assert not decide.circuit_allows("gpt-4o-mini")
    decide.circuit_record("gpt-4o-mini", True)
    assert select(ctx_for(tenant, "auto", "hi")).model == "gpt-4o-mini"


def test_a_stale_snapshot_is_served_while_it_reloads_and_survives_a_failed_reload(monkeypatch, settings) -> None:
    """Stale-while-revalidate: no request waits on, or fails with, the database behind the snapshot."""
    from apps.routing import selectors
    from apps.routing.tests.factories import config

    settings.FINOPS = {**settings.FINOPS, "ROUTER_CONFIG_TTL_S": 60.0}
    old, new = config(), config()
    selectors._state.update(config=old, expires=0.0, refreshing=False)  # expired

    def database_down():
        raise ConnectionError("database unreachable")

    async def scenario(loader):
        monkeypatch.setattr(selectors, "router_config_load", loader)
        first = await selectors.router_config()
        await asyncio.gather(*selectors._tasks)
        return first, await selectors.router_config()

    try:
        assert asyncio.run(scenario(database_down)) == (old, old)
        assert selectors._state["expires"] > 0  # retried after a short pause, not on every request
        selectors._state["expires"] = 0.0
        first, second = asyncio.run(scenario(lambda: new))
        assert first is old and second is new
    finally:
        router_config_invalidate()
