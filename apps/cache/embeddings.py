"""Prompt embeddings for the semantic tier, off the event loop.

Local (default): the process's local model (finops.embeddings: all-MiniLM-L6-v2, offline, on one dedicated
thread; FINOPS_CACHE_LOCAL_RUNTIME picks onnx-int8, onnx or torch). A prompt it cannot embed faithfully, or
one that arrives while the model is still loading, skips the semantic tier.

Remote (FINOPS_CACHE_EMBEDDING_BACKEND=openai): any OpenAI-compatible /v1/embeddings endpoint;
each call is billed as its own `llm_requests` row (endpoint "embeddings").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from finops import clock
from finops.conf import conf

# transitional: importers in the pipeline move in the pipeline redesign. apps/routing/pipeline.py imports
# embed_for_routing from here, and the cache evaluation, the cost model and bench_cache import the local
# model's names (LocalEmbedder, MAX_LOCAL_CHARS, local_runtime); new code imports finops.embeddings.
from finops.embeddings import (  # noqa: I001
    EMBEDDING_DIM,
    LOCAL_MODEL_NAME,
    MAX_LOCAL_CHARS,
    LocalEmbedder,
    _executor,
    embed_for_routing,
    local_embedder,
    local_runtime,
)

__all__ = [
    "LOCAL_MODEL_NAME", "MAX_LOCAL_CHARS", "MAX_REMOTE_CHARS", "REMOTE_DEFAULT_MODEL", "LocalEmbedder", "_executor",
    "backend", "embed_for_routing", "embed_prompt", "local_embedder", "local_runtime", "model_name", "warmup",
]  # fmt: skip

logger = logging.getLogger(__name__)

REMOTE_DEFAULT_MODEL = "text-embedding-3-small"
MAX_REMOTE_CHARS = 8000


def backend() -> str:
    return conf().cache_embedding_backend


def model_name() -> str:
    configured = conf().cache_embedding_model
    if configured:
        return configured
    return LOCAL_MODEL_NAME if backend() == "local" else REMOTE_DEFAULT_MODEL


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
            base_url=conf().cache_embedding_base_url or None,
            api_key=conf().cache_embedding_api_key or "unused",
            timeout=2.0,
            max_retries=0,
        )
        _remote_clients[loop_id] = client
    return client


async def _embed_remote(text: str, *, ctx: Any) -> np.ndarray | None:
    import time

    from apps.cache.selectors import price_in_force_async
    from apps.cache.services import embedding_request_record

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
    if ctx is not None:
        await embedding_request_record(ctx=ctx, price=price, prompt_tokens=prompt_tokens, upstream_ms=upstream_ms)
    vector = np.asarray(result.data[0].embedding, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if vector.shape != (EMBEDDING_DIM,) or norm == 0.0:
        logger.warning("semantic cache: embedding endpoint returned an unusable vector of shape %s", vector.shape)
        return None
    return vector / norm


