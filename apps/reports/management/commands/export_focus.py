import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.reports.periods import month_parse
from apps.reports.services import focus_export
from finops import clock
from finops.errors import FinopsError


class Command(BaseCommand):
    help = (
        "Export a UTC month as FinOps FOCUS v1.2 CSV: one row per day × team × model × price row × meter "
        "(input / cached input / output tokens, escalations). BilledCost adds up to the ledger exactly."
    )

    def add_arguments(self, parser):
        parser.add_argument("--month", help="YYYY-MM (default: the current month)")
        parser.add_argument("--org", help="only this organization (slug)")
        parser.add_argument("--output", help="file to write (default: stdout)")

    def handle(self, *args, **options):
        try:
            month = month_parse(options["month"])
            out = open(options["output"], "w", newline="") if options["output"] else self.stdout._out  # noqa: SIM115
            try:
                with tqdm(
                    total=len(month.days_until(clock.today())), unit="day", file=sys.stderr, disable=not options["output"]
                ) as bar:
                    result = focus_export(month=month, out=out, org_slug=options["org"], progress=bar.update)
            finally:
                if options["output"]:
                    out.close()
        except FinopsError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(
            f"FOCUS {month.label}: {result.rows} rows, BilledCost {result.billed_cost} USD = ledger {result.ledger_cost} USD"
            + (f"; {result.adjustments} adjustment row(s) totalling {result.adjustment_cost} USD" if result.adjustments else "")
        )
