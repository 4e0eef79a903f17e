"""Ledger metrics: where rows went (Postgres, outbox sinks), and rows Postgres refused.

Labels are bounded (the sink); per-request figures live in the ledger itself.
"""

from __future__ import annotations

from prometheus_client import Counter

from finops.metrics import child  # noqa: F401 - the memoised .labels() of the hot path

LEDGER_ROWS = Counter("finops_ledger_rows_written_total", "Ledger rows written by the gateway, by sink.", ["sink"])
LEDGER_DEAD_LETTERS = Counter(
    "finops_ledger_dead_letters_total", "Ledger rows Postgres refused (data or constraint error), kept in the spool's dead-*.jsonl."
)
LEDGER_OUTBOX = Counter(
    "finops_ledger_outbox_rows_total",
    "Ledger rows diverted to the outbox because Postgres failed, by sink (redis, spool).",
    ["sink"],
)


def ledger_dead_letters():
    """Rows Postgres refused, waiting in the spool's dead-*.jsonl for an operator (read at scrape time, so the API
    reports what the replay worker wrote: the spool directory is shared, see compose.yml)."""
    from prometheus_client.core import GaugeMetricFamily

    from apps.ledger.recorder import spool_dir

    family = GaugeMetricFamily(
        "finops_ledger_dead_letter_rows", "Ledger rows Postgres refused, kept in the spool's dead-*.jsonl until an operator re-inserts them."
    )
    rows = 0
    for path in spool_dir().glob("dead-*.jsonl"):
        with open(path, "rb") as fh:
            rows += sum(1 for line in fh if line.strip())
    family.add_metric([], rows)
    yield family
