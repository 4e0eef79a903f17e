from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.routing import learned


class Command(BaseCommand):
    help = (
        "Build the learned strategy's kNN index (FINOPS_ROUTER_INDEX_PATH, vendored as fixtures/routellm/router-index.npz) "
        "from the RouteLLM evals (the full sets vendored in fixtures/routellm): MiniLM embeddings of every prompt (minutes of CPU the first "
        "time; kept in .finops/cache), PCA-projected, int8, labelled with the premium-minus-cheap score, calibrated."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--data", default=None, help="a RouteLLM export folder to read instead of the vendored full sets (or $FINOPS_ROUTELLM_DIR)"
        )
        parser.add_argument(
            "--records",
            default=None,
            metavar="JSONL",
            help="build from these labelled prompts instead: one JSON object per line with prompt, weak_score and "
            "strong_score (0..1: how good the cheap and the premium answer were), optionally source",
        )
        parser.add_argument("--output", default=None, help="the index file (default: FINOPS_ROUTER_INDEX_PATH)")
        parser.add_argument("--k", type=int, default=learned.DEFAULT_K, help="neighbours per vote (default 100)")
        parser.add_argument(
            "--dims", type=int, default=learned.DEFAULT_DIMS, help="PCA dimensions kept (default 128; 0 = all 384)"
        )
        parser.add_argument("--limit", type=int, default=None, help="only the first N prompts (smoke runs)")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts) -> None:
        from evals.router.datasets import load_full
        from evals.router.index import labelled_prompts_read, router_index_build

        if opts["records"]:
            try:
                records = labelled_prompts_read(path=Path(opts["records"]))
            except (OSError, ValueError, KeyError) as exc:
                raise CommandError(f"{opts['records']}: {exc}") from exc
        else:
            full = load_full(opts["data"])
            if full is None:
                raise CommandError("RouteLLM data not found (fixtures/routellm/full.jsonl.gz, --data or $FINOPS_ROUTELLM_DIR)")
            records = full
        if opts["limit"]:
            records = records[: opts["limit"]]
        output = Path(opts["output"]) if opts["output"] else learned.index_path()
        if output is None:
            raise CommandError("no output: pass --output or set FINOPS_ROUTER_INDEX_PATH")
        index = router_index_build(
            records=records,
            output=output,
            k=opts["k"],
            dims=opts["dims"] or None,
            progress=not opts["no_progress"],
            **({"source": f"labelled prompts from {Path(opts['records']).name}"} if opts["records"] else {}),
        )
        size_kb = output.stat().st_size / 1024
        self.stdout.write(
            self.style.SUCCESS(
                f"wrote {output}: {len(index)} prompts {index.meta.get('prompts')}, k={index.k}, {index.dims} dims, "
                f"{size_kb:.0f} KiB"
            )
        )
