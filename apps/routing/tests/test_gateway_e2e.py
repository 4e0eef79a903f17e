"""End to end through the live gateway (uvicorn) and a mock LLM of our own, whose faults we set at runtime.

The mock replays the 50 recorded RouteLLM prompts (other prompts get synthetic answers), so the
confidence escalation is exercised on real Mixtral / GPT-4 answers. The gateway routes with the served
learned index minus those 50 prompts (the served one contains them), as the offline harness scores them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import httpx2
import openai
import pytest

from apps.embeddings.embeddings import embed_for_routing
from apps.ledger.models import LLMRequest
from apps.routing.engine import escalation_decide, learned_apply, learned_wanted, route_plan
from apps.routing.features import answer_confidence
from apps.routing.learned import prompt_key, route_text, served_index
from apps.routing.models import TierModel
from apps.routing.selectors import router_config_load
from apps.routing.services import routing_defaults_ensure
from conftest import ROOT, free_port, gateway_server, wait_for_port
from evals.router.datasets import EVAL50_PATH, load_eval50
from evals.router.evaluation import GSM8K_INSTRUCTION

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def route_mock():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.mock_llm", "--port", str(port), "--replay", str(EVAL50_PATH)],
        cwd=ROOT,
        env={**os.environ},
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def held_out_index():
    """The served learned index without the 50 replayed prompts: what the offline harness scores them with."""
    return served_index().excluding(prompt_key(r["prompt"]) for r in load_eval50())


@pytest.fixture(scope="module")
def route_gateway(django_db_setup, route_mock, held_out_index, tmp_path_factory):
    index_file = tmp_path_factory.mktemp("router") / "held-out-index.npz"
    held_out_index.save(index_file)
    env = {
        "FINOPS_UPSTREAM_TIMEOUT_S": "1",
        "FINOPS_ROUTER_CIRCUIT_FAILURES": "2",
        "FINOPS_ROUTER_CIRCUIT_COOLDOWN_S": "2",
        "FINOPS_ROUTER_INDEX_PATH": str(index_file),
    }
    with gateway_server(mock_llm_url=f"{route_mock}/v1", env=env) as url:
        yield url


@pytest.fixture
def faults(route_mock):
    def set_faults(spec: dict) -> None:
        httpx2.post(f"{route_mock}/_mock/faults", json=spec).raise_for_status()

    yield set_faults
    httpx2.delete(f"{route_mock}/_mock/faults").raise_for_status()


@pytest.fixture
def client(route_gateway, make_tenant, prices, redis_client):
    routing_defaults_ensure()
    tenant = make_tenant()
    return openai.OpenAI(base_url=f"{route_gateway}/v1", api_key=tenant.secret, max_retries=0, timeout=30)


def cheap_model(model: str) -> None:
    """Serve the default ladder's cheap tier with `model` (each test its own, so the circuits do not mix)."""
    TierModel.objects.filter(tier__ladder="default", tier__name="cheap").update(model=model)


def ask(client: openai.OpenAI, text: str, model: str = "auto", system: str | None = None):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    return raw.parse(), wait_for_row(raw.headers["x-request-id"])


def wait_for_row(request_id: str, timeout: float = 10.0) -> LLMRequest:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = LLMRequest.objects.filter(request_id=request_id).first()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError(f"no llm_requests row for {request_id}")


def fresh(text: str = "Name a fruit.") -> str:
    return f"{text} ({uuid.uuid4().hex[:8]})"  # the caches are live: never ask the same thing twice


@pytest.mark.parametrize("fault", ["500", "timeout"])
def test_a_failing_cheap_model_falls_back_to_the_next_tier_up(client, faults, fault) -> None:
    failing = {"500": "gpt-4o-mini", "timeout": "gpt-4.1-nano"}[fault]
    cheap_model(failing)
    faults({failing: {"error": fault}})
    completion, row = ask(client, fresh())
    assert completion.model == "gpt-4.1-mini"
    assert (row.status, row.model, row.tier) == ("served", "gpt-4.1-mini", "mid")
    assert (row.fallback_from, row.attempts) == (failing, 2)
    assert (row.route_strategy, row.requested_tier) == ("complexity", "cheap")
    assert row.route_reason.endswith("→ cheap")


def test_an_open_circuit_skips_the_model_until_its_cooldown_ends(client, faults, route_mock) -> None:
    cheap_model("o3-mini")
    faults({"o3-mini": {"error": "500"}})
    for _ in range(2):  # FINOPS_ROUTER_CIRCUIT_FAILURES=2
        _, row = ask(client, fresh())
        assert (row.fallback_from, row.attempts) == ("o3-mini", 2)
    errors_before = httpx2.get(f"{route_mock}/_mock/stats").json()["errors"]["o3-mini"]

    _, skipped = ask(client, fresh())
    assert (skipped.model, skipped.fallback_from, skipped.attempts) == ("gpt-4.1-mini", "o3-mini", 1)
    assert httpx2.get(f"{route_mock}/_mock/stats").json()["errors"]["o3-mini"] == errors_before  # not called at all

    faults({"o3-mini": None})  # the upstream recovers; after the cooldown the half-open probe closes the circuit
    deadline = time.monotonic() + 15
    while True:
        _, row = ask(client, fresh())
        if row.model == "o3-mini":
            break
        assert time.monotonic() < deadline, "the circuit never half-opened"
        assert row.attempts == 1  # still open: skipped without a call
        time.sleep(0.5)
    assert (row.attempts, row.fallback_from) == (1, "")
    _, after = ask(client, fresh())
    assert after.model == "o3-mini"


