"""The local monitoring stack of `make run`: Prometheus and Alertmanager from the machine's binaries, on the
project's own `deploy/` configs, plus the built-in alert receiver (finops.alert_receiver).

deploy/ is written for compose (host names `api`, `worker`, `alertmanager`); `prometheus_config` and
`alertmanager_config` rewrite only those addresses (and the rules' path) for loopback ports, so the rules,
routes and receivers that run locally are exactly the ones that ship. While `make run` is up, the URLs are in
`.finops/monitoring.env`, which `make drill` and `make smoke` read.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from finops.envfile import BASE_DIR, STATE_DIR, read_env_file

DEPLOY = BASE_DIR / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
MONITORING_ENV = STATE_DIR / "monitoring.env"
# The API's /metrics bearer token under `make run` (FINOPS_METRICS_TOKEN, or one generated per run), read by the
# local Prometheus through credentials_file. compose mounts the same token at the path deploy/ names.
METRICS_TOKEN_FILE = STATE_DIR / "metrics-token"
DEPLOY_TOKEN_FILE = "/run/secrets/finops_metrics_token"
# Where deploy/alertmanager/alertmanager.yml sends its webhooks; rewritten to the receiver's real port.
RECEIVER_PLACEHOLDER = "http://127.0.0.1:9095"
# compose scrapes every 30 s; locally a shorter interval makes targets, rules and alerts visible within seconds.
LOCAL_INTERVAL = "10s"

# Debian ships Alertmanager as `prometheus-alertmanager`; upstream tarballs call it `alertmanager`.
BINARIES = {
    "prometheus": (("prometheus",), "prometheus"),
    "alertmanager": (("alertmanager", "prometheus-alertmanager"), "prometheus-alertmanager"),
}


class ConfigError(RuntimeError):
    pass


def binary_find(*, name: str) -> str | None:
    names, _ = BINARIES[name]
    for candidate in names:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def binary_hint(*, name: str) -> str:
    _, package = BINARIES[name]
    return (
        f"{name} not found: `make tools` installs Debian's `{package}` (or `sudo apt-get install {package}`); "
        f"or put an upstream {name} binary on PATH"
    )


def _replace(text: str, old: str, new: str, *, where: Path) -> str:
    if old not in text:
        raise ConfigError(f"{where.relative_to(BASE_DIR)} no longer contains {old!r}: update finops/monitoring.py")
    return text.replace(old, new)


def prometheus_config(
    *, api: str, worker: str, alertmanager: str, rules_dir: Path = RULES_DIR, token_file: Path = METRICS_TOKEN_FILE
) -> str:
    """deploy/prometheus/prometheus.yml with loopback targets (`host:port` each), the rules' absolute path and the
    file holding the API's /metrics token."""
    text = PROMETHEUS_YML.read_text()
    for old, new in (
        (DEPLOY_TOKEN_FILE, str(token_file)),
        ('"api:8000"', f'"{api}"'),
        ('"worker:9808"', f'"{worker}"'),
        ('"alertmanager:9093"', f'"{alertmanager}"'),
        ("- rules/*.yml", f"- {rules_dir}/*.yml"),
        ("scrape_interval: 30s", f"scrape_interval: {LOCAL_INTERVAL}"),
        ("evaluation_interval: 30s", f"evaluation_interval: {LOCAL_INTERVAL}"),
    ):
        text = _replace(text, old, new, where=PROMETHEUS_YML)
    return text


def metrics_token_ensure(*, token: str = "", path: Path = METRICS_TOKEN_FILE) -> str:
    """The /metrics token for `make run`: `token` (FINOPS_METRICS_TOKEN) if set, else a new random one; written to
    `path` (mode 0600) for the local Prometheus and for anyone who wants to curl /metrics."""
    token = token or secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(token)
    return token


def alertmanager_config(*, receiver_url: str) -> str:
    """deploy/alertmanager/alertmanager.yml with its webhooks pointed at the built-in receiver."""
    return _replace(ALERTMANAGER_YML.read_text(), RECEIVER_PLACEHOLDER, receiver_url.rstrip("/"), where=ALERTMANAGER_YML)


@dataclass(frozen=True)
class Stack:
    prometheus_url: str = ""
    alertmanager_url: str = ""
    receiver_url: str = ""


def stack_write(*, stack: Stack, path: Path = MONITORING_ENV) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"FINOPS_PROMETHEUS_URL={stack.prometheus_url}\n"
        f"FINOPS_ALERTMANAGER_URL={stack.alertmanager_url}\n"
        f"FINOPS_ALERT_RECEIVER_URL={stack.receiver_url}\n"
    )


def stack_running(*, path: Path = MONITORING_ENV) -> Stack:
    """The URLs of the stack `make run` started (empty strings when it is not running)."""
    values = read_env_file(path)
    return Stack(
        prometheus_url=os.environ.get("FINOPS_PROMETHEUS_URL") or values.get("FINOPS_PROMETHEUS_URL", ""),
        alertmanager_url=os.environ.get("FINOPS_ALERTMANAGER_URL") or values.get("FINOPS_ALERTMANAGER_URL", ""),
        receiver_url=os.environ.get("FINOPS_ALERT_RECEIVER_URL") or values.get("FINOPS_ALERT_RECEIVER_URL", ""),
    )


def alertmanager_post(*, url: str, alerts: list[dict], timeout: float = 3.0) -> None:
    """POST alerts to Alertmanager's v2 API, as Prometheus does (labels, annotations, startsAt, endsAt)."""
    request = urllib.request.Request(
        url.rstrip("/") + "/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback URL of our own stack)
        response.read()


def alertmanager_alerts(*, url: str, timeout: float = 3.0) -> list[dict]:
    with urllib.request.urlopen(url.rstrip("/") + "/api/v2/alerts", timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())
