"""The canonical request key and the guard, without services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.cache.guard import Signature, choose_hit, guard_mismatch, guard_signature
from apps.cache.keys import request_key, uses_tools
from apps.cache.tests.conftest import chat_pairs

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


def key(org_id=1, model="gpt-4o-mini", messages=MESSAGES, **body):
    return request_key(org_id=org_id, model_class=model, messages=messages, body={"model": model, "messages": messages, **body})


def test_the_exact_key_ignores_transport_options_and_parameter_order():
    base = key(temperature=0, max_tokens=10)
    assert key(max_tokens=10, temperature=0.0, stream=True, stream_options={"include_usage": True}, user="u1").exact == base.exact


@pytest.mark.parametrize(
    "change",
    [
        {"org_id": 2},
        {"model": "gpt-4o"},
        {"messages": [MESSAGES[0], {"role": "user", "content": "What is 2+3?"}]},
        {"messages": [{"role": "system", "content": "Be verbose."}, MESSAGES[1]]},
        {"temperature": 0.5},
        {"top_p": 0.9},
        {"max_tokens": 11},
        {"stop": ["\n"]},
        {"seed": 1},
        {"n": 2},
        {"response_format": {"type": "json_object"}},
        {"logit_bias": {"50256": -100}},
        {"presence_penalty": 0.1},
        {"frequency_penalty": 0.1},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"some_future_parameter": True},
    ],
)
def test_every_output_changing_input_changes_the_exact_key(change):
    kwargs = {"temperature": 0, "max_tokens": 10, **change}
    assert key(**kwargs).exact != key(temperature=0, max_tokens=10).exact


def test_the_semantic_scope_splits_the_last_user_turn_from_its_context():
    k = key()
    assert k.prompt_text == "What is 2+2?"
    assert k.context_hash == key(messages=[MESSAGES[0], {"role": "user", "content": "Other question"}]).context_hash
    assert k.context_hash != key(messages=[{"role": "system", "content": "Other"}, MESSAGES[1]]).context_hash
    image = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "x"}}]}
    ]
    assert key(messages=image).prompt_text is None  # an image cannot be matched by a text embedding
    assert key(messages=[*MESSAGES, {"role": "assistant", "content": "4"}]).prompt_text is None


def test_tool_use_is_detected_in_parameters_and_in_the_conversation():
    assert uses_tools({"tools": [{"type": "function"}]}, [])
    assert uses_tools({"functions": [{"name": "f"}]}, [])
    assert uses_tools({}, [{"role": "tool", "content": "42", "tool_call_id": "c1"}])
    assert not uses_tools({"tool_choice": "none"}, MESSAGES)


@pytest.mark.parametrize("pair", chat_pairs(), ids=lambda p: p["origin"][:40])
def test_the_guard_accepts_the_paraphrase_and_refuses_every_hard_negative(pair):
    origin = guard_signature(pair["origin"])
    for hard in pair["hard_negatives"]:
        if hard["kind"] == "noun":
            continue  # a swapped common noun is invisible to the guard: only the threshold stops it (see the pipeline test)
        assert guard_mismatch(guard_signature(hard["text"]), origin) is not None, hard


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("What is 2+2?", "What is 2+3?", "number"),
        ("What is 2+3?", "What is 2*3?", "operator"),
        ("What is two plus two?", "What is 2 plus 3?", "number"),
        ("Is coffee safe?", "Is coffee not safe?", "negation"),
        ("No, it does exist in 2.10.", "No, it doesn't exist in 2.10.", "negation"),
        ("Is Paris in France?", "Is Berlin in France?", "entity"),
        ("Convert 100 dollars to euros", "Convert 100 dollars to yen", "entity"),
        ("What happened before the war?", "What happened after the war?", "polarity"),
        ("Flights from Paris to Rome", "Flights from Rome to Paris", "order"),
        ("What is the capital of France?", "Which city is the capital of France?", None),
        ("Why doesn't my code work?", "Why does my code not work?", None),
        ("The safe flag is not used to cast.", "The flag decides whether a cast or not is needed.", "negation"),
        ("What's 2 + 2?", "What is 2+2?", None),
        # "one" as a pronoun is not a number; in its place, another number still is one.
        ("How can one load text data?", "How can you load text data?", None),
        ("By following the guide, one can learn to stream.", "You can learn to stream by following the guide.", None),
        ("Rename the column to a new one using rename_column().", "Use rename_column() with the new column name.", None),
        ("One can load it in pandas.", "Two can load it in pandas.", "number"),
        ("Write a one-line fix.", "Write a fix.", "number"),
        ("Write a one-line fix.", "Write a two-line fix.", "number"),
        ("I have one apple.", "I have an apple.", "number"),
    ],
)
def test_the_guard_reasons(a, b, reason):
    assert guard_mismatch(guard_signature(a), guard_signature(b)) == reason
    assert guard_mismatch(guard_signature(b), guard_signature(a)) == reason


def test_a_signature_reveals_no_word_of_the_prompt():
    text = "Is the Zanzibar merger with Acme Corp closing on 2025-03-14?"
    stored = json.dumps(guard_signature(text).as_json()).lower()
    for word in ("zanzibar", "acme", "merger", "closing", "2025"):
        assert word not in stored
    assert Signature.from_json(json.loads(stored)) == guard_signature(text)


def test_choose_hit_takes_the_first_candidate_above_the_threshold_that_the_guard_accepts():
    query = guard_signature("What is 2+2?")
    wrong, right = guard_signature("What is 2+3?"), guard_signature("What's 2 + 2?")
    decision = choose_hit([(0.99, wrong), (0.95, right), (0.97, right)], query, threshold=0.92)
    assert (decision.index, decision.rejections) == (1, ("number",))
    assert choose_hit([(0.99, wrong), (0.91, right)], query, threshold=0.92).index is None
    assert choose_hit([(0.99, None)], query, threshold=0.92).rejections == ("unreadable",)
    assert choose_hit([(0.99, wrong)], query, threshold=0.92, use_guard=False).index == 0


# --- argument structure: role and argument swaps ---------------------------------------------------------

SWAPS = Path(__file__).resolve().parents[3] / "fixtures" / "cache_swaps" / "swaps.jsonl.gz"


def _swap_pairs() -> list[dict]:
    import gzip

    with gzip.open(SWAPS, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_every_vendored_argument_swap_is_refused_whatever_the_similarity():
    """The guard refuses each swap against its own origin, so no threshold can serve one (0 hits on the set)."""
    rows = _swap_pairs()
    assert len(rows) >= 300
    served = [r for r in rows if guard_mismatch(guard_signature(r["swapped"]), guard_signature(r["origin"])) is None]
    assert served == []
    assert any(r["source"] == "issue #20" for r in rows)


@pytest.mark.parametrize(
    "a, b",
    [
        (
            "What is it like for a host to host a CouchSurfer with Asperger's?",
            "What is it like for a couchsurfer to have a host with Asperger's?",
        ),
        ("Can a lawyer sue a doctor?", "Can a doctor sue a lawyer?"),
        ("How does inflation affect unemployment?", "How does unemployment affect inflation?"),
        ("Why do cats chase mice?", "Why do mice chase cats?"),
        ("How do I convert json to yaml?", "How do I convert yaml to json?"),
    ],
)
def test_a_role_swap_is_refused(a, b):
    assert guard_mismatch(guard_signature(a), guard_signature(b)) == "swap"
    assert guard_mismatch(guard_signature(a), guard_signature(a)) is None


@pytest.mark.parametrize(
    "a, b",
    [
        ("What is the difference between a cat and a dog?", "What is the difference between a dog and a cat?"),
        ("How does inflation affect unemployment?", "What is the effect of inflation on unemployment?"),
        ("Python is used by Google.", "Google uses Python."),
        ("The Datasets library can be used with TensorFlow.", "TensorFlow is compatible with the Datasets library."),
    ],
)
def test_symmetric_reorderings_and_voice_changes_are_not_swaps(a, b):
    assert guard_mismatch(guard_signature(a), guard_signature(b)) != "swap"
