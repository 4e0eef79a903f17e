"""The vendored ~2,000-character prompts are what their builder makes of the vendored MMLU records."""

from __future__ import annotations

from evals.cache.long_prompts import LONG_PROMPTS_PATH, build, load_long_prompts, load_source, render


def test_the_long_prompts_fixture_is_rebuilt_byte_for_byte_from_the_vendored_records():
    assert LONG_PROMPTS_PATH.read_bytes() == render(build(load_source()))


def test_the_long_prompts_are_distinct_public_prompts_of_about_two_thousand_characters():
    prompts = load_long_prompts()
    texts = [p["prompt"] for p in prompts]
    assert len(prompts) == 300 and len(set(texts)) == 300
    assert all(1900 <= len(t) <= 2000 for t in texts)
    sources = [s for p in prompts for s in p["sources"]]
    assert len(sources) == len(set(sources))  # no question is used twice
    assert all(s.startswith("mmlu-") for s in sources)
