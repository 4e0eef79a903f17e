"""The admin of alert routes and deliveries."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse


@pytest.fixture
def admin_client_logged(client, db):
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_alert_routes_are_editable(admin_client_logged):
    url = reverse("admin:alerts_alertroute_add")
    response = admin_client_logged.post(
        url,
        {
            "name": "pager",
            "enabled": "on",
            "severity": "critical",
            "scope_type": "",
            "org": "",
            "receiver": "webhook",
            "target": "http://127.0.0.1:9/x",
        },
    )
    assert response.status_code == 302
    assert admin_client_logged.get(reverse("admin:alerts_alertroute_changelist")).status_code == 200
    assert admin_client_logged.get(reverse("admin:alerts_alertdelivery_changelist")).status_code == 200
