"""Building and serving the mock LLM: `build_app`, the uvicorn factory `app_from_env`, `serve` and the command line."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from demo.mock_llm.app import MockLLM
from demo.mock_llm.common import ENV_FAULTS, ENV_FAULTS_FILE, ENV_LATENCY, ENV_REPLAY, ENV_REPLAY_MAP, _dumps
from demo.mock_llm.stores import _validate_faults

# The first paragraph of the package docstring, the command line's description.
DESCRIPTION = "OpenAI-compatible mock LLM upstream for tests, load tests, chaos drills and replay evals."


def build_app(
    *,
    replay_path: str | os.PathLike[str] | None = None,
    default_latency_ms: float = 0,
    model_faults: dict[str, Any] | None = None,
    replay_model_map: dict[str, str] | None = None,
    faults_file: str | None = None,
) -> MockLLM:
    """Create the mock ASGI app.

    ``replay_model_map`` maps requested model names to recorded model names
    (default :data:`DEFAULT_REPLAY_MODEL_MAP`); ``faults_file`` shares runtime
    faults between worker processes.
    """
    return MockLLM(
        replay_path=replay_path,
        default_latency_ms=default_latency_ms,
        model_faults=model_faults,
        replay_model_map=replay_model_map,
        faults_file=faults_file,
    )


def app_from_env() -> MockLLM:
    """uvicorn factory (``factory=True``): configuration travels in ``FINOPS_MOCK_*`` env vars
    because worker processes cannot receive Python objects."""
    faults_raw = os.environ.get(ENV_FAULTS)
    map_raw = os.environ.get(ENV_REPLAY_MAP)
    return build_app(
        replay_path=os.environ.get(ENV_REPLAY) or None,
        default_latency_ms=float(os.environ.get(ENV_LATENCY) or 0),
        model_faults=json.loads(faults_raw) if faults_raw else None,
        replay_model_map=json.loads(map_raw) if map_raw else None,
        faults_file=os.environ.get(ENV_FAULTS_FILE) or None,
    )


def serve(
    host: str = "127.0.0.1",
    port: int = 8001,
    workers: int = 1,
    *,
    replay_path: str | os.PathLike[str] | None = None,
    default_latency_ms: float = 0,
    model_faults: dict[str, Any] | None = None,
    replay_model_map: dict[str, str] | None = None,
    faults_file: str | None = None,
) -> None:
    """Run the mock with uvicorn (blocking)."""
    import importlib.util

    import uvicorn

    own_faults_file = False
    if workers > 1 and faults_file is None:
        fd, faults_file = tempfile.mkstemp(prefix="finops-mock-faults-", suffix=".json")
        os.close(fd)
        own_faults_file = True
    if faults_file:
        # Written once here so workers read it instead of each re-seeding (and
        # clobbering runtime changes made through another worker).
        with open(faults_file, "wb") as fh:
            fh.write(_dumps(_validate_faults(model_faults or {})))

    os.environ[ENV_REPLAY] = str(Path(replay_path).resolve()) if replay_path else ""
    os.environ[ENV_LATENCY] = str(default_latency_ms)
    os.environ[ENV_FAULTS] = json.dumps(model_faults) if model_faults else ""
    os.environ[ENV_REPLAY_MAP] = json.dumps(replay_model_map) if replay_model_map else ""
    os.environ[ENV_FAULTS_FILE] = faults_file or ""
    try:
        uvicorn.run(
            "demo.mock_llm.server:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            http="httptools" if importlib.util.find_spec("httptools") else "h11",
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    finally:
        if own_faults_file and faults_file:
            try:
                os.unlink(faults_file)
            except FileNotFoundError:
                pass


def _parse_json_arg(value: str | None) -> Any:
    """JSON given inline or as ``@path``."""
    if not value:
        return None
    if value.startswith("@"):
        return json.loads(Path(value[1:]).read_text(encoding="utf-8"))
    return json.loads(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.mock_llm", description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--replay", default=None, help="JSONL/CSV fixture of recorded answers")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="default latency per request")
    parser.add_argument(
        "--faults", default=None, help='per-model faults JSON or @file, e.g. \'{"m": {"error": "500", "rate": 0.3}}\''
    )
    parser.add_argument("--replay-map", default=None, help="JSON {requested model: recorded model} or @file")
    parser.add_argument("--faults-file", default=None, help="share runtime faults across workers via this file")
    args = parser.parse_args(argv)
    faults = _parse_json_arg(args.faults)
    _validate_faults(faults or {})  # fail fast on typos, before uvicorn starts
    serve(
        args.host,
        args.port,
        args.workers,
        replay_path=args.replay,
        default_latency_ms=args.latency_ms,
        model_faults=faults,
        replay_model_map=_parse_json_arg(args.replay_map),
        faults_file=args.faults_file,
    )
