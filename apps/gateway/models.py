from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models

from apps.gateway.upstream_policy import base_url_refusal, key_env_refusal

ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def validate_env_name(value: str) -> None:
    # The admin stores the *name* of an environment variable; a pasted secret must not end up in the database.
    if value and not ENV_NAME_RE.match(value):
        raise ValidationError("Enter the name of an environment variable (e.g. OPENAI_API_KEY), never the key itself.")


def validate_model_list(value) -> None:
    if not isinstance(value, list) or not all(isinstance(m, str) and m.strip() for m in value):
        raise ValidationError('Enter a JSON list of model names, e.g. ["gpt-4o", "gpt-4o-mini"], or ["*"].')


PROVIDER_OPTION_KEYS = {"api_version", "deployments", "anthropic_version"}


def validate_provider_options(value) -> None:
    if not isinstance(value, dict):
        raise ValidationError('Enter a JSON object, e.g. {"api_version": "2024-10-21", "deployments": {"gpt-4o": "prod-4o"}}.')
    unknown = set(value) - PROVIDER_OPTION_KEYS
    if unknown:
        raise ValidationError(f"Unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(PROVIDER_OPTION_KEYS))}.")
    deployments = value.get("deployments", {})
    if not isinstance(deployments, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in deployments.items()):
        raise ValidationError('"deployments" maps model names to Azure deployment names: {"gpt-4o": "prod-4o"}.')
    for key in ("api_version", "anthropic_version"):
        if key in value and not (isinstance(value[key], str) and value[key]):
            raise ValidationError(f'"{key}" must be a non-empty string.')


class Provider(models.Model):
    """An upstream provider: OpenAI-compatible (OpenAI, vLLM, Ollama, DeepSeek…), Anthropic, Azure OpenAI or Gemini.

    Adds to the providers of `FINOPS_UPSTREAMS`; a row with the same name replaces the settings entry.
    The API key is read from the environment variable named in `api_key_env` and never stored.
    """

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible (/chat/completions)"
        ANTHROPIC = "anthropic", "Anthropic Messages (/messages)"
        AZURE = "azure", "Azure OpenAI (deployments, api-version)"
        GEMINI = "gemini", "Google Gemini (generateContent)"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(
        "wire format", max_length=16, choices=Kind.choices, default=Kind.OPENAI,
        help_text="Which adapter speaks to it (docs/usage.md, Providers and adapters).",
    )  # fmt: skip
    base_url = models.URLField(
        max_length=500,
        help_text="OpenAI-compatible: https://api.openai.com/v1 · Anthropic: https://api.anthropic.com/v1 · "
        "Azure: https://<resource>.openai.azure.com · Gemini: https://generativelanguage.googleapis.com/v1beta",
    )
    options = models.JSONField(
        default=dict, blank=True, validators=[validate_provider_options],
        help_text='Per kind. Azure: {"api_version": "2024-10-21", "deployments": {"gpt-4o": "my-deployment"}} '
        '(a model without an entry uses a deployment of its own name). Anthropic: {"anthropic_version": "2023-06-01"}.',
    )  # fmt: skip
    api_key_env = models.CharField(
        "API key environment variable",
        max_length=128,
        blank=True,
        validators=[validate_env_name],
        help_text="Name of the environment variable holding the API key (empty: the upstream needs none).",
    )
    served_models = models.JSONField(
        "models",
        default=list,
        blank=True,
        validators=[validate_model_list],
        help_text='Models served, as a JSON list. ["*"] = every priced model whose price row names this provider.',
    )
    timeout_s = models.FloatField("read timeout (s)", default=60.0)
    connect_timeout_s = models.FloatField("connect timeout (s)", default=5.0)
    max_connections = models.PositiveIntegerField(default=200)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(timeout_s__gt=0) & models.Q(connect_timeout_s__gt=0), name="provider_timeouts_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """The upstream policy (apps.gateway.upstream_policy): which variables may be sent as a key, and where."""
        super().clean()
        errors = {}
        if self.api_key_env and ENV_NAME_RE.match(self.api_key_env) and (reason := key_env_refusal(self.api_key_env)):
            errors["api_key_env"] = reason
        if self.base_url and (reason := base_url_refusal(self.base_url)):
            errors["base_url"] = reason
        if errors:
            raise ValidationError(errors)
