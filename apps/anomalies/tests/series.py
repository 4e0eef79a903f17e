"""Constructed hourly series for the detector tests: weekly seasonality with noise, and what goes wrong."""

from __future__ import annotations

import numpy as np

WEEK = 168


def seasonal(*, weeks: int = 5, seed: int = 1, noise: float = 4.0) -> np.ndarray:
    """Business-hours peak every day, weekends at 40 %: the shape of the seeded LLM spend."""
    rng = np.random.default_rng(seed)
    t = np.arange(weeks * WEEK)
    hour, dow = t % 24, (t // 24) % 7
    base = 100 * (1 + 0.6 * np.sin(2 * np.pi * (hour - 6) / 24)) * np.where(dow >= 5, 0.4, 1.0)
    return base + rng.normal(0, noise, t.size)


def flat(*, hours: int = 4 * WEEK, seed: int = 2, level: float = 100.0, noise: float = 4.0) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, noise, hours)


def with_spike(x: np.ndarray, *, at: int, size: float) -> np.ndarray:
    y = x.copy()
    y[at] += size
    return y


def with_shift(x: np.ndarray, *, at: int, size: float) -> np.ndarray:
    y = x.copy()
    y[at:] += size
    return y


def with_ramp(x: np.ndarray, *, start: int, per_hour: float) -> np.ndarray:
    return x + np.maximum(0, np.arange(x.size) - start) * per_hour
