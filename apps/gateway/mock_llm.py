"""OpenAI-compatible mock LLM upstream for tests, load tests, chaos drills and replay evals.

A raw ASGI app (no Django, no pydantic) so it starts instantly, answers in tens of
microseconds and can be run standalone::

    python -m apps.gateway.mock_llm --port 8001 [--workers N] [--replay PATH] [--latency-ms X]

Endpoints
    POST /v1/chat/completions   non-streaming and SSE streaming (OpenAI wire format,
                                ``stream_options.include_usage``, logprobs, ``n``, ``stop``)
    POST /v1/embeddings         deterministic feature-hashed unit vectors (float or base64)
    GET  /v1/models[/{id}]      GET /health
    GET|POST|DELETE /_mock/faults   runtime fault injection (see below)
    GET|DELETE      /_mock/stats    per-model request counters (lets tests assert that
                                    the gateway did / did not call upstream)
The ``/v1`` prefix is optional, so ``base_url`` may or may not include it.

Answers are a pure function of (model, messages): ``"Mock answer from {model}: ..."``
followed by a digest-derived sentence whose length (6-45 words) depends on the
prompt hash.  In replay mode (``replay_path``) prompts recorded in a RouteLLM-style
fixture are answered with what the real model of the requested tier said; the
``X-Mock-Replay: hit|miss`` response header tells which happened.

Usage is computed with :mod:`finops.tokens`, the same counter the gateway
uses for its pre-call cost estimate, so estimates reconcile exactly.

Per-request controls (request headers)
    X-Mock-Latency-Ms: <float>       delay before the response (replaces the default latency)
    X-Mock-Chunk-Delay-Ms: <float>   delay between streamed content chunks
    X-Mock-Error: 429|500|503|<4xx/5xx>|timeout|malformed
    X-Mock-Truncate: 1               stream stops half-way without finish_reason/usage/[DONE];
                                     non-stream answer is cut in half with finish_reason "length"
    X-Mock-Cached-Tokens: <int>      reported as usage.prompt_tokens_details.cached_tokens
                                     (also accepted as body ``metadata.mock_cached_tokens``)
    X-Mock-Logprob: <float>          forces the mean of the returned token logprobs
    Body ``tools`` with ``tool_choice`` "required" or a named function: each answer is a call of that function (the
    first tool for "required") with arguments ``{"answer": <the answer text>}``, streamed in argument fragments.
    Body ``stream_options.continuous_usage_stats`` (vLLM; with ``include_usage``): every chunk carries the usage so
    far (cumulative), then the final usage chunk.
    X-Mock-Completion-Tokens: <int>  each answer is this many tokens long (before max_tokens cuts it): an
                                     upstream that writes until its own maximum when no limit is sent
    X-Mock-Retry-After: <seconds>    adds retry-after / retry-after-ms to error responses

Per-model faults (``model_faults`` / ``--faults`` / ``POST /_mock/faults``)::

    {"model-name": {"error": "500", "rate": 0.3, "latency_ms": 50,
                    "chunk_delay_ms": 5, "truncate": false, "logprob": -2.0,
                    "retry_after": 1}}

The key ``"*"`` applies to every model (model-specific keys override it).  ``rate``
(default 1.0) is applied with a deterministic per-model counter: request *n* fails
iff ``floor(n*rate) > floor((n-1)*rate)``, so rate 0.5 fails requests 2, 4, 6, ...
and runs are reproducible.  ``POST /_mock/faults`` merges (replacing whole
per-model specs; a ``null`` spec removes one) and resets the counters;
``DELETE /_mock/faults`` removes every fault, including configured ones.

Multiple workers: ``serve(workers>1)`` keeps faults in a small JSON file
(``$FINOPS_MOCK_FAULTS_FILE``) that every worker re-reads when its mtime changes,
so the runtime fault API works against any worker.  Rate counters and
``/_mock/stats`` stay per worker, so tests that need exact counts use 1 worker.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import hashlib
import itertools
import json
import math
import os
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from finops.tokens import (
    count_message_tokens,
    count_tokens,
    message_text,
    token_pieces,
    truncate_tokens,
)

try:  # orjson is ~5x faster, but optional: never a hard dependency of the mock.
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _loads: Callable[[bytes], Any] = orjson.loads
    _JSONError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, UnicodeDecodeError)
except ImportError:  # pragma: no cover - depends on environment

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = json.loads
    _JSONError = (json.JSONDecodeError, UnicodeDecodeError)

__all__ = [
    "DEFAULT_REPLAY_MODEL_MAP",
    "MockLLM",
    "STRONG_RECORDED_MODEL",
    "WEAK_RECORDED_MODEL",
    "build_app",
    "mock_answer",
    "serve",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WEAK_RECORDED_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_RECORDED_MODEL = "gpt-4-1106-preview"
DEFAULT_REPLAY_MODEL_MAP: dict[str, str] = {
    "mixtral-8x7b-instruct": WEAK_RECORDED_MODEL,
    "gpt-4-1106-preview": STRONG_RECORDED_MODEL,
}

DEFAULT_EMBEDDING_DIM = 384
MAX_EMBEDDING_DIM = 8192
# Far beyond any sane client timeout; the sleep is abandoned as soon as the client hangs up.
TIMEOUT_FAULT_SECONDS = 30.0

ENV_REPLAY = "FINOPS_MOCK_REPLAY"
ENV_LATENCY = "FINOPS_MOCK_LATENCY_MS"
ENV_FAULTS = "FINOPS_MOCK_FAULTS"
ENV_FAULTS_FILE = "FINOPS_MOCK_FAULTS_FILE"
ENV_REPLAY_MAP = "FINOPS_MOCK_REPLAY_MAP"

_ADVERTISED_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "mixtral-8x7b-instruct",
    "gpt-4-1106-preview",
    "text-embedding-3-small",
)

# Vocabulary for the synthetic answers; 64 entries so one digest byte picks one word.
_WORDS = tuple(
    """
    the model answer cost token budget request cache route latency value result system policy
    tenant price query signal metric window quality premium cheap tier fast stable careful simple
    clear robust final exact is was will can should may seems remains and or but so because while
    then therefore of to in for with on by from one two three many few each every some
    """.split()
)
assert len(_WORDS) == 64

_ERROR_TYPES: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "Not found."),
    408: ("server_error", "timeout", "Request timed out."),
    409: ("invalid_request_error", "conflict", "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (mock). Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request (mock)."),
    502: ("server_error", "bad_gateway", "Bad gateway (mock)."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded (mock)."),
    504: ("server_error", "gateway_timeout", "Gateway timeout (mock)."),
}

_id_counter = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}-mock{os.getpid():x}x{next(_id_counter):08x}"


def _norm(text: str) -> str:
    return " ".join(text.split())


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


# --------------------------------------------------------------------------- answers


def _prompt_digest(model: str, messages: list[Mapping[str, Any]], index: int = 0) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    h.update(model.encode())
    h.update(b"\x1e%d" % index)
    for m in messages:
        h.update(b"\x1e")
        h.update(str(m.get("role", "")).encode())
        h.update(b"\x1f")
        h.update(message_text(m.get("content")).encode("utf-8", "surrogatepass"))
    return h.digest()


def mock_answer(model: str, messages: list[Mapping[str, Any]], index: int = 0) -> str:
    """The deterministic synthetic answer for ``(model, messages)`` (choice ``index``)."""
    return _answer_from_digest(model, _prompt_digest(model, messages, index))


def _answer_from_digest(model: str, digest: bytes) -> str:
    n_words = 6 + digest[0] % 40
    stream = hashlib.shake_256(digest).digest(n_words)
    words = [_WORDS[b & 63] for b in stream]
    words[0] = words[0].capitalize()
    # A comma every ~9 words keeps streamed chunks and token counts a bit more text-like.
    body = " ".join(w + ("," if i % 9 == 8 and i != n_words - 1 else "") for i, w in enumerate(words))
    return f"Mock answer from {model}: {body}."


def _forced_tool(body: Mapping[str, Any]) -> str:
    """The function the request forces a call of ("" when none): tool_choice "required" (the first tool) or named."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools:
        return ""
    if isinstance(choice, Mapping):
        return str((choice.get("function") or {}).get("name") or "")
    if choice == "required" and isinstance(tools[0], Mapping):
        return str((tools[0].get("function") or {}).get("name") or "")
    return ""


