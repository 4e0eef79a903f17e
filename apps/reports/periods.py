"""Calendar months in UTC: the billing period of every report (TIME_ZONE is UTC, enforced by a check)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from finops import clock
from finops.errors import BadRequest

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @property
    def start(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    @property
    def end(self) -> dt.date:
        """The first day of the next month (exclusive)."""
        return self.next.start

    @property
    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    @property
    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start_at(self) -> dt.datetime:
        return day_start(self.start)

    @property
    def end_at(self) -> dt.datetime:
        return day_start(self.end)

    @property
    def length_days(self) -> int:
        return (self.end - self.start).days

    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range(self.length_days)]

    def days_until(self, last: dt.date) -> list[dt.date]:
        """The month's days up to `last` (inclusive): a month in progress has no data in its future."""
        return [day for day in self.days() if day <= last]

    def __str__(self) -> str:
        return self.label


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def month_of(day: dt.date) -> Month:
    return Month(day.year, day.month)


def current_month() -> Month:
    return month_of(clock.today())


def month_parse(value: str | None, *, default: Month | None = None) -> Month:
    """`YYYY-MM` → Month; empty → `default` (the current month)."""
    if not value:
        return default or current_month()
    match = _MONTH_RE.match(value.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise BadRequest(f"Expected a month as YYYY-MM, got {value!r}.", param="month")
    return Month(int(match.group(1)), int(match.group(2)))
