"""Settings for the Celery worker test: the test settings with the anomaly scan on a 2-second beat."""

from finops.test_settings import *  # noqa: F403

CELERY_BEAT_SCHEDULE = {
    "anomaly-scan": {
        "task": "apps.anomalies.tasks.anomaly_scan_task",
        "schedule": 2.0,
        "options": {"expires": 30},
    },
}
