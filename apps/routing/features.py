"""Text features the router decides on: prompt complexity (before the call) and answer confidence (after it).

Pure functions of text, no Django: the gateway hot path (`apps.routing.pipeline`) and the offline A/B
harness (`apps.routing.evaluation`) call exactly these, so what the harness measures is what runs.

Complexity: six features, each scaled to 0..1, combined with the documented weights in
`COMPLEXITY_WEIGHTS` (they sum to 1, so the score is 0..1 too):

| feature | weight | 0 → 1 |
|---|---|---|
| length | 0.20 | log-scaled prompt tokens: ~25 tokens ≈ 0.1, 300 ≈ 0.55, ≥ 2,000 = 1 |
| code | 0.20 | a code fence, a stack trace or ≥ 3 code tokens = 1 |
| math | 0.15 | math words, operators, LaTeX, numbers; 4 hits = 1 |
| multi_step | 0.15 | enumerated items, sequencing words ("then", "finally"), several questions; 4 hits = 1 |
| reasoning | 0.20 | reasoning cues ("why", "prove", "compare", "trade-off", "step by step"); 2 hits = 1 |
| depth | 0.10 | earlier turns in the conversation; 6 = 1 |

Confidence: signals computed on an answer. Each signal maps to an *uncertainty* in 0..1; the answer's
uncertainty is the largest one (one strong sign of a bad answer is enough):

| signal | uncertainty | when |
|---|---|---|
| empty | 1.0 | no text and no tool call |
| truncated | 1.0 | finish_reason "length", or the text stops mid-expression |
| format_mismatch | 1.0 | JSON was asked for and the answer is not valid JSON; an expected final-answer pattern is missing |
| refusal | 0.9 | "I can't help with that", "as an AI language model" |
| arithmetic | 0.8 | a worked calculation in the answer is wrong ("3 * 4 = 13", "<<20*2=60>>") |
| no_final_answer | 0.6 | a numeric question whose answer ends without any number |
| hedging | 0.3 per phrase, at most 0.6 | "I'm not sure", "it is unclear", "I think" |
| logprob | mean logprob / floor, clipped | the provider returned token logprobs (floor -1.0 by default) |
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from apps.gateway.tokens import count_tokens, message_text

__all__ = [
    "COMPLEXITY_WEIGHTS",
    "Confidence",
    "SIGNAL_UNCERTAINTY",
    "complexity_features",
    "complexity_score",
    "confidence_assess",
    "escalation_risk",
    "prompt_text",
]

# Only the head of a very long prompt is scanned: the features saturate long before, and the hot
# path must stay in microseconds whatever the client sends.
SCAN_CHARS = 20_000

COMPLEXITY_WEIGHTS: dict[str, float] = {
    "length": 0.20,
    "code": 0.20,
    "math": 0.15,
    "multi_step": 0.15,
    "reasoning": 0.20,
    "depth": 0.10,
}

LENGTH_SATURATION_TOKENS = 2000
LENGTH_SCALE_TOKENS = 40

_CODE_FENCE = re.compile(r"```|~~~")
_STACK_TRACE = re.compile(
    r"Traceback \(most recent call last\)|^\s+at [\w.$<>]+\(.*\)\s*$|Exception in thread|\bpanic: |"
    r"\b\w+(?:Error|Exception): |segmentation fault|core dumped|^\s*File \".*\", line \d+",
    re.M | re.I,
)
_CODE_TOKENS = re.compile(
    r"\bdef \w+\(|\bclass \w+[:(]|\bfunction\s*\w*\(|\breturn\b|\bimport \w+|#include|\bpublic static\b|=>|\bconst \w+ =|"
    r"\bSELECT\b.+\bFROM\b|\bfor \(|\bwhile \(|;\s*$|\{\s*$|\b(?:python|javascript|typescript|java|rust|golang|sql|regex|"
    r"bash|c\+\+|kotlin|function|algorithm|compile|debug|refactor|unit test)\b",
    re.M | re.I,
)
_MATH_WORDS = re.compile(
    r"\b(?:calculate|compute|solve|equation|integral|derivative|probability|percent(?:age)?|sum of|product of|how many|"
    r"how much|average|ratio|matrix|polynomial|theorem|prove that|value of|expected value|variance|remainder|"
    r"factorial|logarithm|geometry|triangle|radius|velocity)\b",
    re.I,
)
_MATH_SYMBOLS = re.compile(r"\\frac|\\sqrt|\\sum|\\int|[=^√∑∫≤≥≠±×÷]|\d\s*[-+*/]\s*\d")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_ENUMERATED = re.compile(r"^\s*(?:\d+[.)]|[-*•]|[a-z][.)])\s+\S", re.M)
_SEQUENCING = re.compile(
    r"\b(?:first(?:ly)?|second(?:ly)?|then|next|after that|afterwards|finally|lastly|step \d+|and then|followed by|"
    r"in addition|also)\b",
    re.I,
)
_REASONING = re.compile(
    r"\b(?:why|explain|prove|proof|analy[sz]e|analysis|compare|contrast|derive|justify|reason(?:ing)?|evaluate|"
    r"critique|assess|implications?|trade-?offs?|pros and cons|step[- ]by[- ]step|think carefully|in depth|"
    r"architecture|design a|strategy|optimi[sz]e)\b",
    re.I,
)


def prompt_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The text the router reads: every message's content, oldest first, joined by newlines."""
    return "\n".join(message_text(m.get("content")) for m in messages)


