"""finops settings: one env-driven module. See README.md's configuration table."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from celery.schedules import crontab

from finops.conf import finops_from_env
from finops.envfile import load_env_file

load_env_file()

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_decimal(name: str, default: str) -> Decimal:
    return Decimal(os.environ.get(name) or default)


def database_from_url(url: str) -> dict:
    parsed = urlparse(url)
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    host = query.pop("host", None) or parsed.hostname or ""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
        "OPTIONS": query,
        "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": True,
    }


DEBUG = env_bool("DEBUG", True)
# Development default; finops.checks refuses to start with it when DEBUG is off.
INSECURE_SECRET_KEY = "django-insecure-finops-development-only"
SECRET_KEY = env_str("SECRET_KEY", INSECURE_SECRET_KEY)
ALLOWED_HOSTS = [h for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "apps.tenancy",
    "apps.ledger",
    "apps.embeddings",
    "apps.alerts",
    "apps.budgets",
    "apps.cache",
    "apps.routing",
    "apps.anomalies",
    "apps.reports",
    "apps.gateway",
    "evals",
    "demo",
    "finops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "finops.urls"
ASGI_APPLICATION = "finops.asgi.application"
WSGI_APPLICATION = "finops.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/finops")
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "finops",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": 0.5,
            "SOCKET_TIMEOUT": 0.5,
            # A Redis outage must not take the admin or the API down with it.
            "IGNORE_EXCEPTIONS": True,
        },
    }
}
DJANGO_REDIS_IGNORE_EXCEPTIONS = True
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
# Sessions read from Redis, written through to Postgres: a warm admin request skips the session query, and a
# Redis restart logs nobody out (docs/adr/012-django-redis-cache.md).
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# Hourly and daily buckets depend on UTC; finops.checks enforces it.
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.tenancy.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "finops.errors.api_exception_handler",
    # /api/* only (finops.throttling): per API key, user or address, counted in Redis.
    "DEFAULT_THROTTLE_CLASSES": ["finops.throttling.ApiRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api": env_str("FINOPS_API_THROTTLE_RATE", "600/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "finops API",
    "DESCRIPTION": "Cost-aware LLM gateway and FinOps platform.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from the vendored sidecar: no CDN, the machine may have no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
HOUR = 3600
# Staggered minutes so the hourly jobs never start together; `expires` drops a run that
# waited longer than its own period in a backed-up queue.
CELERY_BEAT_SCHEDULE = {
    "ledger-outbox-replay": {
        "task": "apps.ledger.tasks.ledger_outbox_replay_task",
        "schedule": crontab(),  # every minute
        "options": {"expires": 55},
    },
    "ledger-rollup-hourly": {
        "task": "apps.ledger.tasks.cost_rollup_hourly_task",
        "schedule": crontab(minute=5),
        "options": {"expires": HOUR - 60},
    },
    "cache-purge-expired": {
        "task": "apps.cache.tasks.cache_purge_expired_task",
        "schedule": crontab(minute=35),
        "options": {"expires": HOUR - 60},
    },
    "budget-sweep": {
        "task": "apps.budgets.tasks.budget_sweep_task",
        "schedule": crontab(),  # every minute: expired reservations, pending alerts
        "options": {"expires": 55},
    },
    "budget-reconcile": {
        "task": "apps.budgets.tasks.budget_reconcile_task",
        "schedule": crontab(minute="2-59/5"),  # fail-open spend reaches the counters within 5 minutes
        "options": {"expires": 290},
    },
    "routing-latency-refresh": {
        "task": "apps.routing.tasks.tier_latency_refresh_task",
        "schedule": crontab(minute="4-59/5"),  # the triangle's latency axis: p50 of the last hour, per model
        "options": {"expires": 290},
    },
    "anomaly-scan": {
        "task": "apps.anomalies.tasks.anomaly_scan_task",
        "schedule": crontab(minute=12),  # after the rollup, on complete hours
        "options": {"expires": HOUR - 60},
    },
    "reports-route-rollup": {
        "task": "apps.reports.tasks.route_rollup_hourly_task",
        "schedule": crontab(minute=9),  # after the ledger rollup (minute 5); dashboards read both
        "options": {"expires": HOUR - 60},
    },
    "alert-deliveries-requeue": {
        "task": "apps.alerts.tasks.alert_deliveries_requeue_task",
        "schedule": crontab(minute="7-59/10"),  # webhooks/emails left pending by a broker outage
        "options": {"expires": 590},
    },
}

# --- finops -------------------------------------------------------------------------------
# Every FINOPS knob, its type, default and meaning: finops/conf.py (FinopsConf). Each is overridden by the
# environment variable FINOPS_<NAME> when set; code reads them typed, through finops.conf.conf().
FINOPS = finops_from_env()

# One body limit: Django's own check (request.body, forms; also under WSGI) agrees with the ASGI front's.
DATA_UPLOAD_MAX_MEMORY_SIZE = FINOPS["GATEWAY_MAX_BODY_BYTES"]

PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if not DEBUG:
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
    # Opt-in, like HSTS itself: both are hard to undo once browsers have seen them (docs/reliability.md).
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
