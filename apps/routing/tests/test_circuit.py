"""The per-model circuit breaker, driven by a fake clock (no sleeping, no timing assertions)."""

from __future__ import annotations

from apps.routing.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, failures: int = 3, cooldown: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker(failures=failures, cooldown_s=cooldown, clock=clock)


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    cb = breaker(clock)
    cb.record("m", False)
    cb.record("m", False)
    cb.record("m", True)  # a success resets the count
    cb.record("m", False)
    cb.record("m", False)
    assert cb.allows("m") and cb.state("m") == CLOSED
    assert cb.record("m", False) == "opened"
    assert cb.state("m") == OPEN
    assert not cb.allows("m")
    assert cb.allows("other")  # per model


def test_open_circuit_skips_the_model_until_the_cooldown_ends_then_lets_one_probe() -> None:
    clock = Clock()
    cb = breaker(clock, failures=2, cooldown=30.0)
    cb.record("m", False)
    cb.record("m", False)
    clock.now += 29.9
    assert not cb.allows("m")
    clock.now += 0.2
    assert cb.state("m") == HALF_OPEN
    assert cb.allows("m")  # the probe
    assert not cb.allows("m")  # others wait for the probe's outcome
    assert cb.record("m", True) == "closed"
    assert cb.allows("m") and cb.allows("m")


def test_a_failed_probe_reopens_for_a_new_cooldown() -> None:
    clock = Clock()
    cb = breaker(clock, failures=1, cooldown=10.0)
    cb.record("m", False)
    clock.now += 10
    assert cb.allows("m")
    assert cb.record("m", False) == "opened"
    assert not cb.allows("m")
    clock.now += 9
    assert not cb.allows("m")
    clock.now += 1
    assert cb.allows("m")


def test_a_lost_probe_is_replaced_after_another_cooldown() -> None:
    clock = Clock()
    cb = breaker(clock, failures=1, cooldown=5.0)
    cb.record("m", False)
    clock.now += 5
    assert cb.allows("m")  # probe sent, never reported
    clock.now += 4
    assert not cb.allows("m")
    clock.now += 1
    assert cb.allows("m")


def test_snapshot_and_reset() -> None:
    clock = Clock()
    cb = breaker(clock, failures=1)
    cb.record("a", False)
    cb.record("b", True)
    assert cb.snapshot() == {"a": OPEN, "b": CLOSED}
    cb.reset("a")
    assert cb.allows("a")
    cb.reset()
    assert cb.snapshot() == {}
