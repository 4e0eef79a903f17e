"""The cost model's arithmetic on a tiny CSV worked by hand, the command's output, and the reconcile against a seeded ledger."""

import csv
import io
import re
from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.db.models import Count

from apps.ledger.models import LLMRequest
from apps.ledger.money import quantize_usd
from demo import seed
from evals.costmodel.model import (
    ALL_LEVERS_REPLAY_CACHE,
    ALL_LEVERS_SEED_CACHE,
    AS_RECORDED,
    CostModelError,
    Lever,
    Reconciliation,
    formulas_render,
    load_parse,
    load_read,
    load_render,
    scenario_cost,
    scenarios,
    sensitivity,
)
from evals.costmodel.reference import reference_load_build
from evals.costmodel.selectors import cache_levers_measured, ledger_cache_levers

# Prices per 1M tokens: cheap 1 / 0.5 / 2, premium 10 / 5 / 20, mid 4 / (no discount) / 8, embeddings 0.1.
TINY = """kind,name,set,tenant,model,provider,tier,requests_month,prompt_tokens,cached_tokens,completion_tokens,input_per_1m,cached_input_per_1m,output_per_1m,effective_from,value,source
param,failed_rate,,,,,,,,,,,,,,0.1,
param,rejected_rate,,,,,,,,,,,,,,0,
param,pinned_share,,,,,,,,,,,,,,0.5,
param,cheap_model,,,,,,,,,,,,,,C,
param,premium_model,,,,,,,,,,,,,,P,
lever,exact_hit_rate,replay,,,,,,,,,,,,,0.5,eval
lever,semantic_hit_rate,replay,,,,,,,,,,,,,0.1,eval
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
    "no levers, actual mix": "10.35",  # every request at its own model: 900·0.008 + 90·0.035
    "exact cache": "7.875",  # half the requests hit
    "semantic cache": "14.295",  # 15.75·0.9 + embeddings 1000·1000·0.1e-6 + 100·2000·0.1e-6
    "routing mix": "8.611875",  # routed = ¾·u(C) + ¼·u(P): 900·0.00725 + 90·0.0231875
    "routing + confidence escalations": "9.669375",  # + 900·½·0.1·0.02 + 90·½·0.1·0.035
    "all levers": "3.92775",  # (8.611875 + 1.0575)·0.4 + embeddings 0.12·0.5
    "all levers, seed cache rates": "7.8315",  # (8.611875 + 1.0575)·0.8 + embeddings 0.12·0.8
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
    del tiny.levers[("replay", "exact_hit_rate")]
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

    # The cache levers are measured on that ledger; the replay's rates become a labelled scenario, not the headline.
    ledger = ledger_cache_levers(this_database=True)
    hits = dict(LLMRequest.objects.values_list("cache_status").annotate(n=Count("id")))
    rows = LLMRequest.objects.exclude(endpoint="embeddings").count()
    assert Decimal(ledger["exact_hit_rate"].value) == (Decimal(hits["exact"]) / rows).quantize(Decimal("0.000001"))
    assert Decimal(ledger["semantic_hit_rate"].value) == (Decimal(hits["semantic"]) / rows).quantize(Decimal("0.000001"))
    assert "seeded ledger" in ledger["exact_hit_rate"].source
    replay = {"exact_hit_rate": Lever("0.614", "replay"), "semantic_hit_rate": Lever("0.02", "replay")}
    load = reference_load_build(per_day=1000, days=30, measured=ledger, replay=replay)
    by_name = {s.name: s for s in scenarios(load)}
    assert by_name["all levers"].exact == Decimal(ledger["exact_hit_rate"].value)
    assert by_name[ALL_LEVERS_REPLAY_CACHE].exact == Decimal("0.614")
    assert ALL_LEVERS_SEED_CACHE not in by_name
    # Without a ledger the replay's rates stand in, labelled, and the seed's rates are the side scenario.
    by_name = {s.name: s for s in scenarios(reference_load_build(per_day=1000, days=30, replay=replay))}
    assert by_name["all levers"].exact == Decimal("0.614")
    assert ALL_LEVERS_SEED_CACHE in by_name and ALL_LEVERS_REPLAY_CACHE not in by_name


# ---- the spreadsheet: every total is a formula a spreadsheet recomputes without Python --------------------------

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:E[+-]?\d+)?)|(?P<range>\$?[A-Z]+\$?\d+:\$?[A-Z]+\$?\d+)"
                    r"|(?P<ref>\$?[A-Z]+\$?\d+)|(?P<fn>SUM)\(|(?P<op>[-+*/(),]))")


def _cell_index(ref: str) -> tuple[int, int]:
    m = re.fullmatch(r"\$?([A-Z]+)\$?(\d+)", ref)
    col = 0
    for ch in m.group(1):
        col = col * 26 + ord(ch) - 64
    return int(m.group(2)) - 1, col - 1


class Sheet:
    """A minimal spreadsheet evaluator (numbers, cell references, ranges, + − × ÷, parentheses, SUM), in Decimal:
    what any spreadsheet does with these cells."""

    def __init__(self, text: str):
        self.cells = list(csv.reader(io.StringIO(text)))

    def value(self, row: int, col: int) -> Decimal:
        raw = self.cells[row][col] if row < len(self.cells) and col < len(self.cells[row]) else ""
        if raw.startswith("="):
            return self.formula(raw[1:])
        return Decimal(raw) if raw else Decimal(0)

    def formula(self, text: str) -> Decimal:
        tokens = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            assert m and m.end() > pos, f"cannot read {text[pos:]!r}"
            tokens.append({k: v for k, v in m.groupdict().items() if v is not None})
            pos = m.end()
        saved = getattr(self, "tokens", None), getattr(self, "at", 0)  # a referenced formula is parsed in between
        self.tokens, self.at = tokens, 0
        result = self.expr()
        assert self.at == len(self.tokens)
        self.tokens, self.at = saved
        return result

    def peek(self):
        return self.tokens[self.at] if self.at < len(self.tokens) else {}

    def take(self):
        self.at += 1
        return self.tokens[self.at - 1]

    def expr(self) -> Decimal:
        value = self.term()
        while self.peek().get("op") in ("+", "-"):
            value = value + self.term() if self.take()["op"] == "+" else value - self.term()
        return value

    def term(self) -> Decimal:
        value = self.factor()
        while self.peek().get("op") in ("*", "/"):
            value = value * self.factor() if self.take()["op"] == "*" else value / self.factor()
        return value

    def factor(self) -> Decimal:
        tok = self.take()
        if tok.get("op") == "-":
            return -self.factor()
        if tok.get("op") == "(":
            value = self.expr()
            assert self.take().get("op") == ")"
            return value
        if "num" in tok:
            return Decimal(tok["num"])
        if "ref" in tok:
            return self.value(*_cell_index(tok["ref"]))
        assert "fn" in tok, tok
        total = Decimal(0)
        while True:
            arg = self.take()
            if "range" in arg:
                (r1, c1), (r2, c2) = (_cell_index(x) for x in arg["range"].split(":"))
                total += sum((self.value(r, c) for r in range(r1, r2 + 1) for c in range(c1, c2 + 1)), Decimal(0))
            else:
                total += self.value(*_cell_index(arg["ref"]))
            if self.take().get("op") == ")":
                return total

    def row_named(self, label: str) -> int:
        return next(i for i, row in enumerate(self.cells) if row and row[0] == label)


def _sheet_totals(sheet: Sheet, names: list[str], label: str) -> dict[str, Decimal]:
    header = next(i for i, row in enumerate(sheet.cells) if row and row[0] == "tenant")
    row = sheet.row_named(label)
    return {name: sheet.value(row, sheet.cells[header].index(f"cost: {name}")) for name in names}


def test_the_spreadsheet_recomputes_every_scenario_and_tenant_to_the_cent(tiny):
    chosen = scenarios(tiny)
    sheet = Sheet(formulas_render(tiny, chosen))
    names = [sc.name for sc in chosen]
    expected = {sc.name: scenario_cost(tiny, sc) for sc in chosen}
    for name, total in _sheet_totals(sheet, names, "total").items():
        assert abs(total - expected[name].total) < Decimal("0.01"), name
        assert total == Decimal(EXPECTED[name])  # exact: the formulas are the model's, term by term
    for tenant in ("A", "B"):
        for name, total in _sheet_totals(sheet, names, f"tenant: {tenant}").items():
            assert abs(total - expected[name].by_tenant[tenant]) < Decimal("0.01"), (tenant, name)


def test_the_published_spreadsheet_recomputes_to_the_published_cost_model():
    from evals.costmodel.services import COST_MODEL_DIR, FORMULAS_CSV, REFERENCE_CSV, cost_model_run, formulas_text

    load = load_read(REFERENCE_CSV)
    text, results = FORMULAS_CSV.read_text(), cost_model_run(load)
    assert text == formulas_text(load, results)  # the sheet is current with the CSV and bench figures it was built from
    sheet = Sheet(text)
    totals = _sheet_totals(sheet, [r.scenario.name for r in results], "total")
    readme = (COST_MODEL_DIR / "README.md").read_text()
    for result in results:
        assert abs(totals[result.scenario.name] - result.total) < Decimal("0.01"), result.scenario.name
        assert f"| {result.scenario.name} | ${quantize_usd(totals[result.scenario.name], places=2):,} |" in readme
        for tenant, cost in result.by_tenant.items():
            assert abs(_sheet_totals(sheet, [result.scenario.name], f"tenant: {tenant}")[result.scenario.name] - cost) < Decimal("0.01")
    # Infrastructure lines and the all-in totals recompute to the README's too.
    from evals.costmodel.services import infra_estimate, usd

    _, lines, _ = infra_estimate(load)
    infra_total = sheet.value(sheet.row_named("infrastructure total"), 4)
    assert abs(infra_total - sum(line.monthly for line in lines)) < Decimal("0.01")
    assert f"| **infrastructure total** | | | **{usd(infra_total)}** | |" in readme
    all_in = _sheet_totals(sheet, [r.scenario.name for r in results], "all-in (LLM spend + infrastructure)")
    for result in results:
        assert abs(all_in[result.scenario.name] - result.total - infra_total) < Decimal("0.01")
        if result.scenario.name in ("no levers", "all levers"):
            assert f"| {result.scenario.name} | {usd(result.total)} | {usd(infra_total)} | {usd(all_in[result.scenario.name])} |" in readme


def test_the_gateway_is_sized_from_the_measured_cpu_and_the_seeds_busiest_hour():
    from evals.costmodel.infra import infra_lines, peak_factor, size_gateway

    assert peak_factor() == Decimal("2.60")  # the seed's busiest hour (15:00 UTC) on its busiest weekday
    sizing = size_gateway(
        requests_month=Decimal(3_600_000 * 730), cpu_ms_per_request=Decimal("1.5"), embed_cpu_ms=Decimal("4"),
        exact_hit_rate=Decimal("0.5"), hours_per_month=Decimal(730), vcpus=Decimal(2), factor=Decimal(1),
    )  # fmt: skip
    # 1,000 req/s × (1.5 + 0.5·4) ms = 3.5 cores; at 50 % of 2 vCPUs each, 4 instances.
    assert (sizing.peak_rps, sizing.gateway_cores, sizing.gateway_instances) == (Decimal(1000), Decimal("3.5"), 4)
    small = size_gateway(
        requests_month=Decimal(1_500_000), cpu_ms_per_request=Decimal("1.5"), embed_cpu_ms=Decimal("4"),
        exact_hit_rate=Decimal("0.08"), hours_per_month=Decimal(730), vcpus=Decimal(2),
    )  # fmt: skip
    assert small.gateway_instances == 2  # redundancy, not CPU, sets the floor
    lines = {line.item: line for line in infra_lines(sizing)}
    assert lines["gateway_instance"].monthly == 4 * lines["gateway_instance"].unit_price * 730


def test_the_sensitivity_table_ranks_the_inputs_by_how_far_they_move_the_total(tiny):
    all_levers = next(sc for sc in scenarios(tiny) if sc.name == "all levers")
    table = sensitivity(tiny, all_levers)
    assert [row.swing for row in table] == sorted((row.swing for row in table), reverse=True)
    by_input = {row.input: row for row in table}
    # The whole bill is linear in the volume: ±10 % of requests moves it by exactly ±10 %.
    volume = by_input["requests per month"]
    assert (volume.low, volume.high) == (volume.base * Decimal("0.9"), volume.base * Decimal("1.1"))
    assert by_input["exact-cache hit rate"].high < volume.base < by_input["exact-cache hit rate"].low