def _eval50_cases(index):
    """One recorded prompt the full chain escalates, one it keeps cheap: decided by the served functions."""
    config = router_config_load()
    policy = config.policy_for(org_id=None, name="eval")
    escalated = kept = None
    for rec in load_eval50():
        messages = [{"role": "system", "content": GSM8K_INSTRUCTION}, {"role": "user", "content": rec["prompt"]}]
        plan = route_plan(config, messages=messages, requested_model="finops/eval", org_id=None)
        if learned_wanted(plan):
            vector = asyncio.run(embed_for_routing(route_text(messages)))
            if index.abstains(vector) is None:  # as the gateway: an abstaining index leaves it to complexity
                plan = learned_apply(config, plan, index.score(vector))
        if plan.tier != "cheap":
            continue
        conf = answer_confidence(messages, answer=rec["weak_response"])
        up, _ = escalation_decide(
            policy=policy,
            strategy=plan.strategy,
            complexity=plan.complexity,
            uncertainty=conf.uncertainty,
            learned=plan.learned.score if plan.learned else None,
        )
        if up and escalated is None:
            escalated = {**rec, "strategy": plan.strategy}
        if not up and kept is None:
            kept = {**rec, "strategy": plan.strategy}
    assert escalated is not None and kept is not None
    return escalated, kept


def test_replayed_answers_escalate_on_low_confidence_and_both_costs_are_kept(client, held_out_index) -> None:
    escalated, kept = _eval50_cases(held_out_index)

    completion, row = ask(client, kept["prompt"], model="finops/eval", system=GSM8K_INSTRUCTION)
    assert " ".join(completion.choices[0].message.content.split()) == " ".join(kept["weak_response"].split())
    # Decided by the learned index, or by complexity where the index abstains (as `_eval50_cases` decided it).
    assert (row.model, row.tier, row.escalated, row.route_strategy) == ("mixtral-8x7b-instruct", "cheap", False, kept["strategy"])
    assert row.route_reason.startswith(f"{kept['strategy']}=") and "→ cheap" in row.route_reason

    completion, row = ask(client, escalated["prompt"], model="finops/eval", system=GSM8K_INSTRUCTION)
    assert " ".join(completion.choices[0].message.content.split()) == " ".join(escalated["strong_response"].split())
    assert (row.model, row.tier, row.escalated, row.route_strategy) == ("gpt-4-1106-preview", "premium", True, "confidence")
    assert "escalated cheap→premium" in row.route_reason
    # The first decision (learned, or complexity where the index abstains), then the escalation.
    assert row.route_reason.startswith(f"{escalated['strategy']}=")
    assert row.requested_tier == "cheap"
    assert 0 < row.escalation_cost_usd < row.cost_usd  # the cheap answer's cost, inside the total of both calls


def test_an_escalation_is_not_recorded_as_a_fallback(client, held_out_index) -> None:
    escalated, _ = _eval50_cases(held_out_index)
    _, row = ask(client, escalated["prompt"], model="finops/eval", system=GSM8K_INSTRUCTION)
    assert row.escalated
    assert row.fallback_from == ""  # nothing failed: the cheap model answered, then the premium one


def test_a_pin_is_served_as_asked(client) -> None:
    completion, row = ask(client, fresh("Prove that the square root of 2 is irrational, step by step."), model="gpt-4o-mini")
    assert completion.model == "gpt-4o-mini"
    assert (row.route_strategy, row.model, row.requested_model) == ("pinned", "gpt-4o-mini", "gpt-4o-mini")


def test_live_replay_matches_the_offline_harness_prompt_for_prompt(route_gateway, make_tenant, prices, redis_client) -> None:
    """`eval_router --live`: the 50 prompts through the gateway decide, cost and score exactly as offline."""
    from evals.router.harness import router_eval_live, router_eval_run

    routing_defaults_ensure()
    tenant = make_tenant()
    run = router_eval_run(progress=False)
    live = router_eval_live(run, base_url=route_gateway, api_key=tenant.secret, progress=False)
    full = run.reports[0].result("full chain")
    assert (live["n"], live["unmatched"], live["agree"]) == (50, 0, 50)
    assert live["premium_share"] == full.share
    assert live["quality"] == pytest.approx(full.quality)
    assert live["cost"] == full.cost
    # Every request left its ledger row (and no write is still in flight when the test's flush runs).
    deadline = time.monotonic() + 10
    while LLMRequest.objects.count() < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert LLMRequest.objects.filter(route_strategy="confidence", escalated=True).count() == full.premium_calls - sum(
        1 for i in run.items if i.chain_tier == "premium"
    )