def _tool_call(name: str, arguments: str, digest: bytes) -> dict[str, Any]:
    return {"id": f"call_{digest.hex()[:24]}", "type": "function", "function": {"name": name, "arguments": arguments}}


def _answer_of_length(text: str, tokens: int) -> str:
    """`text` repeated, then cut, to exactly `tokens` tokens (every word is at least one token)."""
    words = text.split() or ["mock"]
    repeated = " ".join(words[i % len(words)] for i in range(max(tokens, 1)))
    return truncate_tokens(repeated, max(tokens, 1))


def _apply_stop(text: str, stop: Any) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop sequence; returns (text, stopped)."""
    if not stop:
        return text, False
    stops = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _logprob_entries(pieces: list[str], digest: bytes, mean: float | None) -> list[dict[str, Any]]:
    """Deterministic per-token logprobs whose mean is ``mean`` (or a digest-derived default).

    Each logprob is ``mean * w_i`` with positive weights averaging 1, so every value
    stays <= 0 and the mean is exactly the requested one (up to rounding).
    """
    if not pieces:
        return []
    if mean is None:
        mean = -(0.05 + digest[1] / 255 * 1.2)
    raw = hashlib.shake_256(digest + b"logprobs").digest(len(pieces))
    weights = [0.5 + b / 255 for b in raw]
    scale = len(weights) / sum(weights)
    return [
        {"token": p, "logprob": round(mean * w * scale, 6), "bytes": None, "top_logprobs": []}
        for p, w in zip(pieces, weights, strict=True)
    ]


# --------------------------------------------------------------------------- embeddings


@lru_cache(maxsize=65536)
def _feature_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def _embed(text: str, dim: int) -> list[float]:
    """Feature-hashed bag of lower-cased unigrams + bigrams, L2-normalised.

    Deterministic and hash-based like a random projection, but texts that share
    words get a positive cosine, which makes the mock usable for semantic-cache
    plumbing tests (real similarity quality needs a real embedding model).
    """
    vec = [0.0] * dim
    words = [w.strip().lower() for w in token_pieces(text)]
    features = [(w, 1.0) for w in words] + [(f"{a} {b}", 0.5) for a, b in zip(words, words[1:], strict=False)]
    if not features:
        features = [(f"\x00empty\x00{text}", 1.0)]
    for feature, weight in features:
        h = _feature_hash(feature)
        vec[h % dim] += weight if (h >> 63) & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:  # opposite-signed collisions cancelled out; fall back to one axis
        vec[_feature_hash(text) % dim] = 1.0
        return vec
    return [v / norm for v in vec]


def _embedding_inputs(raw: Any) -> list[tuple[str, int]] | None:
    """Normalise the ``input`` field into (text, token_count) pairs; None if invalid."""
    if isinstance(raw, str):
        return [(raw, count_tokens(raw))]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, int) for x in raw):  # one pre-tokenised input
            return [(" ".join(map(str, raw)), len(raw))]
        out: list[tuple[str, int]] = []
        for item in raw:
            if isinstance(item, str):
                out.append((item, count_tokens(item)))
            elif isinstance(item, list) and all(isinstance(x, int) for x in item):
                out.append((" ".join(map(str, item)), len(item)))
            else:
                return None
        return out
    return None


# --------------------------------------------------------------------------- faults


class FaultStore:
    """Per-model fault specs plus the deterministic counters that apply their ``rate``.

    With ``path`` set the specs live in a JSON file shared by all workers; each
    lookup costs one ``os.stat`` and the file is only re-read when it changed.
    """

    def __init__(self, initial: Mapping[str, Any] | None = None, path: str | None = None) -> None:
        self._path = path
        self._mtime: int | None = None
        self._specs: dict[str, dict[str, Any]] = {}
        self._counters: dict[str, int] = {}
        if path and os.path.exists(path):
            self._reload()
        else:
            self._specs = _validate_faults(initial or {})
            if path:
                self._write()

    def _reload(self) -> None:
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return
        if st.st_mtime_ns == self._mtime:
            return
        try:
            with open(self._path, "rb") as fh:
                data = _loads(fh.read() or b"{}")
        except (OSError, *_JSONError):
            return  # half-written by another worker; next request retries
        self._mtime = st.st_mtime_ns
        self._specs = _validate_faults(data)
        self._counters.clear()

    def _write(self) -> None:
        assert self._path is not None
        tmp = f"{self._path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(_dumps(self._specs))
        os.replace(tmp, self._path)  # atomic, so readers never see a partial file
        self._mtime = os.stat(self._path).st_mtime_ns

    def snapshot(self) -> dict[str, dict[str, Any]]:
        if self._path:
            self._reload()
        return {k: dict(v) for k, v in self._specs.items()}

    def update(self, specs: Mapping[str, Any]) -> None:
        if self._path:
            self._reload()
        valid = _validate_faults(specs)  # all-or-nothing: a typo must not half-apply
        for model, spec in specs.items():
            if spec is None:
                self._specs.pop(str(model), None)
            else:
                self._specs[str(model)] = valid[str(model)]
        self._counters.clear()
        if self._path:
            self._write()

    def clear(self) -> None:
        self._specs = {}
        self._counters.clear()
        if self._path:
            self._write()

    def for_model(self, model: str) -> dict[str, Any] | None:
        if self._path:
            self._reload()
        if not self._specs:
            return None
        star = self._specs.get("*")
        spec = self._specs.get(model)
        if star and spec:
            return {**star, **spec}
        return spec or star

    def trigger(self, model: str, rate: float) -> bool:
        """Advance the model's counter; True if this request should fail."""
        n = self._counters.get(model, 0) + 1
        self._counters[model] = n
        if rate >= 1.0:
            return True
        if rate <= 0.0:
            return False
        return math.floor(n * rate) > math.floor((n - 1) * rate)


