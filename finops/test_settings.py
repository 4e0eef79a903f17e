"""Test settings: the same services as `make run`, a separate Redis database, fast hashing."""

import os
from urllib.parse import urlparse

from finops.envfile import load_env_file

load_env_file()
_redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# Tests flush Redis: give them their own logical database, and tell subprocesses too.
os.environ["REDIS_URL"] = urlparse(_redis)._replace(path="/" + os.environ.get("FINOPS_TEST_REDIS_DB", "9")).geturl()

from finops.settings import *  # noqa: E402,F403
from finops.settings import CACHES, DATABASES, FINOPS  # noqa: E402

REDIS_URL = os.environ["REDIS_URL"]
CACHES["default"]["LOCATION"] = REDIS_URL
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
# In-process tests call pipeline stages without recording: their intents would be left open in the shared
# spool folder. Gateways that tests start as subprocesses use finops.settings, with the journal on.
FINOPS["LEDGER_INTENTS"] = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Parallel runs on one Postgres (several checkouts, helpers, xdist) need distinct test databases.
DATABASES["default"]["TEST"] = {"NAME": "test_finops" + os.environ.get("FINOPS_TEST_DB_SUFFIX", "")}
# Tests run inside transactions that are never committed, so a rollup's on-commit invalidation of the dashboard's
# cached aggregates (finops.cache) never fires between tests that share a day and a scope: the cache is off here
# and apps/reports/tests/test_dashboard_cache.py turns it on.
FINOPS["REPORTS_DASHBOARD_CACHE_S"] = 0
# The per-address limit on failed authentications is per process: in-process tests (all on 127.0.0.1) would share
# it across the session. apps/tenancy/tests/test_auth_throttle.py turns it on; subprocess gateways keep the default.
FINOPS["AUTH_FAILURES_PER_MINUTE"] = 0
