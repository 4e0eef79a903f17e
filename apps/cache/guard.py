"""The semantic-cache guard: a paraphrase close in embedding space can still be a different question.

Sentence embeddings place "what is 2+2" next to "what is 2+3", "flights to Paris" next to
"flights to Rome", and "is X safe" next to "is X not safe". The guard compares compact
signatures of both prompts and refuses the hit when
- their numbers differ (digits and number words; order too around operators and "from/to"),
- their math operators differ,
- their negations differ in count, or negate different words,
- a named entity (capitalised name, acronym, camelCase, currency, a unit next to a number) of one
  is missing from the other,
- one has a word whose antonym the other has instead ("before"/"after", "enable"/"disable"),
- one narrows the question with an extreme the other lacks ("worst", "top", "maximum", "drawbacks"),
- a directional word points at a different entity ("from Paris to Rome" vs "from Rome to Paris"),
- two of their words trade places around the same word: role and argument swaps, "can a lawyer sue a
  doctor" vs "can a doctor sue a lawyer", "for a host to host a couchsurfer" vs "for a couchsurfer to
  have a host" (each content word is recorded with the word before it, its *slot*; a slot that takes A in
  one prompt and B in the other, while both prompts hold both, is a swap; "A and B" vs "B and A" is not).
A refused paraphrase is a missed saving; a wrong answer is worse, so every rule errs on refusing.

A signature holds keyed hashes (blake2b keyed from SECRET_KEY), never words: stored next to a
cached answer it lets the guard work for orgs that do not allow prompt text to be stored.
Rotating SECRET_KEY makes old signatures incomparable, which refuses hits (safe) until they expire.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

SIGNATURE_VERSION = 5
# The longest prompt the guard signs: the remote embedding backend's limit. The semantic tier skips longer
# prompts (only the exact tier serves them), and the signature refuses them, so its cost stays bounded.
GUARD_MAX_CHARS = 8000

_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_NUMBER_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+")
_OPERATOR_RE = re.compile(r"(?<=[\d\s)])([+\-*/×÷^=<>])(?=[\s\d(.])")
_SENTENCE_BREAK_RE = re.compile(r"[.!?;:\n]")

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

_ANTONYM_PAIRS = """
before:after more:less more:fewer increase:decrease rise:fall raise:lower higher:lower larger:smaller bigger:smaller
greater:less above:below better:worse true:false add:remove enable:disable on:off buy:sell import:export
upload:download start:end start:stop begin:end began:ended started:ended win:lose won:lost encrypt:decrypt
compress:decompress hot:cold ascending:descending north:south east:west advantages:disadvantages benefits:drawbacks
benefits:disadvantages advantages:drawbacks pros:cons positive:negative inside:outside include:exclude allow:deny
accept:reject push:pull send:receive cheaper:expensive faster:slower quicker:slower safe:unsafe legal:illegal
possible:impossible valid:invalid minimize:maximize underflow:overflow inner:outer soft:hard sync:async
synchronous:asynchronous male:female success:failure succeed:fail boiling:freezing boil:freeze melting:freezing
good:bad love:hate open:close opened:closed input:output client:server left:right
"""
ANTONYMS: dict[str, frozenset[str]] = {}
for _pair in _ANTONYM_PAIRS.split():
    _a, _b = _pair.split(":")
    ANTONYMS[_a] = ANTONYMS.get(_a, frozenset()) | {_b}
    ANTONYMS[_b] = ANTONYMS.get(_b, frozenset()) | {_a}

# Words that narrow a question to an extreme or to one side: present in one prompt only, they change it
# ("the time complexity" vs "the WORST time complexity").
EXTREMES = frozenset(
    """best worst first last max min maximum minimum top bottom highest lowest largest smallest biggest oldest newest
    earliest latest fastest slowest cheapest most least disadvantages drawbacks downsides cons unsafe illegal invalid
    impossible""".split()
)
# Lower-case words that name things as precisely as a proper noun.
CURRENCIES = frozenset(
    "dollar dollars usd euro euros eur pound pounds gbp yen jpy yuan rmb rupee rupees peso pesos franc francs bitcoin btc".split()
)
# Units count as entities next to a number ("5 km" vs "5 miles"), not alone ("how many hours" ≈ "how long").
UNITS = frozenset(
    """km kilometer kilometers kilometre kilometres mile miles meter meters metre metres cm mm inch inches foot feet
    yard yards kg kilogram kilograms gram grams g lb lbs ounce ounces oz liter liters litre litres ml gallon gallons
    celsius fahrenheit kelvin second seconds minute minutes hour hours day days week weeks month months year years
    decade decades century centuries byte bytes kb mb gb tb kib mib gib tib bit bits hz khz mhz ghz watt watts kw kwh
    volt volts amp amps""".split()
)

# Skipped when collecting the words a negation applies to.
_NEGATION_SKIP = frozenset(
    "be been being is are was were am do does did have has had a an the to any really very quite so that it this there "
    "always ever yet even just also only at all i you he she we they me us them my your his her our their its".split()
)

# Words where what follows matters: "from A to B", "A than B", "A vs B".
DIRECTIONAL = frozenset("than from to into vs versus before after over beat beats defeated minus divided".split())

# Skipped when looking for the word before a content word (its slot): "sue a doctor" → sue, "for the host" → for.
_SLOT_SKIP = frozenset("a an the my your his her our their its this that these those some any".split())
# A swap keeps the words and moves them: the content words of both prompts must overlap this much (Jaccard),
# which a rephrasing that only reorders clauses ("X can be used with Y" / "Y is compatible with X") does not.
# 0.9, not lower: a swap is the same words (Jaccard 1.0 on every pair of the vendored swap set); at 0.75 the
# rule refused 5 true paraphrases of the 768, at 0.9 one, with all 363 swaps still refused.
SWAP_MIN_OVERLAP = 0.9
_BE = frozenset("be been being is are was were am isnt arent wasnt werent".split())
# Words that join arguments symmetrically: "A and B" is "B and A", not a swap.
_COORDINATORS = frozenset("and or & , / plus".split())
# Closed-class words: a role is taken by any other word, and a slot is one of these ("for a host", "can a
# lawyer", "does inflation", "to yaml"). Content words as slots are compounds ("last git commit" / "last commit
# in git") that rephrasings reorder freely.
_FUNCTION_WORDS = (
    _NEGATION_SKIP
    | _SLOT_SKIP
    | frozenset(
        """what which who whom whose when where why how whether can could will would shall should may might must do does did
    is are was were be been being have has had it its of in on at for to by with from as than into onto against about
    over under between toward towards via through after before without within among upon like""".split()
    )
)

# Capitalised only because they start a sentence (or are "I"): not entities. Question words, pronouns,
# auxiliaries, and the imperative verbs prompts start with.
COMMON_WORDS = frozenset(
    """a an the this that these those it its it's i i'm i've i'd i'll me my we our you your he she they them their his her
    what which who whom whose when where why how whether is are was were be been being am do does did done have has had
    can could will would shall should may might must please tell explain give show list write describe summarize
    summarise define find make create help let lets let's compare provide generate suggest translate name calculate
    compute convert check get use using in on at of for to from by with about into over under after before between
    and or but if then so because as than also just only very more most much many some any all each every no not yes
    there here one other another such same new old good best better first last next now today hi hello hey dear
    thanks thank ok okay sure overview step steps way ways kind type types example examples question answer
    possible need want in short briefly quick quickly simple simply basic basically main key important common
    different difference differences typical typically usually generally often sometimes always never note consider
    assume imagine suppose given why's what's how's who's where's when's there's here's that's
    compose share recommend draft outline rewrite rephrase paraphrase edit proofread improve fix debug implement build
    design plan prepare propose review optimize refactor analyze analyse evaluate assess classify categorize identify
    determine estimate predict solve prove derive verify read print return send teach remind answer brainstorm
    recommend reply respond act pretend play draw sketch code program script format sort filter count add remove
    update delete insert select search look tell talk discuss elaborate clarify expand continue complete finish start
    begin stop try run install configure setup set deploy test measure walk guide lead turn keep go come see say ask
    is are was were isn't aren't wasn't weren't don't doesn't didn't can't won't shouldn't wouldn't couldn't
    also however therefore thus hence meanwhile finally firstly secondly lastly additionally moreover furthermore
    yes no maybe perhaps actually really honestly please kindly now then still again already soon later
    in on at by for with without within into onto upon about above below under over between among through during
    before after since until while although though unless whereas once every each either neither both few several
    all any some many much more most less least enough
    """.split()
)


@dataclass(frozen=True, slots=True)
class Signature:
    tokens: frozenset[str]  # hashed lower-case words, their apostrophe-free, possessive-free and stemmed forms
    entities: tuple[str, ...]  # hashed entity tokens, first-appearance order, unique
    numbers: tuple[str, ...]  # hashed normalised numbers, in order
    operators: str  # hash of the math operators between numbers, in order ("" when none)
    negations: tuple[tuple[str, ...], ...]  # per negation cue, the hashed (stemmed) content words after it; sorted
    antonyms: tuple[tuple[str, str], ...]  # (hashed stem, hashed antonym stem) for each antonym-bearing word
    extremes: tuple[str, ...]  # hashed extreme/narrowing words present
    directional: bool
    arguments: tuple[tuple[str, str], ...]  # (hashed directional word, hashed entity right after it): "to" → "rome"
    # (hashed slot word, hashed content stem): each content word with the word before it (determiners skipped)
    slots: tuple[tuple[str, str], ...] = ()
    coordinated: tuple[tuple[str, str], ...] = ()  # sorted (hashed stem, hashed stem) joined by and/or
    passive: bool = False  # a form of "be" right before a past participle ("is hosted", "are used")

    def as_json(self) -> dict[str, Any]:
        return {
            "v": SIGNATURE_VERSION,
            "tok": sorted(self.tokens),
            "ent": list(self.entities),
            "num": list(self.numbers),
            "ops": self.operators,
            "neg": [list(n) for n in self.negations],
            "ant": [list(p) for p in self.antonyms],
            "ext": list(self.extremes),
            "dir": self.directional,
            "arg": [list(p) for p in self.arguments],
            "slot": [list(p) for p in self.slots],
            "coo": [list(p) for p in self.coordinated],
            "pas": self.passive,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature | None:
        """None for a signature of another version: the guard then refuses the candidate."""
        if not isinstance(data, dict) or data.get("v") != SIGNATURE_VERSION:
            return None
        return cls(
            tokens=frozenset(data.get("tok", ())),
            entities=tuple(data.get("ent", ())),
            numbers=tuple(data.get("num", ())),
            operators=data.get("ops", ""),
            negations=tuple(tuple(n) for n in data.get("neg", ())),
            antonyms=tuple(tuple(p) for p in data.get("ant", ())),
            extremes=tuple(data.get("ext", ())),
            directional=bool(data.get("dir")),
            arguments=tuple(tuple(p) for p in data.get("arg", ())),
            slots=tuple(tuple(p) for p in data.get("slot", ())),
            coordinated=tuple(tuple(p) for p in data.get("coo", ())),
            passive=bool(data.get("pas")),
        )


@lru_cache(maxsize=1)
def _hash_key() -> bytes:
    try:
        from django.conf import settings

        secret = settings.SECRET_KEY
    except Exception:  # outside Django (a notebook, a script without settings)
        secret = "finops-guard"
    return hashlib.sha256(b"finops-cache-guard:" + secret.encode()).digest()


@lru_cache(maxsize=1 << 16)  # words recur across prompts: most of a signature's hashes are memo hits
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


def _stem(word: str) -> str:
    """Crude suffix stripping, enough for "work" / "works" / "working" / "worked" to compare equal."""
    if word.endswith("'s"):
        word = word[:-2]
    word = word.replace("'", "")
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _is_negation(folded: str) -> bool:
    return folded.replace("'", "") in NEGATIONS or folded.endswith("n't")


class PromptTooLong(ValueError):
    pass


def guard_signature(text: str) -> Signature:
    """The prompt's guard signature, in time linear in the prompt; prompts over GUARD_MAX_CHARS are refused."""
    if len(text) > GUARD_MAX_CHARS:
        raise PromptTooLong(f"the guard signs prompts of at most {GUARD_MAX_CHARS} characters, got {len(text)}")
    words = [(m.group(0), m.start(), m.end()) for m in _WORD_RE.finditer(text)]
    folded_words = [_fold(w) for w, _, _ in words]
    number_spans = [(m.start(), m.end()) for m in _NUMBER_RE.finditer(text)]
    tokens: set[str] = set()
    entities: list[str] = []
    negations: list[tuple[str, ...]] = []
    antonyms: set[tuple[str, str]] = set()
    extremes: set[str] = set()
    directional = False
    arguments: set[tuple[str, str]] = set()
    pending_cue: tuple[str, int] | None = None  # the last directional word and how many words ago
    sentence_starts = {0} | {m.end() for m in _SENTENCE_BREAK_RE.finditer(text)}
    number_ends = {end for _, end in number_spans}
    for position, (word, start, _) in enumerate(words):
        folded = folded_words[position]
        stem = _stem(folded)
        tokens.update({_h(folded), _h(folded.replace("'", "")), _h(stem)})
        if _is_negation(folded):
            negations.append(tuple(sorted({_h(w) for w in _negation_scope(folded_words, position)})))
        after_number = _after_number(text, start, number_ends)
        at_start = _starts_sentence(text, start, sentence_starts)
        is_entity = _is_entity(word, folded, at_sentence_start=at_start, after_number=after_number)
        if pending_cue is not None:
            cue, distance = pending_cue
            if is_entity:
                arguments.add((_h(cue), _h(stem)))
                pending_cue = None
            elif distance >= 3:
                pending_cue = None
            else:
                pending_cue = (cue, distance + 1)
        if folded in DIRECTIONAL:
            directional = True
            pending_cue = (folded, 1)
        for anti in ANTONYMS.get(folded, ()):
            antonyms.add((_h(stem), _h(_stem(anti))))
        if folded in EXTREMES:
            extremes.add(_h(folded))
        if is_entity:
            hashed = _h(stem)
            if hashed not in entities:
                entities.append(hashed)

    slots, coordinated = _slots(text, words, folded_words)
    numbers = _numbers_in_order(text, words, folded_words)
    operators = "".join(_OPERATOR_RE.findall(text)) if number_spans else ""
    return Signature(
        tokens=frozenset(tokens),
        entities=tuple(entities),
        numbers=tuple(numbers),
        operators=_h(operators) if operators else "",
        negations=tuple(sorted(negations)),
        antonyms=tuple(sorted(antonyms)),
        extremes=tuple(sorted(extremes)),
        directional=directional,
        arguments=tuple(sorted(arguments)),
        slots=slots,
        coordinated=coordinated,
        passive=any(w in _BE and folded_words[i + 1].endswith(("ed", "en")) for i, w in enumerate(folded_words[:-1])),
    )


