"""Chaos scenarios against a live gateway under load: nothing served may go unrecorded.

    .venv/bin/python bench/chaos.py [--duration 20] [--outage 15] [--concurrency 16] [--only redis,upstream,postgres] [--no-write]

Needs `make services` (the embedded Postgres) and `redis-server` on PATH. Everything else is started here and owned
by this script: its own database (`finops_chaos`, created and migrated), its own Redis on a free port (so it can be
stopped), the mock LLM, a TCP proxy in front of Postgres's socket (so Postgres can be made unreachable for the
gateway alone), and the gateway (uvicorn, finops.asgi) pointed at all of them. The load is a closed-loop asyncio
client (aiohttp) on loopback with `--concurrency` requests in flight and a unique prompt per request.

Scenarios (each asserts `lost == 0`, and the script exits non-zero otherwise):
  redis     Redis stopped mid-load: requests keep being served (budgets through Postgres, cache bypassed).
  upstream  30 % of the cheap model's calls fail (500, then 429, then timeout) with model="auto": the fallback
            chain absorbs them, no request fails.
  postgres  Postgres unreachable for the gateway for --outage seconds mid-load (the proxy drops every connection
            and refuses new ones): requests keep being served (fail-open), rows go to the outbox, and after
            recovery + `ledger_outbox_replay` every served request has exactly one row.
Results go to docs/reliability.md (section between the CHAOS markers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finops.envfile import load_env_file  # noqa: E402

load_env_file()
CHAOS_DB = os.environ.get("FINOPS_CHAOS_DB", "finops_chaos")
RELIABILITY_MD = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- CHAOS:BEGIN -->", "<!-- CHAOS:END -->"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --- Postgres: the chaos database and a proxy in front of the socket --------------------------------------------


def pg_socket() -> str:
    """The embedded Postgres's unix socket (or host:port when DATABASE_URL uses TCP)."""
    url = urlparse(os.environ["DATABASE_URL"])
    host = parse_qs(url.query).get("host", [url.hostname or "127.0.0.1"])[0]
    port = url.port or 5432
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


def chaos_database_url() -> str:
    return urlparse(os.environ["DATABASE_URL"])._replace(path=f"/{CHAOS_DB}").geturl()


