"""Prometheus exposition that is safe under several worker processes.

Counters and histograms live in each process; with PROMETHEUS_MULTIPROC_DIR set (the Makefile
and compose set it) they are merged at scrape time by MultiProcessCollector. Gauges that describe
the database (job freshness, budget utilisation, open anomalies) are computed at scrape time by
collectors that the apps register, so every worker reports the same value.

Labels are bounded: provider, model, tier, cache status, outcome, detector, severity, org at most.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

ScrapeCollector = Callable[[], Iterable[Metric]]
_scrape_collectors: list[ScrapeCollector] = []


def register_scrape_collector(collector: ScrapeCollector) -> ScrapeCollector:
    if collector not in _scrape_collectors:
        _scrape_collectors.append(collector)
    return collector


class _DatabaseCollector:
    def collect(self) -> Iterable[Metric]:
        for collector in _scrape_collectors:
            try:
                yield from collector()
            except Exception:  # a broken collector must not take /metrics down
                logger.exception("scrape collector %s failed", getattr(collector, "__name__", collector))


@register_scrape_collector
def job_freshness() -> Iterable[Metric]:
    from finops.models import JobRun

    family = GaugeMetricFamily(
        "finops_job_last_success_timestamp_seconds", "Unix time of the last successful run of a scheduled job.", labels=["job"]
    )
    for name, at in JobRun.objects.exclude(last_success_at=None).values_list("name", "last_success_at"):
        if at is not None:
            family.add_metric([name], at.timestamp())
    yield family


def render() -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    output = generate_latest(registry)
    output += generate_latest(_database_registry())
    return output, CONTENT_TYPE_LATEST


def _database_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_DatabaseCollector())
    return registry


@functools.lru_cache(maxsize=8192)
def child(metric, *values: str):
    """`metric.labels(*values)`, memoised: label lookup and validation cost more than the increment on the hot path."""
    return metric.labels(*values)


def worker_metrics_serve(*, port: int, addr: str = "127.0.0.1") -> None:
    """Serve the Celery worker's counters (merged over its pool processes) on http://addr:port/metrics.

    The worker has no HTTP server of its own; Prometheus scrapes this one (job `finops-worker`). The worker gets
    its own PROMETHEUS_MULTIPROC_DIR (`make run`: .finops/prometheus-worker), so the API's scrape and this one
    never count the same sample twice. The database gauges are the API's alone.
    """
    from prometheus_client import REGISTRY, start_http_server

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=addr, registry=registry)
    logger.info("worker metrics on http://%s:%s/metrics", addr, port)
