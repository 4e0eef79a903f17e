import datetime as dt
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from tqdm import tqdm

from apps.ledger.services import prices_load_fixture
from demo import seed
from finops.envfile import STATE_DIR


class Command(BaseCommand):
    help = (
        "Seed the deterministic demo workload: 8 tenants, budgets, prices, N days of llm_requests with diurnal "
        "and weekly patterns, labelled cost incidents (seed_incidents), and the daily summaries. "
        "Skipped when the ledger already has rows (use --reset to start over)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--per-day", type=int, default=400, help="average requests per day (default 400)")
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--end", type=dt.date.fromisoformat, default=None, help="first day NOT seeded (default today)")
        parser.add_argument(
            "--incident-scale", type=float, default=1.0,
            help="multiply the labelled incidents' request counts (default 1, the evaluation's workload; `make seed` uses 40)",
        )  # fmt: skip
        parser.add_argument("--reset", action="store_true", help="truncate llm_requests, summaries and incidents first")
        parser.add_argument(
            "--demo-key-file", default=str(STATE_DIR / "demo-key"), help="where the demo API key goes ('' to skip)"
        )

    def handle(self, *args, **options):
        prices_load_fixture(path=settings.BASE_DIR / "fixtures" / "prices.json")
        if not options["reset"] and seed.seeded_already():
            self.stdout.write("ledger already has rows: seed skipped (use --reset to reseed)")
            return
        # The baseline, plus the four incidents' extra requests (160 + 120 + 90 + 70 at 400 a day, scaled).
        expected = options["per_day"] * options["days"] + int(440 * max(options["per_day"] / 400, 0.25) * options["incident_scale"])
        with tqdm(total=expected, unit="row", unit_scale=True, desc="seeding llm_requests") as bar:
            result = seed.seed_demo(
                per_day=options["per_day"], days=options["days"], seed=options["seed"], end=options["end"],
                reset=options["reset"], progress=bar.update,
                incident_scale=options["incident_scale"],
            )
        key_file = Path(options["demo_key_file"]) if options["demo_key_file"] else None
        if result.demo_secret and key_file:
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(result.demo_secret + "\n")
            key_file.chmod(0o600)
        self.stdout.write(
            f"seeded {result.rows} requests, {result.incidents} labelled incidents, {result.summary_rows} summary rows "
            f"in {result.seconds:.1f}s"
            + (f"; demo API key written to {key_file}" if result.demo_secret and key_file else "")
        )
