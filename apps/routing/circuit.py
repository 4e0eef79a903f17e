"""Per-model circuit breaker, in process (each gateway worker keeps its own).

closed ──(N consecutive failures)──▶ open ──(cooldown over)──▶ half-open ──(probe ok)──▶ closed
                                       ▲                            │
                                       └───────(probe failed)───────┘

While open, `allows()` is False and the fallback chain skips the model. After the cooldown one
request is let through as a probe; until it reports back, others still skip the model (a probe that
never reports is replaced after another cooldown). Per-worker state is the documented trade-off: a
worker learns about an outage from its own N failures, which bounds the wasted calls at N per worker
per cooldown, and needs no network round trip on the hot path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(slots=True)
class _ModelState:
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe_started: float | None = None
    opens: int = 0


class CircuitBreaker:
    def __init__(self, *, failures: int = 5, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = max(int(failures), 1)
        self.cooldown_s = float(cooldown_s)
        self.clock = clock
        self._models: dict[str, _ModelState] = {}
        self._lock = threading.Lock()

    def state(self, model: str) -> str:
        with self._lock:
            st = self._models.get(model)
            if st is None:
                return CLOSED
            if st.state == OPEN and self.clock() - st.opened_at >= self.cooldown_s:
                return HALF_OPEN
            return st.state

    def allows(self, model: str) -> bool:
        """May a request be sent to `model` now? In half-open, True once (the probe)."""
        with self._lock:
            st = self._models.get(model)
            if st is None or st.state == CLOSED:
                return True
            now = self.clock()
            if st.state == OPEN:
                if now - st.opened_at < self.cooldown_s:
                    return False
                st.state, st.probe_started = HALF_OPEN, now
                return True
            # Half-open with a probe in flight: wait for it, unless it was lost.
            if st.probe_started is not None and now - st.probe_started < self.cooldown_s:
                return False
            st.probe_started = now
            return True

    def record(self, model: str, ok: bool) -> str | None:
        """Report an outcome; returns "opened" or "closed" when the state changed, else None."""
        with self._lock:
            st = self._models.setdefault(model, _ModelState())
            if ok:
                changed = "closed" if st.state != CLOSED else None
                st.state, st.failures, st.probe_started = CLOSED, 0, None
                return changed
            st.failures += 1
            if st.state == HALF_OPEN or (st.state == CLOSED and st.failures >= self.failures):
                st.state, st.opened_at, st.probe_started = OPEN, self.clock(), None
                st.opens += 1
                return "opened"
            if st.state == OPEN:
                st.opened_at = self.clock()  # a late failure while open restarts the cooldown
            return None

    def snapshot(self) -> dict[str, str]:
        return {model: self.state(model) for model in list(self._models)}

    def reset(self, model: str | None = None) -> None:
        with self._lock:
            if model is None:
                self._models.clear()
            else:
                self._models.pop(model, None)
