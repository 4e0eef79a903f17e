"""What the router decided for one request: a value the gateway keeps on its request context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apps.routing.engine import RoutePlan


@dataclass(slots=True)
class RouteDecision:
    """What the router chose. `chain` is the fallback order: this model first, then upward only.

    `plan` is the router's own working (policy, complexity score, learned score): the confidence check
    and a budget downgrade start from it.
    """

    model: str
    tier: str = ""
    provider: str = ""
    strategy: str = ""  # pinned, keyword, complexity, confidence, default, downgrade, fallback
    reason: str = ""
    requested_tier: str = ""
    chain: list[tuple[str, str]] = field(default_factory=list)  # [(tier, model), ...] to try in order
    plan: RoutePlan | None = field(default=None, repr=False)


@dataclass(slots=True, frozen=True)
class ConfidenceCheck:
    """The router's verdict on a cheap answer: re-ask it higher up (`escalate`, starting at `target`), and why."""

    escalate: bool
    uncertainty: float
    risk: float
    signals: dict
    target: tuple[str, str] | None = None
    reason: str = ""
