"""Deterministic, dependency-free token counting shared by the gateway and the mock LLM.

The gateway estimates a request's cost *before* calling upstream, and the mock
upstream reports ``usage`` *after* answering.  Both must count the same way or
the estimate-vs-actual reconciliation would drift for reasons that have nothing
to do with the code under test, so this module is the single source of truth.

It is deliberately not a real BPE tokenizer (no tiktoken download, no network):
a word-or-punctuation regex is close enough in magnitude (~1.3 tokens per
English word for BPE vs ~1.1 here) and is exactly reproducible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "count_message_tokens",
    "count_tokens",
    "message_text",
    "token_pieces",
    "truncate_tokens",
]

# One token is a run of word characters or a single punctuation/symbol character.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

# Chat formats wrap each message in role/separator tokens; OpenAI documents ~3.
MESSAGE_OVERHEAD_TOKENS = 3


def count_tokens(text: str | None) -> int:
    """Number of tokens in ``text`` (``None``/empty -> 0)."""
    if not text:
        return 0
    return len(_TOKEN_RE.findall(text))


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
