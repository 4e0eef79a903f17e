from __future__ import annotations

import os

from django.contrib import admin, messages
from django.db import models

from apps.gateway.models import Provider
from apps.gateway.upstream_policy import base_url_refusal, key_env_refusal


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = [
        "name", "kind", "base_url", "api_key_env", "key_present", "policy_ok", "model_count", "timeout_s",
        "max_connections", "enabled",
    ]  # fmt: skip
    list_filter = ["enabled", "kind"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["created_at", "updated_at"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    actions = ["enable", "disable"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "base_url", "enabled"]}),
        ("Wire format options", {"fields": ["options"], "description": "Azure: api_version and deployments; Anthropic: "
                                 "anthropic_version. Empty for OpenAI-compatible and Gemini providers."}),
        (
            "Credentials",
            {
                "fields": ["api_key_env"],
                "description": (
                    "Only the name of the environment variable is stored. Allowed names: FINOPS_UPSTREAM_KEY_ENV_ALLOWED "
                    "(default FINOPS_UPSTREAM_*_KEY, OPENAI_API_KEY, ANTHROPIC_API_KEY); the server's own secrets never."
                ),
            },
        ),
        ("Models", {"fields": ["served_models"]}),
        ("Connections", {"fields": ["timeout_s", "connect_timeout_s", "max_connections"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(boolean=True, description="key set")
    def key_present(self, obj: Provider) -> bool:
        return not obj.api_key_env or bool(os.environ.get(obj.api_key_env))

    @admin.display(boolean=True, description="policy")
    def policy_ok(self, obj: Provider) -> bool:
        """False for a row the gateway ignores (written around this form): see apps.gateway.upstream_policy."""
        return not (key_env_refusal(obj.api_key_env) or base_url_refusal(obj.base_url))

    @admin.display(description="models")
    def model_count(self, obj: Provider) -> str:
        return "all priced" if "*" in (obj.served_models or []) else str(len(obj.served_models or []))

    @admin.action(description="Enable the selected providers")
    def enable(self, request, queryset):
        count = queryset.update(enabled=True)
        self.message_user(request, f"{count} provider(s) enabled; gateways pick this up within a minute.", messages.SUCCESS)

    @admin.action(description="Disable the selected providers")
    def disable(self, request, queryset):
        count = queryset.update(enabled=False)
        self.message_user(request, f"{count} provider(s) disabled; gateways pick this up within a minute.", messages.SUCCESS)
