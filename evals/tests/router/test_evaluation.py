"""The A/B harness: its metrics on a hand-made set, and the 50-prompt run computed right (not judged good)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from apps.embeddings.embeddings import embed_for_routing
from apps.ledger.pricing import cost_compute
from apps.ledger.selectors import price_in_force
from apps.routing.engine import PromptView, escalation_decide, keyword_match, learned_apply, learned_wanted, route_plan
from apps.routing.features import answer_confidence
from apps.routing.learned import prompt_key, route_text, served_index
from apps.routing.selectors import router_config_load
from apps.routing.services import routing_defaults_ensure
from evals.router.datasets import load_eval50
from evals.router.evaluation import GSM8K_INSTRUCTION, apgr, apgr_by_cost, cpt, pgr, sweep
from evals.router.harness import router_eval_run
from finops.tokens import count_message_tokens, count_tokens

# Hand-made set: A needs the premium model, B and C are right either way, D is wrong either way.
W = np.array([0.0, 1.0, 1.0, 0.0])
S = np.array([1.0, 1.0, 1.0, 0.0])
WC = np.array([1.0, 1.0, 1.0, 1.0])
SC = np.array([10.0, 10.0, 10.0, 10.0])
WEAK_Q, STRONG_Q = 0.5, 0.75


def share_quality(points):
    return [(s, q) for s, q, _ in points]


def test_pgr_ends() -> None:
    assert pgr(WEAK_Q, WEAK_Q, STRONG_Q) == 0.0  # always cheap
    assert pgr(STRONG_Q, WEAK_Q, STRONG_Q) == 1.0  # always premium
    assert pgr(0.7, 0.7, 0.7) == 0.0  # no gap: defined as 0, not a division error


def test_perfect_router_by_hand() -> None:
    points = sweep(W, S, WC, SC, S - W)
    # Premium for A first (share 0.25, PGR 1), then the tie B, C, D together (share 1, PGR 1).
    assert share_quality(points) == [(0.0, 0.5), (0.25, 0.75), (1.0, 0.75)]
    assert [c for _, _, c in points] == [4.0, 13.0, 40.0]
    assert apgr(share_quality(points), WEAK_Q, STRONG_Q) == pytest.approx(0.25 * 0.5 + 0.75 * 1.0)  # 0.875
    assert cpt(share_quality(points), WEAK_Q, STRONG_Q, 0.5) == pytest.approx(0.125)
    assert cpt(share_quality(points), WEAK_Q, STRONG_Q, 0.8) == pytest.approx(0.20)


def test_worst_router_and_random_line() -> None:
    worst = share_quality(sweep(W, S, WC, SC, -(S - W)))
    assert worst == [(0.0, 0.5), (0.75, 0.5), (1.0, 0.75)]
    assert apgr(worst, WEAK_Q, STRONG_Q) == pytest.approx(0.125)
    assert cpt(worst, WEAK_Q, STRONG_Q, 0.5) == pytest.approx(0.875)
    random_line = [(0.0, WEAK_Q), (1.0, STRONG_Q)]
    assert apgr(random_line, WEAK_Q, STRONG_Q) == pytest.approx(0.5)
    assert cpt(random_line, WEAK_Q, STRONG_Q, 0.8) == pytest.approx(0.8)


def test_ties_are_one_step_so_a_constant_score_is_random() -> None:
    points = share_quality(sweep(W, S, WC, SC, np.zeros(4)))
    assert points == [(0.0, 0.5), (1.0, 0.75)]
    assert apgr(points, WEAK_Q, STRONG_Q) == pytest.approx(0.5)


def test_a_cascade_pays_the_cheap_call_and_the_cost_axis_charges_it() -> None:
    gain = S - W
    direct = sweep(W, S, WC, SC, gain)
    cascade = sweep(W, S, WC, SC, gain, direct=np.full(4, -np.inf))
    assert share_quality(cascade) == share_quality(direct)
    assert [c for _, _, c in cascade] == [4.0, 14.0, 44.0]  # every prompt paid its cheap call
    span = 40.0 - 4.0
    by_cost_direct = apgr_by_cost([((c - 4.0) / span, q) for _, q, c in direct], WEAK_Q, STRONG_Q)
    by_cost_cascade = apgr_by_cost([((c - 4.0) / span, q) for _, q, c in cascade], WEAK_Q, STRONG_Q)
    assert by_cost_direct == pytest.approx(0.875)
    x = 10.0 / 36.0
    assert by_cost_cascade == pytest.approx(x * 0.5 + (1 - x) * 1.0)
    # Mixed: a prompt whose direct score reaches θ skips its cheap call.
    mixed = sweep(W, S, WC, SC, gain, direct=np.array([1.0, -np.inf, -np.inf, -np.inf]))
    assert [c for _, _, c in mixed] == [4.0, 13.0, 43.0]


# --------------------------------------------------------------------------- the 50-prompt run


@pytest.fixture
def routing_seed(prices):
    routing_defaults_ensure()


@pytest.fixture
def eval50_run(routing_seed):
    return router_eval_run(progress=False)


@pytest.mark.django_db
def test_eval50_costs_and_qualities_from_first_principles(eval50_run) -> None:
    records = load_eval50()
    report = eval50_run.reports[0]
    assert (report.source, report.n) == ("gsm8k", 50)
    assert report.weak_quality == pytest.approx(sum(r["weak_correct"] for r in records) / 50)
    assert report.strong_quality == pytest.approx(sum(r["strong_correct"] for r in records) / 50)

    import datetime as dt

    today = dt.date.today()
    mixtral = price_in_force(model="mixtral-8x7b-instruct", on=today)
    gpt4 = price_in_force(model="gpt-4-1106-preview", on=today)
    weak_total = strong_total = Decimal(0)
    for r in records:
        prompt_tokens = count_message_tokens(
            [{"role": "system", "content": GSM8K_INSTRUCTION}, {"role": "user", "content": r["prompt"]}]
        )
        weak_total += cost_compute(price=mixtral, prompt_tokens=prompt_tokens, completion_tokens=count_tokens(r["weak_response"]))
        strong_total += cost_compute(
            price=gpt4, prompt_tokens=prompt_tokens, completion_tokens=count_tokens(r["strong_response"])
        )
    assert report.result("always-cheap").cost == weak_total == report.weak_cost
    assert report.result("always-premium").cost == strong_total == report.strong_cost
    assert isinstance(report.result("full chain").cost, Decimal)
    assert report.result("always-cheap").pgr == 0.0 and report.result("always-premium").pgr == 1.0
    assert report.result("always-premium").share == 1.0 and report.result("always-cheap").share == 0.0


@pytest.mark.django_db
def test_eval50_perfect_and_random_rows(eval50_run) -> None:
    records = load_eval50()
    report = eval50_run.reports[0]
    needs_strong = sum(1 for r in records if not r["weak_correct"] and r["strong_correct"])
    weak_only = sum(1 for r in records if r["weak_correct"] and not r["strong_correct"])
    gap = (needs_strong - weak_only) / 50
    top = needs_strong / 50 / gap  # PGR once every "needs strong" prompt went premium
    x1, x2 = needs_strong / 50, 1 - weak_only / 50
    expected = x1 * top / 2 + (x2 - x1) * top + (1 - x2) * (top + 1) / 2
    perfect = report.result("perfect")
    assert perfect.apgr == pytest.approx(expected)
    assert perfect.share == pytest.approx(needs_strong / 50)
    rnd = report.result("random (matched cost)")
    full = report.result("full chain")
    assert rnd.apgr == pytest.approx(0.5)
    assert abs(rnd.cost - full.cost) < Decimal("0.000001")
    assert rnd.quality == pytest.approx(report.weak_quality + rnd.share * (report.strong_quality - report.weak_quality))
    for r in report.results:
        if r.apgr is not None:
            assert r.curve[0].share == 0.0 and r.curve[-1].share == 1.0
            assert r.curve[0].quality == pytest.approx(report.weak_quality)
            assert r.curve[-1].quality == pytest.approx(report.strong_quality)


@pytest.mark.django_db
def test_eval50_full_chain_is_the_served_code(eval50_run) -> None:
    """The full chain's decisions equal route_plan + the learned score (the gateway's embedding, a held-out index)
    + learned_apply + answer_confidence + escalation_decide, called here directly."""
    config = router_config_load()
    policy = config.policy_for(org_id=None, name="eval")
    assert policy.use_learned  # the seeded eval route routes by the learned index
    index = eval50_run.learned_index
    report = eval50_run.reports[0]
    premium = cheap_calls = learned_decided = 0
    for r in load_eval50():
        messages = [{"role": "system", "content": GSM8K_INSTRUCTION}, {"role": "user", "content": r["prompt"]}]
        plan = route_plan(config, messages=messages, requested_model="finops/eval", org_id=None)
        if learned_wanted(plan):
            vector = asyncio.run(embed_for_routing(route_text(messages)))
            if index.abstains(vector) is None:  # the gateway leaves an abstention to complexity
                plan = learned_apply(config, plan, index.score(vector))
            learned_decided += 1
        if plan.tier == "premium":
            premium += 1
            continue
        cheap_calls += 1
        conf = answer_confidence(messages, answer=r["weak_response"])
        premium += escalation_decide(
            policy=policy,
            strategy=plan.strategy,
            complexity=plan.complexity,
            uncertainty=conf.uncertainty,
            learned=plan.learned.score if plan.learned else None,
        )[0]
    assert learned_decided > 40  # all but the keyword-rule matches
    full = report.result("full chain")
    assert full.premium_calls == premium
    assert full.cheap_calls == cheap_calls
    tiers = config.tiers(policy.ladder)
    by_rules = sum(
        1
        for r in load_eval50()
        if (
            rule := keyword_match(
                config.rules,
                org_id=None,
                tiers=tiers,
                view=PromptView.of([{"role": "system", "content": GSM8K_INSTRUCTION}, {"role": "user", "content": r["prompt"]}]),
            )
        )
        and rule.tier == "premium"
    )
    assert report.result("keyword").premium_calls == by_rules


@pytest.mark.django_db
def test_eval50_learned_scores_come_from_an_index_without_the_evaluated_prompts(eval50_run) -> None:
    served = served_index()
    held_out = eval50_run.learned_index
    evaluated = {prompt_key(r["prompt"]) for r in load_eval50()}
    assert evaluated <= set(served.keys.tolist())  # the served index was built from the full GSM8K set ...
    assert not evaluated & set(held_out.keys.tolist())  # ... so the harness scores with it minus those prompts
    assert len(served) - len(held_out) >= 50
    assert "minus the" in eval50_run.learned_note
    report = eval50_run.reports[0]
    assert {"learned", "learned+confidence"} <= {r.name for r in report.results}
    # With the prompts left in, each would find itself (cosine 1) among its neighbours: the leak the exclusion prevents.
    vector = asyncio.run(embed_for_routing(load_eval50()[0]["prompt"].strip()))
    assert served.score(vector).nearest == pytest.approx(1.0, abs=1e-3)
    assert held_out.score(vector).nearest < 0.99


@pytest.mark.django_db
def test_eval_router_command_writes_the_report_and_plot(routing_seed, tmp_path: Path) -> None:
    # The 50 vendored prompts are a subset: the report goes under its own heading, below the headline figures
    # of the full sets, which it leaves alone (and its plot beside the headline plot, not over it).
    doc, plot = tmp_path / "router-eval.md", tmp_path / "img" / "router-eval.png"
    doc.write_text("# Router evaluation\n\nHeadline: APGR 0.710 on the full sets.\n")
    call_command(
        "eval_router", "--output", str(doc), "--plot", str(plot), "--no-progress", stdout=open(tmp_path / "out.txt", "w")
    )
    text = doc.read_text()
    assert text.startswith("# Router evaluation\n\nHeadline: APGR 0.710 on the full sets.\n")
    assert "## Subset run: eval50 (50 prompts) (not the headline figures)" in text
    assert "| policy | premium calls |" in text and "| full chain |" in text and "| perfect |" in text
    assert "![quality against premium share](img/router-eval-subset.png)" in text
    assert not plot.exists() and plot.with_name("router-eval-subset.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    call_command(  # a second subset run replaces the first subset block, never piles up
        "eval_router", "--output", str(doc), "--plot", str(plot), "--no-progress", "--no-learned", stdout=open(tmp_path / "o2.txt", "w")
    )
    assert doc.read_text().count("## Subset run") == 1 and "Headline: APGR 0.710" in doc.read_text()
    out = (tmp_path / "out.txt").read_text()
    assert "always-premium" in out and "APGR=" in out


@pytest.mark.django_db
def test_learn_quality_stores_the_measured_accuracies(routing_seed, tmp_path: Path) -> None:
    from apps.routing.models import TierModel

    call_command("eval_router", "--no-docs", "--no-progress", "--learn-quality", stdout=open(tmp_path / "o.txt", "w"))
    stored = dict(TierModel.objects.filter(tier__ladder="eval").values_list("model", "quality"))
    records = load_eval50()
    assert stored["mixtral-8x7b-instruct"] == pytest.approx(sum(r["weak_correct"] for r in records) / 50)
    assert stored["gpt-4-1106-preview"] == pytest.approx(sum(r["strong_correct"] for r in records) / 50)
    assert set(TierModel.objects.filter(tier__ladder="eval").values_list("quality_source", flat=True)) == {"eval"}
