"""Gateway benchmark: wrk against the mock LLM directly and against finops in front of it, in the same run.

    .venv/bin/python bench/bench_gateway.py [--duration 15] [--profile] [--no-write]

Needs `make services` (Postgres + Redis) and wrk (`apt-get install wrk`, or `make tools`). It uses its own
database (`finops_bench_gateway`, migrated and seeded here) so the demo ledger is not polluted, starts the mock LLM
(1 process) and finops (uvicorn --workers 2 --loop uvloop --http httptools, no access log), and measures:

1. overhead over a direct call, one client, cache miss (p50 of finops − p50 of the mock);
2. saturated throughput, cache miss, 64 connections;
3. 200 clients against a 500 ms upstream (X-Mock-Latency-Ms, forwarded by finops to the mock).
Plus, for reference, an exact-cache hit end to end with one client.

finops runs with its ledger, budgets and exact cache on; the bench org has the semantic cache off (embedding
a prompt costs ~8 ms of CPU, and the figures above are for the gateway path). Every prompt is unique, so
every request is a cache miss. With --profile, py-spy samples one gateway worker during the saturated run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finops.envfile import load_env_file  # noqa: E402

load_env_file()
BENCH_DB = os.environ.get("FINOPS_BENCH_GATEWAY_DB", "finops_bench_gateway")

LUA = r"""
local key = os.getenv("BENCH_KEY") or "none"
local latency_ms = os.getenv("BENCH_LATENCY_MS")
local same = os.getenv("BENCH_SAME_PROMPT")
local counter = 0
local tid = 0
local threads = {}
setup = function(thread)
  tid = tid + 1
  thread:set("tid", tid)
  table.insert(threads, thread)
