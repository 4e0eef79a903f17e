import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")

app = Celery("finops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _worker_metrics(**_kwargs) -> None:
    # In the worker's main process, once: the pool processes write their samples to PROMETHEUS_MULTIPROC_DIR.
    port = os.environ.get("FINOPS_WORKER_METRICS_PORT", "")
    if port:
        from finops.metrics import worker_metrics_serve

        worker_metrics_serve(port=int(port), addr=os.environ.get("FINOPS_WORKER_METRICS_ADDR", "127.0.0.1"))