def _saturate(hits: float, at: float) -> float:
    return min(1.0, hits / at) if at > 0 else 0.0


def complexity_features(messages: list[Mapping[str, Any]]) -> dict[str, float]:
    """The six complexity features of a chat request, each in 0..1 (see the module docstring)."""
    text = prompt_text(messages)[:SCAN_CHARS]
    tokens = count_tokens(text)
    length = min(1.0, math.log1p(tokens / LENGTH_SCALE_TOKENS) / math.log1p(LENGTH_SATURATION_TOKENS / LENGTH_SCALE_TOKENS))

    if _CODE_FENCE.search(text) or _STACK_TRACE.search(text):
        code = 1.0
    else:
        code = _saturate(len(_CODE_TOKENS.findall(text)), 3)

    numbers = len(_NUMBER.findall(text))
    math_hits = len(_MATH_WORDS.findall(text)) + len(_MATH_SYMBOLS.findall(text)) / 2 + min(numbers, 6) / 3
    math_f = _saturate(math_hits, 4)

    questions = max(text.count("?") - 1, 0)
    multi = _saturate(len(_ENUMERATED.findall(text)) + len(_SEQUENCING.findall(text)) + questions, 4)

    reasoning = _saturate(len(_REASONING.findall(text)), 2)

    # Earlier turns: every message before the last user message that is not the system prompt.
    turns = sum(1 for m in messages[:-1] if m.get("role") in ("user", "assistant", "tool", "function"))
    depth = _saturate(turns, 6)

    return {
        "length": round(length, 4),
        "code": round(code, 4),
        "math": round(math_f, 4),
        "multi_step": round(multi, 4),
        "reasoning": round(reasoning, 4),
        "depth": round(depth, 4),
    }


