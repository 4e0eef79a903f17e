"""The router's decisions as pure functions over an immutable config snapshot.

`apps.routing.selectors.router_config()` builds a `RouterConfig` from the database (tiers, models with
their price / latency / quality, keyword rules, policies); everything here is plain Python over it, so
the gateway hot path and the offline A/B harness (`evals.router.evaluation`) run the same code.

Order of strategies in `route_plan` (the first that decides wins):

1. **pinned**: the client named a concrete model and its org allows pinning → that model.
2. **tier**: the client named a tier (`finops/premium`) → that tier.
3. **keyword**: the highest-priority enabled rule whose regex/terms match → its tier.
4. **learned** (policies with `use_learned`): the prompt's learned score (`apps.routing.learned`: a kNN over
   labelled prompts in MiniLM space, 0..1) ≥ the policy's `learned_threshold` → the ladder's top tier, else
   the lowest. The score needs an embedding, so the caller computes it (async, off the event loop) only when
   `learned_wanted(plan)` says the plan of steps 1-3/5-6 would let it decide, and applies it with
   `learned_apply`. Without an index or a vector the plan of steps 5-6 stands.
5. **complexity**: the prompt's complexity score → the highest tier whose threshold it reaches.
6. **default**: the policy's default tier (the lowest tier when unset).

Then, after the answer, `escalation_decide` (strategy **confidence**) may send the request one tier up,
and the fallback chain (`chain_build`: same tier, then upward, never down) absorbs upstream failures.

Route names: a request selects routing with `model="auto"`, `"finops/auto"` or `"router"` (the org's
default policy), `"finops/<route>"` (a named policy, the org's own before the global one) or
`"finops/<tier>"` (a tier of the default ladder, when no route has that name). Any other model name
is a pin. (The gateway accepts these names through FINOPS["GATEWAY_ROUTER_MODELS"].)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from apps.routing.features import (
    COMPLEXITY_WEIGHTS,
    DEFAULT_LOGPROB_FLOOR,
    complexity_features,
    complexity_score,
    escalation_risk,
    prompt_text,
    scan_window,
)

AUTO_ALIASES = frozenset({"", "auto", "finops/auto", "router", "finops"})
ROUTE_PREFIX = "finops/"
DEFAULT_LADDER = "default"
# Typical chat traffic reads ~3 input tokens per output token; used to blend input and output
# prices into one number for the triangle's cost axis.
BLEND_INPUT_PER_OUTPUT = Decimal(3)
# The learned score is a percentile of the index's own prompts: 0.75 sends about the hardest quarter of
# benchmark-like traffic straight to the top tier (docs/router-eval.md has the whole curve).
DEFAULT_LEARNED_THRESHOLD = 0.75


@dataclass(frozen=True, slots=True)
class ModelSpec:
    model: str
    provider: str
    tier: str
    rank: int
    input_per_1m: Decimal
    output_per_1m: Decimal
    quality: float = 0.5
    latency_p50_ms: float | None = None

    @property
    def blended_per_1m(self) -> Decimal:
        return (self.input_per_1m * BLEND_INPUT_PER_OUTPUT + self.output_per_1m) / (BLEND_INPUT_PER_OUTPUT + 1)


@dataclass(frozen=True, slots=True)
class TierSpec:
    name: str
    rank: int
    complexity_min: float
    models: tuple[ModelSpec, ...]


@dataclass(frozen=True, slots=True)
class PromptView:
    """The request's text as the rules read it: the whole conversation and the last user message, windowed."""

    full: str
    full_lower: str
    last_user: str
    last_user_lower: str

    @classmethod
    def of(cls, messages: Sequence[Mapping[str, Any]], *, full: str | None = None) -> PromptView:
        text = scan_window(prompt_text(messages) if full is None else full)
        last = scan_window(_last_user_text(messages))
        return cls(full=text, full_lower=text.lower(), last_user=last, last_user_lower=last.lower())


@dataclass(frozen=True, slots=True)
class RuleSpec:
    id: int
    name: str
    tier: str
    priority: int
    regex: re.Pattern[str]
    org_id: int | None = None
    last_user_only: bool = False
    # Terms rules: lower-cased terms looked up as substrings first (C speed), the word-boundary regex
    # only runs when one is present.
    terms: tuple[str, ...] = ()

    def matches(self, view: PromptView) -> bool:
        text, lower = (view.last_user, view.last_user_lower) if self.last_user_only else (view.full, view.full_lower)
        if self.terms and not any(term in lower for term in self.terms):
            return False
        return bool(self.regex.search(text))


