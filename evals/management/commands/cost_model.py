from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evals.costmodel.model import CostModelError, load_read
from evals.costmodel.services import (
    COST_MODEL_DIR,
    REFERENCE_CSV,
    chart_write,
    cost_model_run,
    formulas_write,
    readme_write,
    reconcile,
    reconcile_markdown,
    reference_load_refresh,
    results_table,
)


class Command(BaseCommand):
    help = (
        "Monthly cost of the 8-tenant reference load without finops' levers, with each lever (exact and semantic cache, "
        "routing mix, confidence escalations, embeddings) and with all of them; writes docs/cost-model/chart.png and "
        "docs/cost-model/README.md. --refresh rebuilds the CSV from the seed generator and the `make eval` measurements; "
        "--reconcile compares the seed-configuration prediction with the measured ledger (±5 %)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--csv", type=Path, default=REFERENCE_CSV, help=f"the reference load (default {REFERENCE_CSV.name})")
        parser.add_argument(
            "--refresh", action="store_true", help="rebuild the CSV first (seed constants, price fixture, eval results)"
        )
        parser.add_argument("--no-router-eval", action="store_true", help="with --refresh: do not run the router evaluation")
        parser.add_argument("--reconcile", action="store_true", help="compare with the measured ledger")
        parser.add_argument(
            "--database-url", default=None,
            help="ledger to reconcile against (default: the benchmarks' finops_bench month when seeded, else this database)",
        )  # fmt: skip
        parser.add_argument(
            "--this-database", action="store_true", help="reconcile against this project's database, not finops_bench"
        )
        parser.add_argument("--output-dir", type=Path, default=COST_MODEL_DIR, help="where chart.png and README.md go")
        parser.add_argument("--no-write", action="store_true", help="print only")

    def handle(self, *args, **opts):
        fallbacks: list[str] = []
        try:
            if opts["refresh"]:
                refreshed = reference_load_refresh(
                    csv_path=opts["csv"], measure_router=not opts["no_router_eval"], progress=False
                )
                fallbacks = refreshed.fallbacks
                self.stdout.write(f"rebuilt {opts['csv']}")
                for name in fallbacks:
                    self.stdout.write(
                        self.style.WARNING(f"  {name}: no measurement found, the seed configuration's rate stands in")
                    )
            load = load_read(opts["csv"])
            results = cost_model_run(load)
        except (CostModelError, FileNotFoundError, LookupError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{load.requests:,.0f} requests/month, {len({r.tenant for r in load.rows})} tenants, {len(load.rows)} load rows"
        )
        self.stdout.write(results_table(results))
        if not fallbacks:
            fallbacks = [n for n in ("exact_hit_rate", "semantic_hit_rate", "routing_premium_share", "escalation_rate")
                         if ("measured", n) not in load.levers]  # fmt: skip
        reconciled = None
        if opts["reconcile"]:
            from evals.costmodel.selectors import ledger_measure, reference_database_url

            url = None if opts["this_database"] else (opts["database_url"] or reference_database_url())
            measurement = ledger_measure(database_url=url)
            if measurement.rows == 0:
                # make eval does not seed: say what to run rather than fail the whole target.
                self.stdout.write(
                    self.style.WARNING(f"{measurement.source} has no ledger rows: run `make seed` first; reconcile skipped")
                )
            else:
                rec = reconcile(load, results, measurement)
                reconciled = (rec, measurement)
                self.stdout.write("")
                cache_measured = load.lever("exact_hit_rate")[1] == "measured"
                self.stdout.write(reconcile_markdown(rec, measurement, cache_measured=cache_measured))
        if not opts["no_write"]:
            out = opts["output_dir"]
            chart = chart_write(results, out / "chart.png")
            sheet = formulas_write(load, results, out / "cost-model-formulas.csv")
            readme = readme_write(
                load=load,
                results=results,
                path=out / "README.md",
                chart=chart,
                csv_path=opts["csv"],
                reconciliation=reconciled,
                fallbacks=fallbacks,
            )
            self.stdout.write(self.style.SUCCESS(f"wrote {chart}, {sheet} and {readme}"))
        if reconciled is not None and not reconciled[0].within:
            self.stdout.write(self.style.WARNING(f"reconcile gap {100 * reconciled[0].gap:+.2f} % is outside ±5 %"))
