from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.reports.periods import month_parse
from apps.reports.services import COST_REPORT_DIMENSIONS, cost_report, report_write
from finops import clock
from finops.errors import FinopsError


class Command(BaseCommand):
    help = (
        "Spend for one UTC month by org, team, user or model (from cost_daily_summary) or by route "
        "(from llm_requests, day by day, with the premium-tier counterfactual)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--by", choices=COST_REPORT_DIMENSIONS, default="org")
        parser.add_argument("--month", help="YYYY-MM (default: the current month)")
        parser.add_argument("--format", choices=["table", "csv"], default="table")
        parser.add_argument("--org", help="only this organization (slug)")

    def handle(self, *args, **options):
        try:
            month = month_parse(options["month"])
            bar = tqdm(
                total=len(month.days_until(clock.today())),
                unit="day",
                disable=options["by"] != "route",
                file=self.stderr._out,
            )
            with bar:
                table = cost_report(by=options["by"], month=month, org_slug=options["org"], progress=bar.update)
        except FinopsError as exc:
            raise CommandError(exc.message) from exc
        report_write(table, self.stdout._out, fmt=options["format"])
