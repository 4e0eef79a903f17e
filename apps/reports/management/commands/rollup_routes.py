from apps.ledger.management.rollup import DayRangeRollupCommand
from apps.reports.services import route_rollup_days


class Command(DayRangeRollupCommand):
    help = "Recompute route_daily_summary (routing savings on the dashboard) from llm_requests. Default: today and yesterday."
    rollup = route_rollup_days
    noun = "route summary rows"
