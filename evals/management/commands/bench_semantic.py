from django.core.management.base import BaseCommand

from evals.cache import bench_semantic


class Command(BaseCommand):
    help = (
        "Measure the semantic tier's CPU per request (lookup, store) on 30-, 400- and 2,000-character prompts, all "
        "misses, through the real cache hooks; write the 'semantic-tier' section of docs/benchmarks.md."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--cached",
            type=int,
            default=1000,
            help="entries in the cache before measuring, per length (at most what the class has)",
        )
        parser.add_argument("--requests", type=int, default=200, help="measured requests per length")
        parser.add_argument("--no-report", action="store_true", help="do not write docs/benchmarks.md")

    def handle(self, *args, **options):
        results = bench_semantic.run(cached=options["cached"], requests=options["requests"])
        text = bench_semantic.markdown(results)
        self.stdout.write(text)
        if not options["no_report"]:
            from evals.report import write_section

            write_section("semantic-tier", text)
            self.stdout.write("wrote the semantic-tier section of docs/benchmarks.md")
