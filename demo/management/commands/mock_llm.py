from django.core.management.base import BaseCommand

from demo import mock_llm


class Command(BaseCommand):
    help = (
        "Run the built-in OpenAI-compatible mock LLM (deterministic answers, usage from the text, injectable "
        "latency/errors/truncation, and a replay mode serving recorded model answers)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--workers", type=int, default=1)
        parser.add_argument("--replay", default=None, help="recorded answers (JSONL fixture or RouteLLM CSV)")
        parser.add_argument("--latency-ms", type=float, default=0.0)

    def handle(self, *args, **options):
        mock_llm.serve(
            host=options["host"],
            port=options["port"],
            workers=options["workers"],
            replay_path=options["replay"],
            default_latency_ms=options["latency_ms"],
        )
