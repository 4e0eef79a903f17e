"""Thin Celery tasks: take ids, call services."""

from __future__ import annotations

from celery import shared_task

from apps.anomalies import services
from finops.jobs import tracked_job


@shared_task(name="apps.anomalies.tasks.anomaly_scan_task", ignore_result=True)
@tracked_job("anomaly_scan")
def anomaly_scan_task() -> str:
    result = services.anomaly_scan()
    return str(result)
