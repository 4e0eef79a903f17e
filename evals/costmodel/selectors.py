"""Reads for the cost model: the lever rates `make eval` measured, and the measured ledger to reconcile against."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from evals.costmodel.model import Lever

logger = logging.getLogger(__name__)

BENCHMARKS_MD = Path(settings.BASE_DIR) / "docs" / "benchmarks.md"
_ROW = re.compile(r"^\|\s*(exact|semantic|miss)[^|]*\|\s*([\d,]+)\s*\|", re.M)
_STAMP = re.compile(r"_Measured ([^_]+?) on ")


def benchmark_section(name: str, *, path: Path = BENCHMARKS_MD) -> str | None:
    if not path.exists():
        return None
    match = re.search(rf"<!-- bench:{re.escape(name)} -->(.*?)<!-- /bench:{re.escape(name)} -->", path.read_text(), re.S)
    return match.group(1) if match else None


def _rate(numerator: int, denominator: int) -> str:
    return str((Decimal(numerator) / Decimal(denominator)).quantize(Decimal("0.000001")))


def cache_levers_measured(*, path: Path = BENCHMARKS_MD) -> dict[str, Lever]:
    """Exact and semantic hit shares of the cache-eval workload replay (`manage.py eval_cache`, in `make eval`)."""
    section = benchmark_section("cache-eval", path=path)
    if section is None:
        return {}
    counts = {kind: int(n.replace(",", "")) for kind, n in _ROW.findall(section)}
    if set(counts) != {"exact", "semantic", "miss"}:
        return {}
    total = sum(counts.values())
    stamp = _STAMP.search(section)
    where = f"docs/benchmarks.md#cache-eval ({stamp.group(1) if stamp else 'undated'}): workload replay, {total} requests"
    return {
        "exact_hit_rate": Lever(_rate(counts["exact"], total), f"{where}, {counts['exact']} exact hits"),
        "semantic_hit_rate": Lever(_rate(counts["semantic"], total), f"{where}, {counts['semantic']} semantic hits"),
    }


def ledger_cache_levers(*, database_url: str | None = None, this_database: bool = False) -> dict[str, Lever]:
    """Exact and semantic hit shares of the seeded ledger: `database_url`, else the benchmarks' reference month when
    seeded, else (or with `this_database`) this project's database; none when it holds no rows."""
    try:
        url = None if this_database else (database_url or reference_database_url())
        measurement = ledger_measure(database_url=url)
    except Exception as exc:  # no database reachable: the replay's or the seed's rates stand in (reported as fallbacks)
        logger.info("no seeded ledger to measure cache rates on: %s", exc)
        return {}
    if measurement.rows == 0:
        return {}
    where = f"seeded ledger ({measurement.source}): {measurement.rows:,} requests"
    return {
        name: Lever(_rate(measurement.cache_hits.get(status, 0), measurement.rows), f"{where}, {measurement.cache_hits.get(status, 0):,} {status} hits")
        for name, status in (("exact_hit_rate", "exact"), ("semantic_hit_rate", "semantic"))
    }


@dataclass
class RouterMeasurement:
    dataset: str
    prompts: int
    direct_premium: int
    escalated: int
    cost_vs_premium: Decimal
    quality_vs_premium: float

    def levers(self) -> dict[str, Lever]:
        where = (
            f"eval_router full chain on RouteLLM {self.dataset} (n={self.prompts}; the code and data of make eval's router "
            f"evaluation; cost {100 * self.cost_vs_premium:.1f} % and quality {100 * self.quality_vs_premium:.1f} % of always-premium there)"
        )
        return {
            "routing_premium_share": Lever(
                _rate(self.direct_premium, self.prompts), f"{where}: {self.direct_premium} sent straight to premium"
            ),
            "escalation_rate": Lever(
                _rate(self.escalated, self.prompts), f"{where}: {self.escalated} cheap answers re-asked at premium"
            ),
        }


def router_measure(*, progress: bool = False) -> RouterMeasurement | None:
    """The routing shares of the full chain (keyword → learned → confidence) on the recorded RouteLLM answers:
    the same run `manage.py eval_router` reports. The full sets (vendored in fixtures/routellm), else the 50-prompt subset."""
    try:
        from evals.router.datasets import full_available
        from evals.router.harness import router_eval_run

        run = router_eval_run(full=full_available(), progress=progress)
    except Exception as exc:  # the eval is another app's; without it the seed's rates stand in, labelled
        logger.warning(
            "router evaluation unavailable (%s: %s); routing levers fall back to the seed configuration", type(exc).__name__, exc
        )
        return None
    report = run.reports[0]
    full = report.result("full chain")
    return RouterMeasurement(
        dataset=f"{run.dataset}{'/' + report.source if report.source else ''}",
        prompts=report.n,
        direct_premium=report.n - full.cheap_calls,
        escalated=full.cheap_calls + full.premium_calls - report.n,
        cost_vs_premium=(full.cost / report.strong_cost) if report.strong_cost else Decimal(0),
        quality_vs_premium=(full.quality / report.strong_quality) if report.strong_quality else 0.0,
    )


