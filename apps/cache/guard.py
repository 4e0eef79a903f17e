"""The semantic-cache guard: a paraphrase close in embedding space can still be a different question.

Sentence embeddings place "what is 2+2" next to "what is 2+3", "flights to Paris" next to
"flights to Rome", and "is X safe" next to "is X not safe". The guard compares compact
signatures of both prompts and rejects the hit when their numbers, named entities, negation,
antonym pairs, math operators, or the order of entities/numbers around a directional word
("from ... to", "than") differ. A rejected paraphrase is a missed saving; a wrong answer
is worse, so every heuristic here errs on the side of rejecting.

A signature holds keyed hashes (blake2b keyed from SECRET_KEY), not words: stored next to a
cached answer it lets the guard work for orgs that do not allow prompt text to be stored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

SIGNATURE_VERSION = 1

_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_NUMBER_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+")
_OPERATOR_RE = re.compile(r"(?<=[\d\s)])([+\-*/×÷^%=<>])(?=[\s\d(.])")
_SENTENCE_BREAK_RE = re.compile(r"[.!?;:\n\"“”(\[]")

NEGATIONS = frozenset(
    "not no never none nobody nothing neither nor nowhere cannot cant without isnt arent wasnt werent dont doesnt didnt "
    "wont wouldnt shouldnt couldnt mustnt hasnt havent hadnt aint".split()
)

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15",
    "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40",
    "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000",
    "million": "1000000", "billion": "1000000000", "trillion": "1000000000000", "dozen": "12", "half": "0.5",
    "twice": "x2", "double": "x2", "triple": "x3", "quarter": "0.25",
    "third": "ord3", "fourth": "ord4", "fifth": "ord5", "sixth": "ord6", "seventh": "ord7", "eighth": "ord8",
    "ninth": "ord9", "tenth": "ord10", "hundredth": "ord100",
}  # fmt: skip

_ANTONYM_PAIRS = [
    ("before", "after"), ("more", "less"), ("more", "fewer"), ("most", "least"), ("increase", "decrease"),
    ("increasing", "decreasing"), ("increased", "decreased"), ("maximum", "minimum"), ("max", "min"), ("largest", "smallest"),
    ("biggest", "smallest"), ("highest", "lowest"), ("higher", "lower"), ("larger", "smaller"), ("bigger", "smaller"),
    ("greater", "less"), ("above", "below"), ("over", "under"), ("first", "last"), ("best", "worst"), ("better", "worse"),
    ("true", "false"), ("add", "remove"), ("enable", "disable"), ("buy", "sell"), ("import", "export"),
    ("upload", "download"), ("open", "close"), ("start", "stop"), ("win", "lose"), ("encrypt", "decrypt"),
    ("compress", "decompress"), ("hot", "cold"), ("oldest", "newest"), ("earliest", "latest"), ("ascending", "descending"),
    ("north", "south"), ("east", "west"), ("advantages", "disadvantages"), ("pros", "cons"), ("positive", "negative"),
    ("input", "output"), ("inside", "outside"), ("include", "exclude"), ("allow", "deny"), ("accept", "reject"),
    ("push", "pull"), ("send", "receive"), ("left", "right"), ("cheapest", "most expensive"), ("cheaper", "expensive"),
    ("faster", "slower"), ("fastest", "slowest"), ("safe", "unsafe"), ("legal", "illegal"), ("possible", "impossible"),
    ("valid", "invalid"), ("always", "sometimes"), ("all", "some"), ("minimize", "maximize"), ("underflow", "overflow"),
    ("inner", "outer"), ("soft", "hard"), ("good", "bad"), ("top", "bottom"), ("unsafe", "safe"), ("client", "server"), ("sync", "async"), ("synchronous", "asynchronous"), ("male", "female"),
]  # fmt: skip
ANTONYMS: dict[str, set[str]] = {}
for _a, _b in _ANTONYM_PAIRS:
    for _w, _x in ((_a, _b), (_b, _a)):
        if " " not in _w and " " not in _x:
            ANTONYMS.setdefault(_w, set()).add(_x)

# Words where argument order changes the question: "from A to B", "A than B", "A vs B".
DIRECTIONAL = frozenset("than from to into vs versus before after over beat beats defeated minus divided".split())

# Capitalised only because they start a sentence (or are "I"): not entities.
COMMON_WORDS = frozenset(
    """a an the this that these those it its it's i i'm i've i'd i'll me my we our you your he she they them their his her
    what which who whom whose when where why how whether is are was were be been being am do does did done have has had
    can could will would shall should may might must please tell explain give show list write describe summarize
    summarise define find make create help let lets let's compare provide generate suggest translate name calculate
    compute convert check get use using in on at of for to from by with about into over under after before between
    and or but if then so because as than also just only very more most much many some any all each every no not yes
    there here one other another such same new old good best better first last next now today hi hello hey dear
    thanks thank ok okay sure in-depth overview step steps way ways kind type types example examples question answer
    is it possible could you would you can you do you i need i want we need in short briefly quick quickly simple
    simply basic basically main key important common different difference differences typical typically usually
    generally often sometimes always never note consider assume imagine suppose given why's what's how's who's
    where's when's there's here's that's let me""".split()
)


