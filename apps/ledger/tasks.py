from celery import shared_task

from apps.ledger.services import cost_rollup_hourly
from finops.jobs import tracked_job


@shared_task(name="apps.ledger.tasks.cost_rollup_hourly_task")
@tracked_job("cost_rollup_hourly")
def cost_rollup_hourly_task() -> int:
    return cost_rollup_hourly()
