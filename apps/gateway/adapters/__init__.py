"""Native provider adapters behind one interface (`base.Adapter`), chosen per provider by `Provider.kind`."""

from __future__ import annotations

from apps.gateway.adapters.anthropic import AnthropicMessages
from apps.gateway.adapters.azure import AzureOpenAI
from apps.gateway.adapters.base import ANTHROPIC, AZURE, GEMINI, KINDS, OPENAI, Adapter
from apps.gateway.adapters.gemini import GeminiGenerateContent
from apps.gateway.adapters.openai_compat import OpenAICompatible

ADAPTERS: dict[str, Adapter] = {
    OPENAI: OpenAICompatible(),
    ANTHROPIC: AnthropicMessages(),
    AZURE: AzureOpenAI(),
    GEMINI: GeminiGenerateContent(),
}
assert set(ADAPTERS) == set(KINDS)


def adapter_for(kind: str) -> Adapter:
    """The adapter of a provider kind; an unknown kind is a configuration error, never a silent OpenAI call."""
    try:
        return ADAPTERS[kind or OPENAI]
    except KeyError:
        raise ValueError(f"unknown provider kind {kind!r}; expected one of {', '.join(KINDS)}") from None
