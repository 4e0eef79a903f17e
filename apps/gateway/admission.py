"""Load shedding: past FINOPS["GATEWAY_MAX_IN_FLIGHT"] requests in flight in one worker, a new request is refused at
the door with 503 `overloaded` and `Retry-After` (on /v1/messages, Anthropic's 529 `overloaded_error`, which its SDK
retries), counted in finops_gateway_shed_total. Every paid endpoint (/v1 chat completions, embeddings, responses,
messages, and the native POST /chat) counts against the one limit.

A worker that takes more than it can handle does not get faster: every request in it waits longer for the event loop,
and its database round trips come back later. The budget check must never read that as a database outage (fail open,
then the fail-open limiter's 429 `budget_degraded_rate_limit`: paying traffic refused as if budgets were down), so
overload is refused explicitly here, before any work is done for the request — no key lookup, no ledger row (it would
cost the database a write per refusal, which is what overload cannot afford), nothing reserved.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from finops.conf import conf

SHED = Counter(
    "finops_gateway_shed_total",
    "Requests refused with 503 `overloaded` because the worker already had FINOPS_GATEWAY_MAX_IN_FLIGHT in flight.",
    ["endpoint"],
)

IN_FLIGHT = Gauge(
    "finops_gateway_in_flight",
    "Requests admitted and not yet answered (summed over the API's workers): the load that shedding bounds.",
    multiprocess_mode="livesum",
)

_in_flight = 0  # requests of this process between admission and their response (one event loop per worker)


class Admission:
    """`with Admission(endpoint) as admitted:` — `admitted` is False when the request is to be shed; the request counts
    until `release()` (its response sent) or the end of the block."""

    __slots__ = ("endpoint", "admitted")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.admitted = False

    def __enter__(self) -> bool:
        global _in_flight
        limit = conf().gateway_max_in_flight
        if limit and _in_flight >= limit:
            SHED.labels(endpoint=self.endpoint).inc()
            return False
        _in_flight += 1
        IN_FLIGHT.inc()
        self.admitted = True
        return True

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """The response has left: what runs after it (settle, ledger row) no longer counts as load waiting."""
        global _in_flight
        if self.admitted:
            self.admitted = False
            _in_flight -= 1
            IN_FLIGHT.dec()


def in_flight() -> int:
    return _in_flight


def overloaded_error() -> tuple[int, dict, dict[str, str]]:
    """(status, OpenAI-style body, headers) of a shed request."""
    retry_after = conf().gateway_shed_retry_after_s
    body = {
        "error": {
            "message": "The gateway is overloaded; retry shortly.",
            "type": "server_error",
            "param": None,
            "code": "overloaded",
        }
    }
    return 503, body, {"retry-after": str(retry_after)}
