import datetime as dt
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.ledger.services import prices_import_litellm, prices_load_fixture
from finops import clock


class Command(BaseCommand):
    help = (
        "Import prices from a LiteLLM model_prices_and_context_window.json file (per-token prices), "
        "or from finops' own fixtures/prices.json format (--format finops)."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", choices=["litellm", "finops"], default=None, help="default: detected")
        parser.add_argument("--effective-from", type=dt.date.fromisoformat, default=None, help="default: today (UTC)")

    def handle(self, *args, **options):
        path: Path = options["file"]
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path} is not valid JSON: {exc}") from exc
        fmt = options["format"] or ("finops" if isinstance(data, dict) and "prices" in data else "litellm")
        if fmt == "finops":
            created = prices_load_fixture(path=path)
            self.stdout.write(f"{created} new price rows from {path}")
            return
        effective_from = options["effective_from"] or clock.today()
        created, skipped = prices_import_litellm(data=data, effective_from=effective_from, source=f"litellm:{path.name}")
        self.stdout.write(f"{created} new price rows from {path} (effective {effective_from}); {len(skipped)} skipped")
        for reason in skipped[:20]:
            self.stderr.write(f"  skipped {reason}")
