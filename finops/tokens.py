"""Token counting, dependency-free: a word count for the mock LLM and the router, an upper bound for the gateway.

Two counters, for two jobs:

- ``count_tokens`` (and ``count_message_tokens``, ``token_pieces``) is the mock LLM's tokenizer: one token per
  run of word characters or per punctuation character. It is exactly reproducible, which the mock's usage and the
  router's features need, but it is NOT a bound: 91 Chinese characters are one "word" to it, a 46 KB base64 blob
  one token.
- ``token_bound`` (and ``prompt_token_bound``) is what the gateway reserves for, checks the prompt limit against and
  bills from when a provider reports no usage. It is at least the number of tokens a byte-level BPE tokenizer
  (OpenAI's cl100k_base and o200k_base, checked in finops/tests/test_tokens.py) and the mock give the same text;
  see docs/adr/013-reservation-upper-bound.md for what is proven and what is measured.

The bound, per piece of text (pieces are ASCII letter runs, digit runs, space runs, punctuation runs, control runs
and runs of non-ASCII characters):

- a non-ASCII character costs its UTF-8 length (1-4): a byte-level BPE token is at least one byte, so this part is
  a proof, not a measurement (CJK: 3 per character, the worst case of rare characters in cl100k_base);
- a digit costs 1 (some tokenizers split every digit), a punctuation or control character 1, a tab or newline 1;
- spaces cost 1 per run of up to 4, except one space before a letter or punctuation, which BPE merges into the
  next token (costs 0);
- a run of 16+ characters that mixes letters and digits (base64, hex, hashes, keys) costs its length;
- an ASCII letter run of length L costs 1 + L // 3 in lower case, 1 + L // 2 with capitals, plus 1 per camelCase
  boundary: BPE vocabularies hold words whole or in a few pieces (gibberish letters can cost more: measured, not
  proven; see the ADR);
- and the whole text never more than its UTF-8 length (the hard bound of any byte-level BPE).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MESSAGE_BOUND_OVERHEAD_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "count_message_tokens",
    "count_tokens",
    "message_text",
    "prompt_token_bound",
    "token_bound",
    "token_pieces",
    "truncate_tokens",
]

# One token is a run of word characters or a single punctuation/symbol character.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

# Chat formats wrap each message in role/separator tokens; OpenAI documents ~3.
MESSAGE_OVERHEAD_TOKENS = 3

# The bound's share per message: OpenAI's 3 separator tokens and the role (1 token for every role name), and the
# reply's priming (<|start|>assistant<|message|>: 3) once per request.
MESSAGE_BOUND_OVERHEAD_TOKENS = 4
REPLY_PRIMING_TOKENS = 3

_PUNCT = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_DIGITS = b"0123456789"
_CONTROL = bytes(range(32)) + b"\x7f"
_HIGH = bytes(range(128, 256))
_LOWER = b"abcdefghijklmnopqrstuvwxyz"
_UPPER = _LOWER.upper()
# Byte classes for counting with bytes.translate/count/split (C speed): letters → a/A, space → " ", punctuation → p.
_CLASSES = bytes(
    ord("a") if c in _LOWER else ord("A") if c in _UPPER else 32 if c == 32 else ord("p") if c in _PUNCT else ord("x")
    for c in range(256)
)
_LETTERS_ONLY = bytes(c if c in _LOWER or c in _UPPER else 32 for c in range(256))
_SPACES = re.compile(rb" {1,4}")
_BLOB = re.compile(rb"[A-Za-z0-9+/=_-]{16,}")


def _blob(match: re.Match[bytes]) -> bytes:
    run = match.group()
    classes = run.translate(_CLASSES)
    digits = len(run) - len(run.translate(None, _DIGITS))
    letters = classes.count(b"a") + classes.count(b"A")
    case_changes = classes.count(b"aA") + classes.count(b"Aa")
    # Letters and digits mixed, or the case changing more often than in words: a key, a hash, base64 (costs its length).
    return b" " if (digits and letters) or case_changes * 3 > len(run) else run


def token_bound(text: str | None) -> int:
    """At least the number of tokens ``text`` is to a byte-level BPE tokenizer, and to the mock (module docstring).

    Counted on the UTF-8 bytes with C-level passes (translate, findall): about 1 ms per 10 KB.
    """
    if not text:
        return 0
    data = text.encode("utf-8")
    size = len(data)
    total = 0
    if size >= 16:
        stripped = _BLOB.sub(_blob, data)
        if len(stripped) != size:
            spaces_added = stripped.count(b" ") - data.count(b" ")
            total += size - len(stripped) + spaces_added  # each blob costs its length (the BPE hard bound)
            data = stripped
    high = len(data) - len(data.translate(None, _HIGH))  # a non-ASCII character costs its UTF-8 length
    digits = len(data) - len(data.translate(None, _DIGITS))
    punct = len(data) - len(data.translate(None, _PUNCT))
    control = len(data) - len(data.translate(None, _CONTROL))
    classes = data.translate(_CLASSES)
    letters = data.translate(_LETTERS_ONLY).split()
    words = len(letters) + sum(len(run) // 3 if run.islower() else len(run) // 2 for run in letters)
    words += classes.count(b"aA") + classes.count(b"AAa")  # camelCase and HTTPServer: a word boundary each
    spaces = 0
    if b" " in classes:
        free = sum(classes.count(b" " + c) - classes.count(b"  " + c) for c in (b"a", b"A", b"p"))
        spaces = classes.count(b" ") - free
        if b"   " in classes:  # long runs (indentation): 1 per 4 spaces is enough
            spaces = len(_SPACES.findall(data)) - free
    total += high + digits + punct + control + words + spaces
    return min(total, size)


def count_tokens(text: str | None) -> int:
    """Number of tokens in ``text`` to the mock LLM (``None``/empty -> 0): not a bound, see ``token_bound``."""
    if not text:
        return 0
    return len(_TOKEN_RE.findall(text))


def prompt_token_bound(messages: Iterable[Mapping[str, Any]], *extra: Any) -> int:
    """The bound of a chat request's prompt: every message (its text, name, tool calls and tool call id), the chat
    format's tokens, and ``extra`` JSON-able request fields that the provider also feeds the model (tools,
    functions, response_format), counted on their JSON text. Non-text parts (images, audio) are not counted."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += MESSAGE_BOUND_OVERHEAD_TOKENS + token_bound(message_text(message.get("content")))
        for key in ("name", "tool_call_id"):
            value = message.get(key)
            if isinstance(value, str):
                total += 1 + token_bound(value)
        for key in ("tool_calls", "function_call"):
            value = message.get(key)
            if value:
                total += token_bound(_json(value))
    for value in extra:
        if value:
            total += token_bound(_json(value))
    return total


