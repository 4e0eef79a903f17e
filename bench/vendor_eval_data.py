"""Vendor the evaluation sets behind the headline figures into fixtures/, compressed, from ../shared/data.

    .venv/bin/python bench/vendor_eval_data.py [--shared ../shared/data] [--check]

Writes (gzip with a zero timestamp, so a re-run on the same data is byte-identical):

- fixtures/routellm/full.jsonl.gz — every record `evals.router.datasets.load_full` reads from the RouteLLM export
  (GSM8K, 40 MMLU subjects, MT-Bench; contaminated prompts already excluded), only the fields the router
  evaluation uses; fixtures/routellm/mt_bench_answers.json.gz — the two models' turn-1 MT-Bench answers
  (`evals.router.evaluation.mt_bench_answers_load`), which price those answers.
- fixtures/nab/full/ — the 13 realAdExchange + realKnownCause series and the 6 artificialWithAnomaly series as .csv.gz, and their labelled windows.
- fixtures/gptcache/mock_data.json.gz — GPTCache's 999 paraphrase pairs.

and fixtures/SHA256SUMS. `--check` compares the vendored files with what ../shared/data would produce now and
exits 1 on a difference. The loaders prefer these files, so a clone without ../shared reproduces the headline
figures of `make eval`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
NAB_CORPORA = ("realAdExchange", "realKnownCause", "artificialWithAnomaly")  # the last: the leave-one-corpus-out protocol


def gz_bytes(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0, filename="") as fh:
        fh.write(data)
    return out.getvalue()


def build(shared: Path) -> dict[Path, bytes]:
    """Relative path under fixtures/ → the bytes to vendor."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
    import django

    django.setup()
    from evals.router.datasets import load_full
    from evals.router.evaluation import mt_bench_answers_load

    out: dict[Path, bytes] = {}
    records = load_full(shared / "routellm")
    if records is None:
        raise SystemExit(f"no RouteLLM export under {shared / 'routellm'}")
    lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    out[Path("routellm/full.jsonl.gz")] = gz_bytes(lines.encode())
    answers = mt_bench_answers_load(shared / "routellm")
    out[Path("routellm/mt_bench_answers.json.gz")] = gz_bytes(json.dumps(answers, ensure_ascii=False, sort_keys=True).encode())

    windows = json.loads((shared / "nab" / "combined_windows.json").read_text())
    kept = {name: spans for name, spans in sorted(windows.items()) if name.split("/")[0] in NAB_CORPORA}
    out[Path("nab/full/combined_windows.json")] = (json.dumps(kept, indent=2) + "\n").encode()
    for name in kept:
        out[Path("nab/full/data") / f"{name}.gz"] = gz_bytes((shared / "nab" / "data" / name).read_bytes())

    out[Path("gptcache/mock_data.json.gz")] = gz_bytes((shared / "gptcache" / "mock_data.json").read_bytes())
    return out


def sums(files: dict[Path, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n" for path, data in sorted(files.items())).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    files = build(args.shared.resolve())
    files[Path("SHA256SUMS")] = sums(files)
    stale = [str(p) for p, data in files.items() if not (FIXTURES / p).is_file() or (FIXTURES / p).read_bytes() != data]
    if args.check:
        for path in stale:
            print(f"differs: fixtures/{path}")
        return 1 if stale else 0
    for path, data in files.items():
        (FIXTURES / path).parent.mkdir(parents=True, exist_ok=True)
        (FIXTURES / path).write_bytes(data)
    total = sum(len(d) for d in files.values())
    print(f"wrote {len(files)} files, {total / 1e6:.2f} MB, under fixtures/ ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
