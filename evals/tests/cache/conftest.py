"""The cache tests' session embedding model and per-test memo reset, shared with the evaluation tests."""

from apps.cache.tests.conftest import _fresh_memos, embedder  # noqa: F401
