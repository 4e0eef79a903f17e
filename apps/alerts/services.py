"""Alert writes: dispatch to the matching routes, delivery (webhook, email) with retries, and the requeue sweep."""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.request
from typing import Any

from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q

from apps.alerts.models import AlertDelivery, AlertRoute, Severity
from finops import clock
from finops.conf import conf

logger = logging.getLogger(__name__)

_SEVERITY_COLOR: dict[str, str] = {Severity.INFO: "#439FE0", Severity.WARNING: "#ECB22E", Severity.CRITICAL: "#E01E5A"}


class DeliveryError(Exception):
    """A receiver refused or could not be reached; the Celery task retries it."""


# --- alert routing ------------------------------------------------------------------------------------


def alert_routes_matching(*, severity: str, scope_type: str, org_id: int | None) -> list[AlertRoute]:
    routes = AlertRoute.objects.filter(enabled=True, severity=severity)
    routes = routes.filter(Q(scope_type="") | Q(scope_type=scope_type))
    routes = routes.filter(Q(org__isnull=True) | Q(org_id=org_id)) if org_id is not None else routes.filter(org__isnull=True)
    return list(routes.order_by("id"))


def slack_message(*, severity: str, title: str, text: str, payload: dict) -> dict:
    """Slack-compatible incoming-webhook JSON: `text` for notifications, blocks and an attachment for people."""
    fields = [{"type": "mrkdwn", "text": f"*{key}*\n{value}"} for key, value in list(payload.items())[:10] if _is_scalar(value)]
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000] or title}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    return {
        "text": f"[{severity.upper()}] {title}",
        "blocks": blocks,
        "attachments": [{"color": _SEVERITY_COLOR.get(severity, "#999999"), "fallback": text[:500], "text": text[:3000]}],
        "finops": {"severity": severity, **payload},
    }


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def alert_dispatch(*, severity: str, scope_type: str, org_id: int | None, title: str, text: str, payload: dict) -> int:
    """Send an alert to every enabled route that matches severity, scope type and org; return how many.

    Webhook and email deliveries are recorded as `AlertDelivery` rows and sent by a Celery task after
    the surrounding transaction commits, so a slow receiver never blocks the caller (the anomaly scan,
    the budget threshold job). Prometheus routes count as delivered: the gauges already carry the state
    and Alertmanager does the paging. `payload` must be JSON-serialisable (str() is applied otherwise).
    """
    from apps.alerts import metrics

    if severity not in Severity.values:
        raise ValueError(f"unknown severity {severity!r}")
    payload = json.loads(json.dumps(payload, default=str))
    anomaly_id = payload.get("anomaly_id") if isinstance(payload.get("anomaly_id"), int) else None
    dispatched = 0
    to_send: list[int] = []
    for route in alert_routes_matching(severity=severity, scope_type=scope_type, org_id=org_id):
        dispatched += 1
        metrics.alerts_dispatched.labels(receiver=route.receiver, severity=severity).inc()
        if route.receiver == AlertRoute.Receiver.PROMETHEUS:
            continue
        delivery = AlertDelivery.objects.create(
            route=route,
            anomaly_id=anomaly_id,
            receiver=route.receiver,
            target=route.target,
            severity=severity,
            scope_type=scope_type,
            org_id=org_id,
            title=title[:300],
            text=text,
            payload=payload,
        )
        to_send.append(delivery.id)
    if to_send:
        transaction.on_commit(lambda: _enqueue_deliveries(to_send))
    return dispatched


def _enqueue_deliveries(delivery_ids: list[int]) -> None:
    from apps.alerts.tasks import alert_delivery_send_task

    for delivery_id in delivery_ids:
        try:
            # A dead broker must not break the caller: the row stays pending and the sweep retries it.
            alert_delivery_send_task.apply_async(
                args=[delivery_id], retry=True, retry_policy={"max_retries": 2, "interval_start": 0.1}
            )
        except Exception:
            logger.exception("could not enqueue alert delivery %s; the pending sweep will retry", delivery_id)


def alert_delivery_send(*, delivery_id: int, final_attempt: bool = False) -> str:
    """Send one delivery. Claims it with a conditional UPDATE so two workers never both send it.

    Returns the resulting status. Raises DeliveryError on a failure that is worth retrying, unless
    `final_attempt`, in which case the row is marked failed.
    """
    claimed = AlertDelivery.objects.filter(id=delivery_id, status__in=[AlertDelivery.Status.PENDING]).update(
        status=AlertDelivery.Status.SENDING, attempts=F("attempts") + 1
    )
    if not claimed:
        return AlertDelivery.objects.filter(id=delivery_id).values_list("status", flat=True).first() or "missing"
    delivery = AlertDelivery.objects.get(id=delivery_id)
    try:
        if delivery.receiver == AlertRoute.Receiver.WEBHOOK:
            _webhook_post(
                url=delivery.target,
                body=slack_message(
                    severity=delivery.severity, title=delivery.title, text=delivery.text, payload=delivery.payload
                ),
            )
        elif delivery.receiver == AlertRoute.Receiver.EMAIL:
            recipients = [address.strip() for address in delivery.target.split(",") if address.strip()]
            send_mail(
                subject=f"[finops {delivery.severity}] {delivery.title}",
                message=f"{delivery.text}\n\n{json.dumps(delivery.payload, indent=2, sort_keys=True)}",
                from_email=None,
                recipient_list=recipients,
                fail_silently=False,
            )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        status = AlertDelivery.Status.FAILED if final_attempt else AlertDelivery.Status.PENDING
        AlertDelivery.objects.filter(id=delivery_id).update(status=status, last_error=error)
        if final_attempt:
            logger.error("alert delivery %s failed for good: %s", delivery_id, error)
            return status
        raise DeliveryError(error) from exc
    AlertDelivery.objects.filter(id=delivery_id).update(status=AlertDelivery.Status.SENT, sent_at=clock.now(), last_error="")
    return AlertDelivery.Status.SENT


def _webhook_post(*, url: str, body: dict) -> None:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=conf().alert_webhook_timeout_s) as response:  # noqa: S310 (admin-configured URL)
        if response.status >= 300:
            raise DeliveryError(f"webhook answered {response.status}")


def alert_deliveries_requeue(*, older_than_seconds: int = 300) -> int:
    """Re-enqueue deliveries left pending (broker down at dispatch) or stuck sending (worker died)."""
    cutoff = clock.now() - dt.timedelta(seconds=older_than_seconds)
    AlertDelivery.objects.filter(status=AlertDelivery.Status.SENDING, created_at__lt=cutoff).update(
        status=AlertDelivery.Status.PENDING
    )
    ids = list(
        AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING, created_at__lt=cutoff).values_list("id", flat=True)[
            :500
        ]
    )
    _enqueue_deliveries(ids)
    return len(ids)


def alert_deliveries_retry(*, delivery_ids: list[int]) -> int:
    ids = list(AlertDelivery.objects.filter(id__in=delivery_ids, status=AlertDelivery.Status.FAILED).values_list("id", flat=True))
    AlertDelivery.objects.filter(id__in=ids).update(status=AlertDelivery.Status.PENDING, attempts=0)
    transaction.on_commit(lambda: _enqueue_deliveries(ids))
    return len(ids)
