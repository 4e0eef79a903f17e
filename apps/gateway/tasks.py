from celery import shared_task

from apps.gateway.services import ledger_outbox_replay
from finops.jobs import tracked_job


@shared_task(name="apps.gateway.tasks.ledger_outbox_replay_task")
@tracked_job("ledger_outbox_replay")
def ledger_outbox_replay_task() -> str:
    return str(ledger_outbox_replay())