@dataclass(frozen=True, slots=True)
class PolicySpec:
    id: int | None = None
    org_id: int | None = None
    name: str = ""
    ladder: str = DEFAULT_LADDER
    weight_cost: float = 0.5
    weight_latency: float = 0.2
    weight_quality: float = 0.3
    use_keywords: bool = True
    use_complexity: bool = True
    use_confidence: bool = True
    default_tier: str = ""
    complexity_thresholds: Mapping[str, float] = field(default_factory=dict)
    complexity_weights: Mapping[str, float] = field(default_factory=dict)
    confidence_threshold: float = 0.6
    logprob_floor: float = DEFAULT_LOGPROB_FLOOR
    fallback_on_pinned: bool = True
    use_learned: bool = False
    learned_threshold: float = DEFAULT_LEARNED_THRESHOLD

    @property
    def label(self) -> str:
        return self.name or "default"


BUILTIN_POLICY = PolicySpec()


@dataclass(frozen=True, slots=True)
class RouterConfig:
    ladders: Mapping[str, tuple[TierSpec, ...]]  # tiers sorted by rank, cheapest first
    policies: tuple[PolicySpec, ...] = ()
    rules: tuple[RuleSpec, ...] = ()  # sorted by priority, highest first
    models: Mapping[str, ModelSpec] = field(default_factory=dict)  # every priced model, tiered or not
    loaded_at: float = 0.0
    # Chains and route names depend only on the snapshot: computed once per snapshot, not per request.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def tiers(self, ladder: str) -> tuple[TierSpec, ...]:
        return self.ladders.get(ladder) or self.ladders.get(DEFAULT_LADDER) or ()

    def policy_for(self, *, org_id: int | None, name: str = "") -> PolicySpec | None:
        """The org's policy of that name, else the global one; None when neither exists."""
        found_global = None
        for policy in self.policies:
            if policy.name != name:
                continue
            if policy.org_id == org_id and org_id is not None:
                return policy
            if policy.org_id is None:
                found_global = policy
        return found_global

    def route_names(self) -> frozenset[str]:
        names = self.memo.get("route_names")
        if names is None:
            names = self.memo["route_names"] = frozenset(p.name for p in self.policies if p.name)
        return names

    def chain(
        self, tiers: tuple[TierSpec, ...], start_rank: int, policy: PolicySpec, *, first: str = ""
    ) -> list[tuple[str, str]]:
        """`chain_build`, memoised for this snapshot (a fresh list each call: callers may keep it)."""
        key = ("chain", id(tiers), policy.id, policy.org_id, policy.name, start_rank, first)
        chain = self.memo.get(key)
        if chain is None:
            chain = self.memo[key] = tuple(chain_build(tiers, start_rank, policy, first=first))
        return list(chain)


@dataclass(frozen=True, slots=True)
class LearnedScore:
    """What the learned index says about a prompt (`apps.routing.learned.RouteIndex.score`).

    score: 0..1, the percentile of `gain` among the index's own prompts; gain: the mean premium-minus-cheap
    score of the k most similar labelled prompts; nearest: the cosine similarity of the closest one.
    """

    score: float
    gain: float
    nearest: float


class UnknownRoute(LookupError):
    pass


class NoRoutableModel(LookupError):
    pass


@dataclass(slots=True)
class RoutePlan:
    """What `route_plan` decided, with what the later stages need (complexity for the escalation risk)."""

    tier: str
    strategy: str
    reason: str
    chain: list[tuple[str, str]]
    policy: PolicySpec
    requested_tier: str = ""
    complexity: float | None = None
    features: dict[str, float] | None = None
    rule_id: int | None = None
    pinned_model: str = ""
    learned: LearnedScore | None = None
    note: str = ""  # a refused pin, kept in front of the reason of whatever decides instead

    @property
    def model(self) -> str:
        return self.chain[0][1] if self.chain else self.pinned_model


# --------------------------------------------------------------------------- request → route


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """How the requested model name is read: a route (policy), a tier, or a pin."""

    kind: str  # "route" | "tier" | "pin"
    policy_name: str = ""
    tier: str = ""
    model: str = ""


