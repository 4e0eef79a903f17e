"""Test helpers: a local webhook receiver and a ledger with a constructed hourly shape."""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from apps.ledger.models import LLMRequest


class WebhookReceiver:
    """An http.server on a free local port that records every JSON body POSTed to it."""

    def __init__(self, *, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.status = status
        self.received = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")
                receiver.received.set()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def ledger_hours(
    tenant,
    *,
    end: dt.datetime,
    hours: int,
    per_hour,
    cost: Decimal = Decimal("0.01"),
    model: str = "gpt-4o-mini",
    tier: str = "cheap",
) -> int:
    """Rows for `hours` hours before `end` (exclusive); per_hour(i) gives the row count of hour i (0 = oldest)."""
    rows = []
    start = end - dt.timedelta(hours=hours)
    for i in range(hours):
        at = start + dt.timedelta(hours=i, minutes=7)
        for k in range(per_hour(i)):
            rows.append(
                LLMRequest(
                    endpoint="chat_completions",
                    received_at=at + dt.timedelta(seconds=k),
                    org=tenant.org,
                    team=tenant.team,
                    member=tenant.member,
                    api_key=tenant.api_key,
                    status="served",
                    model=model,
                    requested_model=model,
                    provider="openai",
                    tier=tier,
                    prompt_tokens=500,
                    completion_tokens=100,
                    cost_usd=cost,
                )
            )
    LLMRequest.objects.bulk_create(rows, batch_size=5000)
    return len(rows)


def diurnal(i: int) -> int:
    """2–6 requests an hour, busier in the working day (hour index 0 is midnight UTC when `end` is)."""
    return 2 + (4 if 8 <= i % 24 < 18 else 0)