def embedding_lever() -> Lever:
    from apps.embeddings.embeddings import backend, model_name

    return Lever(
        model_name(), f"settings: FINOPS_CACHE_EMBEDDING_BACKEND={backend()}, the model every exact miss is embedded with"
    )


# --------------------------------------------------------------------------- the measured ledger


@dataclass
class IncidentCost:
    kind: str
    rows: int
    cost: Decimal


@dataclass
class LedgerMeasurement:
    source: str
    rows: int
    cost: Decimal
    first: dt.datetime | None
    last: dt.datetime | None
    incidents: list[IncidentCost] = field(default_factory=list)
    cache_hits: dict[str, int] = field(default_factory=dict)  # cache_status → rows ("exact", "semantic", …)

    def hit_share(self, status: str) -> Decimal:
        """The share of the ledger's requests answered by that cache tier (as the cost model's hit rates count)."""
        return Decimal(self.cache_hits.get(status, 0)) / Decimal(self.rows) if self.rows else Decimal(0)

    @property
    def incident_rows(self) -> int:
        return sum(i.rows for i in self.incidents)

    @property
    def incident_cost(self) -> Decimal:
        return sum((i.cost for i in self.incidents), Decimal(0))


TOTALS_SQL = (
    "SELECT count(*), coalesce(sum(cost_usd), 0), min(received_at), max(received_at) FROM llm_requests "
    "WHERE endpoint <> 'embeddings'"
)
# Rows of each seeded incident: its member, model and window (this includes the few ordinary requests of that
# member and model inside the window, a fraction of a percent of the incident's rows).
INCIDENTS_SQL = (
    "SELECT i.kind, count(r.request_id), coalesce(sum(r.cost_usd), 0) FROM seed_incidents i "
    "LEFT JOIN llm_requests r ON r.member_id = i.member_id AND r.model = i.model "
    'AND r.received_at >= i.start AND r.received_at < i."end" GROUP BY i.id, i.kind ORDER BY i.start'
)


CACHE_SQL = "SELECT cache_status, count(*) FROM llm_requests WHERE endpoint <> 'embeddings' GROUP BY cache_status"


def ledger_measure(*, database_url: str | None = None) -> LedgerMeasurement:
    """Totals of the ledger at `database_url` (psycopg), or of Django's database when None."""
    if database_url:
        import psycopg

        with psycopg.connect(database_url, connect_timeout=5) as conn, conn.cursor() as cur:
            return _measure(cur, source=_redact(database_url))
    from django.db import connection

    with connection.cursor() as cur:
        return _measure(cur, source=f"Django database '{connection.settings_dict['NAME']}'")


def _measure(cur, *, source: str) -> LedgerMeasurement:
    cur.execute(TOTALS_SQL)
    rows, cost, first, last = cur.fetchone()
    cur.execute(INCIDENTS_SQL)
    incidents = [IncidentCost(kind=k, rows=int(n), cost=Decimal(c)) for k, n, c in cur.fetchall()]
    cur.execute(CACHE_SQL)
    hits = {status: int(n) for status, n in cur.fetchall()}
    return LedgerMeasurement(
        source=source, rows=int(rows), cost=Decimal(cost), first=first, last=last, incidents=incidents, cache_hits=hits
    )


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def reference_database_url() -> str | None:
    """The benchmarks' reference-month database (evals/refdb.py) when it holds a seeded month, else None."""
    try:
        import sys

        sys.path.insert(0, str(settings.BASE_DIR))
        from evals.refdb import bench_database_url, reference_rows

        return bench_database_url() if reference_rows() > 0 else None
    except Exception as exc:
        logger.info("no reference database: %s", exc)
        return None


def bench_cpu_measured(*, path: Path = BENCHMARKS_MD) -> dict[str, tuple[Decimal, str]]:
    """CPU per request of the gateway workers (§ gateway, the default sdk transport's saturated run) and CPU per
    local embedding (§ cache, p50), as `make bench` wrote them; a figure that is missing is left out."""
    out: dict[str, tuple[Decimal, str]] = {}
    gateway = benchmark_section("gateway", path=path)
    found = re.search(r"^\| finops workers \| ([\d.]+) ms \|", gateway or "", re.M)
    if found:
        stamp = _STAMP.search(gateway or "")
        out["cpu_ms_per_request"] = (
            Decimal(found.group(1)),
            f"docs/benchmarks.md#gateway ({stamp.group(1) if stamp else 'undated'}): finops workers' CPU per request, "
            "saturated run, sdk transport",
        )
    cache = benchmark_section("cache", path=path)
    found = re.search(r"^\| … embedding CPU time[^|]*\| ([\d.]+) \|", cache or "", re.M)
    if found:
        stamp = _STAMP.search(cache or "")
        out["embed_cpu_ms"] = (
            Decimal(found.group(1)),
            f"docs/benchmarks.md#cache ({stamp.group(1) if stamp else 'undated'}): local MiniLM embedding CPU time, p50",
        )
    return out
