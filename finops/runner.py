"""`make run`: the API (uvicorn, several workers), a Celery worker and beat, and the mock LLM when
no upstream key is configured. Prints the URLs, then waits; Ctrl-C stops everything it started.
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

from finops.envfile import BASE_DIR, STATE_DIR, load_env_file

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
    logs = STATE_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    procs: list[tuple[str, subprocess.Popen]] = []

    def start(name: str, args: list[str]) -> None:
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        procs.append((name, subprocess.Popen(args, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)))

    if mock_wanted():
        mock_port = int(os.environ.get("FINOPS_MOCK_PORT", "8001"))
        if not port_free(mock_port):
            sys.stderr.write(f"mock LLM port {mock_port} is busy: set FINOPS_MOCK_PORT\n")
            return 1
        env["FINOPS_MOCK_LLM_URL"] = f"http://127.0.0.1:{mock_port}/v1"
        start("mock_llm", [PYTHON, "manage.py", "mock_llm", "--port", str(mock_port)])
    start(
        "api",
        [
            PYTHON, "-m", "uvicorn", "finops.asgi:application", "--host", host, "--port", str(port),
            "--workers", workers, "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        ],
    )  # fmt: skip
    start("worker", [PYTHON, "-m", "celery", "-A", "finops", "worker", "-l", "info", "--concurrency", "2"])
    start("beat", [PYTHON, "-m", "celery", "-A", "finops", "beat", "-l", "info", "-s", str(STATE_DIR / "celerybeat-schedule")])

    def stop_all(*_args) -> None:
        for _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    signal.signal(signal.SIGTERM, lambda *a: (stop_all(), sys.exit(0)))
    base = f"http://{host}:{port}"
    if not wait_http(f"{base}/healthz"):
        sys.stderr.write(f"the API did not come up; see {logs / 'api.log'}\n")
        stop_all()
        return 1
    print_banner(base, env, logs)
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


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else "(not created)"


def print_banner(base: str, env: dict[str, str], logs: Path) -> None:
    lines = [
        "",
        "finops is running",
        f"  admin (finance UI)   {base}/admin/        credentials in {STATE_DIR / 'credentials'}",
        f"  metrics              {base}/metrics",
        f"  API docs (OpenAPI)   {base}/api/docs/",
        f"  OpenAI-compatible    {base}/v1/chat/completions   (base_url={base}/v1)",
        f"  native API           {base}/chat",
        f"  demo API key         {_read(STATE_DIR / 'demo-key')}",
        f"  upstream             {env.get('FINOPS_MOCK_LLM_URL', 'configured providers')}"
        + ("  (built-in mock LLM: no OPENAI_API_KEY set)" if env.get("FINOPS_MOCK_LLM_URL") else ""),
        f"  logs                 {logs}/",
        "",
        "try:",
        f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer '$(cat {STATE_DIR / 'demo-key'}) \\",
        "       -H 'Content-Type: application/json' -d '{\"model\": \"gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}' -i",
        "",
        "Ctrl-C stops the API, worker, beat and mock (databases keep running: `make stop`).",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
