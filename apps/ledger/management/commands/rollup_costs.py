from apps.ledger.management.rollup import DayRangeRollupCommand
from apps.ledger.services import cost_rollup_days


class Command(DayRangeRollupCommand):
    help = "Recompute cost_daily_summary from llm_requests (idempotent). Default: today and yesterday."
    rollup = cost_rollup_days
    noun = "summary rows"
