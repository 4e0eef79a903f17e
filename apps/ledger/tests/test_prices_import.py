import datetime as dt
import json
from decimal import Decimal

from django.core.management import call_command

from apps.ledger.models import ModelPrice
from apps.ledger.selectors import price_in_force

LITELLM_SAMPLE = {
    "sample_spec": {"input_cost_per_token": 0, "mode": "chat"},
    "gpt-4o": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
    },
    "new-model-x": {"litellm_provider": "acme", "mode": "chat", "input_cost_per_token": 3e-07, "output_cost_per_token": 1.2e-06},
    "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04},
    "no-output-price": {"litellm_provider": "x", "mode": "chat", "input_cost_per_token": 1e-06},
}


def test_it_imports_the_litellm_format(db, tmp_path, prices):
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(json.dumps(LITELLM_SAMPLE))
    call_command("import_prices", str(path), "--effective-from", "2026-12-01")

    new = price_in_force(model="new-model-x", on=dt.date(2026, 12, 2))
    assert (new.input_per_1m, new.output_per_1m, new.cached_input_per_1m) == (Decimal("0.3"), Decimal("1.2"), None)
    # Same gpt-4o price as the fixture: no new row, the old one stays in force.
    assert ModelPrice.objects.filter(model="gpt-4o").count() == 1
    assert not ModelPrice.objects.filter(model__in=["dall-e-3", "no-output-price", "sample_spec"]).exists()


def test_a_changed_price_closes_the_previous_window(db, tmp_path, prices):
    changed = {"gpt-4o": {**LITELLM_SAMPLE["gpt-4o"], "input_cost_per_token": 2e-06}}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(changed))
    call_command("import_prices", str(path), "--effective-from", "2026-12-01")

    assert price_in_force(model="gpt-4o", on=dt.date(2026, 11, 30)).input_per_1m == Decimal("2.5")
    assert price_in_force(model="gpt-4o", on=dt.date(2026, 12, 1)).input_per_1m == Decimal("2")


def test_the_fixture_has_15_models_from_4_provider_families_with_sources(db, prices):
    rows = ModelPrice.objects.all()
    assert rows.count() >= 15
    assert {"openai", "anthropic", "google"} <= set(rows.values_list("provider", flat=True))
    assert rows.filter(provider__in=["together", "groq", "deepseek", "mistral"]).exists()
    assert all(row.source for row in rows)
