"""The processes the gateway benchmark measures: the mock LLM, finops under uvicorn, and the LiteLLM proxy.

LiteLLM is a peer measured beside finops, never a dependency of the project: `litellm_python()` installs the
pinned `litellm[proxy]` from the package registry into its own virtual environment under `.finops/` (once; a
stamp file makes re-runs instant) and the proxy runs from there with a config that routes the benchmark's model
to the same mock. What it needs offline: only the registry for the install; at run time nothing beyond loopback,
given `LITELLM_LOCAL_MODEL_COST_MAP=True` (else it fetches the model cost map at import and retries on failure)
and no `DATABASE_URL` (else it looks for prisma, which downloads its engines).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finops.processes import free_port  # noqa: E402

LITELLM_VERSION = "1.108.7"
LITELLM_VENV = ROOT / ".finops" / f"litellm-{LITELLM_VERSION}"
LITELLM_KEY = "sk-bench-litellm"  # the proxy's master key (checked per request, no database)
MODEL = "gpt-4o-mini"
# uvicorn's supervisor restarts a worker that misses a 5 s health ping; on a loaded 2-core machine a worker still
# importing its app misses it and is restarted over and over (LiteLLM's import alone takes seconds of CPU).
# Both servers get the same, longer grace; it changes nothing once they serve.
WORKER_HEALTHCHECK_S = 60


def wait_http(url: str, *, timeout: float = 120.0, proc: subprocess.Popen | None = None, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode} before answering (see its log)")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2):
                return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


def _stop_group(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGTERM to the process group the server leads (its workers included), SIGKILL after `timeout`."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def server_pids(proc: subprocess.Popen) -> list[int]:
    """The server's process and all its descendants (uvicorn's supervisor and workers)."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        return [root.pid] + [c.pid for c in root.children(recursive=True)]
    except psutil.Error:
        return []


class _Server:
    """A server process of the bench as a context manager: ready once `health_url` answers, stopped with its process
    group on exit (or if it never became ready)."""

    proc: subprocess.Popen
    start_timeout = 120.0
    stop_timeout = 30.0

    def health_url(self) -> str:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            wait_http(self.health_url(), proc=self.proc, timeout=self.start_timeout)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        _stop_group(self.proc, timeout=self.stop_timeout)


class Mock(_Server):
    """The mock LLM, one process; `latency(ms)` sets the delay of every answer through its fault API."""

    def __init__(self, logs) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v1"
        cmd = [sys.executable, "-m", "demo.mock_llm", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logs, stderr=logs, start_new_session=True)

    def health_url(self) -> str:
        return f"{self.url}/models"

    def latency(self, ms: float) -> None:
        """Every answer waits `ms` (0: none); the same for every target, so no request header is needed."""
        method, body = ("POST", json.dumps({"*": {"latency_ms": ms}}).encode()) if ms else ("DELETE", None)
        request = urllib.request.Request(f"{self.base}/_mock/faults", data=body, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5):
            pass


class Finops(_Server):
    """finops under uvicorn, `workers` processes, as a production deployment runs it; a context manager."""

    start_timeout = 180.0
    stop_timeout = 60.0  # graceful: the ledger writer drains before exit

    def __init__(self, *, workers: int, mock_url: str, database_url: str, prom: Path, logs, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "finops.settings",
            "FINOPS_MOCK_LLM_URL": mock_url,
            "PROMETHEUS_MULTIPROC_DIR": str(prom),
            "DEBUG": "0",
            "SECRET_KEY": "bench-" + "x" * 60 + "abcdefgh",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        cmd = [sys.executable, "-m", "uvicorn", "finops.asgi:application", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
               "--timeout-worker-healthcheck", str(WORKER_HEALTHCHECK_S)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=logs, stderr=logs, start_new_session=True)
        self.chat_url = f"{self.url}/v1/chat/completions"

    def health_url(self) -> str:
        return f"{self.url}/healthz"

    def worker_pids(self) -> list[int]:
        import psutil

        return [pid for pid in server_pids(self.proc)[1:] if "spawn_main" in " ".join(psutil.Process(pid).cmdline())]


def litellm_python(logs=None) -> Path:
    """The interpreter of the LiteLLM virtual environment, created and filled on first use."""
    python = LITELLM_VENV / "bin" / "python"
    stamp = LITELLM_VENV / ".installed"
    if stamp.exists() and python.exists():
        return python
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV.relative_to(ROOT)} (once)", flush=True)
    LITELLM_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
        stdout=logs,
        stderr=logs,
    )
    stamp.write_text(f"litellm[proxy]=={LITELLM_VERSION}\n")
    return python


class LiteLLM(_Server):
    """The LiteLLM proxy with `workers` uvicorn workers, routing the benchmark's model to the mock."""

    start_timeout = 240.0

    def __init__(self, *, workers: int, mock_url: str, tmp: Path, logs):
        python = litellm_python(logs)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.chat_url = f"{self.url}/v1/chat/completions"
        config = tmp / "litellm.yaml"
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "model_list": [
                        {
                            "model_name": MODEL,
                            "litellm_params": {"model": f"openai/{MODEL}", "api_base": mock_url, "api_key": "sk-mock"},
                        }
                    ],
                    "general_settings": {"master_key": LITELLM_KEY},
                    "litellm_settings": {"telemetry": False},
                },
                indent=2,
            )
        )
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # else it looks for prisma
        env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", NO_DOCS="True")
        cmd = [str(python), str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1",
               "--port", str(self.port), "--num_workers", str(workers), "--timeout_worker_healthcheck", str(WORKER_HEALTHCHECK_S)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=logs, stderr=logs, start_new_session=True)

    def health_url(self) -> str:
        return f"{self.url}/health/liveliness"

    def worker_pids(self) -> list[int]:
        return server_pids(self.proc)[1:]
