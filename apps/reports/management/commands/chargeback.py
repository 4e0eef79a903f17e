from django.core.management.base import BaseCommand, CommandError

from apps.reports.periods import month_parse
from apps.reports.services import chargeback, report_write
from finops.errors import FinopsError


class Command(BaseCommand):
    help = "Chargeback CSV: one row per team for a UTC month (cost_usd at full precision), from cost_daily_summary."

    def add_arguments(self, parser):
        parser.add_argument("--month", help="YYYY-MM (default: the current month)")
        parser.add_argument("--org", help="only this organization (slug)")
        parser.add_argument("--format", choices=["csv", "table"], default="csv")
        parser.add_argument("--output", help="write to this file instead of stdout")
        parser.add_argument("--refresh", action="store_true", help="recompute the month's rollup from the ledger first")

    def handle(self, *args, **options):
        try:
            table = chargeback(month=month_parse(options["month"]), org_slug=options["org"], refresh=options["refresh"])
        except FinopsError as exc:
            raise CommandError(exc.message) from exc
        if options["output"]:
            with open(options["output"], "w", newline="") as out:
                report_write(table, out, fmt=options["format"])
            self.stderr.write(f"wrote {len(table.rows)} team row(s) to {options['output']}")
        else:
            report_write(table, self.stdout._out, fmt=options["format"])
