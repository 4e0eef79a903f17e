"""Text features the router decides on: prompt complexity (before the call) and answer confidence (after it).

Pure functions of text, no Django: the gateway hot path (`apps.routing.decide`) and the offline A/B
harness (`evals.router.evaluation`) call exactly these, so what the harness measures is what runs.

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
| format_mismatch | 1.0 | JSON was asked for and the answer is not valid JSON; the final-answer marker the prompt asks for or shows in few-shot examples ("#### 42", "Answer: B") is missing |
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from finops.tokens import count_tokens, message_text

__all__ = [
    "COMPLEXITY_WEIGHTS",
    "Confidence",
    "answer_confidence",
    "expected_answer_format",
    "json_requested",
    "SIGNAL_UNCERTAINTY",
    "complexity_features",
    "complexity_score",
    "confidence_assess",
    "escalation_risk",
    "prompt_text",
]

# Long prompts are read through a window (head + tail): the features saturate long before, and the hot
# path must stay in microseconds whatever the client sends. The tail keeps the question, which chat
# clients put last.
SCAN_HEAD_CHARS = 3000
SCAN_TAIL_CHARS = 1000

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

# Cues are matched word by word against these sets (one dict lookup per word) and phrase by phrase
# with substring counts: an order of magnitude faster than case-insensitive regex alternations.
_WORD_CUES: dict[str, str] = {}
for _feature, _words in {
    "code": "python javascript typescript java rust golang sql regex bash kotlin cpp algorithm compile compiler debug "
    "refactor function functions code script stacktrace api json yaml dockerfile kubernetes",
    "math": "calculate compute solve equation equations integral derivative probability percent percentage average ratio "
    "matrix polynomial theorem remainder factorial logarithm geometry triangle radius velocity variance",
    "multi_step": "first firstly second secondly third then next afterwards finally lastly also",
    "reasoning": "why explain prove proof analyze analyse analysis compare contrast derive justify reason reasoning evaluate "
    "critique assess implication implications tradeoff tradeoffs architecture strategy optimize optimise",
}.items():
    for _word in _words.split():
        _WORD_CUES[_word] = _feature

_PHRASE_CUES: dict[str, tuple[str, ...]] = {
    "math": ("how many", "how much", "sum of", "product of", "prove that", "value of", "expected value"),
    "multi_step": ("after that", "and then", "followed by", "in addition", "step 1", "step 2"),
    "reasoning": ("trade-off", "pros and cons", "step by step", "step-by-step", "think carefully", "in depth", "design a"),
}
_CODE_MARKERS = (
    "def ",
    "class ",
    "return ",
    "import ",
    "#include",
    "=>",
    "const ",
    "SELECT ",
    ";\n",
    "{\n",
    "();",
    "</",
    "==",
    "!=",
    "->",
    "self.",
    "print(",
    "console.",
)
_TRACE_MARKERS = (
    "Traceback (most recent call last)",
    "Exception in thread",
    "panic: ",
    "Segmentation fault",
    "segmentation fault",
    "core dumped",
    "\n\tat ",
    "\n    at ",
)
_MATH_CHARS = "=^√∑∫≤≥≠±×÷"
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)?")
_ENUMERATED = re.compile(r"^\s*(?:\d+[.)]|[-*•]|[a-z][.)])\s+\S", re.M)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def prompt_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The text the router reads: every message's content, oldest first, joined by newlines."""
    return "\n".join(message_text(m.get("content")) for m in messages)


def scan_window(text: str) -> str:
    if len(text) <= SCAN_HEAD_CHARS + SCAN_TAIL_CHARS:
        return text
    return text[:SCAN_HEAD_CHARS] + "\n" + text[-SCAN_TAIL_CHARS:]


def _saturate(hits: float, at: float) -> float:
    return min(1.0, hits / at) if at > 0 else 0.0


def complexity_features(
    messages: Sequence[Mapping[str, Any]], *, prompt_tokens: int | None = None, text: str | None = None
) -> dict[str, float]:
    """The six complexity features of a chat request, each in 0..1 (see the module docstring).

    `prompt_tokens`: the gateway's own count, when it has one (saves recounting a long prompt).
    """
    full = prompt_text(messages) if text is None else text
    window = scan_window(full)
    if prompt_tokens is None:
        counted = count_tokens(window)
        prompt_tokens = counted if window is full else round(counted * len(full) / max(len(window), 1))
    length = min(
        1.0, math.log1p(prompt_tokens / LENGTH_SCALE_TOKENS) / math.log1p(LENGTH_SATURATION_TOKENS / LENGTH_SCALE_TOKENS)
    )

    lower = window.lower()
    hits = {"code": 0.0, "math": 0.0, "multi_step": 0.0, "reasoning": 0.0}
    numbers = 0
    for word in _WORD.findall(lower):
        feature = _WORD_CUES.get(word)
        if feature is not None:
            hits[feature] += 1
        elif word[0].isdigit():
            numbers += 1
    for feature, phrases in _PHRASE_CUES.items():
        for phrase in phrases:
            if phrase in lower:
                hits[feature] += lower.count(phrase)

    if "```" in window or "~~~" in window or any(marker in window for marker in _TRACE_MARKERS):
        code = 1.0
    else:
        code = _saturate(hits["code"] + sum(window.count(marker) for marker in _CODE_MARKERS), 3)

    symbols = sum(window.count(ch) for ch in _MATH_CHARS) + lower.count("\\frac") + lower.count("\\sqrt")
    math_f = _saturate(hits["math"] + symbols / 2 + min(numbers, 6) / 3, 4)

    questions = max(window.count("?") - 1, 0)
    enumerated = len(_ENUMERATED.findall(window)) if "\n" in window else 0
    multi = _saturate(enumerated + hits["multi_step"] + questions, 4)

    reasoning = _saturate(hits["reasoning"], 2)

    # Earlier turns: every message before the last one that is not the system prompt.
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
_NUMERIC_QUESTION = re.compile(
    r"\b(?:how many|how much|how long|how far|how old|what is the (?:total|number|sum|value|cost|"
    r"price|area|percentage)|calculate|compute)\b",
    re.I,
)
_FENCED_JSON = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
# "a op b = c" where c is a lone number: not followed by another operator ("= 22 + 48" is a next step,
# not a result), and (checked in code) not preceded by one ("x * 3/4 = 12" is not "3/4 = 12").
_INLINE_CALC = re.compile(
    r"(?<![\w.])(\(?\$?\d[\d,]*(?:\.\d+)?\)?(?:\s*[-+*/x×÷]\s*\(?\$?\d[\d,]*(?:\.\d+)?\)?)+)\s*=\s*\$?(-?\d[\d,]*(?:\.\d+)?)"
    r"(?!\d|[.,]\d)(?!\s*[-+*/x×÷(^]|\s*%)"
)
_OPERAND_BEFORE = re.compile(r"(?:[)*/+\-×÷^]|(?<![A-Za-z])[A-Za-z])\s*\$?$")  # an operator, or a one-letter variable
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


