"""DRF authentication by `Authorization: Bearer <finops key>` for the management API."""

from __future__ import annotations

from rest_framework import authentication, exceptions

from apps.tenancy.selectors import api_key_for_secret


class ApiKeyUser:
    """The request.user of a key-authenticated call: scoped to the key's org."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, api_key):
        self.api_key = api_key
        self.org = api_key.org
        self.member = api_key.member

    def __str__(self) -> str:
        return f"key:{self.api_key.prefix}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(errors="replace")
        if not header:
            return None
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        # An address that keeps presenting unknown keys gets 429 before the lookup. Imported here: DRF imports this
        # module while finops.errors (which keys needs) is still importing rest_framework.
        from apps.tenancy.keys import auth_failure_strike, auth_throttle_check

        client = request.META.get("REMOTE_ADDR") or ""
        auth_throttle_check(client=client)
        api_key = api_key_for_secret(secret=secret.strip())
        if api_key is None:
            auth_failure_strike(client=client)
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return ApiKeyUser(api_key), api_key

    def authenticate_header(self, request) -> str:
        return self.keyword
