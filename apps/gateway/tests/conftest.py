from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest

from apps.ledger.models import LLMRequest
from apps.ledger.money import quantize_usd

# gpt-4o-mini in fixtures/prices.json, per 1M tokens: input, cached input, output.
MINI_INPUT, MINI_CACHED, MINI_OUTPUT = Decimal("0.15"), Decimal("0.075"), Decimal("0.60")


def mini_cost(prompt: int, completion: int, cached: int = 0) -> Decimal:
    """gpt-4o-mini's cost computed by hand, independently of apps.ledger.pricing."""
    return quantize_usd(((prompt - cached) * MINI_INPUT + cached * MINI_CACHED + completion * MINI_OUTPUT) / Decimal(1_000_000))


def wait_for_row(request_id: str, timeout: float = 10.0) -> LLMRequest:
    """The gateway writes the row just after the response: poll for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = LLMRequest.objects.filter(request_id=request_id).first()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError(f"no llm_requests row for {request_id} after {timeout}s")


def only_row(request_id: str) -> LLMRequest:
    """Exactly one ledger row exists, and it is this request's."""
    row = wait_for_row(request_id)
    time.sleep(0.2)  # a second, stray row would be written in the same breath
    assert LLMRequest.objects.count() == 1, list(LLMRequest.objects.values_list("request_id", "status"))
    return row


def unique_prompt(text: str = "What is the capital of France?") -> str:
    # The exact and semantic caches are live: every test asks something it has never asked before.
    return f"{text} (test {uuid.uuid4().hex})"


@pytest.fixture
def tenant(make_tenant, prices):
    return make_tenant()
