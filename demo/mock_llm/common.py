"""Shared pieces of the mock LLM: ASGI types, constants, ids, the JSON codec, deterministic answers and embeddings."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from functools import lru_cache
from typing import Any

from finops.tokens import (
    count_tokens,
    message_text,
    token_pieces,
    truncate_tokens,
)

try:  # orjson is ~5x faster, but optional: never a hard dependency of the mock.
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _loads: Callable[[bytes], Any] = orjson.loads
    _JSONError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, UnicodeDecodeError)
except ImportError:  # pragma: no cover - depends on environment

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = json.loads
    _JSONError = (json.JSONDecodeError, UnicodeDecodeError)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WEAK_RECORDED_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_RECORDED_MODEL = "gpt-4-1106-preview"
DEFAULT_REPLAY_MODEL_MAP: dict[str, str] = {
    "mixtral-8x7b-instruct": WEAK_RECORDED_MODEL,
    "gpt-4-1106-preview": STRONG_RECORDED_MODEL,
}

DEFAULT_EMBEDDING_DIM = 384
MAX_EMBEDDING_DIM = 8192
# Far beyond any sane client timeout; the sleep is abandoned as soon as the client hangs up.
TIMEOUT_FAULT_SECONDS = 30.0

ENV_REPLAY = "FINOPS_MOCK_REPLAY"
ENV_LATENCY = "FINOPS_MOCK_LATENCY_MS"
ENV_FAULTS = "FINOPS_MOCK_FAULTS"
ENV_FAULTS_FILE = "FINOPS_MOCK_FAULTS_FILE"
ENV_REPLAY_MAP = "FINOPS_MOCK_REPLAY_MAP"

_ADVERTISED_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "mixtral-8x7b-instruct",
    "gpt-4-1106-preview",
    "text-embedding-3-small",
)

# Vocabulary for the synthetic answers; 64 entries so one digest byte picks one word.
_WORDS = tuple(
    """
    the model answer cost token budget request cache route latency value result system policy
    tenant price query signal metric window quality premium cheap tier fast stable careful simple
    clear robust final exact is was will can should may seems remains and or but so because while
    then therefore of to in for with on by from one two three many few each every some
    """.split()
)
assert len(_WORDS) == 64

_ERROR_TYPES: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "Not found."),
    408: ("server_error", "timeout", "Request timed out."),
    409: ("invalid_request_error", "conflict", "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (mock). Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request (mock)."),
    502: ("server_error", "bad_gateway", "Bad gateway (mock)."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded (mock)."),
    504: ("server_error", "gateway_timeout", "Gateway timeout (mock)."),
}

_id_counter = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}-mock{os.getpid():x}x{next(_id_counter):08x}"


def _norm(text: str) -> str:
    return " ".join(text.split())


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


# --------------------------------------------------------------------------- answers


def _prompt_digest(model: str, messages: Sequence[Mapping[str, Any]], index: int = 0) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    h.update(model.encode())
    h.update(b"\x1e%d" % index)
    for m in messages:
        h.update(b"\x1e")
        h.update(str(m.get("role", "")).encode())
        h.update(b"\x1f")
        h.update(message_text(m.get("content")).encode("utf-8", "surrogatepass"))
    return h.digest()


def mock_answer(model: str, messages: Sequence[Mapping[str, Any]], index: int = 0) -> str:
    """The deterministic synthetic answer for ``(model, messages)`` (choice ``index``)."""
    return _answer_from_digest(model, _prompt_digest(model, messages, index))


def _answer_from_digest(model: str, digest: bytes) -> str:
    n_words = 6 + digest[0] % 40
    stream = hashlib.shake_256(digest).digest(n_words)
    words = [_WORDS[b & 63] for b in stream]
    words[0] = words[0].capitalize()
    # A comma every ~9 words keeps streamed chunks and token counts a bit more text-like.
    body = " ".join(w + ("," if i % 9 == 8 and i != n_words - 1 else "") for i, w in enumerate(words))
    return f"Mock answer from {model}: {body}."


def _forced_tool(body: Mapping[str, Any]) -> str:
    """The function the request forces a call of ("" when none): tool_choice "required" (the first tool) or named."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools:
        return ""
    if isinstance(choice, Mapping):
        return str((choice.get("function") or {}).get("name") or "")
    if choice == "required" and isinstance(tools[0], Mapping):
        return str((tools[0].get("function") or {}).get("name") or "")
    return ""


def _tool_call(name: str, arguments: str, digest: bytes) -> dict[str, Any]:
    return {"id": f"call_{digest.hex()[:24]}", "type": "function", "function": {"name": name, "arguments": arguments}}


def _answer_of_length(text: str, tokens: int) -> str:
    """`text` repeated, then cut, to exactly `tokens` tokens (every word is at least one token)."""
    words = text.split() or ["mock"]
    repeated = " ".join(words[i % len(words)] for i in range(max(tokens, 1)))
    return truncate_tokens(repeated, max(tokens, 1))


def _apply_stop(text: str, stop: Any) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop sequence; returns (text, stopped)."""
    if not stop:
        return text, False
    stops = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _logprob_entries(pieces: list[str], digest: bytes, mean: float | None) -> list[dict[str, Any]]:
    """Deterministic per-token logprobs whose mean is ``mean`` (or a digest-derived default).

    Each logprob is ``mean * w_i`` with positive weights averaging 1, so every value
    stays <= 0 and the mean is exactly the requested one (up to rounding).
    """
    if not pieces:
        return []
    if mean is None:
        mean = -(0.05 + digest[1] / 255 * 1.2)
    raw = hashlib.shake_256(digest + b"logprobs").digest(len(pieces))
    weights = [0.5 + b / 255 for b in raw]
    scale = len(weights) / sum(weights)
    return [
        {"token": p, "logprob": round(mean * w * scale, 6), "bytes": None, "top_logprobs": []}
        for p, w in zip(pieces, weights, strict=True)
    ]


# --------------------------------------------------------------------------- embeddings


@lru_cache(maxsize=65536)
def _feature_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def _embed(text: str, dim: int) -> list[float]:
    """Feature-hashed bag of lower-cased unigrams + bigrams, L2-normalised.

    Deterministic and hash-based like a random projection, but texts that share
    words get a positive cosine, which makes the mock usable for semantic-cache
    plumbing tests (real similarity quality needs a real embedding model).
    """
    vec = [0.0] * dim
    words = [w.strip().lower() for w in token_pieces(text)]
    features = [(w, 1.0) for w in words] + [(f"{a} {b}", 0.5) for a, b in zip(words, words[1:], strict=False)]
    if not features:
        features = [(f"\x00empty\x00{text}", 1.0)]
    for feature, weight in features:
        h = _feature_hash(feature)
        vec[h % dim] += weight if (h >> 63) & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:  # opposite-signed collisions cancelled out; fall back to one axis
        vec[_feature_hash(text) % dim] = 1.0
        return vec
    return [v / norm for v in vec]


def _embedding_inputs(raw: Any) -> list[tuple[str, int]] | None:
    """Normalise the ``input`` field into (text, token_count) pairs; None if invalid."""
    if isinstance(raw, str):
        return [(raw, count_tokens(raw))]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, int) for x in raw):  # one pre-tokenised input
            return [(" ".join(map(str, raw)), len(raw))]
        out: list[tuple[str, int]] = []
        for item in raw:
            if isinstance(item, str):
                out.append((item, count_tokens(item)))
            elif isinstance(item, list) and all(isinstance(x, int) for x in item):
                out.append((" ".join(map(str, item)), len(item)))
            else:
                return None
        return out
    return None
