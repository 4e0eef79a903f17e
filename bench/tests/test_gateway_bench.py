"""The gateway benchmark's own parts: its prompts, its wrk script against the real mock, and its verdicts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.bench_gateway import wrk
from bench.gateway_prompts import LONG_CHARS, SHORT_MAX_CHARS, long_prompts, short_prompts, write_lines
from bench.gateway_report import acceptance
from bench.gateway_targets import Mock


def test_short_prompts_are_distinct_real_questions_within_the_length_bound():
    prompts = short_prompts(12_000)  # more than the vendored single questions: two-question prompts follow
    assert len(prompts) == 12_000
    assert len(set(prompts)) == len(prompts)
    assert max(map(len, prompts)) <= SHORT_MAX_CHARS
    singles = [p for p in prompts[:8_000] if "\n\n" not in p]
    assert len(singles) > 7_000  # real questions first, not a template with a counter


def test_reworded_twins_of_one_question_are_kept_once():
    # MMLU asks both; finops' semantic tier matched the second to the first at similarity 0.997 in a bench run.
    twins = (
        "doubles the momentum of a moving body its kinetic energy",
        "doubles the kinetic energy of a moving body its momentum",
    )
    singles = [p for p in short_prompts(8_000) if "\n\n" not in p]
    assert sum(any(t in p for t in twins) for p in singles) == 1
    assert sum("step-up transformer in an electric" in p for p in singles) == 1  # "electric" and "electrical circuit"


def test_long_prompts_are_distinct_and_about_2000_characters():
    prompts, origin = long_prompts(1_500)
    assert len(prompts) == len(set(prompts)) == 1_500
    assert all(LONG_CHARS - 100 <= len(p) <= LONG_CHARS for p in prompts), sorted(map(len, prompts))[:3]
    assert "fixtures/routellm/full.jsonl.gz" in origin


@pytest.fixture
def mock(tmp_path: Path):
    with open(tmp_path / "mock.log", "wb") as logs, Mock(logs) as server:
        yield server


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (`make tools`)")
def test_the_wrk_script_counts_every_status_and_reports_reused_prompts(mock, tmp_path):
    import json
    import urllib.request

    # Every second answer of the mock is a 429: the script must count both statuses, and throughput only the 2xx.
    request = urllib.request.Request(
        f"{mock.base}/_mock/faults", data=json.dumps({"*": {"error": "429", "rate": 0.5}}).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    urllib.request.urlopen(request, timeout=5).close()
    prompts = write_lines(["What is 1 + 1?", 'Say "hi".', "Name a prime number."], tmp_path / "prompts.txt")
    env = {"BENCH_KEY": "none", "BENCH_PROMPTS": str(prompts), "BENCH_OFFSET": "0"}
    result = wrk(f"{mock.url}/chat/completions", threads=2, connections=2, duration=1, env=env)

    assert result["statuses"].keys() == {200, 429}
    assert abs(result["statuses"][200] - result["statuses"][429]) <= 2
    assert result["non2xx"] == result["statuses"][429]
    assert result["ok"] == result["statuses"][200]
    assert result["rps_ok"] == pytest.approx(result["ok"] / (result["duration_us"] / 1e6))
    # Three prompts for hundreds of requests: the run says how many reused one, and where the next run starts.
    assert result["reused"] == result["sent"] - 3
    assert result["next_offset"] >= result["sent"] - 1


def _run(rps_ok: float, p50: float = 1000, p99: float = 2000, non2xx: int = 0, ok: int = 100) -> dict:
    return {"rps_ok": rps_ok, "p50": p50, "p99": p99, "non2xx": non2xx, "ok": ok}


def test_every_acceptance_criterion_is_judged_from_the_ratio_of_the_same_run():
    direct = {"one": _run(3000, p50=300), "sat": _run(3000), "slow": _run(390, p99=550_000), "long": _run(2000)}
    litellm = {"one": _run(40, p50=30_300), "sat": _run(60), "slow": _run(50), "long": _run(50)}
    finops = {
        "one": _run(300, p50=5_300),  # overhead 5 ms against LiteLLM's 30 ms: 0.17×, pass
        "sat": _run(250, non2xx=3),  # 4.17× LiteLLM, but 3 non-2xx: fail on that row only
        "slow": _run(380, p99=700_000),  # 0.97× direct (pass), p99 1.27× direct (fail)
        "long": _run(150),  # 3× LiteLLM: fail
    }
    rows = acceptance({"direct": direct, "litellm": litellm, "finops": finops}).splitlines()[2:]
    verdicts = [row.rsplit("|", 2)[1].strip() for row in rows]
    assert verdicts == ["**pass**", "**pass**", "**fail**", "**pass**", "**fail**", "**pass**", "**fail**"]
    assert "0.17× (5.00 ms ÷ 30.00 ms)" in rows[0]


def test_a_run_without_a_single_answer_fails_its_latency_criterion():
    direct = {"slow": _run(390, p99=550_000)}
    finops = {"slow": _run(0, p99=0, ok=0)}  # wrk reports p99 0 when nothing came back
    rows = acceptance({"direct": direct, "finops": finops}).splitlines()[2:]
    p99_row = next(row for row in rows if "p99 ÷ direct p99" in row)
    assert p99_row.endswith("| **fail** |")