def complexity_score(features: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float:
    """Weighted sum of the features, normalised by the weights' total, so it stays in 0..1."""
    weights = weights or COMPLEXITY_WEIGHTS
    total = sum(max(w, 0.0) for w in weights.values())
    if total <= 0:
        return 0.0
    score = sum(max(w, 0.0) * features.get(name, 0.0) for name, w in weights.items()) / total
    return round(min(max(score, 0.0), 1.0), 4)


# --------------------------------------------------------------------------- confidence

SIGNAL_UNCERTAINTY: dict[str, float] = {
    "empty": 1.0,
    "truncated": 1.0,
    "format_mismatch": 1.0,
    "refusal": 0.9,
    "arithmetic": 0.8,
    "no_final_answer": 0.6,
    "hedging": 0.3,  # per phrase
}
HEDGING_CAP = 0.6
DEFAULT_LOGPROB_FLOOR = -1.0

_REFUSAL = re.compile(
    r"\b(?:I(?:'m| am) (?:sorry|afraid),? (?:but )?I (?:can(?:'|no)t|cannot|won't|am unable)|I can(?:'|no)t (?:help|assist|"
    r"provide|answer|comply)|I cannot (?:help|assist|provide|answer|comply)|I(?:'m| am) (?:not able|unable) to "
    r"(?:help|assist|provide|answer)|as an AI(?: language model)?,? I (?:can(?:'|no)t|cannot|don't|do not))",
    re.I,
)
_HEDGING = re.compile(
    r"\b(?:I(?:'m| am) not (?:sure|certain)|not entirely sure|I(?: don't| do not) know|it(?:'s| is) (?:unclear|"
    r"difficult to (?:say|determine)|hard to say|not clear)|cannot be determined|can't be determined|I think|I believe|"
    r"I guess|probably|possibly|might be|may or may not|it depends|without more (?:information|context)|"
    r"not enough information|I(?:'m| am) unable to determine|ambiguous)\b",
    re.I,
)
_JSON_ASKED = re.compile(r"\b(?:JSON|json object|valid json)\b")
_NUMERIC_QUESTION = re.compile(r"\b(?:how many|how much|how long|how far|how old|what is the (?:total|number|sum|value|cost|"
                               r"price|area|percentage)|calculate|compute)\b", re.I)
_FENCED_JSON = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
_INLINE_CALC = re.compile(
    r"(?<![\w.])(\(?\$?\d[\d,]*(?:\.\d+)?\)?(?:\s*[-+*/x×÷]\s*\(?\$?\d[\d,]*(?:\.\d+)?\)?)+)\s*=\s*\$?(-?\d[\d,]*(?:\.\d+)?)(?![\d.]\d)"
)
_DANGLING = re.compile(r"(?:<<[^>]*|[-+*/=(,×÷]\s*)$")


@dataclass(slots=True)
class Confidence:
    """What the confidence check found in one answer. `uncertainty` is in 0..1; 0 means no sign of trouble."""

    uncertainty: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)
    mean_logprob: float | None = None

    @property
    def reason(self) -> str:
        if not self.signals:
            return "no low-confidence signal"
        top = sorted(self.signals.items(), key=lambda kv: (-kv[1], kv[0]))
        return ",".join(name for name, _ in top)


