from celery import shared_task

from apps.reports.services import route_rollup_hourly
from finops.jobs import tracked_job


@shared_task(name="apps.reports.tasks.route_rollup_hourly_task")
@tracked_job("route_rollup_hourly")
def route_rollup_hourly_task() -> int:
    return route_rollup_hourly()
