import datetime as dt

from celery import shared_task

from apps.ledger.outbox import ledger_outbox_replay
from apps.ledger.services import cost_rollup_days, cost_rollup_hourly
from finops.jobs import tracked_job


@shared_task(name="apps.ledger.tasks.cost_rollup_hourly_task")
@tracked_job("cost_rollup_hourly")
def cost_rollup_hourly_task() -> int:
    return cost_rollup_hourly()


@shared_task(name="apps.ledger.tasks.cost_rollup_days_task")
def cost_rollup_days_task(since: str, until: str) -> int:
    """A backfill of the days [since, until] (ISO dates), one day per statement: a worker killed midway leaves
    every day either rewritten or as it was, and a re-run completes it (`manage.py rollup_costs` does the same)."""
    return sum(count for _, count in cost_rollup_days(since=dt.date.fromisoformat(since), until=dt.date.fromisoformat(until)))


@shared_task(name="apps.ledger.tasks.ledger_outbox_replay_task")
@tracked_job("ledger_outbox_replay")
def ledger_outbox_replay_task() -> str:
    return str(ledger_outbox_replay())
