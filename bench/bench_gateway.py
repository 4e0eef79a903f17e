"""Gateway benchmark: finops as shipped beside the LiteLLM proxy and a direct call, in one run, on the same mock.

    .venv/bin/python bench/bench_gateway.py [--duration 10] [--targets ...] [--scenarios ...] [--profile] [--no-write]

Needs `make services` (Postgres + Redis) and wrk (`make tools`). Installs the LiteLLM proxy (pinned, from the
package registry) into its own virtual environment under `.finops/` on first use (`bench/gateway_targets.py`).
Starts the mock LLM (one process) and measures each target alone, in turn, with the same wrk script
(`bench/chat.lua`) and the same unique, semantically distinct prompts (`bench/gateway_prompts.py`), so every
request to finops is a miss of both cache tiers:

- **direct**: the mock itself (the floor);
- **litellm**: the LiteLLM proxy, `--num_workers` as many as finops;
- **finops**: finops as shipped (uvicorn, 2 workers; exact + semantic cache on, the bench org on the defaults);
- **finops-nocache**: the same with `FINOPS_CACHE_ENABLED=0` (what the cache tiers cost).

Scenarios, each target in turn: **one** (1 connection: the p50 overhead over the direct call), **sat**
(64 connections: 2xx throughput, and the CPU each process spends per request), **slow** (200 connections against
a 500 ms upstream, set on the mock for every target alike) and **long** (64 connections, 2,000-character
prompts). Every non-2xx answer, socket error and timeout is counted beside each throughput; throughput counts
2xx answers only. Ratios to the direct call and to LiteLLM are computed from this run and written, with a
pass/fail column per acceptance criterion of issue #18, to docs/benchmarks.md § gateway (only when every target
and scenario ran; a subset run prints its tables). Environment: BENCH_TARGETS, BENCH_SCENARIOS, BENCH_DURATION
(comma-separated / seconds) default the options of the same name.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway_prompts import long_prompts, short_prompts, write_lines  # noqa: E402
from bench.gateway_report import profile_summary, report  # noqa: E402
from bench.gateway_targets import LITELLM_KEY, Finops, LiteLLM, Mock, litellm_python  # noqa: E402
from finops import clock  # noqa: E402
from finops.envfile import load_env_file  # noqa: E402

load_env_file()
BENCH_DB = os.environ.get("FINOPS_BENCH_GATEWAY_DB", "finops_bench_gateway")
LUA = ROOT / "bench" / "chat.lua"
TARGETS = ("direct", "litellm", "finops", "finops-nocache")
SCENARIOS = ("one", "sat", "slow", "long")
SLOW_UPSTREAM_MS = 500
# Prompts per list: enough that no target repeats one at the rates finops is aimed at (the run reports reuse).
SHORT_COUNT, LONG_COUNT = 60_000, 16_000  # more than the fastest target sends in a run: no prompt repeats
RESULTS = ROOT / ".finops" / "bench-gateway-results.json"  # the last run's figures, for --report-only


def bench_database_url() -> str:
    from urllib.parse import urlparse

    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/finops")
    return urlparse(base)._replace(path=f"/{BENCH_DB}").geturl()


def prepare_database() -> str:
    """Create, migrate and seed the bench database, with the bench org on the shipped defaults and its cache
    empty; returns a fresh API key."""
    from finops.services import database_create_if_missing

    url = bench_database_url()
    database_create_if_missing(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from apps.cache.models import CacheSettings
    from apps.cache.services import cache_invalidate
    from apps.ledger.models import LLMRequest
    from apps.ledger.services import prices_load_fixture
    from apps.tenancy.services import api_key_create, member_get_or_create, org_get_or_create, team_get_or_create

    prices_load_fixture(path=ROOT / "fixtures" / "prices.json")
    org = org_get_or_create(name="finops-bench")
    member = member_get_or_create(team=team_get_or_create(org=org, name="bench"), username="wrk")
    CacheSettings.objects.filter(org=org).delete()  # as shipped: no per-org override (older runs wrote one)
    cache_invalidate(org_id=org.id)  # a prompt of an earlier run must not be a hit in this one
    LLMRequest.objects.filter(org=org).delete()  # each run counts its own rows
    return api_key_create(member=member, name="bench").secret


def ledger_window(*, since: dt.datetime, until: dt.datetime) -> dict:
    """What finops recorded for the bench org's requests received in [since, until): rows by cache status, errors
    by code, and its own overhead / upstream timings of the served rows."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT cache_status, count(*) FROM llm_requests r JOIN tenancy_organization o ON o.id = r.org_id
            WHERE o.name = 'finops-bench' AND received_at >= %s AND received_at < %s GROUP BY 1 ORDER BY 2 DESC
            """,
            [since, until],
        )
        by_cache = dict(cursor.fetchall())
        cursor.execute(
            """
            SELECT http_status, error_code, count(*) FROM llm_requests r JOIN tenancy_organization o ON o.id = r.org_id
            WHERE o.name = 'finops-bench' AND received_at >= %s AND received_at < %s AND http_status >= 400
            GROUP BY 1, 2 ORDER BY 3 DESC
            """,
            [since, until],
        )
        errors = [f"{n} × {status} `{code}`" for status, code, n in cursor.fetchall()]
        cursor.execute(
            """
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY overhead_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY overhead_ms),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY upstream_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY upstream_ms),
                   count(*) FILTER (WHERE budget_state = 'fail_open')
            FROM llm_requests r JOIN tenancy_organization o ON o.id = r.org_id
            WHERE o.name = 'finops-bench' AND received_at >= %s AND received_at < %s AND status = 'served'
            """,
            [since, until],
        )
        ovh50, ovh99, up50, up99, fail_open = cursor.fetchone()
    return {
        "cache": by_cache,
        "errors": errors,
        "overhead_p50": ovh50 or 0,
        "overhead_p99": ovh99 or 0,
        "upstream_p50": up50 or 0,
        "upstream_p99": up99 or 0,
        "fail_open": fail_open or 0,
    }


def ledger_rows() -> int:
    from apps.ledger.models import LLMRequest

    return LLMRequest.objects.filter(org__name="finops-bench").count()


def wrk(url: str, *, threads: int, connections: int, duration: int, env: dict[str, str]) -> dict:
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", str(LUA), url]
    run = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env, "BENCH_THREADS": str(threads)})
    line = next((line for line in run.stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if run.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr.strip()[-500:]}")
    result = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = result["duration_us"] / 1e6
    statuses = {int(k): v for k, v in result["statuses"].items()}
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    result["statuses"] = statuses
    result["ok"] = ok
    # Every answer that is not a 2xx, and every request lost to a socket error, is a non-2xx for the report.
    result["non2xx"] = sum(statuses.values()) - ok + result["connect_errors"] + result["read_errors"] + result["write_errors"]
    result["rps_ok"] = ok / seconds  # throughput counts 2xx answers only: a cheap 429 must not flatter it
    return result


class CPU:
    """CPU seconds (user + system) of the processes on the request path, sampled before and after a run."""

    def __init__(self, server_pids: list[int], server_name: str, mock_pid: int):
        self.groups = {server_name: server_pids, "mock LLM": [mock_pid]}
        self.names = [server_name, "mock LLM", "postgres", "redis"] if server_pids else ["mock LLM", "postgres", "redis"]

    def _sample(self) -> dict[str, float]:
        import psutil

        from finops.services import postgres_pid, redis_pid

        out = dict.fromkeys(self.names, 0.0)
        pids = {name: list(p) for name, p in self.groups.items()}
        postmaster, redis = postgres_pid(), redis_pid()  # this checkout's servers, not other ones on the machine
        if postmaster:
            try:
                pids["postgres"] = [postmaster] + [c.pid for c in psutil.Process(postmaster).children()]
            except psutil.Error:
                pass
        pids["redis"] = [redis] if redis else []
        for name in self.names:
            for pid in pids.get(name, []):
                try:
                    t = psutil.Process(pid).cpu_times()
                    out[name] += t.user + t.system
                except psutil.Error:
                    pass
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["wrk"] = usage.ru_utime + usage.ru_stime  # wrk runs are this process's only waited-for children
        return out

    def __enter__(self) -> CPU:
        import psutil

        psutil.cpu_percent()
        self.before = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        import psutil

        self.busy = psutil.cpu_percent()
        after = self._sample()
        self.spent = {name: after[name] - self.before[name] for name in after}


def wait_idle(pids: list[int], *, limit_s: float = 20.0) -> None:
    """Wait until the server has worked off what the last wrk run left in its queues (wrk stops sending, the server
    does not stop answering), so no run pays for the previous one's backlog: < 10 % of a core over 0.5 s."""
    import psutil

    def cpu() -> float:
        total = 0.0
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = cpu()
        time.sleep(0.5)
        if cpu() - before < 0.05:
            return


