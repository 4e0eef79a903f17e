"""The cost model's arithmetic on a tiny CSV worked by hand, the command's output, and the reconcile against a seeded ledger."""

from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command

from demo import seed
from evals.costmodel.model import AS_RECORDED, CostModelError, Reconciliation, load_parse, load_render, scenario_cost, scenarios
from evals.costmodel.reference import reference_load_build
from evals.costmodel.selectors import cache_levers_measured

# Prices per 1M tokens: cheap 1 / 0.5 / 2, premium 10 / 5 / 20, mid 4 / (no discount) / 8, embeddings 0.1.
TINY = """kind,name,set,tenant,model,provider,tier,requests_month,prompt_tokens,cached_tokens,completion_tokens,input_per_1m,cached_input_per_1m,output_per_1m,effective_from,value,source
param,failed_rate,,,,,,,,,,,,,,0.1,
param,rejected_rate,,,,,,,,,,,,,,0,
param,pinned_share,,,,,,,,,,,,,,0.5,
param,cheap_model,,,,,,,,,,,,,,C,
param,premium_model,,,,,,,,,,,,,,P,
lever,exact_hit_rate,measured,,,,,,,,,,,,,0.5,eval
lever,semantic_hit_rate,measured,,,,,,,,,,,,,0.1,eval
lever,routing_premium_share,measured,,,,,,,,,,,,,0.25,eval
lever,escalation_rate,measured,,,,,,,,,,,,,0.1,eval
lever,embedding_model,measured,,,,,,,,,,,,,E,settings
lever,exact_hit_rate,seed,,,,,,,,,,,,,0.2,seed
lever,semantic_hit_rate,seed,,,,,,,,,,,,,0,seed
lever,routing_premium_share,seed,,,,,,,,,,,,,as_recorded,seed
lever,escalation_rate,seed,,,,,,,,,,,,,0.5,seed
lever,embedding_model,seed,,,,,,,,,,,,,E,seed
price,,,,C,x,,,,,,1,0.5,2,2025-01-01,,
price,,,,P,x,,,,,,10,5,20,2025-01-01,,
price,,,,M,x,,,,,,4,,8,2025-01-01,,
price,,,,E,x,,,,,,0.1,,0,2025-01-01,,
load,,,A,M,x,mid,1000,1000,0,500,,,,,,
load,,,B,P,x,premium,100,2000,1000,1000,,,,,,
"""

# Worked by hand (see the formula in evals/costmodel/model.py). Billed share without cache: 0.9.
#   r1 (A, M): u(M) = 0.008, u(C) = 0.002, u(P) = 0.02; r2 (B, P): u(P) = 0.035, u(C) = 0.0035, u₀(C) = 0.004.
EXPECTED = {
    "no levers": "15.75",  # 900·(½·0.008 + ½·0.02) + 90·0.035
    "exact cache": "7.875",  # half the requests hit
    "semantic cache": "14.295",  # 15.75·0.9 + embeddings 1000·1000·0.1e-6 + 100·2000·0.1e-6
    "routing mix": "8.611875",  # routed = ¾·u(C) + ¼·u(P): 900·0.00725 + 90·0.0231875
    "routing + confidence escalations": "9.669375",  # + 900·½·0.1·0.02 + 90·½·0.1·0.035
    "all levers": "3.92775",  # (8.611875 + 1.0575)·0.4 + embeddings 0.12·0.5
    "seed configuration": "8.52",  # 720·0.008 + 72·0.035 + escalations 72·0.5·0.004 + embeddings 0.12·0.8
}


@pytest.fixture
def tiny():
    return load_parse(TINY)


def test_it_computes_every_scenario_as_worked_by_hand(tiny):
    got = {s.name: scenario_cost(tiny, s).total for s in scenarios(tiny)}
    assert got == {name: Decimal(value) for name, value in EXPECTED.items()}


def test_it_splits_escalations_embeddings_and_tenants(tiny):
    by_name = {s.name: scenario_cost(tiny, s) for s in scenarios(tiny)}
    assert by_name["routing + confidence escalations"].escalations == Decimal("1.0575")
    assert by_name["all levers"].embeddings == Decimal("0.06")
    assert by_name["no levers"].by_tenant == {"A": Decimal("12.6"), "B": Decimal("3.15")}
    assert sum(by_name["all levers"].by_tenant.values()) == by_name["all levers"].total


def test_it_falls_back_to_the_seed_rate_when_a_lever_was_not_measured(tiny):
    del tiny.levers[("measured", "exact_hit_rate")]
    exact = next(s for s in scenarios(tiny) if s.name == "exact cache")
    assert exact.exact == Decimal("0.2")
    assert "seed configuration, not measured" in exact.note


