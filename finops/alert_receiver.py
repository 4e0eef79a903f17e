"""A small webhook receiver for Alertmanager, so that a local page is visible: `make run` starts it where
deploy/alertmanager/alertmanager.yml sends its webhooks (`/pager`, `/finance`, `/team`).

Each notification is printed as it arrives (one line per alert, by severity) to stdout — `.finops/logs/alerts.log`
under `make run` — and kept in memory. `GET /` lists what was received, grouped by severity, newest first;
`GET /alerts.json` gives the same as JSON (the drill and the smoke checks read it).

    python -m finops.alert_receiver --port 9095
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import threading
from collections import deque
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from finops import clock

SEVERITIES = ("critical", "warning", "info")
CHANNELS = {"/pager": "oncall-pager", "/finance": "finance-channel", "/team": "team-channel"}
KEEP = 500


@dataclass
class Received:
    received_at: str
    channel: str
    receiver: str
    status: str  # firing | resolved
    alertname: str
    severity: str
    labels: dict
    summary: str
    starts_at: str


class Inbox:
    def __init__(self) -> None:
        self._items: deque[Received] = deque(maxlen=KEEP)
        self._lock = threading.Lock()

    def add(self, *, channel: str, body: dict) -> list[Received]:
        now = clock.now().isoformat(timespec="seconds")
        items = [
            Received(
                received_at=now,
                channel=channel,
                receiver=str(body.get("receiver", "")),
                status=str(alert.get("status", body.get("status", ""))),
                alertname=str(alert.get("labels", {}).get("alertname", "")),
                severity=str(alert.get("labels", {}).get("severity", "none")),
                labels=dict(alert.get("labels", {})),
                summary=str(alert.get("annotations", {}).get("summary", "")),
                starts_at=str(alert.get("startsAt", "")),
            )
            for alert in body.get("alerts", [])
        ]
        with self._lock:
            self._items.extend(items)
        return items

    def items(self) -> list[Received]:
        with self._lock:
            return list(reversed(self._items))


def line(item: Received) -> str:
    tag = "PAGE" if item.severity == "critical" and item.status == "firing" else item.status.upper()
    extra = " ".join(f"{k}={v}" for k, v in sorted(item.labels.items()) if k not in {"alertname", "severity"})
    return f"[{tag}] {item.severity:<8} {item.alertname} → {item.receiver} ({item.channel}) {extra} :: {item.summary}".rstrip()


def page(inbox: Inbox) -> str:
    items = inbox.items()
    parts = ["<!doctype html><title>finops alerts received</title><h1>Alerts received from Alertmanager</h1>"]
    if not items:
        parts.append("<p>None yet. <code>make drill</code> sends one.</p>")
    for severity in (*SEVERITIES, "none"):
        group = [i for i in items if i.severity == severity]
        if not group:
            continue
        parts.append(f"<h2>{severity} ({len(group)})</h2><table border=1 cellpadding=4><tr>"
                     "<th>received (UTC)</th><th>status</th><th>alert</th><th>receiver</th><th>labels</th><th>summary</th></tr>")  # fmt: skip
        for i in group:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(i.labels.items()) if k not in {"alertname", "severity"})
            cells = (i.received_at, i.status, i.alertname, i.receiver, labels, i.summary)
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    return "\n".join(parts)


def handler_for(inbox: Inbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._send(400, "text/plain", b"invalid JSON\n")
                return
            for item in inbox.add(channel=CHANNELS.get(self.path, self.path), body=body):
                sys.stdout.write(line(item) + "\n")
            sys.stdout.flush()
            self._send(200, "text/plain", b"ok\n")

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/alerts.json"):
                self._send(200, "application/json", json.dumps([asdict(i) for i in inbox.items()]).encode())
            elif self.path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", page(inbox).encode())
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's signature)
            pass

    return Handler


def server(*, host: str = "127.0.0.1", port: int = 9095) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), handler_for(Inbox()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    args = parser.parse_args(argv)
    httpd = server(host=args.host, port=args.port)
    sys.stdout.write(f"alert receiver on http://{args.host}:{args.port}/ (webhooks: {', '.join(CHANNELS)})\n")
    sys.stdout.flush()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
