import pytest
from django.core import mail

from apps.alerts import services
from apps.alerts.models import AlertDelivery, AlertRoute
from apps.alerts.tests.helpers import WebhookReceiver


def dispatch(**overrides) -> int:
    kwargs = {
        "severity": "critical",
        "scope_type": "org",
        "org_id": None,
        "title": "Budget org 'acme' reached its cap",
        "text": "Acme has spent $1,000.00 of its monthly cap of $1000.",
        "payload": {"kind": "budget_threshold", "budget_id": 7, "spent_usd": "1000.00"},
    }
    return services.alert_dispatch(**{**kwargs, **overrides})


@pytest.mark.django_db
def test_alert_dispatch_reaches_a_local_webhook_as_slack_json():
    with WebhookReceiver() as hook:
        AlertRoute.objects.create(name="pager", severity="critical", receiver="webhook", target=hook.url)
        assert dispatch() == 1
        delivery = AlertDelivery.objects.get()
        assert services.alert_delivery_send(delivery_id=delivery.id) == "sent"
        assert hook.received.wait(5)
    body = hook.bodies[0]
    assert body["text"] == "[CRITICAL] Budget org 'acme' reached its cap"
    assert body["blocks"][0]["type"] == "header"
    assert body["attachments"][0]["color"] == "#E01E5A"
    assert body["finops"]["budget_id"] == 7
    delivery.refresh_from_db()
    assert delivery.status == "sent" and delivery.attempts == 1 and delivery.sent_at


@pytest.mark.django_db
def test_a_delivery_is_sent_once_even_if_two_workers_try():
    with WebhookReceiver() as hook:
        AlertRoute.objects.create(name="pager", severity="critical", receiver="webhook", target=hook.url)
        dispatch()
        delivery = AlertDelivery.objects.get()
        assert services.alert_delivery_send(delivery_id=delivery.id) == "sent"
        assert services.alert_delivery_send(delivery_id=delivery.id) == "sent"
    assert len(hook.bodies) == 1


@pytest.mark.django_db
def test_a_failing_webhook_is_retried_then_marked_failed():
    with WebhookReceiver(status=500) as hook:
        AlertRoute.objects.create(name="pager", severity="critical", receiver="webhook", target=hook.url)
        dispatch()
        delivery = AlertDelivery.objects.get()
        with pytest.raises(services.DeliveryError):
            services.alert_delivery_send(delivery_id=delivery.id)
        delivery.refresh_from_db()
        assert delivery.status == "pending" and "500" in delivery.last_error
        assert services.alert_delivery_send(delivery_id=delivery.id, final_attempt=True) == "failed"
    assert len(hook.bodies) == 2
    assert AlertDelivery.objects.get().attempts == 2


@pytest.mark.django_db
def test_email_goes_through_django_mail():
    AlertRoute.objects.create(name="finance", severity="warning", receiver="email", target="fin@example.com, cfo@example.com")
    assert dispatch(severity="warning") == 1
    services.alert_delivery_send(delivery_id=AlertDelivery.objects.get().id)
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["fin@example.com", "cfo@example.com"]
    assert mail.outbox[0].subject.startswith("[finops warning]")


@pytest.mark.django_db
def test_routes_match_severity_scope_type_and_org(make_tenant):
    acme = make_tenant(org="Acme").org
    other = make_tenant(org="Other", user="zed").org
    AlertRoute.objects.create(name="all critical", severity="critical", receiver="prometheus")
    AlertRoute.objects.create(
        name="acme team critical", severity="critical", scope_type="team", org=acme, receiver="email", target="a@x.io"
    )
    AlertRoute.objects.create(name="warnings", severity="warning", receiver="email", target="w@x.io")
    AlertRoute.objects.create(name="disabled", severity="critical", receiver="email", target="d@x.io", enabled=False)
    assert dispatch(scope_type="team", org_id=acme.id) == 2
    assert dispatch(scope_type="org", org_id=acme.id) == 1
    assert dispatch(scope_type="team", org_id=other.id) == 1
    assert dispatch(scope_type="team", org_id=None) == 1
    assert dispatch(severity="warning", scope_type="member", org_id=other.id) == 1
    assert dispatch(severity="info") == 0
    # Prometheus routes are counted but need no delivery: the gauges already carry the state.
    assert AlertDelivery.objects.filter(receiver="prometheus").count() == 0


@pytest.mark.django_db
def test_unknown_severity_is_an_error():
    with pytest.raises(ValueError):
        dispatch(severity="urgent")


@pytest.mark.django_db
def test_payload_that_is_not_json_is_stringified():
    import datetime as dt
    from decimal import Decimal

    AlertRoute.objects.create(name="w", severity="critical", receiver="email", target="a@x.io")
    dispatch(payload={"at": dt.date(2025, 1, 2), "spent": Decimal("1.50")})
    assert AlertDelivery.objects.get().payload == {"at": "2025-01-02", "spent": "1.50"}
