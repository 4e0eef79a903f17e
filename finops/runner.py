"""`make run`: the API (uvicorn, several workers), a Celery worker and beat, the mock LLM when no upstream key
is configured, and the monitoring stack: Prometheus and Alertmanager (the machine's binaries, on deploy/'s configs)
with the built-in alert receiver. Prints the URLs, then waits; Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from finops import monitoring
from finops.envfile import BASE_DIR, STATE_DIR, load_env_file
from finops.processes import free_port

PYTHON = sys.executable


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_http(url: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 500:
                    return True
        except Exception:
            time.sleep(0.25)
    return False


def mock_wanted() -> bool:
    if os.environ.get("FINOPS_MOCK_LLM", "").lower() in {"1", "true", "yes"}:
        return True
    return not (os.environ.get("OPENAI_API_KEY") or os.environ.get("FINOPS_UPSTREAMS"))


def monitoring_port(name: str, default: int) -> int | None:
    """The port from `name` (must be free), else `default` if free, else any free port: several checkouts may run
    `make run` on one machine, and only the API's port is worth failing for."""
    wanted = os.environ.get(name, "")
    if wanted:
        if not port_free(int(wanted)):
            sys.stderr.write(f"{name}={wanted} is busy: choose another port\n")
            return None
        return int(wanted)
    return default if port_free(default) else free_port()


def main() -> int:
    load_env_file()
    host = os.environ.get("FINOPS_HOST", "127.0.0.1")
    port = int(os.environ.get("FINOPS_PORT", "8000"))
    workers = os.environ.get("FINOPS_WORKERS", str(max(2, os.cpu_count() or 2)))
    if not port_free(port):
        sys.stderr.write(f"port {port} is busy: set FINOPS_PORT to another port\n")
        return 1
    env = dict(os.environ)
    prom_dir = STATE_DIR / "prometheus"
    shutil.rmtree(prom_dir, ignore_errors=True)
    prom_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
    # The worker's counters are served by the worker itself (job finops-worker), from a folder of their own.
    worker_prom_dir = STATE_DIR / "prometheus-worker"
    shutil.rmtree(worker_prom_dir, ignore_errors=True)
    worker_prom_dir.mkdir(parents=True)
    env["FINOPS_ALERT_ADMIN_BASE_URL"] = env.get("FINOPS_ALERT_ADMIN_BASE_URL") or f"http://{host}:{port}"
    # /metrics needs a bearer token; the local Prometheus reads it from .finops/metrics-token.
    env["FINOPS_METRICS_TOKEN"] = monitoring.metrics_token_ensure(token=env.get("FINOPS_METRICS_TOKEN", ""))
    logs = STATE_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    procs: list[tuple[str, subprocess.Popen]] = []

    def start(name: str, args: list[str], child_env: dict[str, str] | None = None) -> None:
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        procs.append((name, subprocess.Popen(args, cwd=BASE_DIR, env=child_env or env, stdout=log, stderr=subprocess.STDOUT)))

    if mock_wanted():
        mock_port = int(os.environ.get("FINOPS_MOCK_PORT", "8001"))
        if not port_free(mock_port):
            sys.stderr.write(f"mock LLM port {mock_port} is busy: set FINOPS_MOCK_PORT\n")
            return 1
        env["FINOPS_MOCK_LLM_URL"] = f"http://127.0.0.1:{mock_port}/v1"
        start("mock_llm", [PYTHON, "manage.py", "mock_llm", "--port", str(mock_port)])
    if not build_semantic_model(env):
        return 1
    start(
        "api",
        [
            PYTHON, "-m", "uvicorn", "finops.asgi:application", "--host", host, "--port", str(port),
            "--workers", workers, "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        ],
    )  # fmt: skip
    ports = {
        name: monitoring_port(variable, default)
        for name, variable, default in (
            ("worker", "FINOPS_WORKER_METRICS_PORT", 9808),
            ("receiver", "FINOPS_ALERT_RECEIVER_PORT", 9095),
            ("alertmanager", "FINOPS_ALERTMANAGER_PORT", 9093),
            ("prometheus", "FINOPS_PROMETHEUS_PORT", 9090),
        )
    }
    if None in ports.values():
        return 1
    worker_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(worker_prom_dir), "FINOPS_WORKER_METRICS_PORT": str(ports["worker"])}
    start("worker", [PYTHON, "-m", "celery", "-A", "finops", "worker", "-l", "info", "--concurrency", "2"], child_env=worker_env)
    start("beat", [PYTHON, "-m", "celery", "-A", "finops", "beat", "-l", "info", "-s", str(STATE_DIR / "celerybeat-schedule")],
          child_env=worker_env)  # fmt: skip
    stack, missing = start_monitoring(start, host=host, port=port, ports=ports)

    def stop_all(*_args) -> None:
        monitoring.MONITORING_ENV.unlink(missing_ok=True)
        for _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def on_sigterm(*_args) -> None:
        stop_all()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    base = f"http://{host}:{port}"
    # Each API worker warms the semantic cache and the router before it serves (up to 2 minutes on a busy machine).
    if not wait_http(f"{base}/healthz", timeout=240):
        sys.stderr.write(f"the API did not come up; see {logs / 'api.log'}\n")
        stop_all()
        return 1
    for url in (stack.prometheus_url, stack.alertmanager_url):
        if url and not wait_http(f"{url}/-/ready", timeout=30):
            sys.stderr.write(f"{url} did not become ready; see {logs}/\n")
    monitoring.stack_write(stack=stack)
    print_banner(base, env, logs, stack=stack, missing=missing, worker_metrics=f"http://127.0.0.1:{ports['worker']}/metrics")
    try:
        while True:
            for name, proc in procs:
                if proc.poll() is not None:
                    sys.stderr.write(f"{name} exited with {proc.returncode}; see {logs / (name + '.log')}\n")
                    stop_all()
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        stop_all()
    return 0