def test_the_csv_round_trips(tiny):
    again = load_parse(load_render(tiny))
    assert [scenario_cost(again, s).total for s in scenarios(again)] == [scenario_cost(tiny, s).total for s in scenarios(tiny)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("load,,,A,Z,x,mid,1,1,0,1,,,,,,\n", "no price row"),
        ("load,,,A,M,x,mid,1,10,20,1,,,,,,\n", "more cached than prompt"),
        ("oops,,,,,,,,,,,,,,,,\n", "unknown row kind"),
    ],
)
def test_it_rejects_a_broken_csv(bad, message):
    with pytest.raises(CostModelError, match=message):
        load_parse(TINY + bad)


def test_reconciliation_excludes_incidents_and_scales_to_the_measured_volume():
    rec = Reconciliation(
        predicted_total=Decimal("100"), predicted_requests=Decimal("1000"),
        measured_rows=1100, measured_cost=Decimal("150"), incident_rows=50, incident_cost=Decimal("45"),
    )  # fmt: skip
    assert rec.predicted_at_volume == Decimal("105")  # 0.1/request × 1050 ordinary requests
    assert rec.gap == Decimal(0) and rec.within
    assert rec.raw_gap == Decimal("0.5")
    assert not Reconciliation(Decimal("100"), Decimal("1000"), 1000, Decimal("106"), 0, Decimal(0)).within


def test_cache_levers_are_parsed_from_the_benchmarks_section(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text(
        "<!-- bench:cache-eval -->\n| tier | hits | share |\n|---|---:|---:|\n| exact | 1,200 | 60% |\n| semantic | 30 | 1.5% |\n"
        "| miss (went upstream) | 770 | 38.5% |\n\n_Measured 2026-01-02 03:04 UTC on x._\n<!-- /bench:cache-eval -->\n"
    )
    levers = cache_levers_measured(path=md)
    assert levers["exact_hit_rate"].value == "0.600000"
    assert levers["semantic_hit_rate"].value == "0.015000"
    assert "2026-01-02 03:04 UTC" in levers["exact_hit_rate"].source
    md.write_text("no section")
    assert cache_levers_measured(path=md) == {}


def test_the_command_prints_the_table_and_writes_the_chart_and_readme(tiny, tmp_path):
    csv_path = tmp_path / "tiny.csv"
    csv_path.write_text(TINY)
    out = StringIO()
    call_command("cost_model", csv=csv_path, output_dir=tmp_path, stdout=out)
    text = out.getvalue()
    assert "| no levers | $15.75 |" in text
    assert "| all levers | $3.93 | -75.1 % |" in text
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
    readme = (tmp_path / "README.md").read_text()
    assert "$15.75/month with no lever, $3.93/month with all of them" in readme
    assert "Not run this time" in readme


def test_the_reference_load_matches_the_seed_generator():
    load = reference_load_build(per_day=50_000, days=30)
    assert load.requests == Decimal(1_500_000)
    assert len({r.tenant for r in load.rows}) == 8
    # Token means: draw from the generator itself and compare with the CSV's expectation per model.
    rng = np.random.default_rng(1)
    n = 200_000
    for i, (model, *_rest) in enumerate(seed.MODEL_MIX):
        batch = seed._with_tokens(
            rng, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.full(n, i), cache_hit_rate=(0, 0)
        )
        row = next(r for r in load.rows if r.model == model)
        assert float(row.prompt_tokens) == pytest.approx(batch.prompt.mean(), rel=0.01), model
        assert float(row.completion_tokens) == pytest.approx(batch.completion.mean(), rel=0.01), model
    assert load.levers[("seed", "routing_premium_share")].value == AS_RECORDED


@pytest.mark.django_db
def test_reconcile_against_a_seeded_ledger_is_within_five_percent(prices, pinned_now):
    seed.seed_demo(per_day=1000, days=30)
    load = reference_load_build(per_day=1000, days=30)
    csv_path = load_render(load)
    out = StringIO()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.csv"
        path.write_text(csv_path)
        call_command("cost_model", csv=path, reconcile=True, this_database=True, output_dir=Path(tmp), stdout=out)
        readme = (Path(tmp) / "README.md").read_text()
    text = out.getvalue()
    assert "**within ±5 %**" in text, text
    assert "runaway_loop" in text
    assert "## Reconcile against the measured ledger" in readme and "Gap without the incidents" in readme
