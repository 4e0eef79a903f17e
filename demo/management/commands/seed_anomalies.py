import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.anomalies.services import anomalies_backfill, anomalies_seed_triage
from apps.ledger.selectors import ledger_time_range
from finops import clock


class Command(BaseCommand):
    help = (
        "Backfill the anomaly scan over the whole ledger (the seeded month), so its incidents are in the admin with "
        "their severities, then triage the demo: incidents that ended more than --open-days ago are resolved with a "
        "note (cause from seed_incidents, else noise); recent ones stay open. Nothing is notified. Safe to re-run."
    )

    def add_arguments(self, parser):
        parser.add_argument("--open-days", type=int, default=10, help="incidents that ended within this many days stay open (default 10)")
        parser.add_argument("--now", type=dt.datetime.fromisoformat, default=None, help="ISO time to treat as now (default: the clock)")

    def handle(self, *args, **options):
        now = options["now"] or clock.now()
        if timezone.is_naive(now):
            now = now.replace(tzinfo=dt.UTC)
        bounds = ledger_time_range()
        if bounds is None:
            raise CommandError("the ledger is empty: run `manage.py seed_demo` first")
        self.stdout.write("backfilling the anomaly scan over the ledger …")
        result = anomalies_backfill(start=bounds[0], end=min(now, bounds[1] + dt.timedelta(hours=1)))
        resolved = anomalies_seed_triage(before=now - dt.timedelta(days=options["open_days"]), now=now)
        self.stdout.write(f"anomalies: {result}; {resolved} older than {options['open_days']} days resolved with a triage note")
