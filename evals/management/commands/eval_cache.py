from pathlib import Path

from django.core.management.base import BaseCommand

from evals.cache import evaluation
from evals.cache import pairs as pairs_module
from evals.cache.replay import replay_markdown, replay_workload
from finops.conf import conf


class Command(BaseCommand):
    help = (
        "Evaluate the semantic cache: sweep the similarity threshold (0.80-0.97) on paraphrase pairs, hard and easy "
        "negatives, with and without the guard; write docs/cache-threshold-runbook.md; replay a workload through the "
        "cache hooks and write the 'cache-eval' section of docs/benchmarks.md."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--pairs",
            type=Path,
            help="JSON/JSONL (or .gz) of {origin, similar} (default: the full GPTCache set vendored in fixtures/gptcache)",
        )
        parser.add_argument("--limit", type=int, help="use only the first N GPTCache pairs")
        parser.add_argument("--runbook", type=Path, default=evaluation.RUNBOOK, help="where to write the runbook")
        parser.add_argument("--no-runbook", action="store_true", help="do not write the runbook")
        parser.add_argument("--replay", type=int, default=1500, metavar="N", help="requests in the workload replay (0: skip)")
        parser.add_argument("--no-report", action="store_true", help="do not write docs/benchmarks.md")
        parser.add_argument("--no-heldout", action="store_true", help="skip the held-out half and the argument-swap set")

    def handle(self, *args, **options):
        pairs, label = pairs_module.load_pairs(options["pairs"], limit=options["limit"])
        pairs_module.generate_hard_negatives(pairs)
        # Production's pipeline: the static stage proposes, the full model confirms (apps.cache.semantic).
        result = evaluation.threshold_sweep(
            pairs, label=label, static=evaluation.static_embed, static_threshold=conf().cache_semantic_static_threshold
        )
        self.stdout.write(f"{label}: {sum(result.hard_by_kind.values())} hard negatives {result.hard_by_kind}")
        self.stdout.write(evaluation.sweep_table(result))
        at_default, alone = result.row(0.92, True), result.full_model_row(0.92, True)
        self.stdout.write(
            f"at 0.92 with the guard: precision {at_default.precision:.3f}, recall {at_default.recall:.3f}, "
            f"hard-negative false hits {at_default.hard_hits}/{at_default.hard}"
            + (f" (full model alone: {alone.precision:.3f} / {alone.recall:.3f} / {alone.hard_hits})" if alone else "")
        )
        from evals.report import subset_heading, write_report, write_section

        # Only the full GPTCache set writes the headline figures; a subset's go under their own heading.
        subset = None if pairs_module.pairs_are_full(options["pairs"], limit=options["limit"]) else label
        if not options["no_runbook"]:
            write_report(options["runbook"], evaluation.runbook_markdown(result), subset=subset)
            self.stdout.write(f"wrote {options['runbook']}" + (" (subset section)" if subset else ""))
        if not options["no_heldout"]:
            from evals.cache import heldout

            held = heldout.heldout_evaluate(pairs, embed=evaluation.local_embed, embedder=result.embedder)
            self.stdout.write(
                f"held out ({held.picked}, picked on the other half): precision {held.held_out.precision:.3f}, "
                f"recall {held.held_out.recall:.3f}; swap hits {held.swaps_all.swap_hits}/{held.swaps_all.swaps}"
            )
            if subset is None and not options["no_runbook"]:
                heldout.write_heldout_section(options["runbook"], held)
        replay = None
        if options["replay"]:
            replay = replay_workload(pairs, requests=options["replay"])
            self.stdout.write(
                f"replay: {replay.requests} requests, exact {replay.exact_hits}, semantic {replay.semantic_hits}, "
                f"saved ${replay.saved:.4f} of ${replay.cost_without_cache:.4f}, wrong answers {replay.wrong_answers}"
            )
        if replay is not None and not options["no_report"]:
            if subset is None:
                write_section("cache-eval", replay_markdown(replay, result))
                self.stdout.write("wrote the cache-eval section of docs/benchmarks.md")
            else:
                write_section("cache-eval-subset", subset_heading(replay_markdown(replay, result), subset))
                self.stdout.write("wrote the cache-eval-subset section of docs/benchmarks.md (the headline is unchanged)")
