"""A real Celery worker with an embedded beat runs the scan, and the alert reaches a local webhook."""

import datetime as dt
import os
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from apps.alerts.models import AlertDelivery, AlertRoute
from apps.alerts.tests.helpers import WebhookReceiver
from apps.anomalies.models import Anomaly
from apps.anomalies.tests.helpers import diurnal, ledger_hours
from finops.models import JobRun

ROOT = settings.BASE_DIR


@pytest.mark.django_db(transaction=True)
def test_worker_and_beat_run_the_scan_and_the_webhook_gets_each_alert_once(make_tenant, tmp_path, redis_client, subprocess_env):
    tenant = make_tenant(org="Globex", team="Risk", user="bob")
    end = timezone.now().replace(minute=0, second=0, microsecond=0)
    ledger_hours(tenant, end=end - dt.timedelta(hours=1), hours=10 * 24 - 1, per_hour=diurnal)
    ledger_hours(tenant, end=end, hours=1, per_hour=lambda i: 400, cost=Decimal("0.05"), model="gpt-4o", tier="premium")
    with WebhookReceiver() as hook:
        AlertRoute.objects.create(name="sre", severity="warning", scope_type="org", receiver="webhook", target=hook.url)
        env = {**subprocess_env, "DJANGO_SETTINGS_MODULE": "apps.anomalies.tests.beat_settings"}
        cmd = [
            sys.executable, "-m", "celery", "-A", "finops", "worker", "-B", "--pool=solo", "--loglevel=WARNING",
            "-s", str(tmp_path / "beat-schedule"), "-n", f"anomtest-{os.getpid()}@localhost",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert hook.received.wait(60), "no alert reached the webhook within 60 s"
            # Beat keeps firing every 2 s; let it run the scan a few more times: still one alert.
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and JobRun.objects.filter(name="anomaly_scan", successes__gte=3).count() == 0:
                time.sleep(0.5)
        finally:
            proc.terminate()
            output = proc.communicate(timeout=20)[0]
    assert JobRun.objects.get(name="anomaly_scan").successes >= 3, output[-3000:]
    # One alert per incident however often beat ran the scan: the org's spend, and its premium share.
    org_incidents = set(Anomaly.objects.filter(scope_type="org", severity="warning").values_list("id", flat=True))
    sent = [body["finops"]["anomaly_id"] for body in hook.bodies]
    assert sorted(sent) == sorted(org_incidents), output[-3000:]
    anomaly = Anomaly.objects.get(scope_type="org", detector="combined")
    body = next(b for b in hook.bodies if b["finops"]["anomaly_id"] == anomaly.id)
    assert body["text"].startswith("[WARNING] WARNING: org globex spend anomaly")
    assert anomaly.notified_severity == "warning"
    assert AlertDelivery.objects.get(anomaly=anomaly).status == "sent"