_OPS: dict[type[ast.AST], Callable[..., float]] = {
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


def _miscalculated(value: float | None, claimed: float | None, rel_tol: float) -> bool:
    if value is None or claimed is None:
        return False
    if math.isclose(value, claimed, rel_tol=rel_tol, abs_tol=0.011):
        return False
    # Rounding to a whole number ("73 / 8 = 9 cars") is a modelling choice, not an arithmetic slip.
    return not (abs(value - claimed) < 1 and claimed == round(claimed))


def _arithmetic_errors(answer: str) -> int:
    """Worked calculations in the answer whose stated result is wrong (calculator annotations and inline "a op b = c")."""
    errors = sum(1 for expr, stated in _ANNOTATION.findall(answer) if _miscalculated(_arith(expr), _number(stated), 1e-4))
    prose = _ANNOTATION.sub("", answer)
    for match in _INLINE_CALC.finditer(prose):
        if _OPERAND_BEFORE.search(prose[max(match.start() - 5, 0) : match.start()]):
            continue  # the visible part is the tail of a longer expression
        # Rounded money and percentages are fine; only a clear miss counts.
        errors += _miscalculated(_arith(match.group(1)), _number(match.group(2)), 1e-2)
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


_ANSWER_MARKERS = ("####", "Final answer:", "Answer:", "\\boxed{")
_FORMAT_INSTRUCTION = re.compile(r"\b(?:end|finish|conclude|final line|last line|format|in the form)\b", re.I)


def expected_answer_format(prompt: str) -> re.Pattern[str] | None:
    """The final-answer marker the prompt asks for, as a pattern the answer must contain; None if it asks for none.

    Asked for = named in an instruction ("End with a line '#### <number>'") or shown by at least two
    few-shot examples (lines that start with the marker), the way benchmark prompts and many
    production templates fix an answer's format.
    """
    window = scan_window(prompt)
    for marker in _ANSWER_MARKERS:
        if marker not in window:
            continue
        shown = sum(1 for line in window.splitlines() if line.lstrip().startswith(marker))
        asked = any(
            _FORMAT_INSTRUCTION.search(sentence) for sentence in re.split(r"(?<=[.!?])\s+|\n", window) if marker in sentence
        )
        if shown >= 2 or asked:
            return re.compile(re.escape(marker) + r"\s*\S")
    return None


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
    text = scan_window(answer or "")
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


_JSON_REQUEST = re.compile(r"\b(?:respond|reply|answer|output|return|format(?:ted)?|give|produce)\b[^.\n]{0,40}\bJSON\b", re.I)


def json_requested(messages: Sequence[Mapping[str, Any]], response_format: Any = None) -> bool:
    """The request wants JSON back: response_format json_object / json_schema, or the last user message says so."""
    if isinstance(response_format, Mapping) and response_format.get("type") in ("json_object", "json_schema"):
        return True
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    return bool(last_user and _JSON_REQUEST.search(scan_window(message_text(last_user.get("content")))))


def answer_confidence(
    messages: Sequence[Mapping[str, Any]],
    *,
    answer: str | None,
    finish_reason: str | None = None,
    token_logprobs: list[float] | None = None,
    response_format: Any = None,
    has_tool_calls: bool = False,
    logprob_floor: float = DEFAULT_LOGPROB_FLOOR,
) -> Confidence:
    """`confidence_assess` with what the request itself implies: the asked-for answer format and JSON.

    The one entry point of the hot path (`apps.routing.decide.confidence_escalate`) and of the
    offline harness, so both read an answer the same way.
    """
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    return confidence_assess(
        answer=answer,
        prompt=message_text(last_user.get("content")) if last_user else "",
        finish_reason=finish_reason,
        token_logprobs=token_logprobs,
        wants_json=json_requested(messages, response_format),
        expected_pattern=expected_answer_format(prompt_text(messages)),
        has_tool_calls=has_tool_calls,
        logprob_floor=logprob_floor,
    )
