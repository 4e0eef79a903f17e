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


@shared_task(bind=True, name="apps.anomalies.tasks.alert_delivery_send_task", ignore_result=True, max_retries=None)
def alert_delivery_send_task(self, delivery_id: int) -> str:
    from apps.anomalies.conf import knob

    max_attempts = int(knob("ALERT_WEBHOOK_MAX_ATTEMPTS"))
    final = self.request.retries + 1 >= max_attempts
    try:
        return services.alert_delivery_send(delivery_id=delivery_id, final_attempt=final)
    except services.DeliveryError as exc:
        # 2 s, 4 s, 8 s …: a receiver that is briefly down still gets the page, a dead one is given up on.
        raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc


@shared_task(name="apps.anomalies.tasks.alert_deliveries_requeue_task", ignore_result=True)
@tracked_job("alert_deliveries_requeue")
def alert_deliveries_requeue_task() -> int:
    return services.alert_deliveries_requeue()