end
init = function(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
  if latency_ms then wrk.headers["X-Mock-Latency-Ms"] = latency_ms end
end
request = function()
  counter = counter + 1
  local text
  if same then
    text = "What is the capital of France?"
  else
    text = "Benchmark question " .. counter .. " of thread " .. tostring(tid) .. " nonce " .. math.random(1, 2000000000) .. ": how do budgets work?"
  end
  return wrk.format(nil, nil, nil, '{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"' .. text .. '"}]}')
end
done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,"read_errors":%d,"timeouts":%d,"p50":%d,"p90":%d,"p99":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 90.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def bench_database_url() -> str:
    from urllib.parse import urlparse

    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/finops")
    return urlparse(base)._replace(path=f"/{BENCH_DB}").geturl()


def prepare_database() -> str:
    """Create, migrate and seed the bench database; returns a fresh API key."""
    from urllib.parse import urlparse

    import psycopg

    url = bench_database_url()
    admin_url = urlparse(url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone():
            conn.execute(f"CREATE DATABASE {BENCH_DB}")
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from apps.ledger.models import LLMRequest
    from apps.ledger.services import prices_load_fixture
    from apps.tenancy.services import api_key_create, member_get_or_create, org_get_or_create, team_get_or_create

    prices_load_fixture(path=ROOT / "fixtures" / "prices.json")
    org = org_get_or_create(name="finops-bench")
    member = member_get_or_create(team=team_get_or_create(org=org, name="bench"), username="wrk")
    try:
        from apps.cache.models import CacheSettings

        CacheSettings.objects.update_or_create(org=org, defaults={"enabled": True, "semantic_enabled": False})
    except Exception as exc:  # the cache app's settings model is optional for this bench
        print(f"note: could not turn the semantic cache off for the bench org ({exc})")
    LLMRequest.objects.filter(org=org).delete()  # each run counts its own rows
    return api_key_create(member=member, name="bench").secret


def ledger_rows() -> int:
    from apps.ledger.models import LLMRequest

    return LLMRequest.objects.filter(org__name="finops-bench").count()


def wrk(url: str, *, threads: int, connections: int, duration: int, lua: Path, env: dict[str, str]) -> dict:
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", str(lua), url]
    out = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env}, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    result = json.loads(line.removeprefix("BENCH_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = result["status_errors"] + result["connect_errors"] + result["read_errors"] + result["timeouts"]
    return result


def ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def profile_summary(raw: Path, top: int = 25) -> str:
    """Self time and inclusive time per function from py-spy's collapsed stacks."""
    self_time: collections.Counter[str] = collections.Counter()
    total_time: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        self_time[frames[-1]] += n
        for frame in set(frames):
            total_time[frame] += n
    if not samples:
        return "(no samples)"

    def short(frame: str) -> str:
        return frame.replace(str(ROOT) + "/", "").replace(".venv/lib/python3.11/site-packages/", "")

    rows = ["| self % | function |", "|---:|---|"]
    rows += [f"| {100 * n / samples:.1f} | `{short(f)[:110]}` |" for f, n in self_time.most_common(top)]
    incl = ["| incl. % | function |", "|---:|---|"]
    interesting = ("apps/", "openai/", "aiohttp/", "asyncpg/", "redis/", "uvicorn/", "httpx2/", "json/")
    picked = [(f, n) for f, n in total_time.most_common(400) if any(k in f for k in interesting)][:top]
    incl += [f"| {100 * n / samples:.1f} | `{short(f)[:110]}` |" for f, n in picked]
    return f"{samples} samples of one worker.\n\n" + "\n".join(rows) + "\n\n" + "\n".join(incl)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="sample a gateway worker with py-spy during the saturated run")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing docs/benchmarks.md")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.stderr.write("wrk is not installed: apt-get install wrk (or `make tools`)\n")
        return 2

    secret = prepare_database()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    lua = tmp / "chat.lua"
    lua.write_text(LUA)
    prom = tmp / "prometheus"
    prom.mkdir()
    procs: list[subprocess.Popen] = []
    logs = open(tmp / "servers.log", "wb")  # noqa: SIM115
    try:
        mock_port, gw_port = free_port(), free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "apps.gateway.mock_llm", "--port", str(mock_port)], cwd=ROOT, stdout=logs, stderr=logs))
        mock_url = f"http://127.0.0.1:{mock_port}/v1"
        env = {
            **os.environ,
            "DATABASE_URL": bench_database_url(),
            "DJANGO_SETTINGS_MODULE": "finops.settings",
            "FINOPS_MOCK_LLM_URL": mock_url,
            "PROMETHEUS_MULTIPROC_DIR": str(prom),
            "DEBUG": "0",
            "SECRET_KEY": "bench-" + "x" * 60 + "abcdefgh",
            "LOG_LEVEL": "WARNING",
        }
        gateway_cmd = [sys.executable, "-m", "uvicorn", "finops.asgi:application", "--host", "127.0.0.1", "--port", str(gw_port),
                       "--workers", str(args.workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log"]  # fmt: skip
        gateway = subprocess.Popen(gateway_cmd, cwd=ROOT, env=env, stdout=logs, stderr=logs)
        procs.append(gateway)
        wait_http(f"{mock_url}/models")
        wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        direct = f"{mock_url}/chat/completions"
        finops = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        key = {"BENCH_KEY": secret}
        d = args.duration
        load = os.getloadavg()
        print(f"load average before: {load[0]:.2f}; warming up")
        wrk(finops, threads=2, connections=16, duration=3, lua=lua, env=key)
        wrk(direct, threads=1, connections=16, duration=2, lua=lua, env=key)

        print("1/3 one client")
        one_direct = wrk(direct, threads=1, connections=1, duration=d, lua=lua, env=key)
        one_finops = wrk(finops, threads=1, connections=1, duration=d, lua=lua, env=key)
        print("2/3 saturated")
        sat_direct = wrk(direct, threads=2, connections=64, duration=d, lua=lua, env=key)
        profiler = None
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if args.profile and Path(pyspy).exists():
            import psutil

            workers = psutil.Process(gateway.pid).children(recursive=True)
            worker = max(workers, key=lambda p: p.cpu_percent(interval=0.1)) if workers else None
            if worker is not None:
                profiler = subprocess.Popen(
                    [pyspy, "record", "--pid", str(worker.pid), "--duration", str(max(d - 3, 3)), "--rate", "200",
                     "--format", "raw", "--output", str(tmp / "profile.txt"), "--nonblocking"],  # fmt: skip
                    stdout=logs, stderr=logs,
                )
        sat_finops = wrk(finops, threads=2, connections=64, duration=d, lua=lua, env=key)
        if profiler is not None:
            profiler.wait(timeout=60)
        print("3/3 200 clients, 500 ms upstream")
        slow = {**key, "BENCH_LATENCY_MS": "500"}
        slow_direct = wrk(direct, threads=2, connections=200, duration=d, lua=lua, env=slow)
        slow_finops = wrk(finops, threads=2, connections=200, duration=d, lua=lua, env=slow)
        print("extra: exact-cache hit, one client")
        hit_finops = wrk(finops, threads=1, connections=1, duration=max(d // 2, 3), lua=lua, env={**key, "BENCH_SAME_PROMPT": "1"})
        time.sleep(2)
        rows = ledger_rows()
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
    rows_after_shutdown = ledger_rows()

    finops_requests = sum(r["requests"] for r in (one_finops, sat_finops, slow_finops, hit_finops))
    overhead_p50 = one_finops["p50"] - one_direct["p50"]
    errors = sum(r["errors"] for r in (one_finops, sat_finops, slow_finops, hit_finops))

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    md = f"""## Gateway hot path (`bench/bench_gateway.py`)

Load generator: wrk {subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1] if shutil.which("wrk") else ""} with a Lua
script (unique prompt per request, `max_tokens` 64). finops: uvicorn, {args.workers} workers, uvloop + httptools, no access
log, `/v1/*` served by the lean ASGI app (`apps/gateway/asgi.py`); ledger (batched asyncpg insert after the response),
budgets (`budget_reserve` round trip) and exact cache (Redis) on, semantic cache off for the bench org. Upstream: the
mock LLM, one process. wrk, the mock, Postgres and Redis share the machine's 2 cores with finops. Load average when the
run started: {load[0]:.2f} (other work on the machine inflates every figure).

| figure | direct to the mock | through finops | target | |
|---|---:|---:|---|---|
| one client, cache miss: p50 | {ms(one_direct["p50"])} | {ms(one_finops["p50"])} | overhead ≤ 2 ms | overhead **{overhead_p50 / 1000:.2f} ms**, {verdict(overhead_p50 <= 2000)} |
| one client: p90 / p99 | {ms(one_direct["p90"])} / {ms(one_direct["p99"])} | {ms(one_finops["p90"])} / {ms(one_finops["p99"])} | | |
| saturated (64 connections), cache miss | {sat_direct["rps"]:.0f} req/s | **{sat_finops["rps"]:.0f} req/s** | ≥ 800 req/s | {verdict(sat_finops["rps"] >= 800)} |
| saturated: p50 / p99 | {ms(sat_direct["p50"])} / {ms(sat_direct["p99"])} | {ms(sat_finops["p50"])} / {ms(sat_finops["p99"])} | | |
| 200 clients, 500 ms upstream | {slow_direct["rps"]:.0f} req/s | **{slow_finops["rps"]:.0f} req/s** | ≥ 380 req/s | {verdict(slow_finops["rps"] >= 380)} |
| 200 clients: p50 / p99 | {ms(slow_direct["p50"])} / {ms(slow_direct["p99"])} | {ms(slow_finops["p50"])} / **{ms(slow_finops["p99"])}** | p99 ≤ 600 ms | {verdict(slow_finops["p99"] <= 600_000)} |
| exact-cache hit, one client: p50 | | {ms(hit_finops["p50"])} | ≤ 1 ms | {verdict(hit_finops["p50"] <= 1000)} |

Errors (non-2xx, timeouts) through finops: {errors} of {finops_requests} requests. Ledger rows written for the
bench org: {rows} right after the runs, {rows_after_shutdown} after the workers' graceful shutdown (wrk counts only
completed responses; the difference is requests cut off when each run ended).

For reference, LiteLLM's proxy on this machine (ARCHITECTURE.md §3): +6.9 ms one client, ~166 req/s saturated,
120 req/s at p50 1.40 s with 200 clients against the 500 ms upstream.
"""
    if args.profile and (tmp / "profile.txt").exists():
        md += "\n### Where a saturated worker spends its time (py-spy)\n\n" + profile_summary(tmp / "profile.txt") + "\n"
    if args.no_write:
        print(md)
    else:
        from bench.report import write_section

        write_section("gateway", md)
        print(md)
        print(f"written to {ROOT / 'docs' / 'benchmarks.md'}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