def measure(target: str, url: str, *, key: str, scenarios: list[str], d: int, mock: Mock, prompts: dict[str, Path],
            server_pids: list[int], finops: Finops | None = None, profile_to: Path | None = None, logs=None) -> dict:  # fmt: skip
    """Every selected scenario against one target; each run starts where the previous one left the prompt list."""
    offsets = {"short": 0, "long": 0}
    out: dict = {}

    def go(connections: int, duration: int, which: str = "short", *, drain: bool = True) -> dict:
        env = {"BENCH_KEY": key, "BENCH_PROMPTS": str(prompts[which]), "BENCH_OFFSET": str(offsets[which])}
        result = wrk(url, threads=min(2, connections), connections=connections, duration=duration, env=env)
        offsets[which] = result["next_offset"]
        print(f"  {connections:>3} connections, {which}: {result['rps_ok']:.0f} req/s 2xx, {result['non2xx']} non-2xx, "
              f"{result['timeouts']} timeouts, p50 {result['p50'] / 1000:.1f} ms, p99 {result['p99'] / 1000:.1f} ms", flush=True)  # fmt: skip
        if drain:
            wait_idle(server_pids or [mock.proc.pid])
        return result

    def window(name: str, started: dt.datetime) -> None:
        if finops is not None:
            time.sleep(1.0)  # the ledger writes its rows in batches after the response
            out[f"{name}_ledger"] = ledger_window(since=started, until=clock.now())

    go(16, 3)  # warm-up: connection pools, catalog, caches of the servers (not of the prompts: each is new)
    if "one" in scenarios:
        started = clock.now()
        out["one"] = go(1, d)
        window("one", started)
    if "sat" in scenarios:
        profiler = _profile(finops, d, profile_to, logs) if finops is not None and profile_to else None
        name = "LiteLLM workers" if target == "litellm" else "finops workers"
        started = clock.now()
        with CPU(server_pids, name, mock.proc.pid) as cpu:
            out["sat"] = go(64, d, drain=False)  # the CPU of the run's own seconds, over the answers within them
        wait_idle(server_pids or [mock.proc.pid])
        out["sat_cpu"] = {"spent": cpu.spent, "busy": cpu.busy}
        window("sat", started)
        if profiler is not None:
            profiler.wait(timeout=60)
    if "slow" in scenarios:
        mock.latency(SLOW_UPSTREAM_MS)
        try:
            go(200, 2)  # warm-up at this concurrency (the servers' upstream pools grow to 200)
            started = clock.now()
            out["slow"] = go(200, d)
            window("slow", started)
        finally:
            mock.latency(0)
    if "long" in scenarios:
        started = clock.now()
        out["long"] = go(64, d, "long")
        window("long", started)
    if finops is not None:  # both finops targets: Django's front beside the lean one, with and without the cache
        half = max(d // 2, 3)
        out["native"] = wrk(f"{finops.url}/chat", threads=1, connections=1, duration=half,
                            env={"BENCH_KEY": key, "BENCH_NATIVE": "1", "BENCH_PROMPTS": str(prompts["short"]),
                                 "BENCH_OFFSET": str(offsets["short"])})  # fmt: skip
        if target == "finops":
            out["hit"] = wrk(url, threads=1, connections=1, duration=half, env={"BENCH_KEY": key, "BENCH_SAME_PROMPT": "1"})
    return out


def _profile(finops: Finops, d: int, profile_to: Path, logs) -> subprocess.Popen | None:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    workers = finops.worker_pids()
    if not Path(pyspy).exists() or not workers:
        return None
    return subprocess.Popen(
        [
            pyspy,
            "record",
            "--pid",
            str(workers[0]),
            "--duration",
            str(max(d - 3, 3)),
            "--rate",
            "200",
            "--gil",
            "--format",
            "raw",
            "--output",
            str(profile_to),
            "--nonblocking",
        ],  # fmt: skip
        stdout=logs,
        stderr=logs,
    )


def _listed(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = set(chosen) - set(allowed)
    if unknown:
        raise SystemExit(f"unknown {what}: {sorted(unknown)} (choose from {', '.join(allowed)})")
    return [v for v in allowed if v in chosen]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION") or 10), help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of finops and of LiteLLM")
    parser.add_argument("--targets", default=os.environ.get("BENCH_TARGETS") or ",".join(TARGETS))
    parser.add_argument("--scenarios", default=os.environ.get("BENCH_SCENARIOS") or ",".join(SCENARIOS))
    parser.add_argument("--profile", action="store_true", help="sample a finops worker with py-spy during the 64-connection run")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing docs/benchmarks.md")
    parser.add_argument("--report-only", action="store_true", help="no measurement: the section from the last run's results")
    args = parser.parse_args()
    if args.report_only:
        return rerender(print_only=args.no_write)
    targets = _listed(args.targets, TARGETS, "targets")
    scenarios = _listed(args.scenarios, SCENARIOS, "scenarios")
    if not shutil.which("wrk"):
        sys.stderr.write("wrk is not installed: `make tools` (or apt-get install wrk)\n")
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    logs = open(tmp / "servers.log", "wb")  # noqa: SIM115
    if "litellm" in targets:
        litellm_python(logs)  # installs once, before anything is timed
    secret = prepare_database()
    long, long_origin = long_prompts(LONG_COUNT)
    prompts = {"short": write_lines(short_prompts(SHORT_COUNT), tmp / "short.txt"), "long": write_lines(long, tmp / "long.txt")}
    prom = tmp / "prometheus"
    prom.mkdir()
    d = args.duration
    results: dict[str, dict] = {}
    load = os.getloadavg()[0]
    run_started = clock.now()
    print(f"load average before: {load:.2f}; {d} s per run; targets {', '.join(targets)}; scenarios {', '.join(scenarios)}")
    common = {"scenarios": scenarios, "d": d, "prompts": prompts, "logs": logs}
    try:
        with Mock(logs) as mock:
            for target in targets:
                print(target, flush=True)
                if target == "direct":
                    results[target] = measure(
                        target, f"{mock.url}/chat/completions", key="none", mock=mock, server_pids=[], **common
                    )
                elif target == "litellm":
                    with LiteLLM(workers=args.workers, mock_url=mock.url, tmp=tmp, logs=logs) as proxy:
                        results[target] = measure(target, proxy.chat_url, key=LITELLM_KEY, mock=mock,
                                                  server_pids=proxy.worker_pids(), **common)  # fmt: skip
                else:
                    env = {"FINOPS_CACHE_ENABLED": "0"} if target == "finops-nocache" else {}
                    with Finops(workers=args.workers, mock_url=mock.url, database_url=bench_database_url(), prom=prom,
                                logs=logs, env=env) as gw:  # fmt: skip
                        profile_to = tmp / f"profile-{target}.txt" if args.profile and target == "finops" else None
                        results[target] = measure(target, gw.chat_url, key=secret, mock=mock, server_pids=[gw.proc.pid, *gw.worker_pids()],
                                                  finops=gw, profile_to=profile_to, **common)  # fmt: skip
                        time.sleep(1)  # the ledger writer's last batch
                        rows_before_shutdown = ledger_rows()
                    results[target]["rows"] = (rows_before_shutdown, ledger_rows())
    except Exception:
        logs.close()
        sys.stderr.write(f"servers' log: {tmp / 'servers.log'}\n")
        raise
    logs.close()
    if any(t.startswith("finops") for t in targets):
        results["whole_run"] = ledger_window(since=run_started, until=clock.now())

    if (tmp / "profile-finops.txt").exists():
        results["profile"] = profile_summary(tmp / "profile-finops.txt")
    complete = {"direct", "litellm", "finops"} <= set(targets) and set(scenarios) == set(SCENARIOS)
    meta = {"workers": args.workers, "load": load, "duration": d, "long_origin": long_origin, "complete": complete,
            "measured_at": f"{run_started:%Y-%m-%d %H:%M}"}  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    shutil.rmtree(tmp, ignore_errors=True)
    return publish(results, meta, print_only=args.no_write)


def publish(results: dict, meta: dict, *, print_only: bool) -> int:
    """Write (or print) the section; a subset run only prints."""
    complete = meta.pop("complete")
    md = report(results, **meta)
    if print_only or not complete:
        print(md)
        if not complete:
            print("(a subset run: docs/benchmarks.md is left alone; it takes direct, litellm and finops with every scenario)")
    else:
        from evals.report import write_section

        write_section("gateway", md)
        print(md)
        print(f"written to {ROOT / 'docs' / 'benchmarks.md'}")
    return 0


def rerender(print_only: bool) -> int:
    """The section again from the last run's saved results (after a change to the report's wording only)."""
    saved = json.loads(RESULTS.read_text())
    results = saved["results"]
    for target in results.values():
        for run in target.values() if isinstance(target, dict) else []:
            if isinstance(run, dict) and "statuses" in run:
                run["statuses"] = {int(k): v for k, v in run["statuses"].items()}
    return publish(results, saved["meta"], print_only=print_only)


if __name__ == "__main__":
    raise SystemExit(main())
