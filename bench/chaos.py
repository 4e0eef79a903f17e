"""Chaos scenarios against a live gateway under load: nothing served may go unrecorded.

    .venv/bin/python bench/chaos.py [--duration 20] [--outage 15] [--hang 30] [--concurrency 16] [--users 4]
                                    [--only redis,upstream,postgres,pg_hang,rollup,gateway_kill,saturation] [--no-write]

Needs `redis-server` on PATH and the `pgserver` wheel (requirements.txt). Everything is started here and owned by
this script, so nothing it breaks is shared: a Postgres 16 + pgvector of its own (pgserver, in a temp folder deleted
at exit: it can be stopped and frozen), its database (`finops_chaos`, migrated), its own Redis on a free port, the
mock LLM, a TCP proxy in front of Postgres's socket (so Postgres can be made unreachable for the gateway alone), and
the gateway (uvicorn, finops.asgi) pointed at all of them. The load is a closed-loop asyncio client (aiohttp) on
loopback with `--concurrency` requests in flight, a unique prompt per request, round-robin over `--users` API keys.

Scenarios (each asserts its outcome and `lost == 0`; the script exits non-zero otherwise):
  redis         Redis stopped mid-load: requests keep being served (budgets through Postgres, cache bypassed).
  upstream      30 % of the cheap model's calls fail (500, then 429, then timeout, then malformed JSON) with
                model="auto": the fallback chain absorbs them, no request fails.
  postgres      Postgres unreachable for the gateway for --outage seconds mid-load (the proxy drops every connection
                and refuses new ones): requests keep being served (fail-open), rows go to the outbox, and after
                recovery + `ledger_outbox_replay` every served request has exactly one row.
  pg_hang       Postgres hanging for --hang seconds: SIGSTOP on the private server's postmaster and every child
                process (connections stay open, nothing answers), under --concurrency clients (or an open-loop
                --hang-rate). Same outcome as `postgres`, the budget decisions made during the hang within 60 ms at
                p99 (the gateway's own finops_budget_check_seconds histogram, scraped from /metrics; the maximum's
                bucket is reported), and the added end-to-end latency of the requests answered during the hang
                p99 <= 150 ms, max <= 500 ms (against the p50 before the hang).
  rollup        A Celery worker killed (SIGKILL) mid-way through a rollup of --rollup-days days of seeded detail rows;
                a re-run on a new worker gives summaries equal, to the last Decimal digit, to a fresh GROUP BY.
  gateway_kill  A 2-worker gateway with streams in flight: one uvicorn worker is SIGKILLed (not the supervisor).
                Its clients get an error, uvicorn starts a new worker, and after the replay every request that got
                a response has exactly one row (the cut streams from the dead worker's intent journal).
  saturation    A healthy database, a 2-worker gateway and --saturation-concurrency connections for --saturation
                seconds (more than 2 cores can serve): no request may fail open or get the fail-open limiter's 429;
                overload may only show as 503 `overloaded` (apps.gateway.admission), counted apart.
Every scenario with a fault window reports the end-to-end latency of the requests answered 200 during the fault
(p50/p99/max), beside the p50 before it. Results go to docs/reliability.md (section between the CHAOS markers).
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
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finops.envfile import load_env_file  # noqa: E402
from finops.processes import free_port, stop_process, wait_for_port  # noqa: E402
from finops.testing.pgproxy import PgProxy, pg_target  # noqa: E402

load_env_file()
RELIABILITY_MD = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- CHAOS:BEGIN -->", "<!-- CHAOS:END -->"

from bench.chaos_saturation import scenario_saturation  # noqa: E402
from bench.chaos_scenarios import (  # noqa: E402
    scenario_gateway_kill,
    scenario_pg_hang,
    scenario_postgres,
    scenario_redis,
    scenario_rollup,
    scenario_upstream,
)
from bench.chaos_stack import (  # noqa: E402
    CHAOS_DB,
    PrivatePostgres,
    Result,
    count_recorded,
    load,
    prepare_database,
    start_gateway,
    start_redis,
)

SCENARIOS = {
    "redis": scenario_redis,
    "upstream": scenario_upstream,
    "postgres": scenario_postgres,
    "pg_hang": scenario_pg_hang,
    "rollup": scenario_rollup,
    "gateway_kill": scenario_gateway_kill,
    "saturation": scenario_saturation,
}


def markdown(results: list[Result], args) -> str:
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPUs (load average "
        f"{os.getloadavg()[0]:.1f} at the end): 1 uvicorn worker (2 in the worker-kill scenario), {args.concurrency} "
        f"requests in flight (closed loop, aiohttp on loopback; {args.concurrency // 2} streams in the worker-kill "
        f"scenario), {args.users} users, mock LLM upstream, a private Postgres.",
        "",
        "| scenario | duration | load held (req/s) | served | throttled by design | failed | recorded | duplicates | lost "
        "| answered 200 during the fault: p50 / p99 / max (ms) | p50 before it (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = {"load": f"{r.rps:.0f}", "served": r.served, "throttled": r.throttled, "failed": r.failed,
             "recorded": r.recorded, "duplicates": r.duplicates, **r.cells}  # fmt: skip
        during, before = r.latency(), r.latency(during=False)
        fault = f"{during['p50']:.0f} / {during['p99']:.0f} / {during['max']:.0f}" if during.get("n") else "—"
        base = f"{before['p50']:.0f}" if before.get("n") else "—"
        lines.append(
            f"| {r.name} | {r.duration_s:.0f} s | {c['load']} | {c['served']} | {c['throttled']} | {c['failed']} "
            f"| {c['recorded']} | {c['duplicates']} | **{r.lost}** | {fault} | {base} |"
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
    parser.add_argument("--hang", type=float, default=20.0, help="seconds Postgres is frozen (SIGSTOP)")
    parser.add_argument(
        "--hang-rate",
        type=float,
        default=0.0,
        help="pg_hang: requests per second, open loop (0: closed loop of --concurrency clients)",
    )
    parser.add_argument("--saturation", type=float, default=60.0, help="saturation: seconds of load")
    parser.add_argument("--saturation-concurrency", type=int, default=64, help="saturation: connections")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--users", type=int, default=4, help="API keys (one user each) the load round-robins over")
    parser.add_argument("--rollup-days", type=int, default=30, help="rollup scenario: days of seeded detail rows")
    parser.add_argument("--rollup-rows", type=int, default=15_000, help="rollup scenario: detail rows per day")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--soak", type=float, default=0, help="instead of the scenarios: soak for this many minutes")
    parser.add_argument("--rate", type=float, default=50.0, help="soak: requests per second")
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        print("redis-server is not on PATH (apt-get install redis-server)")
        return 2

    print("starting a private Postgres (pgserver) and migrating finops_chaos …", flush=True)
    pg = PrivatePostgres()
    os.environ["DATABASE_URL"] = pg.url("postgres")
    target = pg_target(pg.url("postgres"))
    keys = prepare_database(users=args.users)
    spool = tempfile.mkdtemp(prefix="finops-chaos-spool-")
    os.environ["FINOPS_LEDGER_SPOOL_DIR"] = spool  # our own spool: never replay anyone else's
    redis_port = free_port()
    ctx: dict = {"keys": keys, "pg": pg, "database_url": os.environ["DATABASE_URL"], "redis_port": redis_port,
                 "redis_url": f"redis://127.0.0.1:{redis_port}/0"}  # fmt: skip
    procs: list[subprocess.Popen] = []
    log = open(Path(spool) / "gateway.log", "wb")  # noqa: SIM115
    ctx["log"] = log
    results: list[Result] = []
    try:
        ctx["redis"] = start_redis(redis_port)
        mock_port = free_port()
        mock = subprocess.Popen([sys.executable, "-m", "demo.mock_llm", "--port", str(mock_port)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        procs.append(mock)
        wait_for_port(mock_port, timeout=60, proc=mock)
        ctx["mock"] = f"http://127.0.0.1:{mock_port}"
        ctx["proxy"] = proxy = PgProxy(target)
        port = free_port()
        env = {
            # Removed, not emptied: prometheus_client goes multi-process on the variable's mere presence.
            **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{proxy.port}/{CHAOS_DB}",
            "REDIS_URL": ctx["redis_url"],
            "DJANGO_SETTINGS_MODULE": "finops.settings",
            "FINOPS_MOCK_LLM_URL": f"{ctx['mock']}/v1",
            "FINOPS_UPSTREAM_TIMEOUT_S": "2",
            "FINOPS_LEDGER_SPOOL_DIR": spool,
            "LOG_LEVEL": "WARNING",
        }
        ctx["env"] = env
        gateway = start_gateway(env, port, log)
        procs.append(gateway)
        ctx["url"] = f"http://127.0.0.1:{port}"
        warm = Result("warm-up")
        asyncio.run(load(ctx["url"], keys, model="gpt-4o-mini", duration=2, concurrency=2, result=warm))
        if warm.served == 0:
            print(f"warm-up failed: {warm.failures}; see {log.name}")
            return 1

        if args.soak:
            soak, samples = Result("soak"), []
            warmup_s = min(60.0, args.soak * 60 / 5)
            asyncio.run(
                soak_load(ctx["url"], keys[0], minutes=args.soak, rate=args.rate, pid=gateway.pid, result=soak, samples=samples)
            )
            count_recorded(soak)
            text, ok = soak_markdown(soak, samples, minutes=args.soak, rate=args.rate, warmup_s=warmup_s)
            print(text)
            if not args.no_write:
                write_results(text, begin="<!-- SOAK:BEGIN -->", end="<!-- SOAK:END -->", title="Soak")
            print("soak: OK" if ok else f"soak: FAILED (gateway log: {log.name})")
            return 0 if ok else 1

        for name in args.only.split(","):
            print(f"== {name}", flush=True)
            r = SCENARIOS[name](ctx, args)
            print(f"   served={r.served} throttled={r.throttled} failed={r.failed} recorded={r.recorded} duplicates={r.duplicates} lost={r.lost} "
                  f"rps={r.rps:.0f} {r.failures} {'; '.join(r.notes)} {r.samples}", flush=True)  # fmt: skip
            results.append(r)
    finally:
        pg.thaw()
        for proc in reversed(procs):
            stop_process(proc)
        stop_process(ctx.get("redis"))
        if ctx.get("proxy"):
            ctx["proxy"].close()
        log.close()

    text = markdown(results, args)
    print(text)
    if not args.no_write:
        write_results(text)
    ok = all(r.lost == 0 and r.duplicates == 0 and (r.served > 0 or r.cells) for r in results)
    ok &= all(r.failed == 0 for r in results if r.name.startswith("Upstream"))
    ok &= not any(n.startswith("FAIL:") for r in results for n in r.notes)
    print("chaos: OK" if ok else f"chaos: FAILED (gateway log: {log.name})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
