"""Transitional: `knob("ANOMALY_...")` for the evaluation modules and the benchmark, which move out of this app
in the evaluation/demo split (#15). Runtime code reads `finops.conf.conf()`; the defaults live there, once."""

from __future__ import annotations

from typing import Any

from finops.conf import conf


def knob(name: str) -> Any:
    return getattr(conf(), name.lower())