def prepare_database() -> str:
    """Create and migrate finops_chaos, load prices and routing tiers; returns a fresh API key."""
    import psycopg

    url = chaos_database_url()
    with psycopg.connect(urlparse(url)._replace(path="/postgres").geturl(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [CHAOS_DB]).fetchone():
            conn.execute(f'CREATE DATABASE "{CHAOS_DB}"')
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
    member = member_get_or_create(team=team_get_or_create(org=org, name="chaos"), username="monkey")
    try:
        from apps.cache.models import CacheSettings

        # Every prompt is unique anyway; the semantic cache's embedding only adds CPU to the load.
        CacheSettings.objects.update_or_create(org=org, defaults={"enabled": True, "semantic_enabled": False})
    except Exception as exc:
        print(f"note: could not turn the semantic cache off ({exc})")
    return api_key_create(member=member, name="chaos").secret


class PgProxy:
    """A TCP → Postgres proxy on loopback, in its own thread and loop. `outage()` drops every connection and
    refuses new ones, which is what the gateway sees when Postgres stops; `recover()` lets them in again."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.up = threading.Event()
        self.up.set()
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_port(self.port)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.loop.run_forever()

    async def _open_target(self):
        if self.target.startswith("/"):
            return await asyncio.open_unix_connection(self.target)
        host, port = self.target.rsplit(":", 1)
        return await asyncio.open_connection(host, int(port))

    async def _client(self, reader, writer) -> None:
        if not self.up.is_set():
            writer.close()
            return
        try:
            up_reader, up_writer = await self._open_target()
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def outage(self) -> None:
        self.up.clear()

        def drop():
            for w in list(self.writers):
                w.transport.abort()

        self.loop.call_soon_threadsafe(drop)

    def recover(self) -> None:
        self.up.set()


# --- the processes ----------------------------------------------------------------------------------------------


def start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port, proc=proc)
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

    @property
    def lost(self) -> int:
        return self.served - self.recorded

    @property
    def rps(self) -> float:
        return (self.served + self.failed + self.throttled) / self.duration_s if self.duration_s else 0.0


async def load(url: str, key: str, *, model: str, duration: float, concurrency: int, result: Result, events=()) -> None:
    """Closed-loop load for `duration` seconds; `events` are (at_seconds, callable) run in a thread on schedule."""
    import aiohttp

    started = time.monotonic()
    stop_at = started + duration
    timeout = aiohttp.ClientTimeout(total=30)

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        body = {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": f"chaos {uuid.uuid4().hex} #{n}: hi"}]}
        try:
            async with session.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
                await resp.read()
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

    async def scheduler() -> None:
        for at, action in sorted(events, key=lambda e: e[0]):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            await asyncio.to_thread(action)

    async with aiohttp.ClientSession(timeout=timeout) as session:
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


# --- the scenarios ----------------------------------------------------------------------------------------------


def scenario_redis(ctx, args) -> Result:
    result = Result("Redis stopped mid-load")
    cut_at = args.duration / 4

    def kill_redis():
        stop(ctx["redis"])
        result.notes.append(f"Redis stopped at t={cut_at:.0f}s for the rest of the run")

    asyncio.run(load(ctx["url"], ctx["key"], model="gpt-4o-mini", duration=args.duration, concurrency=args.concurrency,
                     result=result, events=[(cut_at, kill_redis)]))  # fmt: skip
    count_recorded(result)
    ctx["redis"] = start_redis(ctx["redis_port"])  # back for the next scenarios
    return result


def scenario_upstream(ctx, args) -> Result:
    result = Result("Upstream failures at 30 % (cheap model), model=auto")
    phases = [
        ("500", {"error": "500", "rate": 0.3}),
        ("429", {"error": "429", "rate": 0.3}),
        ("timeout", {"error": "timeout", "rate": 0.3}),
    ]
    for label, spec in phases:
        mock_faults(ctx["mock"], {"gpt-4o-mini": spec})
        asyncio.run(
            load(ctx["url"], ctx["key"], model="auto", duration=args.duration / 3, concurrency=args.concurrency, result=result)
        )
        result.notes.append(f"{label}: {len(result.request_ids)} served so far")
    mock_faults(ctx["mock"], None)
    total = sum(1 for _ in result.request_ids)
    result.duration_s = args.duration  # three phases of duration/3
    count_recorded(result)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE fallback_from <> '' OR attempts > 1) FROM llm_requests WHERE request_id::text = ANY(%s)",
            [result.request_ids],
        )
        result.notes.append(f"{cursor.fetchone()[0]} of {total} served requests needed the fallback chain")
    return result


def scenario_postgres(ctx, args) -> Result:
    from apps.gateway.services import ledger_outbox_replay

    result = Result(f"Postgres unreachable for {args.outage:.0f} s mid-load")
    cut_at = min(args.duration / 4, 5.0)
    proxy: PgProxy = ctx["proxy"]
    events = [(cut_at, proxy.outage), (cut_at + args.outage, proxy.recover)]
    duration = max(args.duration, cut_at + args.outage + 5)
    asyncio.run(load(ctx["url"], ctx["key"], model="gpt-4o-mini", duration=duration, concurrency=args.concurrency,
                     result=result, events=events))  # fmt: skip
    proxy.recover()
    during = sum(cut_at <= t < cut_at + args.outage for t in result.served_at)
    result.notes.append(
        f"{during} request(s) served while Postgres was unreachable (t={cut_at:.0f}–{cut_at + args.outage:.0f} s)"
    )
    time.sleep(3)  # the gateway's writer flushes what it still holds
    replay = ledger_outbox_replay(redis_url=ctx["redis_url"], directory=Path(os.environ["FINOPS_LEDGER_SPOOL_DIR"]))
    result.outbox_replayed = replay.inserted
    result.notes.append(f"outbox replay: {replay}")
    again = ledger_outbox_replay(redis_url=ctx["redis_url"], directory=Path(os.environ["FINOPS_LEDGER_SPOOL_DIR"]))
    result.notes.append(f"second replay (must insert 0): {again}")
    if again.inserted:
        result.notes.append("FAIL: the second replay inserted rows")
    count_recorded(result)
    return result


SCENARIOS = {"redis": scenario_redis, "upstream": scenario_upstream, "postgres": scenario_postgres}


def markdown(results: list[Result], args) -> str:
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPUs: 1 uvicorn worker, "
        f"{args.concurrency} requests in flight (closed loop, aiohttp on loopback), mock LLM upstream.",
        "",
        "| scenario | duration | load held (req/s) | served | throttled by design | failed | recorded | duplicates | lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.duration_s:.0f} s | {r.rps:.0f} | {r.served} | {r.throttled} | {r.failed} | {r.recorded} | {r.duplicates} | **{r.lost}** |"
        )
    lines.append("")
    for r in results:
        detail = "; ".join(r.notes)
        if r.failures:
            detail += f"; non-200 answers by status and code: {r.failures}"
        if detail:
            lines.append(f"- {r.name}: {detail}")
    return "\n".join(lines) + "\n"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def soak_load(url: str, key: str, *, minutes: float, rate: float, pid: int, result: Result, samples: list) -> None:
    """Open loop at a fixed rate; the gateway's RSS is sampled every 5 s."""
    import aiohttp

    started = time.monotonic()
    end = started + minutes * 60
    in_flight = asyncio.Semaphore(256)

    async def one(session, n: int) -> None:
        async with in_flight:
            body = {
                "model": "gpt-4o-mini",
                "max_tokens": 32,
                "messages": [{"role": "user", "content": f"soak {uuid.uuid4().hex} #{n}"}],
            }
            try:
                async with session.post(
                    f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        result.served += 1
                        result.request_ids.append(resp.headers["x-request-id"])
                    else:
                        text = await resp.text()
                        try:
                            kind = f"{resp.status} {json.loads(text)['error']['code']}"
                        except Exception:
                            kind = str(resp.status)
                        result.failed += 1
                        result.failures[kind] = result.failures.get(kind, 0) + 1
            except Exception as exc:
                result.failed += 1
                result.failures[type(exc).__name__] = result.failures.get(type(exc).__name__, 0) + 1

    async def sampler() -> None:
        while time.monotonic() < end:
            samples.append((time.monotonic() - started, rss_kb(pid)))
            await asyncio.sleep(5)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        tasks, n = [], 0
        sampling = asyncio.create_task(sampler())
        while (now := time.monotonic()) < end:
            n += 1
            tasks.append(asyncio.create_task(one(session, n)))
            await asyncio.sleep(max(0.0, started + n / rate - now))
        await asyncio.gather(*tasks)
        await sampling
    result.duration_s = time.monotonic() - started


def soak_markdown(result: Result, samples: list, *, minutes: float, rate: float, warmup_s: float) -> tuple[str, bool]:
    after = [kb for t, kb in samples if t >= warmup_s]
    base = after[0] if after else 0
    growth = (max(after) - base) / base * 100 if base else float("nan")
    ok = result.failed == 0 and result.lost == 0 and result.duplicates == 0 and growth <= 10.0
    text = "\n".join([
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPUs: 1 uvicorn worker, "
        f"{minutes:g} min at a fixed {rate:g} req/s (open loop), warm-up {warmup_s:.0f} s.",
        "",
        "| load held (req/s) | served | failed | recorded | lost | RSS after warm-up | RSS max after | growth |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result.rps:.1f} | {result.served} | {result.failed} | {result.recorded} | **{result.lost}** | {base / 1024:.0f} MiB "
        f"| {max(after, default=0) / 1024:.0f} MiB | **{growth:.1f} %** (limit 10 %) |",
        "",
        f"Verdict: {'pass' if ok else 'FAIL'}." + (f" Non-200 answers: {result.failures}" if result.failures else ""),
    ])  # fmt: skip
    return text + "\n", ok


def write_results(text: str, *, begin: str = BEGIN, end: str = END, title: str = "Chaos") -> None:
    doc = RELIABILITY_MD.read_text() if RELIABILITY_MD.exists() else "# Reliability\n"
    if begin not in doc:
        doc += f"\n## {title}\n\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    RELIABILITY_MD.write_text(f"{head}{begin}\n{text}{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per scenario")
    parser.add_argument("--outage", type=float, default=15.0, help="seconds Postgres is unreachable")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--only", default="redis,upstream,postgres")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--soak", type=float, default=0, help="instead of the scenarios: soak for this many minutes")
    parser.add_argument("--rate", type=float, default=50.0, help="soak: requests per second")
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        print("redis-server is not on PATH (apt-get install redis-server)")
        return 2

    pg_target = pg_socket()
    key = prepare_database()
    spool = tempfile.mkdtemp(prefix="finops-chaos-spool-")
    os.environ["FINOPS_LEDGER_SPOOL_DIR"] = spool  # our own spool: never replay anyone else's
    redis_port = free_port()
    ctx: dict = {"key": key, "redis_port": redis_port, "redis_url": f"redis://127.0.0.1:{redis_port}/0"}
    procs: list[subprocess.Popen] = []
    log = open(Path(spool) / "gateway.log", "wb")  # noqa: SIM115
    try:
        ctx["redis"] = start_redis(redis_port)
        mock_port = free_port()
        mock = subprocess.Popen([sys.executable, "-m", "apps.gateway.mock_llm", "--port", str(mock_port)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        procs.append(mock)
        wait_port(mock_port, proc=mock)
        ctx["mock"] = f"http://127.0.0.1:{mock_port}"
        ctx["proxy"] = proxy = PgProxy(pg_target)
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{proxy.port}/{CHAOS_DB}",
            "REDIS_URL": ctx["redis_url"],
            "DJANGO_SETTINGS_MODULE": "finops.settings",
            "PROMETHEUS_MULTIPROC_DIR": "",
            "FINOPS_MOCK_LLM_URL": f"{ctx['mock']}/v1",
            "FINOPS_UPSTREAM_TIMEOUT_S": "2",
            "FINOPS_LEDGER_SPOOL_DIR": spool,
            "LOG_LEVEL": "WARNING",
        }
        gateway = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "finops.asgi:application", "--host", "127.0.0.1", "--port", str(port),
             "--loop", "uvloop", "--http", "httptools", "--no-access-log"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(gateway)
        wait_port(port, timeout=90, proc=gateway)
        ctx["url"] = f"http://127.0.0.1:{port}"
        warm = Result("warm-up")
        asyncio.run(load(ctx["url"], key, model="gpt-4o-mini", duration=2, concurrency=2, result=warm))
        if warm.served == 0:
            print(f"warm-up failed: {warm.failures}; see {log.name}")
            return 1

        if args.soak:
            soak, samples = Result("soak"), []
            warmup_s = min(60.0, args.soak * 60 / 5)
            asyncio.run(
                soak_load(ctx["url"], key, minutes=args.soak, rate=args.rate, pid=gateway.pid, result=soak, samples=samples)
            )
            count_recorded(soak)
            text, ok = soak_markdown(soak, samples, minutes=args.soak, rate=args.rate, warmup_s=warmup_s)
            print(text)
            if not args.no_write:
                write_results(text, begin="<!-- SOAK:BEGIN -->", end="<!-- SOAK:END -->", title="Soak")
            print("soak: OK" if ok else f"soak: FAILED (gateway log: {log.name})")
            return 0 if ok else 1

        results = []
        for name in args.only.split(","):
            print(f"== {name}", flush=True)
            r = SCENARIOS[name](ctx, args)
            print(f"   served={r.served} throttled={r.throttled} failed={r.failed} recorded={r.recorded} duplicates={r.duplicates} lost={r.lost} "
                  f"rps={r.rps:.0f} {r.failures} {'; '.join(r.notes)} {r.samples}", flush=True)  # fmt: skip
            results.append(r)
    finally:
        for proc in reversed(procs):
            stop(proc)
        stop(ctx.get("redis"))
        log.close()

    text = markdown(results, args)
    print(text)
    if not args.no_write:
        write_results(text)
    ok = all(r.lost == 0 and r.duplicates == 0 and r.served > 0 for r in results)
    ok &= all(r.failed == 0 for r in results if r.name.startswith("Upstream"))
    ok &= not any("FAIL" in n for r in results for n in r.notes)
    print("chaos: OK" if ok else f"chaos: FAILED (gateway log: {log.name})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
