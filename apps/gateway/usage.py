"""Provider usage, normalised in one place: every upstream's token report becomes one `Usage`, which billing prices.

The gateway's internal shape is OpenAI's chat.completion `usage`, with one finops extension:

    prompt_tokens                              every input token, cached or not
    completion_tokens                          every output token, hidden reasoning included
    prompt_tokens_details.cached_tokens        ⊂ prompt_tokens: read from the provider's prompt cache
    prompt_tokens_details.cache_write_tokens   ⊂ prompt_tokens: written to it (finops extension; Anthropic bills it)
    completion_tokens_details.reasoning_tokens ⊂ completion_tokens

The native adapters translate their provider's report into that shape (`anthropic_usage`, `gemini_usage`);
`usage_read` reads it back, and also understands what OpenAI-compatible upstreams put next to it:

- OpenAI / Azure OpenAI: `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens` (already
  inside completion_tokens), and `service_tier` on the response ("priority" is priced by the row's multiplier).
- DeepSeek: `prompt_cache_hit_tokens` / `prompt_cache_miss_tokens` (hit + miss = prompt_tokens).
- Reasoning reported *outside* completion_tokens (some OpenAI-compatible servers): recognised when
  total_tokens = prompt + completion + reasoning, and then added to the completion.
- Anthropic's own field names, if an OpenAI-compatible proxy passes them through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    prompt: int
    completion: int
    cached: int = 0  # ⊂ prompt
    cache_write: int = 0  # ⊂ prompt, disjoint from cached
    reasoning: int = 0  # ⊂ completion
    service_tier: str = ""
    prompt_known: bool = True  # False: the report had no prompt count (the caller uses its own estimate)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def usage_read(usage: Any, *, service_tier: Any = None) -> Usage | None:
    """The normalised usage of an OpenAI-shaped report (None when it has no token counts at all)."""
    usage = _dict(usage)
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    # Anthropic's names passed through as-is: input_tokens excludes the cache reads and writes.
    anthropic = prompt is None and _int(usage.get("input_tokens")) is not None
    if anthropic:
        read = _int(usage.get("cache_read_input_tokens")) or 0
        write = _int(usage.get("cache_creation_input_tokens")) or 0
        prompt = (_int(usage.get("input_tokens")) or 0) + read + write
        completion = _int(usage.get("output_tokens"))
    if prompt is None and completion is None:
        return None
    prompt_known = prompt is not None
    prompt, completion = prompt or 0, completion or 0
    details = _dict(usage.get("prompt_tokens_details"))
    out_details = _dict(usage.get("completion_tokens_details"))
    if anthropic:
        cached, written = read, write
    else:
        reported = _int(details.get("cached_tokens"))
        if reported is None:  # DeepSeek's context cache
            reported = _int(usage.get("prompt_cache_hit_tokens"))
        cached = reported or 0
        written = _int(details.get("cache_write_tokens")) or _int(usage.get("cache_creation_input_tokens")) or 0
    reasoning = _int(out_details.get("reasoning_tokens")) or _int(usage.get("reasoning_tokens")) or 0
    total = _int(usage.get("total_tokens"))
    if reasoning and total is not None and total == prompt + completion + reasoning:
        completion += reasoning  # reported outside completion_tokens: billed at the output rate all the same
    cached = min(cached, prompt)
    written = min(written, prompt - cached)
    tier = service_tier if isinstance(service_tier, str) else usage.get("service_tier")
    return Usage(
        prompt=prompt,
        completion=completion,
        cached=cached,
        cache_write=written,
        reasoning=min(reasoning, completion),
        service_tier=tier[:16] if isinstance(tier, str) else "",
        prompt_known=prompt_known,
    )


def openai_usage(*, prompt: int, completion: int, cached: int = 0, cache_write: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """The internal (OpenAI-shaped) usage dict."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": cache_write},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def anthropic_usage(usage: Any) -> dict[str, Any]:
    """Anthropic Messages `usage` → the internal shape. Anthropic's input_tokens exclude the cache reads and writes,
    so the prompt is their sum; thinking is inside output_tokens (Anthropic does not count it apart)."""
    usage = _dict(usage)
    read = _int(usage.get("cache_read_input_tokens")) or 0
    write = _int(usage.get("cache_creation_input_tokens")) or 0
    prompt = (_int(usage.get("input_tokens")) or 0) + read + write
    return openai_usage(prompt=prompt, completion=_int(usage.get("output_tokens")) or 0, cached=read, cache_write=write)


def gemini_usage(metadata: Any) -> dict[str, Any]:
    """Gemini `usageMetadata` → the internal shape. promptTokenCount includes cachedContentTokenCount (and tool-use
    prompt tokens are reported apart); thoughtsTokenCount is billed as output but reported outside
    candidatesTokenCount, so it is added to the completion."""
    meta = _dict(metadata)
    prompt = (_int(meta.get("promptTokenCount")) or 0) + (_int(meta.get("toolUsePromptTokenCount")) or 0)
    thoughts = _int(meta.get("thoughtsTokenCount")) or 0
    completion = (_int(meta.get("candidatesTokenCount")) or 0) + thoughts
    cached = min(_int(meta.get("cachedContentTokenCount")) or 0, prompt)
    return openai_usage(prompt=prompt, completion=completion, cached=cached, reasoning=thoughts)
