"""The day-range rollup command shared by `rollup_costs` (ledger) and `rollup_routes` (reports)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from django.core.management.base import BaseCommand
from django.db.models import Min
from tqdm import tqdm

from apps.ledger.models import LLMRequest
from finops import clock


class DayRangeRollupCommand(BaseCommand):
    """Recompute a daily summary over [--since, --until] (default: yesterday and today), or --all days.

    Subclasses set `rollup` (a `*_rollup_days(since=, until=)` service yielding (day, rows written)) and `noun`.
    """

    rollup: Callable[..., Iterable[tuple[dt.date, int]]]
    noun = "summary rows"

    def add_arguments(self, parser):
        parser.add_argument("--since", type=dt.date.fromisoformat, help="first day (YYYY-MM-DD)")
        parser.add_argument("--until", type=dt.date.fromisoformat, help="last day, inclusive (default today)")
        parser.add_argument("--all", action="store_true", help="from the first request in the ledger")

    def handle(self, *args, **options):
        today = clock.today()
        since = options["since"]
        if options["all"]:
            first = LLMRequest.objects.aggregate(first=Min("received_at"))["first"]
            since = first.date() if first else today
        since = since or today - dt.timedelta(days=1)
        until = options["until"] or today
        days = (until - since).days + 1
        written = 0
        rollup = type(self).rollup  # a plain function stored on the class, not a method
        for _, count in tqdm(rollup(since=since, until=until), total=days, unit="day", disable=days < 3):
            written += count
        self.stdout.write(f"rolled up {days} day(s) from {since} to {until}: {written} {self.noun} written")
