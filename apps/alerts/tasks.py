"""Thin Celery tasks: take ids, call services."""

from __future__ import annotations

from celery import shared_task

from apps.alerts import services
from finops.conf import conf
from finops.jobs import tracked_job


@shared_task(bind=True, name="apps.alerts.tasks.alert_delivery_send_task", ignore_result=True, max_retries=None)
def alert_delivery_send_task(self, delivery_id: int) -> str:
    final = self.request.retries + 1 >= conf().alert_webhook_max_attempts
    try:
        return services.alert_delivery_send(delivery_id=delivery_id, final_attempt=final)
    except services.DeliveryError as exc:
        # 2 s, 4 s, 8 s …: a receiver that is briefly down still gets the page, a dead one is given up on.
        raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc


@shared_task(name="apps.alerts.tasks.alert_deliveries_requeue_task", ignore_result=True)
@tracked_job("alert_deliveries_requeue")
def alert_deliveries_requeue_task() -> int:
    return services.alert_deliveries_requeue()
