"""OpenAPI: document the finops API key (Bearer) for every API view that accepts it."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "apps.tenancy.authentication.ApiKeyAuthentication"
    name = "finopsApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A finops API key (`Authorization: Bearer <key>`); the key's organization scopes every answer.",
        }