def _slots(
    text: str, words: list[tuple[str, int, int]], folded_words: list[str]
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """Each content word with its slot: the word before it, determiners skipped, within its sentence and
    clause (a comma or sentence break in between cuts it); and the pairs of content words joined by a
    coordinator ("A and B", "A or B", "A, B"). One pass over the words: linear in the prompt."""
    slots: set[tuple[str, str]] = set()
    coordinated: set[tuple[str, str]] = set()
    previous: int | None = None  # index of the last non-determiner word in this clause
    for position, (_, start, _) in enumerate(words):
        folded = folded_words[position]
        if previous is not None:
            between = text[words[previous][2] : start]
            if any(c in ".!?;:\n()" for c in between):
                previous = None
        if folded in _SLOT_SKIP:
            continue
        if folded not in _FUNCTION_WORDS and not folded[0].isdigit():
            stem = _h(_stem(folded))
            slot = folded_words[previous] if previous is not None else ""
            # Every content word is recorded (the overlap test needs them all); "" when no function word leads it.
            slots.add((_h(slot) if slot in _FUNCTION_WORDS else "", stem))
        if previous is not None and folded not in _FUNCTION_WORDS and not folded[0].isdigit():
            between = text[words[previous][2] : start]
            if slot in _COORDINATORS or "," in between or "/" in between or "&" in between:
                # "A and B": find A, the content word before the coordinator.
                before = previous - 1 if slot in _COORDINATORS else previous
                while before >= 0 and folded_words[before] in _SLOT_SKIP:
                    before -= 1
                if before >= 0 and folded_words[before] not in _FUNCTION_WORDS:
                    coordinated.add(tuple(sorted((_h(_stem(folded_words[before])), stem))))  # type: ignore[arg-type]
        previous = position
    return tuple(sorted(slots)), tuple(sorted(coordinated))  # type: ignore[arg-type]


def _negation_scope(folded_words: list[str], position: int) -> list[str]:
    """The content words a negation may apply to: up to two after it, skipping auxiliaries and pronouns.

    "is not really used" → {use}; "doesn't my code work" → {code, work}; "does my code not work" → {work}.
    """
    scope: list[str] = []
    for word in folded_words[position + 1 : position + 6]:
        if word in _NEGATION_SKIP or _is_negation(word):
            continue
        scope.append(_stem(word))
        if len(scope) == 2:
            break
    return scope


def _numbers_in_order(text: str, words: list[tuple[str, int, int]], folded: list[str]) -> list[str]:
    """Digits and number words, interleaved in order of appearance ("2 or three" → 2, 3). "one" used as a
    pronoun ("one can", "can one", "a new one") is not a number."""
    found: list[tuple[int, str]] = [(m.start(), _h(_normalise_number(m.group(0)))) for m in _NUMBER_RE.finditer(text)]
    found += [
        (start, _h(NUMBER_WORDS[folded[i]]))
        for i, (_, start, _) in enumerate(words)
        if folded[i] in NUMBER_WORDS and not _pronoun_one(text, words, folded, i)
    ]
    return [value for _, value in sorted(found)]


# "one" as a pronoun: before a modal ("one can"), after one ("can one"), or after a determiner at the end of a
# phrase ("a new one.", "a new one using …", "which one?"). Another number in its place is still a number, so
# "two can" still differs from "one can", and "a one-line fix" keeps its number.
_MODALS = frozenset("can could may might must should would will shall cannot needs need has had".split())
_PRONOUN_DETERMINERS = frozenset("a an the new another this that which each every any no".split())
_PHRASE_ENDS = frozenset("using with for in from to that which who instead than is are was were does do".split())


def _pronoun_one(text: str, words: list[tuple[str, int, int]], folded: list[str], i: int) -> bool:
    if folded[i] != "one":
        return False
    before = folded[i - 1] if i > 0 else ""
    end = words[i][2]
    rest = text[end : end + 2].lstrip()
    if rest[:1] in ("-", "‐", "–"):
        return False  # "a one-line fix": a compound, a number
    after = folded[i + 1] if i + 1 < len(folded) and (not rest or rest[0].isalnum()) else ""
    if after in _MODALS or before in _MODALS:
        return True
    return before in _PRONOUN_DETERMINERS and (after == "" or after in _PHRASE_ENDS)


def _after_number(text: str, start: int, number_ends: set[int]) -> bool:
    """Whether only white space separates this word from the end of a number ("5 km", "100 dollars").

    Walks back over the white space before the word only, so the whole signature stays linear in the prompt
    (it used to compare every word with every number, slicing the text between them: cubic, seconds on 16 KB).
    """
    i = start
    while i > 0 and text[i - 1].isspace():
        i -= 1
    return i in number_ends


def _starts_sentence(text: str, start: int, sentence_starts: set[int]) -> bool:
    i = start - 1
    while i >= 0 and text[i] in " \t*-•>#'`\"“”(":
        i -= 1
    return (i + 1) in sentence_starts or i < 0


def _is_entity(word: str, folded: str, *, at_sentence_start: bool, after_number: bool = False) -> bool:
    if not any(c.isalpha() for c in word):
        return False
    if folded in CURRENCIES or (after_number and folded in UNITS):
        return True  # "100 dollars to euros", "5 km"
    if any(c.isdigit() for c in word):
        return True  # gpt4, A100, python3
    if len(word) >= 2 and word.isupper():
        return folded not in ("i", "ok")  # acronyms: HF, USD, AWS
    if any(c.isupper() for c in word[1:]):
        return True  # camel case: iPhone, OpenAI, PyTorch
    if word[0].isupper():
        if folded in COMMON_WORDS or _is_negation(folded) or folded in ANTONYMS or folded in EXTREMES:
            return False
        if at_sentence_start:
            # "Paris is ..." is an entity, "Compose ..." is not; -ing/-ly openers are verbs and adverbs.
            return not folded.endswith(("ing", "ly"))
        return True
    return False


def guard_mismatch(a: Signature, b: Signature) -> str | None:
    """Why the two prompts must not share an answer, or None when the guard finds no difference."""
    if a.numbers != b.numbers:
        if sorted(a.numbers) != sorted(b.numbers) or a.directional or b.directional or a.operators or b.operators:
            return "number"
    if a.operators != b.operators:
        return "operator"
    if len(a.negations) != len(b.negations) or _negation_scopes_differ(a, b):
        return "negation"
    for x, y in ((a, b), (b, a)):
        for entity in x.entities:
            if entity not in y.tokens:
                return "entity"
    for x, y in ((a, b), (b, a)):
        for word, anti in x.antonyms:
            if anti in y.tokens and word not in y.tokens:
                return "polarity"
    if a.extremes != b.extremes:
        return "polarity"
    if a.arguments != b.arguments:
        # "from Paris to Rome" vs "from Rome to Paris": same entities, the direction word points elsewhere.
        a_cues, b_cues = _by_cue(a.arguments), _by_cue(b.arguments)
        if any(a_cues[cue] != b_cues[cue] for cue in a_cues.keys() & b_cues.keys()):
            return "order"
    if _roles_swapped(a, b):
        return "swap"
    return None


def _roles_swapped(a: Signature, b: Signature) -> bool:
    """A slot word that both prompts have takes a content word A in one and B in the other, while both
    prompts hold both A and B and neither has the slot take the other's word; not when A and B are joined by
    a coordinator ("A and B" is "B and A"). Linear in the slots, but for the pairs of one slot word."""
    if a.passive != b.passive or (_h("by") in a.tokens) != (_h("by") in b.tokens):
        return False  # active and passive voice: "A hosts B" is "B is hosted by A"
    a_words, b_words = {w for _, w in a.slots}, {w for _, w in b.slots}
    if not a_words or len(a_words & b_words) < SWAP_MIN_OVERLAP * len(a_words | b_words):
        return False
    a_by, b_by = _by_cue(a.slots), _by_cue(b.slots)
    symmetric = set(a.coordinated) | set(b.coordinated)
    for slot in a_by.keys() & b_by.keys() - {""}:
        only_a = [w for w in a_by[slot] - b_by[slot] if w in b.tokens]
        only_b = [w for w in b_by[slot] - a_by[slot] if w in a.tokens]
        for x in only_a:
            for y in only_b:
                if x != y and tuple(sorted((x, y))) not in symmetric:
                    return True
    return False


def _negation_scopes_differ(a: Signature, b: Signature) -> bool:
    """Same number of negations, but one applies to words the other text never negates."""
    for x, y in ((a, b), (b, a)):
        negated_in_y = {word for scope in y.negations for word in scope}
        if any(scope and not negated_in_y.intersection(scope) for scope in x.negations):
            return True
    return False


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
    candidates: Sequence[tuple[float, Signature | None]], query: Signature, *, threshold: float, use_guard: bool = True
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
