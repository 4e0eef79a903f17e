"""Complexity features and confidence signals: pure functions, no database."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.routing.features import (
    COMPLEXITY_WEIGHTS,
    SIGNAL_UNCERTAINTY,
    answer_confidence,
    complexity_features,
    complexity_score,
    confidence_assess,
    escalation_risk,
    expected_answer_format,
    json_requested,
)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_weights_are_documented_and_sum_to_one() -> None:
    assert set(COMPLEXITY_WEIGHTS) == {"length", "code", "math", "multi_step", "reasoning", "depth"}
    assert sum(COMPLEXITY_WEIGHTS.values()) == pytest.approx(1.0)


def test_a_greeting_is_simple() -> None:
    features = complexity_features(user("hi, how are you?"))
    assert features["code"] == features["math"] == features["reasoning"] == features["depth"] == 0
    assert complexity_score(features) < 0.05


def test_code_fence_and_stack_trace_saturate_code() -> None:
    fenced = complexity_features(user("Why does this fail?\n```python\nprint(1/0)\n```"))
    trace = complexity_features(
        user('Traceback (most recent call last):\n  File "x.py", line 3\nZeroDivisionError: division by zero')
    )
    prose = complexity_features(user("Tell me about the weather in Paris in spring."))
    assert fenced["code"] == 1.0 and trace["code"] == 1.0
    assert prose["code"] == 0.0


def test_math_cues_count_words_symbols_and_numbers() -> None:
    low = complexity_features(user("Tell me a story about a dragon."))
    high = complexity_features(user("Solve the equation 3x + 4 = 19 and compute the probability that x > 2."))
    assert low["math"] == 0.0
    assert high["math"] == 1.0


def test_multi_step_and_reasoning_cues() -> None:
    steps = complexity_features(user("First, load the data.\n1. clean it\n2. plot it\nThen, finally, write a report."))
    assert steps["multi_step"] == 1.0
    reasoning = complexity_features(user("Explain why the design is better and compare the trade-offs."))
    assert reasoning["reasoning"] == 1.0
    assert complexity_features(user("List three fruits."))["reasoning"] == 0.0


def test_length_grows_with_tokens_and_saturates() -> None:
    short = complexity_features(user("word " * 10))["length"]
    medium = complexity_features(user("word " * 300))["length"]
    huge = complexity_features(user("word " * 5000))["length"]
    assert 0 < short < medium < huge == 1.0
    # The gateway's own token count is used when given (no recount of a long prompt).
    assert complexity_features(user("word"), prompt_tokens=2000)["length"] == 1.0


def test_conversation_depth_counts_earlier_turns_not_the_system_prompt() -> None:
    messages = [{"role": "system", "content": "be brief"}]
    for i in range(3):
        messages += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    messages.append({"role": "user", "content": "and now?"})
    assert complexity_features(messages)["depth"] == 1.0  # 6 earlier turns
    assert complexity_features(messages[:1] + messages[-1:])["depth"] == 0.0


def test_score_is_the_weighted_mean_of_the_features() -> None:
    features = {"length": 1.0, "code": 0.0, "math": 0.0, "multi_step": 0.0, "reasoning": 1.0, "depth": 0.0}
    assert complexity_score(features) == pytest.approx(0.40)
    assert complexity_score(features, {"length": 1.0, "reasoning": 1.0}) == pytest.approx(1.0)
    assert complexity_score(features, {"length": 0.0}) == 0.0


@given(st.text(max_size=3000))
def test_features_and_score_stay_in_unit_interval(text: str) -> None:
    features = complexity_features(user(text))
    assert all(0.0 <= v <= 1.0 for v in features.values())
    assert 0.0 <= complexity_score(features) <= 1.0


# --------------------------------------------------------------------------- confidence


def test_a_plain_good_answer_has_no_signal() -> None:
    conf = confidence_assess(answer="The capital of France is Paris.", prompt="What is the capital of France?")
    assert conf.uncertainty == 0.0 and conf.signals == {}
    assert conf.reason == "no low-confidence signal"


def test_truncation_from_finish_reason_and_from_the_text() -> None:
    assert confidence_assess(answer="The answer is", finish_reason="length").signals == {"truncated": 1.0}
    assert "truncated" in confidence_assess(answer="There were 82 - 13 = <<82-1").signals
    assert "truncated" in confidence_assess(answer="Here:\n```python\ndef f():\n    return").signals
    assert "truncated" not in confidence_assess(answer="Done.", finish_reason="stop").signals


def test_json_asked_but_not_returned_is_a_format_mismatch() -> None:
    assert confidence_assess(answer='{"a": 1}', wants_json=True).signals == {}
    assert confidence_assess(answer='```json\n{"a": [1, 2]}\n```', wants_json=True).signals == {}
    assert confidence_assess(answer="Sure! Here is the data: a=1", wants_json=True).signals["format_mismatch"] == 1.0
    assert "format_mismatch" not in confidence_assess(answer="Sure! a=1", wants_json=False).signals


def test_expected_final_answer_pattern() -> None:
    ok = confidence_assess(answer="5 + 4 = 9\n#### 9", expected_pattern=r"####\s*\d+")
    missing = confidence_assess(answer="5 + 4 = 9, so the answer is 9.", expected_pattern=r"####\s*\d+")
    assert "format_mismatch" not in ok.signals
    assert missing.signals["format_mismatch"] == SIGNAL_UNCERTAINTY["format_mismatch"]


def test_refusal_and_hedging() -> None:
    refusal = confidence_assess(answer="I'm sorry, but I can't help with that request.")
    assert refusal.signals["refusal"] == 0.9
    one = confidence_assess(answer="I think it is Paris.")
    three = confidence_assess(answer="I think it might be Paris, but I'm not sure. Probably.")
    assert one.signals["hedging"] == pytest.approx(0.3)
    assert three.signals["hedging"] == pytest.approx(0.6)  # capped


def test_wrong_worked_arithmetic_is_caught_and_right_arithmetic_is_not() -> None:
    wrong_annotation = confidence_assess(answer="Profit is ($40 - $20) x 2 = $<<(40-20)*2=60>>60.\n#### 60")
    wrong_inline = confidence_assess(answer="So 12 * 4 = 50 apples in total.")
    right = confidence_assess(answer="4 * 1.25 = <<4*1.25=5>>5 points, and 4 + 5 = 9 points. Also 1,200 / 4 = 300.")
    money = confidence_assess(answer="Each costs 10 / 3 = 3.33 dollars.")
    assert wrong_annotation.signals["arithmetic"] == 0.8
    assert wrong_inline.signals["arithmetic"] == 0.8
    assert "arithmetic" not in right.signals
    assert "arithmetic" not in money.signals  # rounded to cents is not an error
    # Not results: the tail of a longer expression, a next step, a rounded head count.
    assert "arithmetic" not in confidence_assess(answer="We know x * 3/4 = 12, so x = 16.").signals
    assert "arithmetic" not in confidence_assess(answer="Total: 22 + 4 x 12 = 22 + 48 = 70.").signals
    assert "arithmetic" not in confidence_assess(answer="They need 73 / 8 = 9 cars.").signals


def test_numeric_question_without_a_number_at_the_end() -> None:
    no_number = confidence_assess(answer="It depends on how you count them, really.", prompt="How many apples are left?")
    numbered = confidence_assess(answer="She has 7 apples left.", prompt="How many apples are left?")
    assert no_number.signals["no_final_answer"] == 0.6
    assert "no_final_answer" not in numbered.signals


def test_logprob_signal_scales_with_the_floor() -> None:
    assert confidence_assess(answer="Paris.", token_logprobs=[-0.01, -0.03]).signals.get("logprob", 0) < 0.05
    shaky = confidence_assess(answer="Paris.", token_logprobs=[-0.4, -0.6])
    assert shaky.mean_logprob == pytest.approx(-0.5)
    assert shaky.signals["logprob"] == pytest.approx(0.5)
    assert confidence_assess(answer="Paris.", token_logprobs=[-3.0]).signals["logprob"] == 1.0
    assert confidence_assess(answer="Paris.", token_logprobs=[-0.5], logprob_floor=-2.0).signals["logprob"] == pytest.approx(0.25)


def test_empty_answer_unless_it_is_a_tool_call() -> None:
    assert confidence_assess(answer="").signals == {"empty": 1.0}
    assert confidence_assess(answer=None, has_tool_calls=True).signals == {}


def test_uncertainty_is_the_strongest_signal() -> None:
    conf = confidence_assess(answer="I think 2 + 2 = 5", prompt="What is 2 + 2?", finish_reason="length")
    assert conf.uncertainty == 1.0
    assert conf.reason.startswith("truncated")
    assert json.dumps(conf.signals)  # serialisable (it goes to the ledger and the logs)


def test_escalation_risk_is_a_noisy_or_never_below_its_inputs() -> None:
    assert escalation_risk(0.0, 0.0) == 0.0
    assert escalation_risk(0.5, 0.5) == pytest.approx(0.75)
    assert escalation_risk(1.0, 0.0) == 1.0
    for c in (0.0, 0.2, 0.7):
        for u in (0.0, 0.3, 0.9):
            r = escalation_risk(c, u)
            assert r >= c and r >= u


def test_expected_format_from_an_instruction_or_few_shot_examples() -> None:
    instruction = "Solve it. Give the final answer on a last line of the form '#### <number>'."
    assert expected_answer_format(instruction).search("so 3\n#### 3")
    few_shot = "Q: 1+1?\nAnswer: 2\nQ: 2+2?\nAnswer: 4\nQ: 3+3?"
    assert expected_answer_format(few_shot).pattern.startswith("Answer")
    assert expected_answer_format("What does #### mean in markdown?") is None
    assert expected_answer_format("Answer: only one example here") is None


def test_answer_confidence_reads_the_request() -> None:
    messages = [
        {"role": "system", "content": "End with a line '#### <number>'."},
        {"role": "user", "content": "How many legs do 2 cats have?"},
    ]
    assert answer_confidence(messages, answer="2 * 4 = 8\n#### 8").signals == {}
    assert answer_confidence(messages, answer="Two cats have 8 legs.").signals == {"format_mismatch": 1.0}
    json_ask = [{"role": "user", "content": "Return the colours as JSON."}]
    assert json_requested(json_ask) and not json_requested([{"role": "user", "content": "What is JSON?"}])
    assert json_requested([{"role": "user", "content": "hi"}], {"type": "json_object"})
    assert answer_confidence(json_ask, answer="red, blue").signals == {"format_mismatch": 1.0}
