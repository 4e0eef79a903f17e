"""The reference-month database used by the benchmarks: `finops_bench` on the same server.

`ensure_reference_month()` creates it, migrates and seeds `--per-day 50000 --days 30` (1.5M rows)
unless it already holds that month; the seed time is returned (None when it was already there).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg

from finops.envfile import load_env_file

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = os.environ.get("FINOPS_BENCH_DB", "finops_bench")
REFERENCE_PER_DAY = 50_000
REFERENCE_DAYS = 30


def bench_database_url() -> str:
    load_env_file()
    url = urlparse(os.environ["DATABASE_URL"])
    return url._replace(path=f"/{BENCH_DB}").geturl()


def admin_url() -> str:
    load_env_file()
    return urlparse(os.environ["DATABASE_URL"])._replace(path="/postgres").geturl()


def bench_env() -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": bench_database_url(), "DJANGO_SETTINGS_MODULE": "finops.settings"}


def manage(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=bench_env(), check=check)


def reference_rows() -> int:
    try:
        with psycopg.connect(bench_database_url(), connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM llm_requests").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def ensure_reference_month(*, fresh: bool = False) -> float | None:
    """Return the seconds the seed took, or None when the month was already there."""
    if not fresh and reference_rows() >= REFERENCE_PER_DAY * REFERENCE_DAYS * 0.9:
        return None
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    manage("migrate", "--noinput", "-v", "0")
    started = time.monotonic()
    manage("seed_demo", "--per-day", str(REFERENCE_PER_DAY), "--days", str(REFERENCE_DAYS), "--demo-key-file", "")
    return time.monotonic() - started
