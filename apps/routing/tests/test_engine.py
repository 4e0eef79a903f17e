"""The routing decisions on hand-built snapshots: strategies, their order, the triangle and the chain."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.routing.engine import (
    PolicySpec,
    UnknownRoute,
    chain_build,
    complexity_tier,
    escalation_decide,
    route_plan,
    target_parse,
    triangle_rank,
)
from apps.routing.tests.factories import config, model, rule, three_tiers, tier, user


def plan(cfg, text: str, requested: str = "auto", org_id: int | None = 1, allow_pinning: bool = True):
    return route_plan(cfg, messages=user(text), requested_model=requested, org_id=org_id, allow_pinning=allow_pinning)


# --------------------------------------------------------------------------- route names


def test_route_names() -> None:
    cfg = config(policies=(PolicySpec(id=1), PolicySpec(id=2, name="eval")))
    assert target_parse(cfg, "auto").kind == "route"
    assert target_parse(cfg, "finops/auto").kind == "route"
    assert target_parse(cfg, "router").kind == "route"
    assert target_parse(cfg, "finops/eval") == target_parse(cfg, "finops/eval")
    assert target_parse(cfg, "finops/eval").policy_name == "eval"
    assert target_parse(cfg, "finops/premium").kind == "tier"
    assert target_parse(cfg, "gpt-4o").kind == "pin"
    with pytest.raises(UnknownRoute):
        plan(cfg, "hello", requested="finops/nope")


def test_org_policy_beats_global_policy_of_the_same_name() -> None:
    cfg = config(
        policies=(PolicySpec(id=1, use_complexity=False), PolicySpec(id=2, org_id=7, use_complexity=False, default_tier="mid"))
    )
    assert plan(cfg, "hello there friend", org_id=7).tier == "mid"
    assert plan(cfg, "hello there friend", org_id=8).tier == "cheap"


# --------------------------------------------------------------------------- pinning


def test_pinned_model_is_honoured_when_the_org_allows_it() -> None:
    p = plan(config(), "Prove the Riemann hypothesis step by step", requested="small-b")
    assert p.strategy == "pinned" and p.model == "small-b" and p.tier == "cheap"
    # Its chain: the pinned model, its tier's peers, then upward.
    assert [m for _, m in p.chain] == ["small-b", "small-a", "mid-a", "big-a", "big-b"]


def test_pinned_model_outside_every_tier_has_a_one_entry_chain() -> None:
    cfg = config(extra_models=(model("other", "", -1),))
    p = plan(cfg, "hello", requested="other")
    assert p.strategy == "pinned" and p.chain == [("", "other")]


def test_pin_refused_when_the_org_disallows_pinning() -> None:
    p = plan(config(), "hi", requested="big-b", allow_pinning=False)
    assert p.strategy == "complexity" and p.tier == "cheap"
    assert "refused" in p.reason and "big-b" in p.reason
    assert "big-b" not in [m for _, m in p.chain[:2]]


def test_pinned_without_fallback_when_the_policy_says_so() -> None:
    cfg = config(policies=(PolicySpec(id=1, fallback_on_pinned=False),))
    assert plan(cfg, "hi", requested="small-b").chain == [("cheap", "small-b")]


def test_tier_alias() -> None:
    p = plan(config(), "hi", requested="finops/mid")
    assert (p.strategy, p.tier, p.requested_tier) == ("tier", "mid", "mid")
    assert [t for t, _ in p.chain] == ["mid", "premium", "premium"]


# --------------------------------------------------------------------------- keyword rules


def test_keyword_rule_routes_to_its_tier() -> None:
    cfg = config(rules=(rule(1, "legal", "contract, liability", "premium"),))
    p = plan(cfg, "Please review this Contract for me")
    assert (p.strategy, p.tier, p.rule_id) == ("keyword", "premium", 1)
    assert p.reason == "rule 1 'legal' → premium"
    assert plan(cfg, "a contractor came by").strategy == "complexity"  # whole words only


def test_keyword_priority_higher_first_then_higher_tier() -> None:
    rules = (
        rule(1, "summarise", "summarize", "cheap", priority=50),
        rule(2, "legal", "contract", "premium", priority=100),
        rule(3, "also legal", "contract", "mid", priority=100),
    )
    cfg = config(rules=rules)
    assert plan(cfg, "summarize this contract").rule_id == 2  # priority 100 beats 50; premium beats mid at 100
    assert plan(cfg, "summarize this memo").rule_id == 1
    lowered = config(rules=(rule(1, "summarise", "summarize", "cheap", priority=200), rules[1]))
    assert plan(lowered, "summarize this contract").tier == "cheap"


def test_regex_rule_org_scope_and_last_user_scope() -> None:
    rules = (
        rule(1, "trace", r"^\s+at [\w.]+\(", "premium", regex=True, org_id=5),
        rule(2, "greeting", r"\A\s*hi\b", "cheap", regex=True, last_user_only=True),
    )
    cfg = config(rules=rules)
    trace = "Exception\n    at com.acme.Main(Main.java:3)"
    assert plan(cfg, trace, org_id=5).rule_id == 1
    assert plan(cfg, trace, org_id=6).rule_id is None  # another org's rule
    convo = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "write a poem"},
    ]
    assert route_plan(cfg, messages=convo, requested_model="auto", org_id=1).rule_id is None
    assert plan(cfg, "hi").rule_id == 2


def test_rule_for_a_tier_missing_from_the_ladder_is_skipped_and_keywords_can_be_off() -> None:
    cfg = config(rules=(rule(1, "x", "banana", "ultra"), rule(2, "y", "banana", "mid", priority=10)))
    assert plan(cfg, "banana").rule_id == 2
    off = config(rules=(rule(2, "y", "banana", "mid"),), policies=(PolicySpec(id=1, use_keywords=False),))
    assert plan(off, "banana").strategy == "complexity"


# --------------------------------------------------------------------------- complexity


def test_complexity_thresholds_pick_the_highest_tier_reached() -> None:
    tiers = three_tiers()
    policy = PolicySpec()
    assert complexity_tier(0.10, tiers, policy)[0].name == "cheap"
    assert complexity_tier(0.15, tiers, policy) == (tiers[1], 0.15)
    assert complexity_tier(0.99, tiers, policy)[0].name == "premium"
    override = PolicySpec(complexity_thresholds={"premium": 0.9, "mid": 0.5})
    assert complexity_tier(0.6, tiers, override)[0].name == "mid"


def test_complexity_reason_shows_score_and_threshold() -> None:
    cfg = config()
    simple = plan(cfg, "hi")
    assert simple.strategy == "complexity" and simple.reason.startswith("complexity=0.0") and "<0.15 → cheap" in simple.reason
    hard = plan(
        cfg, "Explain why this Python code fails, step by step, and compare two fixes:\n```python\nx = [1, 2]\nprint(x[5])\n```"
    )
    assert hard.tier == "premium" and "≥0.30 → premium" in hard.reason
    assert hard.complexity is not None and hard.complexity >= 0.30


def test_default_tier_when_complexity_is_off() -> None:
    cfg = config(policies=(PolicySpec(id=1, use_complexity=False, default_tier="mid"),))
    p = plan(cfg, "Explain why, step by step, with code ```x```")
    assert (p.strategy, p.tier) == ("default", "mid")


# --------------------------------------------------------------------------- triangle and chain


def test_triangle_weights_decide_within_a_tier() -> None:
    cheap = three_tiers()[0].models  # small-a: dearer, better; small-b: cheaper, worse
    by_cost = triangle_rank(cheap, PolicySpec(weight_cost=1.0, weight_latency=0.0, weight_quality=0.0))
    by_quality = triangle_rank(cheap, PolicySpec(weight_cost=0.0, weight_latency=0.0, weight_quality=1.0))
    assert [m.model for m, _ in by_cost] == ["small-b", "small-a"]
    assert [m.model for m, _ in by_quality] == ["small-a", "small-b"]
    fast = (model("slow", "t", 0, latency=900.0), model("fast", "t", 0, latency=300.0), model("new", "t", 0, latency=None))
    ranked = triangle_rank(fast, PolicySpec(weight_cost=0.0, weight_latency=1.0, weight_quality=0.0))
    assert ranked[0][0].model == "fast"
    # An unmeasured model gets the tier's median latency: neither first nor last.
    assert [m.model for m, _ in ranked] == ["fast", "new", "slow"]


def test_chain_same_tier_first_then_upward() -> None:
    tiers = three_tiers()
    chain = chain_build(tiers, 0, PolicySpec())
    assert [t for t, _ in chain] == ["cheap", "cheap", "mid", "premium", "premium"]
    assert chain_build(tiers, 2, PolicySpec()) == [("premium", "big-a"), ("premium", "big-b")]


@given(
    ranks=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=6, unique=True),
    start_index=st.integers(min_value=0, max_value=5),
    sizes=st.lists(st.integers(min_value=0, max_value=3), min_size=6, max_size=6),
)
def test_a_chain_never_steps_down(ranks: list[int], start_index: int, sizes: list[int]) -> None:
    tiers = tuple(
        tier(f"t{r}", r, 0.0, *(model(f"m{r}-{k}", f"t{r}", r, inp=str(k + 1)) for k in range(sizes[i])))
        for i, r in enumerate(sorted(ranks))
    )
    start = sorted(ranks)[min(start_index, len(ranks) - 1)]
    chain = chain_build(tiers, start, PolicySpec())
    rank_of = {t.name: t.rank for t in tiers}
    seen = [rank_of[t] for t, _ in chain]
    assert all(r >= start for r in seen)
    assert seen == sorted(seen)  # never back down to a lower tier once moved up
    assert len({m for _, m in chain}) == len(chain)
    assert len(chain) == sum(len(t.models) for t in tiers if t.rank >= start)


def test_chains_are_memoised_per_snapshot_but_returned_as_fresh_lists() -> None:
    cfg = config()
    first = plan(cfg, "hi").chain
    first.append(("x", "y"))
    assert plan(cfg, "hi").chain[-1] != ("x", "y")


# --------------------------------------------------------------------------- escalation


def test_escalation_decisions() -> None:
    policy = PolicySpec(confidence_threshold=0.6)
    assert escalation_decide(policy=policy, strategy="complexity", complexity=0.1, uncertainty=0.8) == (True, pytest.approx(0.82))
    assert escalation_decide(policy=policy, strategy="complexity", complexity=0.1, uncertainty=0.3)[0] is False
    # Complexity adds to the answer's uncertainty ...
    assert escalation_decide(policy=policy, strategy="complexity", complexity=0.5, uncertainty=0.3)[0] is True
    # ... but not after a keyword rule chose the tier, and never for a pin, a named tier or a downgrade.
    assert escalation_decide(policy=policy, strategy="keyword", complexity=0.5, uncertainty=0.3)[0] is False
    for strategy in ("pinned", "tier", "downgrade"):
        assert escalation_decide(policy=policy, strategy=strategy, complexity=0.9, uncertainty=1.0) == (False, 0.0)
    assert (
        escalation_decide(policy=PolicySpec(use_confidence=False), strategy="complexity", complexity=0.9, uncertainty=1.0)[0]
        is False
    )
