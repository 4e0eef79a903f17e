"""System checks that protect the numbers: buckets are UTC, production has a real secret."""

from django.conf import settings
from django.core import checks

from finops.conf import LOCAL_RUNTIMES, conf

WEAK_KEY_MIN_LENGTH = 50


@checks.register()
def time_zone_is_utc(app_configs, **kwargs):
    if settings.TIME_ZONE != "UTC" or not settings.USE_TZ:
        return [
            checks.Error(
                "TIME_ZONE must be 'UTC' with USE_TZ = True: hourly and daily cost buckets depend on it.",
                id="finops.E001",
            )
        ]
    return []


@checks.register(checks.Tags.security, deploy=True)
def secret_key_is_strong(app_configs, **kwargs):
    key = settings.SECRET_KEY
    if settings.DEBUG:
        return []
    if key == settings.INSECURE_SECRET_KEY or key.startswith("django-insecure") or len(set(key)) < 5 or len(key) < WEAK_KEY_MIN_LENGTH:
        return [
            checks.Critical(
                "SECRET_KEY is the development default or too weak; set a random SECRET_KEY of 50+ characters.",
                id="finops.E002",
            )
        ]
    return []


@checks.register()
def cache_local_runtime_is_known(app_configs, **kwargs):
    """A typo in FINOPS_CACHE_LOCAL_RUNTIME would otherwise only show as a warm-up warning and a silent semantic tier."""
    runtime = conf().cache_local_runtime
    if runtime not in LOCAL_RUNTIMES:
        return [
            checks.Error(
                f"FINOPS_CACHE_LOCAL_RUNTIME={runtime!r} is not one of {', '.join(LOCAL_RUNTIMES)}.",
                id="finops.E003",
            )
        ]
    return []
