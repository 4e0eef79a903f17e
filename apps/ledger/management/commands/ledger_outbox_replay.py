from django.core.management.base import BaseCommand

from apps.ledger.outbox import ledger_outbox_replay


class Command(BaseCommand):
    help = "Insert ledger rows that the gateway diverted to the outbox (Redis stream, spool files) while Postgres was down."

    def handle(self, *args, **options):
        result = ledger_outbox_replay()
        self.stdout.write(self.style.SUCCESS(f"ledger outbox replayed: {result}"))
