"""Shared fixtures. Tests use the real services of `make services`: Postgres with pgvector, Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def test_database_url() -> str:
    """A URL for the database the tests are using right now (pytest-django's test database)."""
    from finops.asyncdb import dsn_from_settings

    return dsn_from_settings()


@pytest.fixture
def subprocess_env(django_db_setup, settings) -> dict[str, str]:
    """Environment for a child process (Celery worker, uvicorn) that must see the test database and Redis."""
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "finops.settings",
        "PROMETHEUS_MULTIPROC_DIR": "",
    }


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


@pytest.fixture(scope="session")
def mock_llm_url():
    """The OpenAI-compatible mock LLM, over real HTTP, in its own process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.gateway.mock_llm", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ},
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
