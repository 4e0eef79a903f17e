from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.routing.services import tier_quality_learn
from evals.router.harness import router_eval_live, router_eval_out_of_distribution, router_eval_write


class Command(BaseCommand):
    help = (
        "A/B harness of the router on recorded Mixtral-8x7B / GPT-4-1106 answers (RouteLLM data): cost, quality, premium share, "
        "APGR and CPT of always-cheap, always-premium, random at matched cost, keyword, complexity, complexity+confidence, "
        "learned, learned+confidence and the full chain. Learned scores come from indexes without the evaluated prompts "
        "(5-fold cross-validation on the full sets). Writes docs/router-eval.md and its plot."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--full",
            action="store_true",
            help="use the full GSM8K + MMLU + MT-Bench sets (vendored in fixtures/routellm, or --data)",
        )
        parser.add_argument(
            "--full-if-available", action="store_true", help="--full when the RouteLLM data is found, else the 50 prompts"
        )
        parser.add_argument(
            "--data", default=None, help="a RouteLLM export folder to read instead of the vendored sets (or $FINOPS_ROUTELLM_DIR)"
        )
        parser.add_argument("--route", default="eval", help="route policy to evaluate (default: eval)")
        parser.add_argument("--limit", type=int, default=None, help="only the first N records (smoke runs)")
        parser.add_argument("--output", default=str(Path(settings.BASE_DIR) / "docs" / "router-eval.md"))
        parser.add_argument("--plot", default=str(Path(settings.BASE_DIR) / "docs" / "img" / "router-eval.png"))
        parser.add_argument("--no-docs", action="store_true", help="print the summary only; write no files")
        parser.add_argument("--bench", action="store_true", help="also write the router-eval section of docs/benchmarks.md")
        parser.add_argument(
            "--learned",
            action="store_true",
            help="add the out-of-distribution experiment: each set scored by a learned index of the other sets only",
        )
        parser.add_argument("--no-learned", action="store_true", help="skip the learned strategy (no embedding model needed)")
        parser.add_argument(
            "--learn-quality", action="store_true", help="store the measured qualities on the eval ladder's tier models"
        )
        parser.add_argument(
            "--live", default=None, metavar="URL", help="also replay the prompts through a running gateway at URL"
        )
        parser.add_argument("--api-key", default=None, help="API key for --live")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts) -> None:
        from evals.router.datasets import full_available
        from evals.router.harness import router_eval_run

        full = opts["full"] or (opts["full_if_available"] and full_available(opts["data"]))
        try:
            run = router_eval_run(
                full=full,
                shared_dir=opts["data"],
                route=opts["route"],
                limit=opts["limit"],
                progress=not opts["no_progress"],
                with_learned=not opts["no_learned"],
            )
        except (FileNotFoundError, LookupError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if opts["learned"] and not opts["no_learned"]:
            router_eval_out_of_distribution(run, progress=not opts["no_progress"])
            for protocol in run.leave_out:
                for part in protocol.slices + ([protocol.pooled] if protocol.pooled else []):
                    self.stdout.write(
                        f"{protocol.name}, {part.name} (n = {part.n}): served APGR {part.served:.3f}, complexity "
                        f"{part.complexity:.3f}, learned {part.learned:.3f}, abstained {part.abstained:.1%}"
                    )
        live = None
        if opts["live"]:
            if not opts["api_key"]:
                raise CommandError("--live needs --api-key")
            live = router_eval_live(run, base_url=opts["live"], api_key=opts["api_key"], progress=not opts["no_progress"])
        head = run.reports[0]
        for report in run.reports:
            self.stdout.write(
                f"{report.source or run.dataset}: n={report.n} cheap={report.weak_quality:.3f} premium={report.strong_quality:.3f}"
            )
            for r in report.results + run.extra_results.get(report.source, []):
                apgr = f"{r.apgr:.3f}" if r.apgr is not None else "  —  "
                self.stdout.write(
                    f"  {r.name:24s} premium={100 * r.share:5.1f}%  cost={r.cost:.4f}  quality={r.quality:.3f}  "
                    f"PGR={r.pgr:5.2f}  APGR={apgr}"
                )
        if live is not None:
            self.stdout.write(f"live through {opts['live']}: {live['summary']}")
        if opts["learn_quality"]:
            cheap_model, premium_model = run.weak_price.model, run.strong_price.model
            n = tier_quality_learn(
                ladder=run.policy.ladder, quality_by_model={cheap_model: head.weak_quality, premium_model: head.strong_quality}
            )
            self.stdout.write(f"stored quality on {n} tier model(s)")
        if not opts["no_docs"]:
            paths = router_eval_write(
                run, doc_path=Path(opts["output"]), plot_path=Path(opts["plot"]), bench=opts["bench"], live=live
            )
            self.stdout.write(self.style.SUCCESS("wrote " + ", ".join(str(p) for p in paths)))
