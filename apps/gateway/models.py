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


class Provider(models.Model):
    """An OpenAI-compatible upstream (OpenAI, vLLM, Ollama, LM Studio, Anthropic's compatible endpoint…).

    Adds to the providers of `FINOPS_UPSTREAMS`; a row with the same name replaces the settings entry.
    The API key is read from the environment variable named in `api_key_env` and never stored.
    """

    name = models.SlugField(max_length=64, unique=True)
    base_url = models.URLField(max_length=500, help_text="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
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
