"""DRF throttling of the management API (`/api/*`), counted in Django's cache (Redis, through django-redis).

One scope, `api`, per caller: the API key for key-authenticated calls, the user for sessions, else the client
address. `/chat` is DRF too but is the gateway's: its limits are the per-key `rate_limit_per_minute` and the
budgets, so it is left alone here. With Redis down the cache ignores the error and the request goes through
(DJANGO_REDIS_IGNORE_EXCEPTIONS): throttling fails open, like the rest of the cache.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

API_PREFIX = "/api/"


class ApiRateThrottle(SimpleRateThrottle):
    scope = "api"

    def get_rate(self) -> str | None:
        # Read per request, not frozen at import like SimpleRateThrottle.THROTTLE_RATES: settings changes apply.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view) -> str | None:
        if not request.path.startswith(API_PREFIX):
            return None
        api_key = getattr(request.user, "api_key", None)
        if api_key is not None:
            ident = f"key:{api_key.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
