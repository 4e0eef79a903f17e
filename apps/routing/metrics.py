"""Per-process routing metrics. Labels are bounded: strategy (a fixed set), tier (admin-defined, a handful), model (catalog models only)."""

from __future__ import annotations

from prometheus_client import Counter

ROUTE_DECISIONS = Counter(
    "finops_route_decisions_total",
    "Routing decisions by the strategy that decided (pinned, tier, keyword, learned, complexity, default, downgrade) and the "
    "tier chosen.",
    ["strategy", "tier"],
)
LEARNED_SCORES = Counter(
    "finops_route_learned_scores_total",
    "Learned-strategy lookups by outcome: cache_vector (scored with the semantic cache's embedding), embedded (the "
    "router embedded the prompt), no_index, no_text, no_vector (the embedding model is unavailable; complexity decided), abstained_far (the prompt is "
    "far from the exemplars for its neighbourhood; complexity decided), abstained_disagree (the neighbours' vote cannot "
    "tell it from an average prompt; complexity decided).",
    ["outcome"],
)
CONFIDENCE_CHECKS = Counter(
    "finops_route_confidence_checks_total",
    "Confidence checks of an answer, by the tier that answered and the outcome (keep, escalate).",
    ["tier", "outcome"],
)
CIRCUIT_TRANSITIONS = Counter(
    "finops_route_circuit_transitions_total",
    "Circuit breaker state changes per model (opened, closed), per worker.",
    ["model", "state"],
)
