"""Issue #16 item 7: a fallback to a pricier model and a confidence escalation spend only what they reserved.

Before such a call the request tops up its reservation (budgets.gate.budget_topup: a second reservation under the
same request id, checked against every cap); if the top-up is refused the call is not made. The request's total is
settled once, on its first reservation; the top-up is released at $0. Against the real budget SQL (Postgres) and
the mock LLM over HTTP (stage 8 in-process for the fallback, the whole gateway through the openai SDK for the
escalation), at the user, team and org caps.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx2
import openai
import pytest

from apps.budgets.models import Budget, BudgetCounter, Reservation
from apps.budgets.services import background_drain, budget_create
from apps.budgets.tests.conftest import caller_for
from apps.gateway import pipeline, stages
from apps.gateway.billing import stage10_cost
from apps.gateway.context import RequestContext, RouteDecision
from apps.gateway.selectors import catalog_build
from apps.gateway.tests.conftest import unique_prompt, wait_for_row
from apps.ledger.models import ModelPrice
from finops.errors import BudgetExceeded
from finops.tokens import prompt_token_bound

pytestmark = pytest.mark.django_db(transaction=True)

CHAIN = [("cheap", "gpt-4o-mini"), ("premium", "gpt-4o")]
SCOPES = ["user", "team", "org"]


@pytest.fixture(scope="module")
def gateway_url(django_db_setup, mock_llm_url):
    """A budget check that waits (as in test_spend_integrity): a request that failed open holds no reservation."""
    from conftest import gateway_server

    env = {"FINOPS_BUDGET_TIMEOUT_MS": "10000", "FINOPS_BUDGET_DECISION_MAX_MS": "10000"}
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        yield url


def budget_for(tenant, scope: str, cap: Decimal) -> Budget:
    target = {"user": {"team": tenant.team, "member": tenant.member}, "team": {"team": tenant.team}, "org": {}}[scope]
    return budget_create(
        budget=Budget(scope=scope, org=tenant.org, period="monthly", cap_usd=cap, action="block", soft_pct=[80], **target)
    )


@pytest.fixture
def catalog(prices, settings, mock_llm_url):
    # A budget check that waits: on this shared machine the 50 ms default may fail open (no reservation to top up).
    settings.FINOPS = {
        **settings.FINOPS,
        "MOCK_LLM_URL": mock_llm_url,
        "BUDGET_TIMEOUT_MS": 10000,
        "BUDGET_DECISION_MAX_MS": 10000,
    }
    return catalog_build(price_rows=list(ModelPrice.objects.values()), provider_rows=[])


@pytest.fixture
def mini_fails(mock_llm_url):
    url = mock_llm_url.removesuffix("/v1") + "/_mock/faults"
    httpx2.post(url, json={"gpt-4o-mini": {"error": "503"}}).raise_for_status()
    yield
    httpx2.post(url, json={"gpt-4o-mini": None}).raise_for_status()


@pytest.fixture(autouse=True)
def closed_circuits():
    from apps.routing.decide import breaker

    breaker().reset()
    yield
    breaker().reset()


def context(tenant, catalog) -> RequestContext:
    ctx = RequestContext(endpoint="chat_completions", caller=caller_for(tenant))
    ctx.messages = [{"role": "user", "content": unique_prompt("Which tier answers?")}]
    ctx.body = {"model": CHAIN[0][1], "messages": ctx.messages}
    ctx.route = RouteDecision(model=CHAIN[0][1], tier=CHAIN[0][0], strategy="pinned", chain=list(CHAIN))
    ctx.catalog = catalog
    ctx.max_tokens = 20_000  # caps are whole cents: estimates of cents, so that one fits between them
    ctx.prompt_tokens_estimate = prompt_token_bound(ctx.messages)
    return ctx


def fallback(ctx: RequestContext, catalog) -> Exception | None:
    """Stages 7, 8 (the mini model fails: the chain steps up to gpt-4o), 10 and the settlement, on one loop."""

    async def main() -> Exception | None:
        from finops.runtime import runtime_close

        error = None
        try:
            await pipeline.stage7_budget(ctx, catalog)
            try:
                response, _ = await pipeline.stage8_upstream(ctx, catalog, ctx.route.chain)
                stage10_cost(ctx, catalog, response)
            except BudgetExceeded as exc:
                error = exc
            await stages.budget_settle(ctx)
            await background_drain()
        finally:
            await runtime_close()
        return error

    return asyncio.run(main())


def estimates(tenant, catalog) -> tuple[Decimal, Decimal]:
    ctx = context(tenant, catalog)
    return stages.estimate(ctx, catalog, "gpt-4o-mini"), stages.estimate(ctx, catalog, "gpt-4o")


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"))


def counters_reserved() -> Decimal:
    return sum((c.reserved_usd for c in BudgetCounter.objects.all()), Decimal(0))


@pytest.mark.parametrize("scope", SCOPES)
def test_an_upward_fallback_tops_up_its_reservation_and_settles_the_total_once(make_tenant, catalog, mini_fails, scope):
    tenant = make_tenant()
    budget_for(tenant, scope, Decimal("100"))
    ctx = context(tenant, catalog)
    mini, premium = estimates(tenant, catalog)
    assert premium > mini

    assert fallback(ctx, catalog) is None
    assert ctx.budget_state == "ok"
    assert (ctx.model, ctx.fallback_from, ctx.attempts) == ("gpt-4o", "gpt-4o-mini", 2)
    first, topup = Reservation.objects.filter(request_id=ctx.request_id).order_by("id")
    assert (first.amount_usd, topup.amount_usd) == (mini, premium - mini)
    assert ctx.reserved_usd == premium >= ctx.cost_usd > 0  # the row's reserved_usd covers its bill
    # Settled once: the total on the first reservation, the top-up released.
    assert (first.state, first.actual_usd) == ("settled", ctx.cost_usd)
    assert (topup.state, topup.actual_usd) == ("settled", 0)
    counter = BudgetCounter.objects.get()
    assert (counter.spent_usd, counter.reserved_usd) == (ctx.cost_usd, 0)


@pytest.mark.parametrize("scope", SCOPES)
def test_a_fallback_whose_top_up_a_cap_refuses_is_not_made(make_tenant, catalog, mini_fails, scope):
    tenant = make_tenant()
    mini, premium = estimates(tenant, catalog)
    budget_for(tenant, scope, cents((mini + premium) / 2))  # room for the mini model's reservation, not for gpt-4o's
    ctx = context(tenant, catalog)

    error = fallback(ctx, catalog)
    assert isinstance(error, BudgetExceeded) and error.status == 429
    assert "gpt-4o" in error.message and "fallback" in error.message
    assert ctx.attempts == 1  # gpt-4o was never called
    assert (ctx.cost_usd, ctx.reserved_usd, ctx.topup_reservation_ids) == (0, mini, [])
    assert list(Reservation.objects.filter(request_id=ctx.request_id).values_list("amount_usd", "state")) == [(mini, "settled")]
    assert counters_reserved() == 0


# --- escalation, through the gateway ----------------------------------------------------------------------------


def escalating_request(gateway_url: str, secret: str) -> str:
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        logprobs=True,
        max_tokens=20_000,  # caps are whole cents: estimates of cents, so that one fits between them
        messages=[{"role": "user", "content": unique_prompt("Summarize this: the meeting moved to Tuesday.")}],
        extra_headers={"X-Mock-Logprob": "-4"},  # the mock's answer is very unsure of itself: the router re-asks
    )
    return raw.headers["x-request-id"]


@pytest.fixture
def tiers():
    from apps.routing.services import routing_defaults_ensure

    routing_defaults_ensure()  # the tiers of "auto" (the transactional flush removed the migration's rows)


@pytest.mark.parametrize("scope", SCOPES)
def test_a_confidence_escalation_tops_up_or_is_not_made(gateway_url, make_tenant, prices, tiers, scope):
    # With room under the cap: the re-ask is reserved (a second reservation), both answers are billed, once.
    roomy = make_tenant(user=f"u{uuid.uuid4().hex[:8]}", team=f"t{uuid.uuid4().hex[:8]}", org=f"o{uuid.uuid4().hex[:8]}")
    budget_for(roomy, scope, Decimal("100"))
    row = wait_for_row(escalating_request(gateway_url, roomy.secret))
    assert row.escalated and row.attempts == 2
    first, topup = Reservation.objects.filter(request_id=row.request_id).order_by("id")
    assert row.reserved_usd == first.amount_usd + topup.amount_usd >= row.cost_usd > row.escalation_cost_usd > 0
    wait_settled(row.request_id)
    first.refresh_from_db(), topup.refresh_from_db()
    assert (first.actual_usd, topup.actual_usd) == (row.cost_usd, 0)

    # A cap with room for the first answer but not for the re-ask: the first answer is served, nothing more spent.
    tight = make_tenant(user=f"u{uuid.uuid4().hex[:8]}", team=f"t{uuid.uuid4().hex[:8]}", org=f"o{uuid.uuid4().hex[:8]}")
    budget_for(tight, scope, cents(first.amount_usd + topup.amount_usd / 2))
    row = wait_for_row(escalating_request(gateway_url, tight.secret))
    assert (row.status, row.escalated, row.attempts) == ("served", False, 1)
    assert list(Reservation.objects.filter(request_id=row.request_id).values_list("amount_usd", flat=True)) == [row.reserved_usd]
    assert row.cost_usd <= row.reserved_usd
    wait_settled(row.request_id)


def wait_settled(request_id, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while Reservation.objects.filter(request_id=request_id, state="reserved").exists():
        assert time.monotonic() < deadline, "reservation still open"
        time.sleep(0.05)