def build_semantic_model(env: dict[str, str]) -> bool:
    """Build the local MiniLM's ONNX file once, before the API workers start: on a fresh checkout they would each
    build it at startup, together, on the same cores. A no-op when the file exists or another runtime is set."""
    code = (
        "import django; django.setup(); from django.conf import settings; from apps.embeddings.onnx_export import ensure_model;"
        "from apps.embeddings.static import ensure_table; ensure_table();"  # the semantic tier's static first stage
        "f = settings.FINOPS; r = f['CACHE_LOCAL_RUNTIME'];"
        "(f['CACHE_EMBEDDING_BACKEND'] == 'local' and r.startswith('onnx')) and ensure_model(r)"
    )
    sys.stdout.write("semantic cache model: checking (the first run builds it, about a minute) …\n")
    sys.stdout.flush()
    done = subprocess.run([PYTHON, "-c", code], cwd=BASE_DIR, env={**env, "DJANGO_SETTINGS_MODULE": "finops.settings"})
    if done.returncode != 0:
        sys.stderr.write("building the semantic cache's model failed (see above)\n")
    return done.returncode == 0


def start_monitoring(start, *, host: str, port: int, ports: dict[str, int | None]) -> tuple[monitoring.Stack, list[str]]:
    """The alert receiver, then Alertmanager and Prometheus when their binaries are on the machine."""
    folder = STATE_DIR / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    receiver_url = f"http://127.0.0.1:{ports['receiver']}"
    start("alerts", [PYTHON, "-m", "finops.alert_receiver", "--port", str(ports["receiver"])])
    missing: list[str] = []
    alertmanager_url = prometheus_url = ""
    alertmanager = monitoring.binary_find(name="alertmanager")
    if alertmanager:
        config = folder / "alertmanager.yml"
        config.write_text(monitoring.alertmanager_config(receiver_url=receiver_url))
        alertmanager_url = f"http://127.0.0.1:{ports['alertmanager']}"
        start("alertmanager", [
            alertmanager, f"--config.file={config}", f"--storage.path={folder / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{ports['alertmanager']}", "--cluster.listen-address=",
            f"--web.external-url={alertmanager_url}",
        ])  # fmt: skip
    else:
        missing.append(monitoring.binary_hint(name="alertmanager"))
    prometheus = monitoring.binary_find(name="prometheus")
    if prometheus:
        config = folder / "prometheus.yml"
        api_target = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        config.write_text(
            monitoring.prometheus_config(
                api=api_target, worker=f"127.0.0.1:{ports['worker']}",
                alertmanager=f"127.0.0.1:{ports['alertmanager']}" if alertmanager else "127.0.0.1:9",
            )
        )  # fmt: skip
        prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
        start("prometheus", [
            prometheus, f"--config.file={config}", f"--storage.tsdb.path={folder / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--storage.tsdb.retention.time=7d",
        ])  # fmt: skip
    else:
        missing.append(monitoring.binary_hint(name="prometheus"))
    return monitoring.Stack(prometheus_url=prometheus_url, alertmanager_url=alertmanager_url, receiver_url=receiver_url), missing


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else "(not created)"


def print_banner(
    base: str, env: dict[str, str], logs: Path, *, stack: monitoring.Stack, missing: list[str], worker_metrics: str
) -> None:
    lines = [
        "",
        "finops is running",
        f"  admin (finance UI)   {base}/admin/        credentials in {STATE_DIR / 'credentials'}",
        f"  metrics              {base}/metrics  (bearer token in {monitoring.METRICS_TOKEN_FILE}; worker: {worker_metrics})",
        f"  Prometheus           {stack.prometheus_url or '(not running)'}"
        + (f"   targets {stack.prometheus_url}/targets, rules {stack.prometheus_url}/rules" if stack.prometheus_url else ""),
        f"  Alertmanager         {stack.alertmanager_url or '(not running)'}",
        f"  alerts received      {stack.receiver_url}/   (by severity; log: {logs / 'alerts.log'})",
        f"  API docs (OpenAPI)   {base}/api/docs/",
        f"  OpenAI-compatible    {base}/v1/chat/completions   (base_url={base}/v1)",
        f"  native API           {base}/chat",
        f"  demo API key         {_read(STATE_DIR / 'demo-key')}",
        f"  upstream             {env.get('FINOPS_MOCK_LLM_URL', 'configured providers')}"
        + ("  (built-in mock LLM: no OPENAI_API_KEY set)" if env.get("FINOPS_MOCK_LLM_URL") else ""),
        f"  logs                 {logs}/",
        *[f"  ! {hint}" for hint in missing],
        "",
        "try:",
        f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer '$(cat {STATE_DIR / 'demo-key'}) \\",
        "       -H 'Content-Type: application/json' -d '{\"model\": \"gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}' -i",
        "",
        "page someone: `make drill` (in another terminal) → Alertmanager → the receiver above",
        "",
        "Ctrl-C stops the API, worker, beat, mock, Prometheus, Alertmanager and the receiver (databases keep running: `make stop`).",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
