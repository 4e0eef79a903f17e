"""Router metrics (RouteLLM's definitions): PGR, APGR over premium share or cost, CPT, and the threshold sweep; pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# --------------------------------------------------------------------------- metrics (pure)


def pgr(quality: float, weak: float, strong: float) -> float:
    gap = strong - weak
    return (quality - weak) / gap if gap else 0.0


def apgr(points: Sequence[tuple[float, float]], weak: float, strong: float) -> float:
    """Area under PGR(share) for share in [0, 1]; `points` are (share, quality) of a threshold sweep.

    The sweep must contain the two ends (0 → all cheap, 1 → all premium), as a full sweep does.
    """
    xs, ys = _curve_xy(points, weak, strong)
    return float(np.trapezoid(ys, xs))


def apgr_by_cost(points: Sequence[tuple[float, float]], weak: float, strong: float) -> float:
    """APGR against cost normalised so always-cheap = 0 and always-premium = 1 (x = cost share).

    A cascade's curve can run past 1 (both calls on every prompt); the area is taken over [0, 1].
    """
    xs, ys = _curve_xy(points, weak, strong)
    if xs[-1] < 1.0:
        xs, ys = np.append(xs, 1.0), np.append(ys, ys[-1])
    grid_x = np.union1d(xs[xs <= 1.0], [0.0, 1.0])
    grid_y = np.interp(grid_x, xs, ys)
    return float(np.trapezoid(grid_y, grid_x))


def cpt(points: Sequence[tuple[float, float]], weak: float, strong: float, target: float) -> float | None:
    """The smallest share at which PGR reaches `target` along the curve (linear between points), else None."""
    xs, ys = _curve_xy(points, weak, strong)
    for i, y in enumerate(ys):
        if y >= target - 1e-12:
            if i == 0:
                return float(xs[0])
            x0, y0 = xs[i - 1], ys[i - 1]
            return float(x0 + (target - y0) * (xs[i] - x0) / (y - y0)) if y != y0 else float(xs[i])
    return None


def _curve_xy(points: Sequence[tuple[float, float]], weak: float, strong: float) -> tuple[np.ndarray, np.ndarray]:
    ordered = sorted(points, key=lambda p: (p[0], p[1]))
    xs = np.array([p[0] for p in ordered], dtype=float)
    ys = np.array([pgr(p[1], weak, strong) for p in ordered], dtype=float)
    return xs, ys


def sweep(
    weak_score: np.ndarray,
    strong_score: np.ndarray,
    weak_cost: np.ndarray,
    strong_cost: np.ndarray,
    score: np.ndarray,
    direct: np.ndarray | None = None,
) -> list[tuple[float, float, float]]:
    """(share, quality, cost) for every threshold θ of "premium iff score ≥ θ", from θ = +∞ down to min(score).

    `direct` (same scale as `score`, never above it): a prompt with direct ≥ θ goes straight to premium;
    other premium prompts are cascades that paid a cheap call first. None = every premium call is direct.
    Costs are floats in micro-dollars here only for the sweep's arithmetic; reported costs are Decimal.
    """
    n = len(score)
    if direct is None:
        direct = score
    order = np.argsort(-score, kind="stable")
    s_sorted = score[order]
    gain = (strong_score - weak_score)[order]
    cum_gain = np.concatenate([[0.0], np.cumsum(gain)])
    cum_strong_cost = np.concatenate([[0.0], np.cumsum(strong_cost[order])])
    d_order = np.argsort(-direct, kind="stable")
    d_sorted = direct[d_order]
    cum_direct_weak_cost = np.concatenate([[0.0], np.cumsum(weak_cost[d_order])])
    base_quality = float(weak_score.sum())
    total_weak_cost = float(weak_cost.sum())

    thresholds = np.unique(s_sorted)[::-1]
    points = [(0.0, base_quality / n, total_weak_cost)]
    for theta in thresholds:
        k = int(np.searchsorted(-s_sorted, -theta, side="right"))  # prompts with score ≥ θ
        kd = int(np.searchsorted(-d_sorted, -theta, side="right"))  # prompts sent direct
        quality = (base_quality + cum_gain[k]) / n
        cost = total_weak_cost - cum_direct_weak_cost[kd] + cum_strong_cost[k]
        points.append((k / n, quality, cost))
    return points


