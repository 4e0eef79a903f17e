"""What bench/chaos.py starts and drives: a private Postgres and the chaos database, Redis, the gateway, the
closed-loop load, the recorded-row count and the mock's faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from finops.envfile import load_env_file
from finops.processes import wait_for_port
from finops.services import redis_spawn

ROOT = Path(__file__).resolve().parent.parent
load_env_file()
CHAOS_DB = os.environ.get("FINOPS_CHAOS_DB", "finops_chaos")


# --- Postgres: the chaos database and a proxy in front of the socket --------------------------------------------


def chaos_database_url() -> str:
    return urlparse(os.environ["DATABASE_URL"])._replace(path=f"/{CHAOS_DB}").geturl()


class PrivatePostgres:
    """A Postgres 16 + pgvector of this run's own (pgserver, the wheel `make services` uses), in a temp folder that is
    deleted at exit: stopping or freezing it touches no one else's database."""

    def __init__(self) -> None:
        import warnings

        warnings.filterwarnings("ignore", category=RuntimeWarning, module="platformdirs")
        import pgserver

        self.pgdata = Path(tempfile.mkdtemp(prefix="finops-chaos-pg-"))
        self.server = pgserver.get_server(self.pgdata, cleanup_mode="delete")
        self.frozen = False

    def url(self, database: str = "postgres") -> str:
        return self.server.get_uri(database)

    def processes(self) -> list:
        """The postmaster of *this* data folder and every process it forked (backends, checkpointer, walwriter, …)."""
        import psutil

        postmaster = psutil.Process(self.server.get_pid())
        if str(self.pgdata) not in " ".join(postmaster.cmdline()):
            raise RuntimeError(f"pid {postmaster.pid} is not the chaos Postgres of {self.pgdata}: refusing to signal it")
        return [postmaster, *postmaster.children(recursive=True)]

    def freeze(self) -> int:
        """SIGSTOP: connections stay open and nothing answers — a hung server, not a stopped one."""
        postmaster, *_ = self.processes()
        postmaster.send_signal(signal.SIGSTOP)  # first: a stopped postmaster forks no new backend
        self.frozen = True
        children = self.processes()[1:]
        for proc in children:
            proc.send_signal(signal.SIGSTOP)
        return 1 + len(children)

    def thaw(self) -> None:
        if not self.frozen:
            return
        procs = self.processes()
        for proc in procs[1:]:
            proc.send_signal(signal.SIGCONT)
        procs[0].send_signal(signal.SIGCONT)
        self.frozen = False


def prepare_database(users: int = 1) -> list[str]:
    """Create and migrate finops_chaos, load prices and routing tiers; returns a fresh API key per user."""
    from finops.services import database_create_if_missing

    url = chaos_database_url()
    database_create_if_missing(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from apps.ledger.services import prices_load_fixture
    from apps.routing.services import routing_defaults_ensure
    from apps.tenancy.services import api_key_create, member_get_or_create, org_get_or_create, team_get_or_create

    prices_load_fixture(path=ROOT / "fixtures" / "prices.json")
    routing_defaults_ensure()
    org = org_get_or_create(name="finops-chaos")
    team = team_get_or_create(org=org, name="chaos")
    members = [member_get_or_create(team=team, username=f"monkey{i}") for i in range(users)]
    try:
        from apps.cache.models import CacheSettings

        # Every prompt is unique anyway; the semantic cache's embedding only adds CPU to the load.
        CacheSettings.objects.update_or_create(org=org, defaults={"enabled": True, "semantic_enabled": False})
    except Exception as exc:
        print(f"note: could not turn the semantic cache off ({exc})")
    from decimal import Decimal

    from apps.budgets.models import Budget
    from apps.budgets.services import budget_create

    if not Budget.objects.filter(org=org, scope=Budget.Scope.ORG, active=True).exists():
        # A budget that is never reached: every request takes the reservation round trip, as in production.
        budget_create(budget=Budget(scope=Budget.Scope.ORG, org=org, period="monthly", cap_usd=Decimal("1000000"),
                                    action="block", soft_pct=[80]))  # fmt: skip
    return [api_key_create(member=member, name="chaos").secret for member in members]


# --- the processes ----------------------------------------------------------------------------------------------


def start_redis(port: int) -> subprocess.Popen:
    proc = redis_spawn(port)
    wait_for_port(port, timeout=60, proc=proc)
    return proc


def start_gateway(env: dict, port: int, log, *, workers: int = 1) -> subprocess.Popen:
    args = [sys.executable, "-m", "uvicorn", "finops.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log"]  # fmt: skip
    if workers > 1:
        args += ["--workers", str(workers)]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, timeout=120, proc=proc)
    return proc


