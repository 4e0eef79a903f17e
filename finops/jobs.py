"""Bookkeeping for scheduled jobs: every beat task records its last success here."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TypeVar

from django.db.models import F

from finops import clock
from finops.models import JobRun

T = TypeVar("T")


def job_record_success(*, name: str, duration_seconds: float, result: str = "") -> None:
    updated = JobRun.objects.filter(name=name).update(
        last_success_at=clock.now(),
        last_duration_seconds=duration_seconds,
        last_result=result[:255],
        successes=F("successes") + 1,
    )
    if not updated:
        JobRun.objects.get_or_create(
            name=name,
            defaults={
                "last_success_at": clock.now(),
                "last_duration_seconds": duration_seconds,
                "last_result": result[:255],
                "successes": 1,
            },
        )


def tracked_job(name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a task body so that a successful run is recorded under `name`."""

    def decorator(func: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(func)
        def wrapper(*args, **kwargs) -> T:
            started = time.monotonic()
            result = func(*args, **kwargs)
            job_record_success(name=name, duration_seconds=time.monotonic() - started, result=str(result))
            return result

        return wrapper

    return decorator