_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _arith(expr: str) -> float | None:
    """Evaluate a plain arithmetic expression safely (numbers, + - * / ** and parentheses), else None."""
    cleaned = expr.replace(",", "").replace("$", "").replace("×", "*").replace("÷", "/").replace("^", "**")
    cleaned = re.sub(r"(?<=[\d)\s])x(?=[\s\d(])", "*", cleaned)
    if len(cleaned) > 120 or "**" in cleaned and re.search(r"\*\*\s*\d{3,}", cleaned):
        return None
    try:
        tree = ast.parse(cleaned.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ValueError("not arithmetic")

    try:
        return walk(tree)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").replace("$", "").rstrip("."))
    except ValueError:
        return None


def _arithmetic_errors(answer: str) -> int:
    """Worked calculations in the answer whose stated result is wrong (calculator annotations and inline "a op b = c")."""
    errors = 0
    for expr, stated in _ANNOTATION.findall(answer):
        value, claimed = _arith(expr), _number(stated)
        if value is not None and claimed is not None and not math.isclose(value, claimed, rel_tol=1e-4, abs_tol=1e-2):
            errors += 1
    for expr, stated in _INLINE_CALC.findall(_ANNOTATION.sub("", answer)):
        value, claimed = _arith(expr), _number(stated)
        # Rounded money and percentages are fine; only a clear miss counts.
        if value is not None and claimed is not None and not math.isclose(value, claimed, rel_tol=1e-2, abs_tol=0.011):
            errors += 1
    return errors


def _looks_truncated(answer: str) -> bool:
    stripped = answer.rstrip()
    if not stripped:
        return False
    if stripped.count("```") % 2 == 1:
        return True
    return bool(_DANGLING.search(stripped))


def _valid_json(answer: str) -> bool:
    text = answer.strip()
    fenced = _FENCED_JSON.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _last_line(answer: str) -> str:
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def confidence_assess(
    *,
    answer: str | None,
    prompt: str = "",
    finish_reason: str | None = None,
    token_logprobs: list[float] | None = None,
    wants_json: bool = False,
    expected_pattern: str | re.Pattern[str] | None = None,
    has_tool_calls: bool = False,
    logprob_floor: float = DEFAULT_LOGPROB_FLOOR,
) -> Confidence:
    """Score one answer's confidence from the signals in the module docstring.

    `wants_json`: the request asked for JSON (response_format, or the prompt says JSON).
    `expected_pattern`: a final-answer format the caller asked for (e.g. GSM8K's few-shot "#### <n>").
    """
    text = (answer or "")[:SCAN_CHARS * 2]
    signals: dict[str, float] = {}
    mean_lp: float | None = None

    if not text.strip():
        if not has_tool_calls:
            signals["empty"] = SIGNAL_UNCERTAINTY["empty"]
    else:
        if finish_reason == "length" or _looks_truncated(text):
            signals["truncated"] = SIGNAL_UNCERTAINTY["truncated"]
        if wants_json and not _valid_json(text):
            signals["format_mismatch"] = SIGNAL_UNCERTAINTY["format_mismatch"]
        if expected_pattern is not None:
            pattern = re.compile(expected_pattern) if isinstance(expected_pattern, str) else expected_pattern
            if not pattern.search(text):
                signals["format_mismatch"] = SIGNAL_UNCERTAINTY["format_mismatch"]
        if _REFUSAL.search(text):
            signals["refusal"] = SIGNAL_UNCERTAINTY["refusal"]
        if _arithmetic_errors(text):
            signals["arithmetic"] = SIGNAL_UNCERTAINTY["arithmetic"]
        if prompt and _NUMERIC_QUESTION.search(prompt) and not _NUMBER.search(_last_line(text)):
            signals["no_final_answer"] = SIGNAL_UNCERTAINTY["no_final_answer"]
        hedges = len(_HEDGING.findall(text))
        if hedges:
            signals["hedging"] = min(HEDGING_CAP, hedges * SIGNAL_UNCERTAINTY["hedging"])

    if token_logprobs:
        mean_lp = sum(token_logprobs) / len(token_logprobs)
        if logprob_floor < 0:
            u = min(max(mean_lp / logprob_floor, 0.0), 1.0)
            if u > 0:
                signals["logprob"] = round(u, 4)

    uncertainty = max(signals.values(), default=0.0)
    return Confidence(uncertainty=round(uncertainty, 4), signals=signals, mean_logprob=mean_lp)


def escalation_risk(complexity: float, uncertainty: float) -> float:
    """Risk that the cheap answer is not good enough: noisy-or of prompt complexity and answer uncertainty.

    Never below either input, so a prompt whose complexity alone crosses the threshold is sent
    up-tier directly (the cheap call could not change the outcome) and the offline sweep of a single
    threshold describes exactly what the hot path does.
    """
    c = min(max(complexity, 0.0), 1.0)
    u = min(max(uncertainty, 0.0), 1.0)
    return round(1.0 - (1.0 - c) * (1.0 - u), 4)