def target_parse(config: RouterConfig, requested_model: str) -> RouteTarget:
    name = (requested_model or "").strip()
    lowered = name.lower()
    if lowered in AUTO_ALIASES:
        return RouteTarget(kind="route")
    routes = config.route_names()
    if lowered.startswith(ROUTE_PREFIX):
        rest = name[len(ROUTE_PREFIX) :]
        if rest in routes:
            return RouteTarget(kind="route", policy_name=rest)
        if any(t.name == rest for t in config.tiers(DEFAULT_LADDER)):
            return RouteTarget(kind="tier", tier=rest)
        return RouteTarget(kind="route", policy_name=rest)  # unknown route: the caller reports it
    return RouteTarget(kind="pin", model=name)


# --------------------------------------------------------------------------- the triangle


def _ratio(best: float, value: float) -> float:
    if value <= 0:
        return 1.0
    return min(best / value, 1.0) if best > 0 else 0.0


def triangle_rank(models: tuple[ModelSpec, ...] | list[ModelSpec], policy: PolicySpec) -> list[tuple[ModelSpec, float]]:
    """Order a tier's models by the policy's weighted cost / latency / quality score, best first.

    Each axis is scaled to 0..1 within the tier: cost and latency as best/value (the cheapest or
    fastest model scores 1), quality as configured or learnt (0..1). A model without latency data
    gets the tier's median, so a new model is neither favoured nor punished for being unmeasured.
    """
    if not models:
        return []
    costs = [float(m.blended_per_1m) for m in models]
    positive_costs = [c for c in costs if c > 0]
    best_cost = min(positive_costs) if positive_costs else 0.0
    known = sorted(m.latency_p50_ms for m in models if m.latency_p50_ms is not None and m.latency_p50_ms > 0)
    median = known[len(known) // 2] if known else None
    latencies = [m.latency_p50_ms if (m.latency_p50_ms or 0) > 0 else median for m in models]
    best_latency = min((lat for lat in latencies if lat), default=None)

    wc, wl, wq = max(policy.weight_cost, 0.0), max(policy.weight_latency, 0.0), max(policy.weight_quality, 0.0)
    total = wc + wl + wq or 1.0
    scored = []
    for model, cost, latency in zip(models, costs, latencies, strict=True):
        cost_s = _ratio(best_cost, cost)
        latency_s = _ratio(best_latency, latency) if best_latency and latency else 1.0
        quality_s = min(max(model.quality, 0.0), 1.0)
        scored.append((model, round((wc * cost_s + wl * latency_s + wq * quality_s) / total, 6)))
    scored.sort(key=lambda pair: (-pair[1], float(pair[0].blended_per_1m), pair[0].model))
    return scored


def chain_build(tiers: tuple[TierSpec, ...], start_rank: int, policy: PolicySpec, *, first: str = "") -> list[tuple[str, str]]:
    """The fallback order from the tier of `start_rank`: its models by triangle score, then every higher tier's.

    Never a lower tier. `first` (a pinned model) goes in front of its own tier's models.
    """
    chain: list[tuple[str, str]] = []
    seen: set[str] = set()
    for tier in tiers:
        if tier.rank < start_rank:
            continue
        ranked = [m.model for m, _ in triangle_rank(tier.models, policy)]
        if first and tier.rank == start_rank and first in ranked:
            ranked.remove(first)
            ranked.insert(0, first)
        for model in ranked:
            if model not in seen:
                seen.add(model)
                chain.append((tier.name, model))
    return chain


def tier_by_name(tiers: tuple[TierSpec, ...], name: str) -> TierSpec | None:
    return next((t for t in tiers if t.name == name), None)


def tier_above(tiers: tuple[TierSpec, ...], name: str) -> TierSpec | None:
    current = tier_by_name(tiers, name)
    if current is None:
        return None
    return next((t for t in tiers if t.rank > current.rank and t.models), None)


def tier_of_model(tiers: tuple[TierSpec, ...], model: str) -> TierSpec | None:
    return next((t for t in tiers if any(m.model == model for m in t.models)), None)


# --------------------------------------------------------------------------- strategies


def keyword_match(
    rules: tuple[RuleSpec, ...], *, org_id: int | None, tiers: tuple[TierSpec, ...], view: PromptView
) -> RuleSpec | None:
    """The first matching rule in priority order (highest first; ties: the higher tier, then the lower id).

    Org rules and global rules compete on priority alike; a rule whose tier is not in the policy's
    ladder is ignored.
    """
    names = {t.name for t in tiers if t.models}
    for rule in rules:
        if rule.org_id is not None and rule.org_id != org_id:
            continue
        if rule.tier not in names:
            continue
        if rule.matches(view):
            return rule
    return None


def complexity_tier(score: float, tiers: tuple[TierSpec, ...], policy: PolicySpec) -> tuple[TierSpec, float]:
    """The highest tier whose threshold the score reaches, with that threshold (the lowest tier has none)."""
    usable = [t for t in tiers if t.models]
    chosen, threshold = usable[0], 0.0
    for tier in usable[1:]:
        tier_threshold = float(policy.complexity_thresholds.get(tier.name, tier.complexity_min))
        if score >= tier_threshold:
            chosen, threshold = tier, tier_threshold
    return chosen, threshold


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return prompt_text([message])
    return ""


def route_plan(
    config: RouterConfig,
    *,
    messages: Sequence[Mapping[str, Any]],
    requested_model: str,
    org_id: int | None,
    allow_pinning: bool = True,
    prompt_tokens: int | None = None,
) -> RoutePlan:
    """Apply the strategies in order (module docstring) and return the tier, the reason and the chain."""
    target = target_parse(config, requested_model)
    policy = config.policy_for(org_id=org_id, name=target.policy_name) if target.kind == "route" else None
    if policy is None and target.policy_name:
        raise UnknownRoute(f"route '{target.policy_name}' does not exist; use 'auto' or one of {sorted(config.route_names())}")
    if policy is None:
        policy = config.policy_for(org_id=org_id, name="") or BUILTIN_POLICY
    tiers = config.tiers(policy.ladder)
    usable = [t for t in tiers if t.models]

    if target.kind == "pin":
        pinned = target.model
        if allow_pinning:
            home = tier_of_model(tiers, pinned) or tier_of_model(config.tiers(DEFAULT_LADDER), pinned)
            home_ladder = tiers if tier_of_model(tiers, pinned) else config.tiers(DEFAULT_LADDER)
            if home is not None and policy.fallback_on_pinned:
                chain = config.chain(home_ladder, home.rank, policy, first=pinned)
            else:
                chain = [(home.name if home else "", pinned)]
            return RoutePlan(
                tier=home.name if home else "",
                strategy="pinned",
                reason=f"client pinned {pinned}",
                chain=chain,
                policy=policy,
                requested_tier=home.name if home else "",
                pinned_model=pinned,
            )
        refused = f"pin {pinned[:60]} refused (org disallows pinning); "
    else:
        refused = ""

    if not usable:
        raise NoRoutableModel(f"route '{policy.label}' has no tier with an enabled, priced model (ladder '{policy.ladder}')")

    if target.kind == "tier":
        tier = tier_by_name(tiers, target.tier) or usable[0]
        return RoutePlan(
            tier=tier.name,
            strategy="tier",
            reason=f"client asked for tier {tier.name}",
            chain=config.chain(tiers, tier.rank, policy),
            policy=policy,
            requested_tier=tier.name,
        )

    full_text = prompt_text(messages)
    features = complexity_features(list(messages), prompt_tokens=prompt_tokens, text=full_text)
    score = complexity_score(features, policy.complexity_weights or COMPLEXITY_WEIGHTS)

    if policy.use_keywords:
        rule = keyword_match(config.rules, org_id=org_id, tiers=tiers, view=PromptView.of(list(messages), full=full_text))
        if rule is not None:
            rule_tier = tier_by_name(tiers, rule.tier)
            if rule_tier is None:  # keyword_match only returns rules whose tier is on this ladder
                raise NoRoutableModel(f"rule {rule.id} points at tier '{rule.tier}', not on ladder '{policy.ladder}'")
            return RoutePlan(
                tier=rule_tier.name,
                strategy="keyword",
                reason=f"{refused}rule {rule.id} '{rule.name}' → {rule_tier.name}",
                chain=config.chain(tiers, rule_tier.rank, policy),
                policy=policy,
                requested_tier=rule_tier.name,
                complexity=score,
                features=features,
                rule_id=rule.id,
                note=refused,
            )

    if policy.use_complexity:
        tier, threshold = complexity_tier(score, tiers, policy)
        if tier is usable[0] and len(usable) > 1:
            nxt = usable[1]
            cut = float(policy.complexity_thresholds.get(nxt.name, nxt.complexity_min))
            reason = f"complexity={score:.2f}<{cut:.2f} → {tier.name}"
        else:
            reason = f"complexity={score:.2f}≥{threshold:.2f} → {tier.name}"
        return RoutePlan(
            tier=tier.name,
            strategy="complexity",
            reason=refused + reason,
            chain=config.chain(tiers, tier.rank, policy),
            policy=policy,
            requested_tier=tier.name,
            complexity=score,
            features=features,
            note=refused,
        )

    default = tier_by_name(tiers, policy.default_tier) if policy.default_tier else None
    tier = default if default is not None and default.models else usable[0]
    return RoutePlan(
        tier=tier.name,
        strategy="default",
        reason=f"{refused}policy '{policy.label}' default tier {tier.name}",
        chain=config.chain(tiers, tier.rank, policy),
        policy=policy,
        requested_tier=tier.name,
        complexity=score,
        features=features,
        note=refused,
    )


def learned_wanted(plan: RoutePlan) -> bool:
    """Whether the learned strategy would decide this request (so its score is worth an embedding)."""
    return plan.policy.use_learned and plan.strategy in ("complexity", "default")


def learned_apply(config: RouterConfig, plan: RoutePlan, learned: LearnedScore) -> RoutePlan:
    """Strategy 4: the plan `route_plan` made without the learned score, decided by it instead.

    score ≥ the policy's `learned_threshold` → the ladder's top tier, else its lowest: the index's labels
    say whether the cheap model was good enough, not how much stronger a model must be; a middle tier is
    reached by keyword rules, by the confidence check (one tier up) or by the fallback chain.
    """
    if not learned_wanted(plan):
        return plan
    policy = plan.policy
    tiers = config.tiers(policy.ladder)
    usable = [t for t in tiers if t.models]
    threshold = policy.learned_threshold
    up = learned.score >= threshold and len(usable) > 1
    tier = usable[-1] if up else usable[0]
    reason = (
        f"learned={learned.score:.2f}{'≥' if up else '<'}{threshold:.2f} → {tier.name} "
        f"(kNN premium win {learned.gain:+.2f}, nearest {learned.nearest:.2f})"
    )
    return RoutePlan(
        tier=tier.name,
        strategy="learned",
        reason=plan.note + reason,
        chain=config.chain(tiers, tier.rank, policy),
        policy=policy,
        requested_tier=tier.name,
        complexity=plan.complexity,
        features=plan.features,
        learned=learned,
        note=plan.note,
    )


def escalation_threshold(policy: PolicySpec, strategy: str) -> float:
    """The risk at which an answer is re-asked one tier up.

    After a learned decision it is never below the learned threshold: the risk is a noisy-or that is never
    below the learned score, so a lower bar would re-ask every prompt scored just under the threshold,
    paying for two calls where one premium call would have done. One threshold then governs both the
    direct send and the escalation, which is also what the offline sweep measures.
    """
    if strategy == "learned":
        return max(policy.confidence_threshold, policy.learned_threshold)
    return policy.confidence_threshold


def escalation_decide(
    *, policy: PolicySpec, strategy: str, complexity: float | None, uncertainty: float, learned: float | None = None
) -> tuple[bool, float]:
    """Whether an answer should be re-asked one tier up, and the risk it was judged on.

    A keyword rule that chose the tier vouches for the prompt, so only the answer's own uncertainty
    counts there; otherwise the prompt's learned score (when the learned strategy decided) or its
    complexity adds to it (noisy-or, `escalation_risk`). Pinned and tier-named requests are never
    escalated: the client chose.
    """
    if not policy.use_confidence or strategy in ("pinned", "tier", "downgrade"):
        return False, 0.0
    if strategy == "learned" and learned is not None:
        prior = learned
    else:
        prior = 0.0 if strategy == "keyword" or complexity is None else complexity
    risk = escalation_risk(prior, uncertainty)
    return risk >= escalation_threshold(policy, strategy), risk
