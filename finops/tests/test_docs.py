"""The docs stay true to the measurements: every figure the ADRs and README quote comes from a bench/eval output."""

from bench.doc_numbers import CHECKED, figures, unsourced


def test_the_checker_sees_the_figures_it_must_check():
    quoted = [shown for path in CHECKED for _, shown, _ in figures(path.read_text())]
    assert len(quoted) >= 30  # the ADRs cite their measured numbers; a checker that finds none checks nothing


def test_every_figure_in_the_adrs_and_readme_comes_from_a_bench_or_eval_output():
    missing = unsourced()
    assert missing == [], "figures with no source in docs/benchmarks.md or the eval reports (re-run make bench / make eval, then update the ADR):\n" + "\n".join(missing)