@dataclass(frozen=True, slots=True)
class Signature:
    tokens: frozenset[str]  # hashed lower-case words
    entities: tuple[str, ...]  # hashed lower-case entity tokens, first-appearance order, unique
    numbers: tuple[str, ...]  # hashed normalised numbers, in order
    operators: str  # hash of the math operators between numbers, in order ("" when none)
    negated: bool
    polarity: tuple[tuple[str, str], ...]  # (hashed word, hashed antonym) for the antonym-bearing words present
    directional: bool
    arguments: tuple[tuple[str, str], ...]  # (hashed directional word, hashed entity right after it): "to" → "rome"

    def as_json(self) -> dict[str, Any]:
        return {
            "v": SIGNATURE_VERSION,
            "tok": sorted(self.tokens),
            "ent": list(self.entities),
            "num": list(self.numbers),
            "ops": self.operators,
            "neg": self.negated,
            "pol": [list(p) for p in self.polarity],
            "dir": self.directional,
            "arg": [list(p) for p in self.arguments],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Signature | None":
        if not isinstance(data, dict) or data.get("v") != SIGNATURE_VERSION:
            return None
        return cls(
            tokens=frozenset(data.get("tok", ())),
            entities=tuple(data.get("ent", ())),
            numbers=tuple(data.get("num", ())),
            operators=data.get("ops", ""),
            negated=bool(data.get("neg")),
            polarity=tuple(tuple(p) for p in data.get("pol", ())),
            directional=bool(data.get("dir")),
            arguments=tuple(tuple(p) for p in data.get("arg", ())),
        )


@lru_cache(maxsize=1)
def _hash_key() -> bytes:
    try:
        from django.conf import settings

        secret = settings.SECRET_KEY
    except Exception:  # outside Django (a notebook, a bench without settings)
        secret = "finops-guard"
    return hashlib.sha256(b"finops-cache-guard:" + secret.encode()).digest()


def _h(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6, key=_hash_key()).hexdigest()


def _normalise_number(raw: str) -> str:
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation:
        return raw
    normalised = value.normalize()
    return format(normalised, "f") if normalised == normalised.to_integral() else str(normalised)


def _fold(word: str) -> str:
    return word.lower().replace("’", "'")


def guard_signature(text: str) -> Signature:
    words = [(m.group(0), m.start()) for m in _WORD_RE.finditer(text)]
    tokens: set[str] = set()
    entities: list[str] = []
    negated = False
    polarity: list[tuple[str, str]] = []
    directional = False
    arguments: set[tuple[str, str]] = set()
    pending_cue: tuple[str, int] | None = None  # the last directional word and how many words ago
    sentence_starts = {0} | {m.end() for m in _SENTENCE_BREAK_RE.finditer(text)}
    for word, start in words:
        folded = _fold(word)
        bare = folded.replace("'", "")
        tokens.add(_h(folded))
        if bare != folded:
            tokens.add(_h(bare))
        if bare in NEGATIONS or folded.endswith("n't"):
            negated = True
        is_entity = _is_entity(word, folded, at_sentence_start=_starts_sentence(text, start, sentence_starts))
        if pending_cue is not None:
            cue, distance = pending_cue
            if is_entity:
                arguments.add((_h(cue), _h(folded)))
                pending_cue = None
            elif distance >= 3:
                pending_cue = None
            else:
                pending_cue = (cue, distance + 1)
        if folded in DIRECTIONAL:
            directional = True
            pending_cue = (folded, 1)
        for anti in ANTONYMS.get(folded, ()):
            polarity.append((_h(folded), _h(anti)))
        if is_entity:
            hashed = _h(folded)
            if hashed not in entities:
                entities.append(hashed)

    numbers = _numbers_in_order(text, words)
    operators = "".join(_OPERATOR_RE.findall(text)) if _NUMBER_RE.search(text) else ""
    return Signature(
        tokens=frozenset(tokens),
        entities=tuple(entities),
        numbers=tuple(numbers),
        operators=_h(operators) if operators else "",
        negated=negated,
        polarity=tuple(sorted(set(polarity))),
        directional=directional,
        arguments=tuple(sorted(arguments)),
    )


def _numbers_in_order(text: str, words: list[tuple[str, int]]) -> list[str]:
    """Digits and number words, interleaved in order of appearance ("2 or three" → 2, 3)."""
    found: list[tuple[int, str]] = [(m.start(), _h(_normalise_number(m.group(0)))) for m in _NUMBER_RE.finditer(text)]
    found += [(start, _h(NUMBER_WORDS[_fold(word)])) for word, start in words if _fold(word) in NUMBER_WORDS]
    return [value for _, value in sorted(found)]


def _starts_sentence(text: str, start: int, sentence_starts: set[int]) -> bool:
    i = start - 1
    while i >= 0 and text[i] in " \t*-•>#'`":
        i -= 1
    return (i + 1) in sentence_starts or i < 0


def _is_entity(word: str, folded: str, *, at_sentence_start: bool) -> bool:
    has_alpha = any(c.isalpha() for c in word)
    if not has_alpha:
        return False
    if any(c.isdigit() for c in word):
        return True  # gpt4, A100, python3
    if len(word) >= 2 and word.isupper():
        return folded not in ("i", "ok")  # acronyms: HF, USD, AWS
    if any(c.isupper() for c in word[1:]):
        return True  # camel case: iPhone, OpenAI, PyTorch
    if word[0].isupper():
        if folded in COMMON_WORDS:
            return False
        if at_sentence_start:
            # "Paris is ..." is an entity, "Explain ..." is not: only words unknown to the common list count.
            return folded not in COMMON_WORDS and not folded.endswith("ing") and not folded.endswith("ly")
        return True
    return False


def guard_mismatch(a: Signature, b: Signature) -> str | None:
    """Why the two prompts must not share an answer, or None when the guard finds no difference."""
    if a.numbers != b.numbers:
        if sorted(a.numbers) != sorted(b.numbers) or a.directional or b.directional or a.operators or b.operators:
            return "number"
    if a.operators != b.operators:
        return "operator"
    if a.negated != b.negated:
        return "negation"
    for x, y in ((a, b), (b, a)):
        for entity in x.entities:
            if entity not in y.tokens:
                return "entity"
    for x, y in ((a, b), (b, a)):
        for word, anti in x.polarity:
            if anti in y.tokens and word not in y.tokens:
                return "polarity"
    if a.arguments != b.arguments:
        # "from Paris to Rome" vs "from Rome to Paris": same entities, the direction word points elsewhere.
        a_cues, b_cues = _by_cue(a.arguments), _by_cue(b.arguments)
        if any(a_cues[cue] != b_cues[cue] for cue in a_cues.keys() & b_cues.keys()):
            return "order"
    return None


def _by_cue(arguments: tuple[tuple[str, str], ...]) -> dict[str, set[str]]:
    grouped: dict[str, set[str]] = {}
    for cue, entity in arguments:
        grouped.setdefault(cue, set()).add(entity)
    return grouped


@dataclass(frozen=True, slots=True)
class Decision:
    index: int | None  # which candidate is served, None for a miss
    similarity: float | None
    rejections: tuple[str, ...]  # guard reasons of candidates above the threshold that were refused


def choose_hit(
    candidates: list[tuple[float, Signature | None]], query: Signature, *, threshold: float, use_guard: bool = True
) -> Decision:
    """The production decision rule (the eval runs this same function).

    Candidates are (cosine similarity, signature), nearest first. The first one at or above the
    threshold that the guard accepts is served; a candidate whose signature cannot be read is refused.
    """
    rejections: list[str] = []
    for index, (similarity, signature) in enumerate(candidates):
        if similarity < threshold:
            break
        if use_guard:
            reason = "unreadable" if signature is None else guard_mismatch(query, signature)
            if reason is not None:
                rejections.append(reason)
                continue
        return Decision(index=index, similarity=similarity, rejections=tuple(rejections))
    return Decision(index=None, similarity=None, rejections=tuple(rejections))
