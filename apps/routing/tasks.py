from celery import shared_task

from apps.routing.services import tier_latency_refresh
from finops.jobs import tracked_job


@shared_task(name="apps.routing.tasks.tier_latency_refresh_task")
@tracked_job("routing_latency_refresh")
def tier_latency_refresh_task() -> int:
    return tier_latency_refresh()
