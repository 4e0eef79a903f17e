"""The one clock: every "now" and "today" in finops comes from here, so tests (and demos) can pin it.

Hourly and daily buckets, the seed's month, budget periods and the anomaly scan's horizon all hang on
"now". Code that asks `timezone.now()` directly passes on the day it was written and fails on another
(a Saturday, the first hour of a month, a year end): that is what this module prevents.

- `now()` / `today()`: the current instant (aware, UTC) and the current UTC date.
- `pinned(at)`: a context manager that pins the clock to `at` in this process. With `frozen=True`
  (the default) "now" stays at `at`; with `frozen=False` it starts at `at` and advances in real time.
- `FINOPS_CLOCK_START` (ISO 8601, e.g. `2027-03-01T00:30:00Z`) in the environment starts every process's
  clock at that instant, advancing in real time from the process's start. It exists for demos and for
  running a child process (gateway, Celery worker) on the same pinned day as the test that started it.

The database's own `now()` (budget periods, reservation expiry in SQL) is not affected; to move a whole
stack to another date, run it under `faketime` (see docs/reliability.md, "Dates").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from collections.abc import Iterator

_lock = threading.Lock()
_pinned_at: dt.datetime | None = None  # the pinned instant
_pinned_mono: float | None = None  # monotonic time at pinning; None while frozen


def _parse(value: str) -> dt.datetime:
    at = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise ValueError(f"FINOPS_CLOCK_START must carry a UTC offset (e.g. 2027-03-01T00:30:00Z), got {value!r}")
    return at.astimezone(dt.UTC)


def _from_environment() -> tuple[dt.datetime | None, float | None]:
    value = os.environ.get("FINOPS_CLOCK_START", "").strip()
    return (_parse(value), time.monotonic()) if value else (None, None)


_env_at, _env_mono = _from_environment()


def now() -> dt.datetime:
    """The current instant, timezone-aware in UTC (pinned in tests)."""
    at, mono = _pinned_at, _pinned_mono
    if at is None:
        at, mono = _env_at, _env_mono
    if at is None:
        return dt.datetime.now(dt.UTC)
    if mono is None:
        return at
    return at + dt.timedelta(seconds=time.monotonic() - mono)


def wall_now() -> dt.datetime:
    """The machine's real time, never pinned: for timestamps another system judges against its own clock
    (Alertmanager's startsAt/endsAt, HTTP dates). Business time — buckets, periods, "the last 24 hours" — is `now()`."""
    return dt.datetime.now(dt.UTC)


def today() -> dt.date:
    """The current UTC date."""
    return now().date()


def is_pinned() -> bool:
    return _pinned_at is not None or _env_at is not None


@contextlib.contextmanager
def pinned(at: dt.datetime, *, frozen: bool = True) -> Iterator[dt.datetime]:
    """Pin this process's clock to `at` (aware) for the duration of the block; blocks nest."""
    global _pinned_at, _pinned_mono
    if at.tzinfo is None:
        raise ValueError("pin the clock to an aware datetime (UTC)")
    with _lock:
        previous = (_pinned_at, _pinned_mono)
        _pinned_at, _pinned_mono = at.astimezone(dt.UTC), (None if frozen else time.monotonic())
    try:
        yield _pinned_at
    finally:
        with _lock:
            _pinned_at, _pinned_mono = previous


def environment_for(at: dt.datetime) -> dict[str, str]:
    """The variables that start a child process's clock at `at` (it then advances in real time)."""
    return {"FINOPS_CLOCK_START": at.astimezone(dt.UTC).isoformat()}
