"""Infrastructure lines of the cost model: what running finops itself costs at the reference load, at list prices.

Sizing comes from measurements, not guesses: the gateway workers' CPU per request and the local embedding's CPU
per exact miss are `make bench`'s (docs/benchmarks.md § gateway, § cache); the peak hour is the seed generator's
(`HOUR_WEIGHTS`, `WEEKDAY_FACTOR` in demo/seed.py, the same workload the model prices). Prices are
fixtures/infra_prices.json (AWS on-demand list prices, copied by hand: see its note). Decimal throughout.

    peak_rps          = requests_month / (hours_per_month · 3600) · peak_factor
    gateway_cpu_cores = peak_rps · (cpu_ms_per_request + (1 − exact) · embed_cpu_ms) / 1000
    gateway_instances = max(2, ⌈gateway_cpu_cores / (vcpus · target_utilisation)⌉)      (two for redundancy)
    line              = quantity · usd_per_hour · hours_per_month   (storage: GB · usd_per_gb_month)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

from django.conf import settings

INFRA_PRICES = Path(settings.BASE_DIR) / "fixtures" / "infra_prices.json"
TARGET_UTILISATION = Decimal("0.5")  # headroom for the queueing the 200-client bench shows at saturation
MIN_GATEWAY_INSTANCES = 2


@dataclass(frozen=True)
class InfraLine:
    item: str
    sku: str
    quantity: Decimal
    unit_price: Decimal  # per hour, or per GB-month for storage
    unit: str  # "hour" | "GB-month"
    monthly: Decimal
    basis: str
    source: str


@dataclass(frozen=True)
class Sizing:
    requests_month: Decimal
    peak_factor: Decimal
    peak_rps: Decimal
    cpu_ms_per_request: Decimal
    embed_cpu_ms: Decimal
    exact_hit_rate: Decimal
    gateway_cores: Decimal
    gateway_instances: int


def peak_factor() -> Decimal:
    """Busiest hour over the average hour of the seeded workload (hour-of-day × day-of-week weights)."""
    from demo.seed import HOUR_WEIGHTS, WEEKDAY_FACTOR

    hour = Decimal(str(max(HOUR_WEIGHTS))) * 24 / Decimal(str(sum(HOUR_WEIGHTS)))
    day = Decimal(str(max(WEEKDAY_FACTOR))) * len(WEEKDAY_FACTOR) / Decimal(str(sum(WEEKDAY_FACTOR)))
    return (hour * day).quantize(Decimal("0.01"))


def infra_prices(path: Path = INFRA_PRICES) -> tuple[Decimal, dict[str, dict]]:
    data = json.loads(path.read_text())
    return Decimal(data["hours_per_month"]), {row["item"]: row for row in data["prices"]}


def size_gateway(
    *, requests_month: Decimal, cpu_ms_per_request: Decimal, embed_cpu_ms: Decimal, exact_hit_rate: Decimal,
    hours_per_month: Decimal, vcpus: Decimal, factor: Decimal | None = None,
) -> Sizing:  # fmt: skip
    factor = peak_factor() if factor is None else factor
    peak_rps = requests_month / (hours_per_month * 3600) * factor
    cores = peak_rps * (cpu_ms_per_request + (1 - exact_hit_rate) * embed_cpu_ms) / 1000
    needed = (cores / (vcpus * TARGET_UTILISATION)).to_integral_value(rounding=ROUND_CEILING)
    return Sizing(
        requests_month=requests_month, peak_factor=factor, peak_rps=peak_rps, cpu_ms_per_request=cpu_ms_per_request,
        embed_cpu_ms=embed_cpu_ms, exact_hit_rate=exact_hit_rate, gateway_cores=cores,
        gateway_instances=max(MIN_GATEWAY_INSTANCES, int(needed)),
    )  # fmt: skip


def infra_lines(sizing: Sizing, *, path: Path = INFRA_PRICES) -> list[InfraLine]:
    hours, prices = infra_prices(path)

    def hourly(item: str, quantity: int, basis: str) -> InfraLine:
        row = prices[item]
        price = Decimal(row["usd_per_hour"])
        return InfraLine(item, row["sku"], Decimal(quantity), price, "hour", Decimal(quantity) * price * hours, basis, row["source"])

    storage = prices["postgres_storage"]
    gb, per_gb = Decimal(storage["gb"]), Decimal(storage["usd_per_gb_month"])
    return [
        hourly(
            "gateway_instance", sizing.gateway_instances,
            f"peak {sizing.peak_rps:.2f} req/s needs {sizing.gateway_cores:.3f} cores at the measured CPU per request; "
            f"at most {TARGET_UTILISATION * 100:.0f} % busy, and never fewer than {MIN_GATEWAY_INSTANCES} (redundancy)",
        ),
        hourly("worker_instance", 1, "one Celery worker and beat: rollups, scans, replays (minutes of CPU an hour)"),
        hourly("postgres", 1, "the ledger, budgets and the semantic cache's pgvector index"),
        InfraLine("postgres_storage", storage["sku"], gb, per_gb, "GB-month", gb * per_gb, "the smallest allocation", storage["source"]),
        hourly("redis", 1, "exact cache, limiter, outbox stream, Celery broker"),
    ]  # fmt: skip
