"""Shared fixtures. Tests use the real services of `make services`: Postgres with pgvector, Redis."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from finops.processes import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def test_database_url() -> str:
    """A URL for the database the tests are using right now (pytest-django's test database)."""
    from finops.asyncdb import dsn_from_settings

    return dsn_from_settings()


def child_process_env(**extra: str) -> dict[str, str]:
    """Environment for a child process (Celery worker, uvicorn) that must see the test database and Redis.

    PROMETHEUS_MULTIPROC_DIR is removed, not emptied: prometheus_client switches to multi-process mode when the
    variable is merely present, and with an empty value it writes its *.db files into the working directory.
    """
    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return {
        **env,
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "finops.settings",
        **extra,
    }


def pytest_configure(config):
    _flush_retries_deadlocks()


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether `error` or an exception it was raised from is a `kind` (flush: CommandError ← Django's error ← psycopg's)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, kind):
            return True
        cause = cause.__cause__
    return False


def _flush_retries_deadlocks() -> None:
    """A transactional test ends with Django's flush (one TRUNCATE of every table). A gateway under test may still
    be finishing the request it answered last (its semantic-cache store or ledger row is written after the reply),
    and Postgres can pick the TRUNCATE as the victim of the deadlock between the two. The flush runs in a
    transaction, so a deadlocked one left nothing behind: try it again. Any other flush error is raised at once."""
    import time

    from django.core.management.base import CommandError
    from django.test import TransactionTestCase
    from psycopg.errors import DeadlockDetected

    plain = getattr(TransactionTestCase, "_fixture_teardown")  # noqa: B009 - private in django-stubs
    if getattr(plain, "retries_deadlocks", False):
        return

    def fixture_teardown(self):
        for attempt in range(6):
            try:
                return plain(self)
            except CommandError as error:
                if attempt == 5 or not _caused_by(error, DeadlockDetected):
                    raise
                time.sleep(0.1 * (attempt + 1))

    fixture_teardown.retries_deadlocks = True  # type: ignore[attr-defined]
    setattr(TransactionTestCase, "_fixture_teardown", fixture_teardown)  # noqa: B010 - private in django-stubs


# The day tests that seed or scan run on, whatever the calendar says (STYLE.md §12). A Wednesday in the
# middle of a month; tests about other days parametrize `pinned_now` (indirect) with their own instants.
# FINOPS_TEST_NOW (ISO, with a UTC offset) moves it: `FINOPS_TEST_NOW=2027-03-01T00:30:00Z make test`.
PINNED_NOW = dt.datetime.fromisoformat(os.environ.get("FINOPS_TEST_NOW", "2026-06-17T12:00:00+00:00").replace("Z", "+00:00"))


@pytest.fixture
def pinned_now(request):
    """Pin finops.clock (frozen) for the test; yields the instant. Parametrize indirectly for other instants."""
    from finops import clock

    at = getattr(request, "param", None) or PINNED_NOW
    with clock.pinned(at):
        yield at


@pytest.fixture
def subprocess_env(django_db_setup) -> dict[str, str]:
    return child_process_env()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where a browser test saves its screenshots: docs/img/ with FINOPS_UPDATE_SCREENSHOTS=1 (`make screenshots`),
    else the test's own temporary folder, so that `make test` leaves the checkout as it found it."""
    folder = ROOT / "docs" / "img" if os.environ.get("FINOPS_UPDATE_SCREENSHOTS") == "1" else tmp_path / "img"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def redis_client(settings):
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@dataclass
class Tenant:
    org: object
    team: object
    member: object
    api_key: object
    secret: str


@pytest.fixture
def make_tenant(db):
    from apps.tenancy.services import api_key_create, member_get_or_create, org_get_or_create, team_get_or_create

    def make(org: str = "Acme", team: str = "Search", user: str = "alice", **key_kwargs) -> Tenant:
        o = org_get_or_create(name=org)
        t = team_get_or_create(org=o, name=team)
        m = member_get_or_create(team=t, username=user)
        created = api_key_create(member=m, **key_kwargs)
        return Tenant(org=o, team=t, member=m, api_key=created.api_key, secret=created.secret)

    return make


@pytest.fixture
def prices(db):
    from apps.ledger.services import prices_load_fixture

    prices_load_fixture(path=ROOT / "fixtures" / "prices.json")


@pytest.fixture
def routing_defaults(prices):
    """The seeded tiers, route policies and keyword rules. A transactional test's flush empties the tables
    the routing migration seeded, so tests that route ("auto", "finops/...") ask for them explicitly."""
    from apps.routing.services import routing_defaults_ensure

    routing_defaults_ensure()


@pytest.fixture(scope="session")
def mock_llm_url():
    """The OpenAI-compatible mock LLM, over real HTTP, in its own process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.mock_llm", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ},
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


_MODELS_BUILT: list[bool] = []


def _semantic_models_build() -> None:
    """Build the local embedding model's ONNX file and the semantic tier's static table once, here, before any
    server starts: on a fresh clone the first server would otherwise build them inside its 60 s start-up wait."""
    if _MODELS_BUILT:
        return
    from apps.embeddings.embeddings import backend
    from apps.embeddings.static import ensure_table
    from finops.conf import conf

    if backend() == "local":
        ensure_table()
        if conf().cache_local_runtime.startswith("onnx"):
            from apps.embeddings.onnx_export import ensure_model

            ensure_model(conf().cache_local_runtime)
    _MODELS_BUILT.append(True)


def gateway_server(*, mock_llm_url: str, env: dict[str, str] | None = None, workers: int = 1):
    """Run the project's ASGI app (finops.asgi) under uvicorn against the current test database.

    A context manager yielding the base URL. The gateway's caches of keys, prices, providers and the
    router's config are off (TTL 0) because every transactional test flushes and re-creates them.
    """
    import contextlib

    @contextlib.contextmanager
    def run():
        _semantic_models_build()
        port = free_port()
        child_env = child_process_env(
            **{
                "FINOPS_MOCK_LLM_URL": mock_llm_url,
                "FINOPS_API_KEY_CACHE_SECONDS": "0",
                "FINOPS_GATEWAY_CATALOG_CACHE_SECONDS": "0",
                "FINOPS_ROUTER_CONFIG_TTL_S": "0",
                # Every refused request of a test has its row, and all tests share one client address: the sampling
                # of auth failures and the per-address throttle are tested in test_security_keys.py (which overrides).
                "FINOPS_AUTH_FAILURE_ROWS_PER_MINUTE": "100000",
                "FINOPS_AUTH_FAILURE_ROWS_MAX_PER_MINUTE": "100000",
                "FINOPS_AUTH_FAILURES_PER_MINUTE": "0",
                **(env or {}),
            }
        )
        args = [sys.executable, "-m", "uvicorn", "finops.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log"]  # fmt: skip
        proc = subprocess.Popen(args, cwd=ROOT, env=child_env)
        try:
            wait_for_port(port, timeout=60, proc=proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc)

    return run()


@pytest.fixture(scope="session")
def gateway_url(django_db_setup, mock_llm_url):
    """The gateway (uvicorn + finops.asgi) on the pytest-django test database and the mock LLM.

    Tests that use it need `@pytest.mark.django_db(transaction=True)`, so that the keys and prices
    they create are committed and visible to the server process. Upstream read timeout: 3 s.
    """
    env = {
        "FINOPS_UPSTREAM_TIMEOUT_S": "3",
        "FINOPS_GATEWAY_MAX_PROMPT_TOKENS": "2000",
    }
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        yield url
