"""The drill on a seeded ledger: it catches its own incident, walks the queries, and leaves nothing (or one copy) behind."""

from io import StringIO

import pytest
from django.core.management import call_command

from apps.anomalies.models import Anomaly
from apps.ledger.models import LLMRequest
from demo import seed
from evals.costmodel.drill import MARKER

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(prices, pinned_now):
    seed.seed_demo(per_day=400, days=30, seed=42)
    return LLMRequest.objects.count()


def drill(**options) -> str:
    out = StringIO()
    call_command("drill", stdout=out, **options)
    return out.getvalue()


def test_the_drill_pages_on_its_runaway_loop_and_rolls_back(seeded):
    text = drill()
    assert "critical  globex-bank " in text
    assert "Prometheus rules that fire: FinopsAnomalyCritical" in text
    for query in ("01_spend_by_org_last_hours.sql", "02_top_keys_last_hours.sql", "03_model_mix_last_hours.sql"):
        assert f"-- {query}" in text
    assert "Rolled back" in text
    assert LLMRequest.objects.count() == seeded
    assert not LLMRequest.objects.filter(prompt_hash=MARKER).exists()
    assert not Anomaly.objects.filter(details__drill=True).exists()


def test_a_kept_drill_is_replaced_not_doubled_by_the_next_one(seeded):
    drill(keep=True, per_hour=100, hours=2)
    assert LLMRequest.objects.filter(prompt_hash=MARKER).count() == 200
    marked = Anomaly.objects.filter(details__drill=True).count()
    assert marked >= 1
    text = drill(keep=True, per_hour=100, hours=2)
    assert "Removed a previous kept drill: 200 ledger rows" in text
    assert LLMRequest.objects.filter(prompt_hash=MARKER).count() == 200
    assert Anomaly.objects.filter(details__drill=True).count() == marked
    drill()  # a rolled-back drill still removes the kept one first
    assert not LLMRequest.objects.filter(prompt_hash=MARKER).exists()
    assert LLMRequest.objects.count() == seeded


def test_the_drill_needs_a_seeded_org(prices):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="make seed"):
        drill()
