from django.core.management.base import BaseCommand

from apps.budgets.services import budget_reconcile, reservation_sweep


class Command(BaseCommand):
    help = "Expire leaked reservations, then bring the current-period budget counters in line with the ledger. Safe to re-run."

    def add_arguments(self, parser):
        parser.add_argument("--budget", type=int, action="append", dest="budgets", help="Only this budget id (repeatable).")
        parser.add_argument("--skip-sweep", action="store_true", help="Do not expire reservations first.")

    def handle(self, *args, budgets=None, skip_sweep=False, **options):
        if not skip_sweep:
            self.stdout.write(f"sweep: {reservation_sweep()}")
        self.stdout.write(f"reconcile: {budget_reconcile(budget_ids=budgets)}")