@dataclass
class Result:
    name: str
    duration_s: float = 0.0
    served: int = 0
    failed: int = 0
    throttled: int = 0
    recorded: int = 0
    duplicates: int = 0
    outbox_replayed: int = 0
    notes: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)
    samples: dict[str, str] = field(default_factory=dict)
    served_at: list[float] = field(default_factory=list)  # seconds since the load started
    cells: dict[str, str] = field(default_factory=dict)  # table cells of a scenario that is not a request load
    lost_override: int | None = None
    # Every answer: (seconds since the load started when it was sent, end-to-end seconds, HTTP status).
    answers: list[tuple[float, float, int]] = field(default_factory=list)
    fault: tuple[float, float] | None = None  # the fault's window, in seconds since the load started

    def latency(self, *, during: bool = True, status: int | None = 200) -> dict[str, float]:
        """p50/p99/max (ms) and count of the answers sent during the fault window (or before it, during=False)."""
        if self.fault is None:
            return {}
        start, end = self.fault
        picked = sorted(
            latency * 1000
            for sent, latency, code in self.answers
            if (status is None or code == status) and ((start <= sent < end) if during else sent < start)
        )
        if not picked:
            return {"n": 0}
        return {"n": len(picked), "p50": quantile(picked, 0.5), "p99": quantile(picked, 0.99), "max": picked[-1]}

    @property
    def lost(self) -> int:
        return self.served - self.recorded if self.lost_override is None else self.lost_override

    @property
    def rps(self) -> float:
        return (self.served + self.failed + self.throttled) / self.duration_s if self.duration_s else 0.0


def quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list."""
    return ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 1)) - 1))]


async def load(url: str, keys: list[str], *, model: str, duration: float, concurrency: int, result: Result, events=(),
               rate: float = 0.0) -> None:  # fmt: skip
    """Closed-loop load for `duration` seconds, round-robin over the users' `keys` — or, with `rate`, open loop at that
    many requests a second (at most `concurrency` in flight); `events` are (at_seconds, callable) run in a thread on
    schedule."""
    import aiohttp

    started = time.monotonic()
    stop_at = started + duration
    timeout = aiohttp.ClientTimeout(total=30)

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        body = {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": f"chaos {uuid.uuid4().hex} #{n}: hi"}]}
        key = keys[n % len(keys)]
        sent = time.monotonic()
        try:
            async with session.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
                await resp.read()
                result.answers.append((sent - started, time.monotonic() - sent, resp.status))
                if resp.status == 200:
                    result.served += 1
                    result.request_ids.append(resp.headers["x-request-id"])
                    result.served_at.append(time.monotonic() - started)
                else:
                    text = await resp.text()
                    try:
                        code = json.loads(text)["error"]["code"]
                    except Exception:
                        code = ""
                    kind = f"{resp.status} {code}".strip()
                    if code == "budget_degraded_rate_limit":
                        # By design: while budgets are unavailable, each user gets BUDGET_FAIL_OPEN_RPM requests a minute.
                        result.throttled += 1
                    else:
                        result.failed += 1
                    result.failures[kind] = result.failures.get(kind, 0) + 1
                    result.samples.setdefault(kind, text[:300])
        except Exception as exc:
            result.failed += 1
            result.failures[type(exc).__name__] = result.failures.get(type(exc).__name__, 0) + 1

    async def worker(session, wid: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            await one(session, wid * 1_000_000 + n)

    async def open_loop(session) -> None:
        in_flight, tasks, n = asyncio.Semaphore(concurrency), [], 0

        async def limited(n: int) -> None:
            async with in_flight:
                await one(session, n)

        while (now := time.monotonic()) < stop_at:
            n += 1
            tasks.append(asyncio.create_task(limited(n)))
            await asyncio.sleep(max(0.0, started + n / rate - now))
        await asyncio.gather(*tasks)

    async def scheduler() -> None:
        for at, action in sorted(events, key=lambda e: e[0]):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            await asyncio.to_thread(action)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        if rate:
            await asyncio.gather(scheduler(), open_loop(session))
        else:
            await asyncio.gather(scheduler(), *(worker(session, i) for i in range(concurrency)))
    result.duration_s = time.monotonic() - started


def count_recorded(result: Result, *, settle_s: float = 15.0) -> None:
    """Rows for the served request ids (waiting for the gateway's async writer to settle), and duplicates."""
    from django.db import connection

    ids = result.request_ids
    deadline = time.monotonic() + settle_s
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), count(DISTINCT request_id) FROM llm_requests WHERE request_id::text = ANY(%s)", [ids]
            )
            rows, distinct = cursor.fetchone()
        if distinct >= len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    result.recorded = distinct
    result.duplicates = rows - distinct
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM llm_requests WHERE request_id::text = ANY(%s) AND budget_state = 'fail_open'", [ids])
        result.notes.append(f"{cursor.fetchone()[0]} served request(s) had budget_state=fail_open")


def mock_faults(mock_url: str, faults: dict | None) -> None:
    import urllib.request

    method, data = ("DELETE", None) if faults is None else ("POST", json.dumps(faults).encode())
    req = urllib.request.Request(
        f"{mock_url}/_mock/faults", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(req, timeout=5).read()