def _json(value: Any) -> str:
    import json

    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def message_text(content: Any) -> str:
    """Flatten an OpenAI message ``content`` into plain text.

    ``content`` may be a string, ``None`` (assistant tool-call turns) or a list of
    content parts (``{"type": "text", "text": ...}``; non-text parts such as
    images carry no text and are ignored).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    return str(content)


def count_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens for a chat request: every message's content + fixed overhead."""
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + count_tokens(message_text(message.get("content")))
    return total


def token_pieces(text: str) -> list[str]:
    """Split ``text`` into one piece per token, each carrying its leading whitespace.

    ``"".join(token_pieces(t)) == t`` for any text containing at least one token,
    which is what makes streamed deltas concatenate back to the non-streamed
    answer, and ``len(token_pieces(t)) == count_tokens(t)``.
    """
    pieces: list[str] = []
    prev = 0
    for match in _TOKEN_RE.finditer(text):
        end = match.end()
        pieces.append(text[prev:end])
        prev = end
    if pieces and prev < len(text):
        # Keep trailing whitespace/newlines so recorded (replayed) answers survive
        # a stream round-trip byte for byte.
        pieces[-1] += text[prev:]
    return pieces


def truncate_tokens(text: str, max_tokens: int) -> str:
    """Longest prefix of ``text`` holding at most ``max_tokens`` tokens."""
    if max_tokens <= 0:
        return ""
    for i, match in enumerate(_TOKEN_RE.finditer(text), start=1):
        if i == max_tokens:
            return text[: match.end()]
    return text
