"""Canonical form of a chat request: what makes two requests "the same" for the cache.

Everything that can change the answer is part of the key; transport options (stream,
stream_options, user, metadata, store) are not, so a streamed and a non-streamed call share
an entry (the gateway reassembles streams and replays cached answers as streams).
Unknown parameters are kept in the key: a parameter we do not know might change the output,
and a missed hit is cheaper than a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

# Never change the answer: stripped from the key.
TRANSPORT_PARAMS = frozenset({"model", "messages", "stream", "stream_options", "user", "metadata", "store", "service_tier"})
FLOAT_PARAMS = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty"})
TOOL_PARAMS = ("tools", "functions", "tool_choice", "function_call", "parallel_tool_calls")
MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id", "function_call")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def output_params(body: dict[str, Any]) -> dict[str, Any]:
    """Every request parameter that can change the answer, with numbers normalised (1 == 1.0)."""
    params: dict[str, Any] = {}
    for name, value in body.items():
        if name in TRANSPORT_PARAMS or value is None:
            continue
        if name in FLOAT_PARAMS and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        params[name] = value
    return params


def canonical_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: m[k] for k in MESSAGE_FIELDS if m.get(k) is not None} for m in messages if isinstance(m, dict)]


@dataclass(frozen=True, slots=True)
class RequestKey:
    exact: str  # SHA-256 of (org, model class, messages, output params)
    params_hash: str
    context_hash: str  # system prompt + earlier turns (the semantic tier's scope)
    prompt_text: str | None  # the last user message, when the semantic tier can use it
    prompt_hash: str


def request_key(*, org_id: int, model_class: str, messages: list[dict[str, Any]], body: dict[str, Any]) -> RequestKey:
    params = output_params(body)
    msgs = canonical_messages(messages)
    params_json = canonical_json(params)
    exact = sha256_hex(canonical_json({"org": org_id, "model": model_class, "messages": msgs, "params": params}))
    prompt_text = semantic_prompt_text(msgs)
    context = msgs[:-1] if prompt_text is not None else msgs
    return RequestKey(
        exact=exact,
        params_hash=sha256_hex(params_json),
        context_hash=sha256_hex(canonical_json(context)),
        prompt_text=prompt_text,
        prompt_hash=sha256_hex(prompt_text) if prompt_text is not None else "",
    )


def semantic_prompt_text(messages: list[dict[str, Any]]) -> str | None:
    """The text of the last user message, or None when meaning-based matching would be unsafe.

    Unsafe: the last turn is not a plain user message, or it has non-text parts (an image
    cannot be compared by the text embedding).
    """
    if not messages:
        return None
    last = messages[-1]
    if last.get("role") != "user" or last.get("name"):
        return None
    content = last.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                return None
            parts.append(part["text"])
        text = "\n".join(parts)
    else:
        return None
    text = text.strip()
    return text or None


def uses_tools(body: dict[str, Any], messages: list[dict[str, Any]]) -> bool:
    if any(body.get(name) not in (None, [], {}, "none") for name in TOOL_PARAMS if name != "parallel_tool_calls"):
        return True
    return any(m.get("role") in ("tool", "function") or m.get("tool_calls") or m.get("function_call") for m in messages)
