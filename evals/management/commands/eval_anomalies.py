from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from tqdm import tqdm

from evals.anomalies import evaluation


class Command(BaseCommand):
    help = (
        "Score the anomaly detectors: event-level precision/recall/F1 on NAB realAdExchange + realKnownCause "
        "(../shared/data/nab when present, else fixtures/nab) next to a static-threshold baseline, and the seeded "
        "incidents of the demo workload (each caught within 2 scan hours, no false critical). Writes docs/anomaly-eval.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", default=str(settings.BASE_DIR / "docs" / "anomaly-eval.md"))
        parser.add_argument(
            "--seed-per-day", type=int, default=400,
            help="seed this workload in a database of the evaluation's own (<database>_anomaly_eval), in a transaction that is rolled back",
        )  # fmt: skip
        parser.add_argument("--skip-seed", action="store_true", help="NAB only")
        parser.add_argument(
            "--database-workload", action="store_true",
            help="score the seeded workload already in this database (e.g. the benchmarks' reference month) instead of "
            "seeding one; the calendar section is skipped",
        )  # fmt: skip
        parser.add_argument(
            "--skip-calendar", action="store_true", help="skip re-seeding and scanning at 28 pinned dates (about 5 minutes)"
        )

    def handle(self, *args, **options):
        from evals.anomalies.service import anomaly_eval_run

        root, source = evaluation.nab_root(settings.BASE_DIR)
        bar = tqdm(desc="NAB files", unit="file")
        dates = tqdm(desc="seeded calendar days", unit="day", total=len(evaluation.calendar_instants()), delay=1)
        result = anomaly_eval_run(
            nab_dir=root,
            nab_source=source,
            output=Path(options["output"]),
            seed_per_day=None if options["skip_seed"] else options["seed_per_day"],
            calendar=not options["skip_calendar"] and not options["database_workload"],
            database_workload=options["database_workload"],
            progress=lambda name: (bar.set_postfix_str(name.split("/")[-1]), bar.update(1)),
            calendar_progress=lambda now: (dates.set_postfix_str(f"{now:%Y-%m-%d %H:%M}"), dates.update(1)),
        )
        bar.close()
        dates.close()
        self.stdout.write(result)
