import datetime as dt

from django.core.management.base import BaseCommand
from django.db.models import Min
from django.utils import timezone
from tqdm import tqdm

from apps.ledger.models import LLMRequest
from apps.reports.services import route_rollup_days


class Command(BaseCommand):
    help = "Recompute route_daily_summary (routing savings on the dashboard) from llm_requests. Default: today and yesterday."

    def add_arguments(self, parser):
        parser.add_argument("--since", type=dt.date.fromisoformat, help="first day (YYYY-MM-DD)")
        parser.add_argument("--until", type=dt.date.fromisoformat, help="last day, inclusive (default today)")
        parser.add_argument("--all", action="store_true", help="from the first request in the ledger")

    def handle(self, *args, **options):
        today = timezone.now().date()
        since = options["since"]
        if options["all"]:
            first = LLMRequest.objects.aggregate(first=Min("received_at"))["first"]
            since = first.date() if first else today
        since = since or today - dt.timedelta(days=1)
        until = options["until"] or today
        days = (until - since).days + 1
        written = 0
        for _, count in tqdm(route_rollup_days(since=since, until=until), total=days, unit="day", disable=days < 3):
            written += count
        self.stdout.write(f"rolled up routes for {days} day(s) from {since} to {until}: {written} rows written")
