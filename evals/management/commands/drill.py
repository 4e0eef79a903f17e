from django.core.management.base import BaseCommand, CommandError

from evals.costmodel.drill import DrillError, drill_run
from finops.monitoring import Stack, stack_running


class Command(BaseCommand):
    help = (
        "Cost-incident drill: inject a runaway agent loop into the seeded ledger (last complete hours), run the rollup "
        "and the anomaly scan, and walk the runbook's diagnosis queries. Rolled back at the end unless --keep "
        "(then the next drill removes what this one left). Needs `make seed`."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--org", default="globex-bank", help="org slug whose first active key runs away (default globex-bank)"
        )
        parser.add_argument("--model", default="gpt-4o", help="model of the loop (must have a price)")
        parser.add_argument("--hours", type=int, default=3, help="complete hours of the incident before now (default 3)")
        parser.add_argument("--per-hour", type=int, default=250, help="requests per hour of the loop (default 250)")
        parser.add_argument("--keep", action="store_true", help="commit: keep the rows and anomalies, send the notifications")
        parser.add_argument(
            "--no-page", action="store_true", help="do not post the drill's alerts to the Alertmanager that `make run` started"
        )

    def handle(self, *args, **opts):
        if opts["hours"] < 1 or opts["per_hour"] < 1:
            raise CommandError("--hours and --per-hour must be at least 1")
        stack = Stack() if opts["no_page"] else stack_running()
        try:
            drill_run(
                write=self.stdout.write,
                keep=opts["keep"],
                org_slug=opts["org"],
                model=opts["model"],
                hours=opts["hours"],
                per_hour=opts["per_hour"],
                alertmanager_url=stack.alertmanager_url,
                receiver_url=stack.receiver_url,
            )
        except DrillError as exc:
            raise CommandError(str(exc)) from exc
