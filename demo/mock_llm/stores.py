"""The mock LLM's state: per-model faults (shared across workers through a file) and the replay store of recorded answers."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from demo.mock_llm.common import (
    DEFAULT_REPLAY_MODEL_MAP,
    STRONG_RECORDED_MODEL,
    WEAK_RECORDED_MODEL,
    _dumps,
    _JSONError,
    _loads,
    _norm,
)
from finops.tokens import message_text

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
        except (OSError, *_JSONError):  # type: ignore[misc]  # a tuple of exception classes, unpacked
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
