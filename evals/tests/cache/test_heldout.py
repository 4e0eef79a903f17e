"""The held-out cache protocol: the pick is made on one half only, scored on the other; swaps counted apart."""

import hashlib

import numpy as np

from evals.cache import heldout
from evals.cache.heldout_swaps import build, load_swaps
from evals.cache.pairs import Pair, generate_hard_negatives


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in embedding (hashed word counts, normalised): word overlap as cosine similarity."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().replace("?", " ").replace(".", " ").split():
            out[i, hashlib.sha256(word.encode()).digest()[0] + 128 * (len(word) > 6)] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_the_halves_are_a_stable_split_of_the_cached_prompts():
    prompts = [f"question number {i} about caching" for i in range(400)]
    halves = [heldout.half_of(p) for p in prompts]
    assert halves == [heldout.half_of(p) for p in prompts]
    assert 150 < sum(halves) < 250


def test_the_setting_is_picked_on_the_tuning_half_and_reported_on_the_other():
    pairs = [
        Pair(origin=f"How do I reset the password of account {w}?", similar=f"How can I reset account {w}'s password?")
        for w in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima")
    ]
    generate_hard_negatives(pairs)
    swaps = build()[:40]
    report = heldout.heldout_evaluate(pairs, embed=bag_of_words, swaps=swaps, thresholds=[0.5, 0.7, 0.9])
    tuning = {p.origin for p in pairs if heldout.half_of(p.origin) == 0}
    assert report.tuning.positives == len(tuning) and report.held_out.positives == len(pairs) - len(tuning)
    assert report.picked.guard  # without the guard the swaps (same words) would be served
    assert report.swaps_all.swaps == 40 and report.swaps_all.swap_hits == 0
    text = heldout.heldout_markdown(report)
    assert "<!-- heldout -->" in text and str(report.picked) in text


def test_the_vendored_swap_set_is_what_the_generator_writes():
    assert load_swaps() == build()
