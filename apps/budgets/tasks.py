from celery import shared_task

from apps.budgets.services import budget_reconcile, reservation_sweep
from finops.jobs import tracked_job


@shared_task(name="apps.budgets.tasks.budget_sweep_task")
@tracked_job("budget_sweep")
def budget_sweep_task() -> str:
    return str(reservation_sweep())


@shared_task(name="apps.budgets.tasks.budget_reconcile_task")
@tracked_job("budget_reconcile")
def budget_reconcile_task() -> str:
    return str(budget_reconcile())