_FAULT_KEYS = {"error", "rate", "latency_ms", "chunk_delay_ms", "truncate", "logprob", "retry_after"}


def _validate_faults(data: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(data, Mapping):
        raise ValueError("faults must be a JSON object {model: {...}}")
    out: dict[str, dict[str, Any]] = {}
    for model, spec in data.items():
        if spec is None:
            continue
        if not isinstance(spec, Mapping):
            raise ValueError(f"fault spec for {model!r} must be an object")
        unknown = set(spec) - _FAULT_KEYS
        if unknown:
            raise ValueError(f"unknown fault keys for {model!r}: {sorted(unknown)}")
        clean = dict(spec)
        if "error" in clean and clean["error"] is not None:
            clean["error"] = str(clean["error"]).strip().lower()
            _check_error_kind(clean["error"])
        for key in ("rate", "latency_ms", "chunk_delay_ms", "logprob", "retry_after"):
            if key in clean and clean[key] is not None:
                clean[key] = float(clean[key])
        out[str(model)] = clean
    return out


def _check_error_kind(kind: str) -> None:
    if kind in {"timeout", "malformed"}:
        return
    if kind.isdigit() and 400 <= int(kind) <= 599:
        return
    raise ValueError(f"unsupported error kind {kind!r}")


# --------------------------------------------------------------------------- replay


class ReplayStore:
    """Recorded answers keyed by whitespace-normalised prompt, then by recorded model name.

    Accepted fixture formats:
    * JSONL with ``prompt`` + ``weak_response``/``strong_response`` (``fixtures/routellm``;
      optional ``weak_model``/``strong_model`` override the recorded model names), or
      ``prompt`` + ``responses: {model: text}``;
    * RouteLLM CSV with ``prompt`` and ``<model>_response`` columns.
    """

    def __init__(self, path: str | os.PathLike[str], model_map: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        # Custom entries extend/override the defaults rather than replace them, so adding a
        # tier alias (e.g. {"cheap": WEAK}) does not silently unmap the standard names.
        merged = {**DEFAULT_REPLAY_MODEL_MAP, **(model_map or {})}
        self.model_map = {k.lower(): v for k, v in merged.items()}
        self.answers: dict[str, dict[str, str]] = {}
        if self.path.suffix.lower() == ".csv":
            self._load_csv()
        else:
            self._load_jsonl()
        self.recorded_models = {m for by_model in self.answers.values() for m in by_model}

    def _add(self, prompt: str, model: str, text: Any) -> None:
        if isinstance(text, str):
            self.answers.setdefault(_norm(prompt), {})[model] = text

    def _load_jsonl(self) -> None:
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = json.loads(line)
                prompt = rec["prompt"]
                self._add(prompt, rec.get("weak_model", WEAK_RECORDED_MODEL), rec.get("weak_response"))
                self._add(prompt, rec.get("strong_model", STRONG_RECORDED_MODEL), rec.get("strong_response"))
                for model, text in (rec.get("responses") or {}).items():
                    self._add(prompt, model, text)

    def _load_csv(self) -> None:
        with self.path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            models = [c[: -len("_response")] for c in reader.fieldnames or [] if c.endswith("_response")]
            for row in reader:
                for model in models:
                    self._add(row["prompt"], model, row[f"{model}_response"])

    def recorded_model_for(self, model: str) -> str | None:
        low = model.lower()
        if low in self.model_map:
            return self.model_map[low]
        if "mixtral" in low:
            return WEAK_RECORDED_MODEL
        if "gpt-4" in low:
            return STRONG_RECORDED_MODEL
        return model if model in self.recorded_models else None

    def lookup(self, model: str, messages: list[Mapping[str, Any]]) -> tuple[str, str] | None:
        """(recorded answer, recorded model) for the last user message, or None."""
        prompt = next(
            (message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
            None,
        )
        if prompt is None:
            return None
        by_model = self.answers.get(_norm(prompt))
        if not by_model:
            return None
        recorded = self.recorded_model_for(model)
        if recorded is None or recorded not in by_model:
            return None
        return by_model[recorded], recorded


# --------------------------------------------------------------------------- the app


class _ClientWatch:
    """Sleeps that end early when the client disconnects (so 'timeout' faults don't pile up)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[None] | None = None
        self._gone = asyncio.Event()

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._gone.set()
                return

    @property
    def disconnected(self) -> bool:
        return self._gone.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns False if the client went away meanwhile."""
        if seconds <= 0:
            return not self._gone.is_set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._watch())
        try:
            await asyncio.wait_for(self._gone.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class MockLLM:
    """The ASGI application. Build it with :func:`build_app`."""

    def __init__(
        self,
        *,
        replay_path: str | os.PathLike[str] | None = None,
        default_latency_ms: float = 0.0,
        model_faults: Mapping[str, Any] | None = None,
        replay_model_map: Mapping[str, str] | None = None,
        faults_file: str | None = None,
    ) -> None:
        self.default_latency_ms = float(default_latency_ms)
        self.faults = FaultStore(model_faults, faults_file)
        self.replay = ReplayStore(replay_path, replay_model_map) if replay_path else None
        self.stats: dict[str, dict[str, int]] = {}
        self.started_at = int(time.time())

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"].rstrip("/") or "/"
        if path.startswith("/v1/"):
            path = path[3:]
        try:
            if method == "POST" and path == "/chat/completions":
                await self._chat(scope, receive, send)
            elif method == "POST" and path == "/embeddings":
                await self._embeddings(scope, receive, send)
            elif method == "GET" and path == "/health":
                await _send_json(send, 200, {"status": "ok"})
            elif method == "GET" and path == "/models":
                await _send_json(send, 200, {"object": "list", "data": [self._model_obj(m) for m in self._models()]})
            elif method == "GET" and path.startswith("/models/"):
                await _send_json(send, 200, self._model_obj(path[len("/models/") :]))
            elif path == "/_mock/faults":
                await self._faults_api(method, receive, send)
            elif path == "/_mock/stats":
                if method == "DELETE":
                    self.stats.clear()
                await _send_json(send, 200, self.stats)
            else:
                raise _HTTPError(404, f"Unknown route {method} {scope['path']}", "unknown_url")
        except _HTTPError as exc:
            await _send_error(send, exc.status, exc.message, code=exc.code, param=exc.param)
        except (ValueError, TypeError) as exc:
            # Malformed X-Mock-* headers or request fields (e.g. max_tokens="x").
            await _send_error(send, 400, f"invalid request: {exc}")

    # ------------------------------------------------------------------ helpers

    def _models(self) -> list[str]:
        names = dict.fromkeys(_ADVERTISED_MODELS)
        if self.replay is not None:
            names.update(dict.fromkeys(self.replay.model_map))
        names.update(dict.fromkeys(m for m in self.faults.snapshot() if m != "*"))
        return list(names)

    def _model_obj(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self.started_at, "owned_by": "finops-mock"}

    def _count(self, bucket: str, model: str) -> None:
        counts = self.stats.setdefault(bucket, {})
        counts[model] = counts.get(model, 0) + 1

    async def _faults_api(self, method: str, receive: Receive, send: Send) -> None:
        if method == "POST":
            body = await _read_json(receive)
            try:
                self.faults.update(body)
            except (ValueError, TypeError) as exc:
                raise _HTTPError(400, str(exc)) from None
        elif method == "DELETE":
            self.faults.clear()
        elif method != "GET":
            raise _HTTPError(405, f"{method} not allowed on /_mock/faults")
        await _send_json(send, 200, self.faults.snapshot())

    async def _pre_response(
        self, model: str, headers: dict[str, str], watch: _ClientWatch, send: Send, *, stream: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        """Apply latency and error faults.

        Returns (handled, fault): ``handled`` is True when a response (error or
        malformed body) was already sent, or the client vanished during a delay.
        """
        fault = self.faults.for_model(model) or {}
        latency_ms = float(headers["x-mock-latency-ms"]) if "x-mock-latency-ms" in headers else self.default_latency_ms
        latency_ms += float(fault.get("latency_ms") or 0.0)

        error = headers.get("x-mock-error", "").strip().lower() or None
        if error is None and fault.get("error"):
            rate = fault.get("rate")
            if self.faults.trigger(model, 1.0 if rate is None else float(rate)):
                error = fault["error"]

        if latency_ms > 0 and not await watch.sleep(latency_ms / 1000.0):
            return True, fault
        if error is None:
            return False, fault
        self._count("errors", model)
        if error == "timeout":
            if not await watch.sleep(TIMEOUT_FAULT_SECONDS):
                return True, fault
            return False, fault  # a very patient client simply gets the answer
        if error == "malformed":
            # 200 OK whose payload is not valid JSON, in the framing the client expects.
            broken = b'{"id": "chatcmpl-mock", "object": "chat.completion", "choices": [{"inde'
            if stream:
                await _send_raw(send, 200, b"data: " + broken + b"\n\ndata: [DONE]\n\n", b"text/event-stream; charset=utf-8")
            else:
                await _send_raw(send, 200, broken, b"application/json")
            return True, fault
        try:
            _check_error_kind(error)
        except ValueError as exc:
            raise _HTTPError(400, str(exc)) from None
        status = int(error)
        retry_after = headers.get("x-mock-retry-after") or fault.get("retry_after")
        extra: list[tuple[bytes, bytes]] = []
        if retry_after is not None:
            seconds = float(retry_after)
            extra = [
                (b"retry-after", str(max(0, math.ceil(seconds))).encode()),
                (b"retry-after-ms", str(int(seconds * 1000)).encode()),
            ]
        type_, code, message = _ERROR_TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Mock error {status}.")
        )
        await _send_error(send, status, message, type_=type_, code=code, extra_headers=extra)
        return True, fault

    # ------------------------------------------------------------------ chat

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_json(receive)
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "you must provide a model parameter", param="model")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, Mapping) for m in messages):
            raise _HTTPError(400, "'messages' must be a non-empty array of objects", param="messages")
        headers = _mock_headers(scope)
        self._count("chat", model)

        watch = _ClientWatch(receive)
        try:
            handled, fault = await self._pre_response(model, headers, watch, send, stream=bool(body.get("stream")))
            if handled:
                return
            await self._chat_answer(body, model, messages, headers, fault, watch, send)
        finally:
            watch.close()

    async def _chat_answer(
        self,
        body: Mapping[str, Any],
        model: str,
        messages: list[Mapping[str, Any]],
        headers: dict[str, str],
        fault: Mapping[str, Any],
        watch: _ClientWatch,
        send: Send,
    ) -> None:
        prompt_tokens = count_message_tokens(messages)
        cached = headers.get("x-mock-cached-tokens")
        if cached is None and isinstance(body.get("metadata"), Mapping):
            cached = body["metadata"].get("mock_cached_tokens")
        cached_tokens = min(max(int(cached), 0), prompt_tokens) if cached is not None else 0

        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        truncate = _truthy(headers.get("x-mock-truncate", "")) or _truthy(fault.get("truncate", False))
        want_logprobs = bool(body.get("logprobs"))
        forced_logprob: float | None = None
        if "x-mock-logprob" in headers:
            forced_logprob = float(headers["x-mock-logprob"])
        elif fault.get("logprob") is not None:
            forced_logprob = float(fault["logprob"])
        n = int(body.get("n") or 1)
        if not 1 <= n <= 8:
            raise _HTTPError(400, "n must be between 1 and 8", param="n")

        replay = self.replay.lookup(model, messages) if self.replay is not None else None
        if self.replay is not None:
            self._count("replay_hit" if replay else "replay_miss", model)

        choices: list[tuple[str, str, bytes]] = []  # (text, finish_reason, digest)
        for index in range(n):
            digest = _prompt_digest(model, messages, index)
            text = replay[0] if replay is not None else _answer_from_digest(model, digest)
            if "x-mock-completion-tokens" in headers:
                text = _answer_of_length(text, int(headers["x-mock-completion-tokens"]))
            text, _ = _apply_stop(text, body.get("stop"))
            finish = "stop"
            if isinstance(max_tokens, int) and max_tokens > 0:
                cut = truncate_tokens(text, max_tokens)
                if cut != text:
                    text, finish = cut, "length"
            if truncate and not body.get("stream"):
                text, finish = truncate_tokens(text, max(1, count_tokens(text) // 2)), "length"
            choices.append((text, finish, digest))

        tool = _forced_tool(body)
        if tool:
            choices = [
                (json.dumps({"answer": text}), "tool_calls" if finish == "stop" else finish, digest)
                for text, finish, digest in choices
            ]
        completion_tokens = sum(count_tokens(c[0]) for c in choices)
        usage = _usage(prompt_tokens, completion_tokens, cached_tokens)
        resp_headers = [
            (b"x-mock-replay", b"hit" if replay is not None else b"miss"),
            (b"openai-processing-ms", b"0"),
        ]
        if replay is not None:
            resp_headers.append((b"x-mock-replay-model", replay[1].encode()))
        chat_id = _new_id("chatcmpl")
        created = int(time.time())

        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            # vLLM's stream_options.continuous_usage_stats: every chunk carries the usage so far (cumulative).
            continuous = include_usage and bool((body.get("stream_options") or {}).get("continuous_usage_stats"))
            chunk_delay_ms = (
                float(headers["x-mock-chunk-delay-ms"])
                if "x-mock-chunk-delay-ms" in headers
                else float(fault.get("chunk_delay_ms") or 0.0)
            )
            await self._stream(
                send,
                watch,
                chat_id,
                created,
                model,
                choices,
                usage,
                resp_headers,
                include_usage=include_usage,
                continuous_usage=continuous,
                tool=tool,
                want_logprobs=want_logprobs,
                forced_logprob=forced_logprob,
                truncate=truncate,
                chunk_delay_s=chunk_delay_ms / 1000.0,
            )
            return

        out_choices = []
        for index, (text, finish, digest) in enumerate(choices):
            logprobs = None
            if want_logprobs:
                logprobs = {"content": _logprob_entries(token_pieces(text), digest, forced_logprob), "refusal": None}
            out_choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []}
                    if not tool
                    else {"role": "assistant", "content": None, "tool_calls": [_tool_call(tool, text, digest)]},
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            )
        payload = {
            "id": chat_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": out_choices,
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
        await _send_raw(send, 200, _dumps(payload), b"application/json", resp_headers)

    async def _stream(
        self,
        send: Send,
        watch: _ClientWatch,
        chat_id: str,
        created: int,
        model: str,
        choices: list[tuple[str, str, bytes]],
        usage: dict[str, Any],
        resp_headers: list[tuple[bytes, bytes]],
        *,
        include_usage: bool,
        want_logprobs: bool,
        continuous_usage: bool = False,
        tool: str = "",
        forced_logprob: float | None,
        truncate: bool,
        chunk_delay_s: float,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", chat_id.encode()),
                    *resp_headers,
                ],
            }
        )

        def frame(choice: dict[str, Any] | None, usage_obj: dict[str, Any] | None = None) -> bytes:
            chunk: dict[str, Any] = {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_mock",
                "choices": [choice] if choice is not None else [],
            }
            if include_usage:
                if usage_obj is None and continuous_usage:
                    usage_obj = _usage(usage["prompt_tokens"], streamed[0], usage["prompt_tokens_details"]["cached_tokens"])
                chunk["usage"] = usage_obj
            return b"data: " + _dumps(chunk) + b"\n\n"

        streamed = [0]  # completion tokens sent so far, for continuous usage

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        for index, (text, finish, digest) in enumerate(choices):
            first_delta: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
            if tool:
                call = _tool_call(tool, "", digest)
                first_delta = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}
            await emit(
                frame(
                    {
                        "index": index,
                        "delta": first_delta,
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
            )
            pieces = token_pieces(text)
            entries = _logprob_entries(pieces, digest, forced_logprob) if want_logprobs else None
            limit = max(1, len(pieces) // 2) if truncate else len(pieces)
            for i, piece in enumerate(pieces[:limit]):
                if chunk_delay_s > 0 and i and not await watch.sleep(chunk_delay_s):
                    return
                logprobs = {"content": [entries[i]], "refusal": None} if entries is not None else None
                streamed[0] += 1
                delta = {"content": piece} if not tool else {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                await emit(frame({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}))
            if truncate:
                # Simulates an upstream that drops the stream: no finish_reason, usage or [DONE].
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await emit(frame({"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}))
        if include_usage:
            await emit(frame(None, usage))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    # ------------------------------------------------------------------ embeddings

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_json(receive)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "you must provide a model parameter", param="model")
        inputs = _embedding_inputs(body.get("input"))
        if inputs is None:
            raise _HTTPError(400, "'input' must be a non-empty string or array", param="input")
        dim = body.get("dimensions") or DEFAULT_EMBEDDING_DIM
        if not isinstance(dim, int) or not 1 <= dim <= MAX_EMBEDDING_DIM:
            raise _HTTPError(400, f"dimensions must be an integer in 1..{MAX_EMBEDDING_DIM}", param="dimensions")
        fmt = body.get("encoding_format") or "float"
        if fmt not in {"float", "base64"}:
            raise _HTTPError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
        headers = _mock_headers(scope)
        self._count("embeddings", model)

        watch = _ClientWatch(receive)
        try:
            handled, _ = await self._pre_response(model, headers, watch, send)
            if handled:
                return
        finally:
            watch.close()

        data = []
        tokens = 0
        for index, (text, n_tokens) in enumerate(inputs):
            vec = _embed(text, dim)
            tokens += n_tokens
            embedding: Any = vec if fmt == "float" else base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        payload = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        await _send_raw(send, 200, _dumps(payload), b"application/json")


# --------------------------------------------------------------------------- wire helpers


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _mock_headers(scope: Scope) -> dict[str, str]:
    """Only the ``x-mock-*`` request headers (names are already lower-case in ASGI)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k.startswith(b"x-mock-")}


async def _read_json(receive: Receive) -> dict[str, Any]:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _HTTPError(400, "client disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    try:
        body = _loads(raw) if raw else {}
    except _JSONError:
        raise _HTTPError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise _HTTPError(400, "Request body must be a JSON object.")
    return body


async def _send_raw(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", _new_id("req").encode()),
    ]
    if extra_headers:
        headers += extra_headers
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, obj: Any) -> None:
    await _send_raw(send, status, _dumps(obj), b"application/json")


async def _send_error(
    send: Send,
    status: int,
    message: str,
    *,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    if type_ is None:
        type_ = "server_error" if status >= 500 else "invalid_request_error"
    payload = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    await _send_raw(send, status, _dumps(payload), b"application/json", extra_headers)


# --------------------------------------------------------------------------- factories / serving


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
            "apps.gateway.mock_llm:app_from_env",
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
    parser = argparse.ArgumentParser(prog="python -m apps.gateway.mock_llm", description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    main()
